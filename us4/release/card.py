"""The release's card (README.md): a pure function of the release, never hand-edited.

`render_card` reads the lock, the registry and the attachments the lock names, and
nothing that varies between machines or runs (no clock, no absolute path), so
regenerating the card of the same release gives the same bytes; `us4 verify` relies
on it. Sources' licences and citations come from the registry, never re-spelled here.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from ..files import atomic_write
from ..registry import CITATIONS, SOURCES
from .read import Release
from .schema import SCHEMAS

CONFIGS = ("frames", "videos")
CONTACT_SHEET = "assets/contact_sheet.png"
BENCHMARK = "benchmark.json"
_SHEET_PER_SOURCE = 8  # thumbnails in a source's row of the contact sheet
_THUMB = 160  # px, square
_LABEL_H = 18  # px of caption under each thumbnail


# --- YAML header -----------------------------------------------------------------


def hub_configs(release: Release) -> list[dict]:
    """The `configs` block that lets the Hub viewer and `datasets.load_dataset` read the release."""
    configs = []
    for config in CONFIGS:
        configs.append({
            "config_name": config,
            "data_files": [{"split": sp, "path": f"data/{config}/{sp}-*.parquet"}
                           for sp in _splits(release, config)],
            **({"default": True} if config == "frames" else {}),
        })
    return configs


def hub_dataset_info(release: Release) -> list[dict]:
    """`dataset_info` per config: features (from the release schema) and rows per split (from the lock)."""
    out = []
    for config in CONFIGS:
        rows: dict[str, int] = defaultdict(int)
        size: dict[str, int] = defaultdict(int)
        for shard in release.shards(config):
            rows[shard["split"]] += shard["rows"]
            size[shard["split"]] += shard["bytes"]
        features = json.loads(SCHEMAS[config].metadata[b"huggingface"])["info"]["features"]
        out.append({
            "config_name": config,
            "features": [{"name": name, **_yaml_feature(features[name])} for name in SCHEMAS[config].names],
            # num_bytes: the split's Parquet bytes, known from the lock (images are PNG, so close to
            # the Arrow size `datasets` means); `datasets` checks num_examples, which is exact
            "splits": [{"name": sp, "num_bytes": size[sp], "num_examples": rows[sp]}
                       for sp in _splits(release, config)],
            "download_size": sum(s["bytes"] for s in release.shards(config)),
        })
    return out


def _yaml_feature(feature: dict) -> dict:
    """A feature of the schema's `huggingface` metadata, in the card's YAML spelling."""
    kind = feature["_type"]
    if kind == "Image":
        return {"dtype": "image"}
    if kind == "Value":
        return {"dtype": feature["dtype"]}
    if kind == "List":
        inner = _yaml_feature(feature["feature"])
        if set(inner) != {"dtype"}:
            raise ValueError(f"card: nested list feature {feature} has no YAML spelling here")
        return {"list": inner["dtype"], **({"length": feature["length"]} if "length" in feature else {})}
    raise ValueError(f"card: unknown feature type {kind!r}")


def _splits(release: Release, config: str) -> list[str]:
    return sorted({s["split"] for s in release.shards(config)})


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "n>1M"


# --- body ----------------------------------------------------------------------


def render_card(release: Release) -> str:
    lock = release.lock
    sources = sorted(lock["recipe"]["sources"])
    header = {
        "pretty_name": f"{lock['name']} {lock['version']}",
        "license": "other",
        "license_name": "per-source",
        "tags": ["ultrasound", "medical-imaging", "video-frames", "us4"],
        "task_categories": ["image-classification"],
        "size_categories": [_size_category(lock["counts"]["frames"])],
        "configs": hub_configs(release),
        "dataset_info": hub_dataset_info(release),
    }
    parts = [
        "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---",
        _intro(release, sources),
        _sources_table(release, sources),
        _counts_table(release),
        _contact_sheet_section(release),
        _recipe_section(release, sources),
        _ledger_section(release),
        _benchmark_section(release),
        _licence_section(sources),
        _citation_section(release, sources),
        _provenance_section(release),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _intro(release: Release, sources: list[str]) -> str:
    lock, counts = release.lock, release.lock["counts"]
    corpora = sorted({SOURCES[s].corpus for s in sources})
    return "\n".join([
        f"# {lock['name']} {lock['version']}",
        "",
        lock.get("description", "").strip(),
        "",
        f"Frames sampled from ultrasound videos ({', '.join(corpora)}; sources: {', '.join(sources)}), "
        f"built by us4 from raw clips with a recipe recorded in `release.json`, "
        f"which also holds the sha256 of every input clip and every shard. "
        f"{counts['videos']} videos, {counts['frames']} frames; "
        f"{_n(counts['failures'], 'clip')} failed; the failure ledger below lists them.",
        "",
        "Two configs: `frames` (one row per frame: the PNG image, its label, split, source video, "
        "crop box, hashes) and `videos` (one row per clip: codec, frame rate, size, licence, and "
        "the ordered `frame_ids` of its frames). Splits are by video, never by frame.",
        "",
        "```python",
        "import us4  # verifies every file against release.json before use",
        f'ds = us4.load("ORG/NAME", revision="v{lock["version"]}", config="frames")',
        "",
        "from datasets import load_dataset  # the same files, without verification",
        f'ds = load_dataset("ORG/NAME", "frames", revision="v{lock["version"]}")',
        "```",
        "",
        "`ORG/NAME` is the repository holding this card.",
    ])


def _per_source_label(release: Release) -> dict[str, dict[str, dict[str, dict[str, int]]]]:
    """{source: {label: {split: {videos, frames}}}} from the lock's `by_split_label`."""
    out: dict[str, dict[str, dict[str, dict[str, int]]]] = defaultdict(lambda: defaultdict(dict))
    for split, labels in release.lock["counts"]["by_split_label"].items():
        for key, n in labels.items():
            source, _, label = key.partition("/")
            out[source][label][split] = n
    return out


def _sources_table(release: Release, sources: list[str]) -> str:
    recipe = release.lock["recipe"]["sources"]
    tally = _per_source_label(release)
    rows = ["| source | corpus | organ | probe | classes | videos | frames | licence |",
            "|---|---|---|---|---|---:|---:|---|"]
    for name in sources:
        src, spec = SOURCES[name], recipe[name]
        classes = spec.get("classes") or [c.name for c in src.classes]
        probes = spec.get("probes") or [src.probe]
        videos = sum(n["videos"] for by_split in tally[name].values() for n in by_split.values())
        frames = sum(n["frames"] for by_split in tally[name].values() for n in by_split.values())
        rows.append(f"| {name} | {src.corpus} | {src.organ} | {', '.join(probes)} | {', '.join(classes)} "
                    f"| {videos} | {frames} | {_cell(src.licence)} |")
    return "## Sources\n\n" + "\n".join(rows)


def _counts_table(release: Release) -> str:
    splits = sorted(release.lock["counts"]["by_split_label"])
    tally = _per_source_label(release)
    head = "| source | label | " + " | ".join(splits) + " | total |"
    rows = [head, "|---|---|" + "---:|" * (len(splits) + 1)]
    totals = {sp: [0, 0] for sp in splits}
    for source in sorted(tally):
        for label in sorted(tally[source]):
            by_split = tally[source][label]
            cells = []
            for sp in splits:
                n = by_split.get(sp, {"videos": 0, "frames": 0})
                totals[sp][0] += n["videos"]
                totals[sp][1] += n["frames"]
                cells.append(f"{n['frames']} ({n['videos']})")
            v = sum(n["videos"] for n in by_split.values())
            f = sum(n["frames"] for n in by_split.values())
            rows.append(f"| {source} | {label} | " + " | ".join(cells) + f" | {f} ({v}) |")
    all_v = sum(t[0] for t in totals.values())
    all_f = sum(t[1] for t in totals.values())
    rows.append("| **all** | | " + " | ".join(f"{t[1]} ({t[0]})" for t in totals.values())
                + f" | {all_f} ({all_v}) |")
    return "## Counts by split and label\n\nFrames (videos) per split.\n\n" + "\n".join(rows)


def _contact_sheet_section(release: Release) -> str:
    if CONTACT_SHEET not in release.lock.get("attachments", {}):
        return ""
    return ("## Sample frames\n\n"
            f"Up to {_SHEET_PER_SOURCE} frames per source, one row per source, taken across its classes "
            "(the middle kept frame of each chosen video), as stored in the release.\n\n"
            f"![Sample frames per source]({CONTACT_SHEET})")


def _sampling_text(sampling: dict[str, Any]) -> str:
    parts = []
    if "every_n" in sampling:
        parts.append(f"every {sampling['every_n']}th frame")
    if "rate_hz" in sampling:
        parts.append(f"about {sampling['rate_hz']} frames per second (every int(fps/{sampling['rate_hz']})-th frame)")
    if "evenly" in sampling:
        parts.append(f"{sampling['evenly']} frames spread evenly over the clip")
    if "max_frames" in sampling:
        parts.append(f"at most {sampling['max_frames']} a clip")
    known = {"every_n", "rate_hz", "evenly", "max_frames"}
    parts.extend(f"{k}={v}" for k, v in sorted(sampling.items()) if k not in known)
    return ", ".join(parts)


def _crop_text(crop: dict[str, Any]) -> str:
    text = {"auto": "scan region detected per clip", "none": "full frame"}.get(
        crop["mode"], f"fixed box {crop.get('box')} (x, y, w, h)")
    if crop.get("clips"):
        text += f"; {len(crop['clips'])} clips with their own box"
    return text


def _recipe_section(release: Release, sources: list[str]) -> str:
    recipe = release.lock["recipe"]
    rows = ["| source | sampling | crop |", "|---|---|---|"]
    for name in sources:
        spec = recipe["sources"][name]
        rows.append(f"| {name} | {_sampling_text(spec['sampling'])} | {_crop_text(spec['crop'])} |")
    splits = recipe["splits"]
    split_text = (f"{splits['k']} folds, by video, stratified by class" if splits["kind"] == "folds"
                  else f"hold-out by video, {splits['validation']:.0%} of each class's videos for validation")
    threshold = recipe["dedup"]["threshold"]
    dedup = (f"a kept frame whose mean absolute grey-level difference to the previous kept frame is "
             f"below {threshold} is dropped as a near-duplicate" if threshold > 0 else "no near-duplicate dropping")
    return "\n".join([
        "## Recipe: sampling and cropping",
        "",
        *rows,
        "",
        f"- Splits: {split_text}; seed {recipe['seed']}.",
        f"- Near-duplicates: {dedup} ({release.lock['counts']['duplicates_dropped']} dropped).",
        f"- Storage: PNG (compression level {recipe['output']['png_compress_level']}), grey (mode L) unless "
        f"the clip carries colour; Parquet shards of at most {recipe['output']['shard_max_mb']:g} MB.",
        f"- Every frame records its clip's sha256, its index and time in the clip and its crop box; "
        f"the recipe's sha256 is `{release.lock['recipe_sha256']}`.",
    ])


def _ledger_section(release: Release) -> str:
    lock = release.lock
    failures, excluded = lock.get("failures", []), lock.get("excluded", [])
    sheet = lock.get("sheet", {})
    lines = ["## Failure ledger", "",
             f"{_n(len(failures), 'clip')} failed, {_n(len(excluded), 'file')} left out by the recipe, "
             f"{_n(len(sheet.get('missing_files', [])), 'metadata-sheet row')} naming no file, "
             f"{_n(len(sheet.get('label_overrides', [])), 'label')} taken from the sheet over the file name. "
             "Every entry, with its reason, is in `release.json`."]
    for title, entries, key in (("Failed clips", failures, "stage"), ("Left out by the recipe", excluded, "reason")):
        if not entries:
            continue
        groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for e in entries:
            groups[(e["source"], e[key])].append(e)
        lines += ["", f"{title}:", "", f"| source | {key} | clips | example |", "|---|---|---:|---|"]
        for (source, what), group in sorted(groups.items()):
            example = group[0]
            detail = f"{example['path']}: {example['reason']}" if key == "stage" else example["path"]
            lines.append(f"| {source} | {_cell(what)} | {len(group)} | {_cell(detail)} |")
    return "\n".join(lines)


def _benchmark_section(release: Release) -> str:
    if BENCHMARK not in release.lock.get("attachments", {}):
        return ""
    # card_section is torch-free on purpose: a card must render (and verify) on any machine
    from ..train.card_section import benchmark_markdown

    return benchmark_markdown(json.loads((release.root / BENCHMARK).read_text())).strip()


def _licence_section(sources: list[str]) -> str:
    lines = ["## Licences", "",
             "Frames are derived from the clips of each source; the source's terms apply to them. "
             "The `videos` config carries each clip's licence in its `licence` column.", ""]
    for name in sources:
        src = SOURCES[name]
        note = "" if src.public else " Not public: publish such a release only where its terms allow."
        lines.append(f"- **{name}**: {src.licence}.{note}")
    return "\n".join(lines)


def _citation_section(release: Release, sources: list[str]) -> str:
    keys = ["uscl", *(SOURCES[s].citation for s in sources)]
    if BENCHMARK in release.lock.get("attachments", {}):
        keys.append(SOURCES["pocus"].citation)  # the benchmark evaluates on POCUS
    unique = list(dict.fromkeys(keys))
    blocks = [f"```bibtex\n{CITATIONS[k].bibtex}\n```" for k in unique]
    return "## Citation\n\nThe method this corpus serves (USCL) and the sources of its clips:\n\n" + "\n\n".join(blocks)


def _provenance_section(release: Release) -> str:
    lock = release.lock
    inputs = lock.get("inputs", [])
    env = lock.get("environment", {})
    lines = ["## Provenance", "",
             f"Built from {len(inputs)} clips ({sum(i['bytes'] for i in inputs)} bytes), each named with its "
             f"sha256 in `release.json`, into {len(lock['shards'])} shards. `us4 verify` (or `us4 download`, "
             "which runs it) checks every file against that lock; rebuilding with the same clips, recipe and "
             "library versions gives the same bytes.", "",
             "| library | version |", "|---|---|"]
    lines += [f"| {k} | {_cell(str(v))} |" for k, v in sorted(env.items())]
    return "\n".join(lines)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


# --- contact sheet ----------------------------------------------------------------


def write_contact_sheet(release: Release) -> Path:
    """Draw sample frames of every source into `assets/contact_sheet.png` inside the release.

    Deterministic: the same release gives the same PNG bytes (same Pillow). Register it
    with `us4.release.attach.add_attachment(release, path)`, which also renders the card.
    """
    import io

    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from PIL import Image, ImageDraw, ImageFont, ImageOps

    videos = release.videos(["video_id", "source", "label", "frame_ids"]).to_pylist()
    chosen: dict[str, list[tuple[int, str]]] = {}
    for source in sorted({v["source"] for v in videos}):
        chosen[source] = [(v["frame_ids"][len(v["frame_ids"]) // 2], v["label"])
                          for v in _spread(sorted((v for v in videos if v["source"] == source and v["frame_ids"]),
                                                  key=lambda v: v["video_id"]))]
    wanted = sorted(fid for picks in chosen.values() for fid, _ in picks)
    images: dict[int, bytes] = {}
    for shard in release.shards("frames"):
        part = pq.read_table(release.root / shard["path"], columns=["frame_id", "image"],
                             filters=pc.field("frame_id").isin(wanted))
        for fid, image in zip(part["frame_id"].to_pylist(), part["image"].to_pylist(), strict=True):
            images[fid] = image["bytes"]

    font = ImageFont.load_default()
    name_w = 150
    columns = max(len(picks) for picks in chosen.values())
    sheet = Image.new("L", (name_w + columns * _THUMB, len(chosen) * (_THUMB + _LABEL_H)), 255)
    draw = ImageDraw.Draw(sheet)
    for row, (source, picks) in enumerate(chosen.items()):
        y = row * (_THUMB + _LABEL_H)
        draw.text((6, y + _THUMB // 2), source, fill=0, font=font)
        for col, (fid, label) in enumerate(picks):
            with Image.open(io.BytesIO(images[fid])) as im:
                thumb = ImageOps.contain(im.convert("L"), (_THUMB - 4, _THUMB - 4), Image.Resampling.LANCZOS)
            x = name_w + col * _THUMB
            sheet.paste(thumb, (x + (_THUMB - thumb.width) // 2, y + (_THUMB - thumb.height) // 2))
            draw.text((x + 4, y + _THUMB + 2), label, fill=0, font=font)
    path = release.root / CONTACT_SHEET
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=False, compress_level=9)
    atomic_write(path, buf.getvalue())
    return path


def _spread(videos: list[dict]) -> list[dict]:
    """Up to `_SHEET_PER_SOURCE` videos: the classes share the places in turn, and each
    class's videos are taken evenly across its (sorted) list rather than from its start."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for v in videos:
        by_label[v["label"]].append(v)
    labels = sorted(by_label)
    places = dict.fromkeys(labels, 0)
    while sum(places.values()) < _SHEET_PER_SOURCE and any(places[k] < len(by_label[k]) for k in labels):
        for label in labels:
            if places[label] < len(by_label[label]) and sum(places.values()) < _SHEET_PER_SOURCE:
                places[label] += 1
    return [by_label[k][i * len(by_label[k]) // places[k]] for k in labels for i in range(places[k])]
