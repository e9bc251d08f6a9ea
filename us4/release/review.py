"""The curator's view: one HTML page of a whole release, to look at before publishing it.

Every crop on its original frame, the text boxes found, the groups, the failures, how each
class is spread over the splits. The original frames show what the release leaves out (text,
identities in file names), so the page goes beside the release, in `RELEASE.local/review/`
(owner-only, like the id map), never inside it: nothing publishes or verifies it. It is plain
files: `index.html` and its images under `img/`, referenced relatively; no script, style,
font or image from elsewhere, and a Content-Security-Policy that lets the page's own script
alone run. Every value from outside (ids, file names, labels, reasons, text read) is escaped.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from PIL import Image, ImageDraw

from ..contract.lock import Clip, Lock, WarningKind
from ..errors import ReleaseError
from ..escape import html_text as h
from ..files import private_dir, storage_errors
from ..hashing import clip_digest
from ..media import MediaError, decode_clip, find_clips
from ..media.clips import ClipRef
from ..system import thread_map
from ..words import plural
from .audit import audit_release, balance_warnings, stored_images
from ..contract.layout import LOCAL_IDS, LOCAL_TEXT, local_dir
from .read import Release

REVIEW_DIR = "review"  # in RELEASE.local/
PAGE = "index.html"
ORIGINAL_PX = 360  # longest side of a shown original frame
STRIP_PX = 72  # height of a kept frame in a card's strip
STRIP_FRAMES = 12  # kept frames shown per clip, spread over the clip
PAIRS_SHOWN = 60  # near-duplicate pairs drawn (the closest that share an image)
PAIRS_CHECKED = 1000  # the closest pairs whose frames are looked at for a blank one (one grey level)
_CROP_COLOUR, _TEXT_COLOUR = (0, 220, 90), (255, 170, 0)
_SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}


class ReviewError(ReleaseError):
    """A review that cannot be written as asked (a --raw naming no source of the release)."""


@dataclass(frozen=True)
class Review:
    page: Path
    cards: int  # clips of the release, one card each
    originals: int  # cards showing original frames (the others show the stored, cropped ones)
    failures: int
    near_duplicates: int
    seconds: float


@dataclass
class _Card:
    index: int
    clip: Clip
    row: dict
    mode: str
    flags: list[str]
    warnings: list[str]
    raw_path: str | None  # where the clip came from (RELEASE.local/ids.csv, or the raw folder given)
    text_read: list[str]
    frames: list[tuple[str, str, int, int]] = field(default_factory=list)  # (file, caption, w, h)
    strip: tuple[str, int, int, list[int]] | None = None  # (file, w, h, the frame indices shown)
    originals_note: str = ""


def write_review(release: Release, raw: Mapping[str, Path] | None = None, workers: int | None = None) -> Review:
    """Write the review page of `release` into `RELEASE.local/review/` (replacing an earlier
    one at once, never leaving half of one) and return where it is. `raw` maps a source to its
    raw folder: its clips' first, middle and last kept frames are decoded again from there,
    each clip found by its content hash, and drawn with the crop box and the text boxes;
    without it the stored (cropped) frames are shown, and the card says so."""
    start = time.perf_counter()
    lock = release.lock
    raw = dict(raw or {})
    for source in raw:
        if source not in lock.recipe.sources:
            raise ReviewError(f"--raw {source}={raw[source]}: release {lock.name} {lock.version} has no source "
                              f"{source!r} (it has {', '.join(sorted(lock.recipe.sources))})")
        if not Path(raw[source]).is_dir():
            raise ReviewError(f"--raw {source}={raw[source]}: no such folder")
    root = release.root.absolute()
    local = local_dir(root)
    ids, text_read = _local_files(local)
    videos = {v["video_id"]: v for v in release.videos().drop_columns(["frame_ids"]).to_pylist()}
    warned: dict[str, list[str]] = defaultdict(list)
    for w in lock.warnings:
        if w.video_id is not None:
            warned[w.video_id].append(f"{w.kind.value}: {w.message}")
    fallback = {w.video_id for w in lock.warnings if w.kind == WarningKind.CROP_FALLBACK}
    cards = []
    for n, clip in enumerate(lock.clips):
        row = videos.get(clip.video_id)
        if row is None:
            raise ReleaseError(f"{root}: the lock names clip {clip.video_id} but the videos table has no row of it "
                               "(us4 verify says more)")
        text_found = bool(row["text_boxes"]) or row["text_action"] not in (None, "none")
        flags = (["fallback"] if clip.video_id in fallback else []) + (["text"] if text_found else []) \
            + (["grouped"] if clip.group else [])
        cards.append(_Card(n, clip, row, _crop_mode(lock, clip, row, clip.video_id in fallback), flags,
                           warned.get(clip.video_id, []), ids.get(clip.video_id), text_read.get(clip.video_id, [])))
    audit = audit_release(release)

    with storage_errors():
        parent = private_dir(local)
        for left in parent.glob(f".{REVIEW_DIR}.*"):  # ours, by name: a review killed (kill -9) before its clean-up
            shutil.rmtree(left, ignore_errors=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{REVIEW_DIR}.", dir=parent))
        try:
            (stage / "img").mkdir()
            found = _find_raw(lock, raw, workers)
            thread_map(lambda c: _originals(c, found, raw, stage), cards, workers)
            pairs, blank = _draw_strips_and_pairs(release, cards, audit.near_duplicates[:PAIRS_CHECKED], stage)
            page = _page(release, cards, audit, pairs, blank, time.perf_counter() - start)
            (stage / PAGE).write_text(page, encoding="utf-8")
            target = parent / REVIEW_DIR
            if target.exists():
                old = parent / f".{REVIEW_DIR}.old"
                shutil.rmtree(old, ignore_errors=True)
                target.rename(old)
                stage.rename(target)
                shutil.rmtree(old)
            else:
                stage.rename(target)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return Review(target / PAGE, len(cards), sum(1 for c in cards if not c.originals_note), len(lock.failures),
                  len(audit.near_duplicates), time.perf_counter() - start)


def _local_files(local: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """From the build's local folder, where it is here: the raw path of each video id, the text read in each clip."""
    ids: dict[str, str] = {}
    if (local / LOCAL_IDS).is_file():
        with open(local / LOCAL_IDS, newline="", encoding="utf-8") as f:
            # the CSV shields cells from spreadsheets with a leading ' (escape.csv_cell): shown as written
            ids = {r["video_id"]: r["path"] for r in csv.DictReader(f)}
    text: dict[str, list[str]] = {}
    if (local / LOCAL_TEXT).is_file():
        read = json.loads((local / LOCAL_TEXT).read_text(encoding="utf-8"))
        text = {str(k): [str(t) for t in v] for k, v in read.items() if isinstance(v, list)} \
            if isinstance(read, dict) else {}
    return ids, text


def _crop_mode(lock: Lock, clip: Clip, row: dict, fallback: bool) -> str:
    """How the clip's crop was chosen: detected, declared (by the recipe or the DICOM file), none, or the fallback."""
    if fallback:
        return "fallback: no scan region found, full frame kept"
    crop = lock.recipe.sources[clip.source].crop
    overrides = {key for key, _ in crop.clips}
    if clip.sha256 in overrides or (row.get("path") and row["path"] in overrides) or crop.mode == "box":
        return "declared by the recipe"
    if crop.mode == "none":
        return "none: full frame, as the recipe says"
    box = row["crop_box"]
    for region in json.loads(row["attributes"] or "{}").get("SequenceOfUltrasoundRegions", []):
        corners = [region.get(k) for k in ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1",
                                           "RegionLocationMaxY1")]
        if None not in corners and [corners[0], corners[1], corners[2] - corners[0] + 1,
                                    corners[3] - corners[1] + 1] == box:
            return "declared by the DICOM file (ultrasound region)"
    return "detected"


def _find_raw(lock: Lock, raw: Mapping[str, Path], workers: int | None) -> dict[str, ClipRef]:
    """The raw clip of each content hash the release holds, in the raw folders given: found as
    the build finds clips, then hashed, only those whose size is that of a clip of the release."""
    found: dict[str, ClipRef] = {}
    for source, folder in raw.items():
        spec = lock.recipe.sources[source]
        sizes = {c.bytes for c in lock.clips if c.source == source}
        clips, _ = find_clips(spec.input, folder, spec.fps)
        candidates = [f for f in clips if sum(Path(p).stat().st_size for p in f.files) in sizes]
        for f, (sha256, _) in zip(candidates, thread_map(lambda f: clip_digest(f.files), candidates, workers),
                                  strict=True):
            found.setdefault(sha256, f.ref)
    return found


def _spread(n: int, k: int) -> list[int]:
    """Up to k positions of n, evenly spread, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=82)
    return buf.getvalue()


def _boxed(im: Image.Image, crop: list[int] | None, texts: Iterable[list[int]], dx: int, dy: int,
           px: int) -> Image.Image:
    """`im` scaled to `px` on its longest side, with the crop box and the text boxes (whose
    coordinates are in the stored image: offset by dx, dy) drawn over it."""
    scale = min(1.0, px / max(im.size))
    out = im.convert("RGB").resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                                   Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(out)

    def rect(b: list[int], colour: tuple[int, int, int]) -> None:
        x, y, w, bh = b
        draw.rectangle([x * scale, y * scale, max(x * scale, (x + w) * scale - 1), max(y * scale, (y + bh) * scale - 1)],
                       outline=colour, width=2)
    if crop is not None:
        rect(crop, _CROP_COLOUR)
    for t in texts:
        rect([t[0] + dx, t[1] + dy, t[2], t[3]], _TEXT_COLOUR)
    return out


def _originals(card: _Card, found: Mapping[str, ClipRef], raw: Mapping[str, Path], stage: Path) -> None:
    """The first, middle and last kept frames decoded from the raw clip, boxes drawn, into the
    stage; or a note saying why they are not, the stored frames being drawn later instead."""
    clip, row = card.clip, card.row
    kept = clip.frame_index
    picks = sorted({0, len(kept) // 2, len(kept) - 1})
    ref = found.get(clip.sha256 or "")
    if clip.source not in raw:
        card.originals_note = (f"original frames not shown: run us4 review with --raw {clip.source}=DIR; "
                               "these are the stored (cropped) frames")
        return
    if ref is None:
        card.originals_note = (f"original frames not shown: no clip of {raw[clip.source]} has this clip's content "
                               "(sha256); these are the stored (cropped) frames")
        return
    try:
        decoded = decode_clip(ref, [kept[p] for p in picks])
    except MediaError as exc:
        card.originals_note = f"original frames not shown: decoding the raw clip failed ({exc}); these are the stored frames"
        return
    cx, cy = row["crop_box"][:2]
    for k, (p, frame) in enumerate(zip(picks, decoded)):
        im = _boxed(Image.fromarray(frame.to_rgb()), row["crop_box"], row["text_boxes"] or [], cx, cy, ORIGINAL_PX)
        card.frames.append((_save(stage, f"img/c{card.index}-o{k}.jpg", im),
                            f"{_position(p, len(kept))}: frame {kept[p]} of {row['n_frames']}", im.width, im.height))


def _position(p: int, n: int) -> str:
    return "first" if p == 0 else "last" if p == n - 1 else "middle"


def _draw_strips_and_pairs(release: Release, cards: list[_Card], pairs: list, stage: Path
                           ) -> tuple[list[tuple], int]:
    """Each card's strip of kept frames (one image) and, where originals are not shown, its
    first, middle and last stored frames with the text boxes; thumbnails of the closest
    near-duplicate pairs that share an image, and how many pairs hold a blank frame (one grey
    level, as many clips begin: no image shared), which are not drawn. One pass over the frames shards, reading only row groups that hold a wanted frame;
    each frame is drawn as it is read, so memory holds thumbnails, never the frames."""
    clip_of = {c.clip.video_id: c.clip for c in cards}
    strip = {c.index: [c.clip.frame_id + i for i in _spread(len(c.clip.frame_index), STRIP_FRAMES)] for c in cards}
    stored: dict[int, tuple[_Card, int, int]] = {}  # frame_id: (card, place among first/middle/last, position)
    for c in cards:
        if c.originals_note:
            n = len(c.clip.frame_index)
            for k, p in enumerate(sorted({0, n // 2, n - 1})):
                stored[c.clip.frame_id + p] = (c, k, p)
    pair_ids = [tuple(clip_of[ref[0]].frame_id + clip_of[ref[0]].frame_index.index(ref[1]) for ref in (p.a, p.b))
                for p in pairs]
    in_pair = {f for ab in pair_ids for f in ab}
    in_strip = {f for ids in strip.values() for f in ids}

    def draw(fid: int, png: bytes) -> dict:
        out: dict = {}
        with Image.open(io.BytesIO(png)) as im:
            im = im.convert("RGB")
            if fid in stored:
                card, k, p = stored[fid]
                big = _boxed(im, None, card.row["text_boxes"] or [], 0, 0, ORIGINAL_PX)
                out["stored"] = (k, _save(stage, f"img/c{card.index}-o{k}.jpg", big),
                                 f"{_position(p, len(card.clip.frame_index))} kept: frame {card.clip.frame_index[p]}, "
                                 "as stored", big.width, big.height)
            small = im.copy()
            small.thumbnail((STRIP_PX * 4, STRIP_PX), Image.Resampling.BILINEAR)
            if fid in in_pair:
                low, high = small.convert("L").getextrema()
                out["pair"] = None if low == high else (_save(stage, f"img/f{fid}.jpg", small), small.width,
                                                        small.height)
            if fid in in_strip:
                out["strip"] = small
        return out

    drawn = stored_images(release, in_strip | set(stored) | in_pair, draw)
    for c in cards:
        for fid in sorted(f for f in stored if stored[f][0] is c):
            k, name, caption, w, ht = drawn[fid]["stored"]
            c.frames.append((name, caption, w, ht))
        thumbs = [drawn[f]["strip"] for f in strip[c.index]]
        sheet = Image.new("RGB", (sum(t.width for t in thumbs) + 2 * (len(thumbs) - 1), STRIP_PX), (0, 0, 0))
        x = 0
        for t in thumbs:
            sheet.paste(t, (x, (STRIP_PX - t.height) // 2))
            x += t.width + 2
        c.strip = (_save(stage, f"img/c{c.index}-s.jpg", sheet), sheet.width, sheet.height,
                   [c.clip.frame_index[f - c.clip.frame_id] for f in strip[c.index]])
    drawable = [(p, drawn[a]["pair"], drawn[b]["pair"]) for p, (a, b) in zip(pairs, pair_ids)]
    shared = [d for d in drawable if d[1] and d[2]]
    return shared[:PAIRS_SHOWN], len(drawable) - len(shared)


def _save(stage: Path, name: str, im: Image.Image) -> str:
    (stage / name).write_bytes(_jpeg(im))
    return name


# --- the page ----------------------------------------------------------------------


def _asset(name: str) -> str:
    return (files("us4.release") / name).read_text(encoding="utf-8")


def _split_key(split: str) -> tuple:
    digits = "".join(ch for ch in split if ch.isdigit())
    return (_SPLIT_ORDER.get(split, 3), split.rstrip("0123456789"), int(digits) if digits else -1, split)


def _page(release: Release, cards: list[_Card], audit, pairs: list[tuple], blank: int, took: float) -> str:
    lock = release.lock
    script, style = _asset("review.js"), _asset("review.css")
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = (f"default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
           "base-uri 'none'; form-action 'none'")
    splits = sorted({c.clip.split for c in cards}, key=_split_key)
    index = {c.clip.video_id: c.index for c in cards}
    groups: dict[str, list[_Card]] = defaultdict(list)
    for c in cards:
        if c.clip.group:
            groups[c.clip.group].append(c)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{h(lock.name)} {h(lock.version)}: review</title>", f"<style>{style}</style></head><body>",
        f"<header><h1>{h(lock.name)} {h(lock.version)}</h1>",
        '<p class="private">For the holder of the raw data only: this page shows original frames (burned-in text '
        "and all) and where each clip came from. It lies beside the release, never in it; do not publish it.</p>",
        f"<p>{plural(len(lock.clips), 'clip')}, {plural(lock.counts.frames, 'frame')}, "
        f"{plural(len(lock.failures), 'failure')}, {plural(len(lock.excluded), 'file')} excluded by the recipe, "
        f"{plural(len(lock.warnings), 'warning')}; {'phantom' if lock.phantom else 'real'} data. "
        f"Page written in {took:.1f} s.</p>",
        '<nav><a href="#counts">counts</a> <a href="#warnings">warnings</a> <a href="#failures">failures</a> '
        '<a href="#near-duplicates">near-duplicates</a> <a href="#groups">groups</a> <a href="#clips">clips</a></nav>',
        "</header>",
        _counts(lock, splits), _warnings(lock, index), _failures(lock), _pairs(audit, pairs, blank, index),
        _groups(groups), _filters(cards, splits),
        '<section id="clips"><div class="cards">', *(_card(c, groups) for c in cards), "</div></section>",
        f"<script>{script}</script></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _counts(lock: Lock, splits: list[str]) -> str:
    table: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for c in lock.clips:
        cell = table[(c.source, c.label or "(none)")][c.split]
        cell[0] += 1
        cell[1] += len(c.frame_index)
    rows = []
    for (source, label), by_split in sorted(table.items()):
        cells = []
        for s in splits:
            videos, frames = by_split.get(s, [0, 0])
            cells.append(f'<td class="lack" title="no {h(label)} clip in {h(s)}">0 &#x2717;</td>' if not videos
                         else f"<td>{videos} <small>({frames})</small></td>")
        total = [sum(v[i] for v in by_split.values()) for i in (0, 1)]
        rows.append(f"<tr><th>{h(source)}</th><th>{h(label)}</th>{''.join(cells)}"
                    f"<td>{total[0]} <small>({total[1]})</small></td></tr>")
    balance = "".join(f"<li>{h(line)}</li>" for line in balance_warnings(lock))
    return (f'<section id="counts"><h2>Clips (frames) per source, class and split</h2>'
            f"<table><tr><th>source</th><th>class</th>{''.join(f'<th>{h(s)}</th>' for s in splits)}<th>all</th></tr>"
            f"{''.join(rows)}</table>"
            + (f'<p>Balance:</p><ul class="warn">{balance}</ul>' if balance else
               "<p>Every split holds every class, none spread wider than its largest group forces.</p>")
            + "</section>")


def _link(video_id: str, index: Mapping[str, int]) -> str:
    return f'<a href="#c{index[video_id]}">{h(video_id)}</a>' if video_id in index else h(video_id)


def _warnings(lock: Lock, index: Mapping[str, int]) -> str:
    by_kind: dict[str, list] = defaultdict(list)
    for w in lock.warnings:
        by_kind[w.kind.value].append(w)
    blocks = [f"<details><summary>{h(kind)}: {len(ws)}</summary><ul>"
              + "".join(f"<li>{_link(w.video_id, index) if w.video_id else h(w.source)}: {h(w.message)}</li>"
                        for w in ws) + "</ul></details>"
              for kind, ws in sorted(by_kind.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    return f'<section id="warnings"><h2>Warnings by kind</h2>{"".join(blocks) or "<p>None.</p>"}</section>'


def _failures(lock: Lock) -> str:
    rows = "".join(f'<tr data-failed="{h(f.video_id)}" data-source="{h(f.source)}"><td>{h(f.source)}</td>'
                   f"<td>{h(f.video_id)}</td><td>{h(f.stage.value)}</td><td>{h(f.reason)}</td></tr>"
                   for f in lock.failures)
    excluded = Counter(e.reason for e in lock.excluded)
    return (f'<section id="failures"><h2>Failure ledger: {plural(len(lock.failures), "clip")}</h2>'
            + (f"<table><tr><th>source</th><th>clip</th><th>stage</th><th>reason</th></tr>{rows}</table>"
               if rows else "<p>No clip failed.</p>")
            + (f"<details><summary>{plural(len(lock.excluded), 'file')} excluded by the recipe</summary><ul>"
               + "".join(f"<li>{n} &#xd7; {h(reason)}</li>" for reason, n in excluded.most_common())
               + "</ul></details>" if lock.excluded else "")
            + "</section>")


def _pairs(audit, pairs: list[tuple], blank: int, index: Mapping[str, int]) -> str:
    def side(ref, thumb) -> str:
        return (f'<figure><img src="{thumb[0]}" width="{thumb[1]}" height="{thumb[2]}" alt="" loading="lazy">'
                f"<figcaption>{_link(ref[0], index)} frame {ref[1]} [{h(ref[2])}]</figcaption></figure>")
    shown = "".join(f'<div class="pair">{side(p.a, ta)}{side(p.b, tb)}'
                    f"<p>{p.distance} bits, mean difference {p.difference}</p></div>" for p, ta, tb in pairs)
    n = len(audit.near_duplicates)
    return (f'<section id="near-duplicates"><h2>Near-duplicate frames across splits: {n}</h2>'
            f"<p>{plural(audit.candidates, 'candidate pair')} with close hashes checked on pixels"
            + (f"; {plural(blank, 'pair')} (of the closest {min(n, PAIRS_CHECKED)}) with a blank frame (one grey "
               "level, as many clips begin: no image shared), not drawn" if blank else "")
            + (f"; the closest {len(pairs)} that share an image shown" if n - blank > len(pairs) else "") + ".</p>"
            + f'<div class="pairs">{shown}</div></section>')


def _groups(groups: Mapping[str, list[_Card]]) -> str:
    rows = "".join(f"<tr><td>{h(g)}</td><td>{h(', '.join(sorted({m.clip.split for m in ms})))}</td><td>"
                   + " ".join(f'<a href="#c{m.index}">{h(m.clip.video_id)}</a>' for m in ms) + "</td></tr>"
                   for g, ms in sorted(groups.items()))
    return (f'<section id="groups"><h2>Groups: {len(groups)} (clips kept in one split)</h2>'
            + (f"<table><tr><th>group</th><th>split</th><th>clips</th></tr>{rows}</table>" if rows else "<p>None.</p>")
            + "</section>")


def _filters(cards: list[_Card], splits: list[str]) -> str:
    def select(ident: str, what: str, values: Iterable[str]) -> str:
        options = "".join(f'<option value="{h(v)}">{h(v)}</option>' for v in values)
        return f'<label>{what} <select id="{ident}"><option value="">all</option>{options}</select></label>'
    flags = "".join(f'<option value="{v}">{t}</option>' for v, t in
                    (("fallback", "fallback crop"), ("text", "text found"), ("grouped", "grouped"),
                     ("failed", "failed (the ledger)")))
    return ('<div class="filters">' + select("f-source", "source", sorted({c.clip.source for c in cards}))
            + select("f-label", "class", sorted({c.clip.label or "" for c in cards}))
            + select("f-split", "split", splits)
            + f'<label>flag <select id="f-flag"><option value="">any</option>{flags}</select></label>'
            + '<label>id <input id="f-search" type="search" placeholder="search by id" autocomplete="off"></label>'
            + '<span id="f-count"></span></div>')


def _card(c: _Card, groups: Mapping[str, list[_Card]]) -> str:
    clip, row = c.clip, c.row
    group = ""
    if clip.group:
        others = [m for m in groups[clip.group] if m is not c]
        group = (f"{h(clip.group)}: " + (" ".join(f'<a href="#c{m.index}">{h(m.clip.video_id)}</a>' for m in others)
                                        or "no other clip here"))
    spacing = (f"{row['spacing_x_mm']:.4g} x {row['spacing_y_mm']:.4g} mm per pixel"
               if row.get("spacing_x_mm") and row.get("spacing_y_mm") else "not declared")
    boxes = row["text_boxes"] or []
    text = h(row["text_action"] or "none") + (f", {plural(len(boxes), 'box', 'boxes')}" if boxes else "")
    if c.text_read:
        text += ": " + "; ".join(h(t) for t in c.text_read)
    frames = "".join(f'<figure><img src="{f}" width="{w}" height="{ht}" alt="" loading="lazy">'
                     f"<figcaption>{h(cap)}</figcaption></figure>" for f, cap, w, ht in c.frames)
    name, sw, sh, shown = c.strip
    strip = (f'<img src="{name}" width="{sw}" height="{sh}" alt="" loading="lazy"><p class="note">'
             f"kept frames {', '.join(map(str, shown))}"
             + (f" ({len(shown)} of {len(clip.frame_index)} shown)" if len(shown) < len(clip.frame_index) else "")
             + "</p>")
    crop = row["crop_box"]
    facts = [
        ("label", h(clip.label or "")), ("split", h(clip.split) + (f" (fold {clip.fold})" if clip.fold is not None else "")),
        ("group", group or "none"),
        ("crop", f"{h(c.mode)}: x {crop[0]}, y {crop[1]}, {crop[2]} x {crop[3]} of "
                 f"{row['orig_width']} x {row['orig_height']}"),
        ("text", text), ("spacing", spacing),
        ("frames", f"{len(clip.frame_index)} kept of {row['n_frames']}"
                   + (f", {row['n_duplicates_dropped']} near-duplicates dropped" if row["n_duplicates_dropped"] else "")),
        ("input", h(" / ".join(str(v) for v in (row["input"], row["container"], row["codec"]) if v))
                  + (f", {row['fps']:.4g} fps" if row.get("fps") else "")),
        ("raw file", h(c.raw_path) if c.raw_path else "not known here"),
    ]
    warnings = "".join(f"<li>{h(w)}</li>" for w in c.warnings)
    return (f'<article class="card" id="c{c.index}" data-video-id="{h(clip.video_id)}" data-source="{h(clip.source)}" '
            f'data-label="{h(clip.label or "")}" data-split="{h(clip.split)}" data-flags="{" ".join(c.flags)}">'
            f"<h3>{h(clip.video_id)}</h3>"
            + "".join(f'<span class="flag {f}">{f}</span>' for f in c.flags)
            + (f'<p class="note">{h(c.originals_note)}</p>' if c.originals_note else "")
            + f'<div class="frames">{frames}</div><div class="strip">{strip}</div>'
            + "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
            + (f'<ul class="warn">{warnings}</ul>' if warnings else "") + "</article>")

