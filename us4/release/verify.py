"""Check a release's files against its lock, and a lock against a published manifest."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from ..contract.layout import LOCAL_STATE
from ..contract.lock import CARD_NAME, FORMAT_V1, LOCK_NAME, Lock
from ..escape import one_line
from ..hashing import sha256_file
from ..media.gate import ours
from ..recipe import Recipe
from .diff import ReleaseDiff, diff_locks
from .read import Release
from .rows import check_rows


@dataclass
class Verification:
    """Problems (a file or a row differs from the lock) and notes (what was not or could not be checked)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: int = 0  # files whose hash was checked
    frames_decoded: int = 0  # with `deep`: frames whose PNG was decoded and whose pixels were hashed
    #: with `deep` and `pixels`: the pixel hash of each frame decoded, by the row's video_id and frame_index
    pixels: dict[str, dict[int, str]] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _footer_rows(path: Path) -> int:
    """The row count a Parquet file's footer states."""
    return pq.ParquetFile(path).metadata.num_rows


def verify_release(release: Release, *, expect: Collection[str] | None = None, deep: bool = False,
                   pixels: bool = False) -> Verification:
    """Recompute every hash and row count the lock names, and compare every row of the
    shards with the lock's clips (ids, labels, splits, folds, groups, frame lists and pixel
    hashes, where the rows lie), reading only the small columns; `deep` also decodes every
    frame's PNG and hashes its pixels (`pixels` keeps those hashes in the result).

    The card and croissant.json are checked by the sha256 the lock records for them,
    never by rendering them again, so a release verifies with any later us4. `expect`
    names the files that must be here (a download of some sources or splits:
    `Lock.files(sources, splits)`); shards outside it may be absent, and every file that
    is here is checked against the full lock. Any file the lock does not name is a problem.
    """
    out = Verification()
    lock = release.lock
    absent = 0
    intact: list[int] = []  # shards whose bytes are the lock's: their rows are compared with its clips
    required = set(expect) if expect is not None else None
    for index, shard in enumerate(lock.shards):
        path = release.path(shard.path)
        if not path.is_file():
            if required is not None and shard.path not in required:
                absent += 1
            else:
                out.problems.append(f"{shard.path}: missing")
            continue
        out.checked += 1
        size = path.stat().st_size
        if size != shard.bytes:
            out.problems.append(f"{shard.path}: {size} bytes, lock says {shard.bytes} (truncated or replaced)")
            continue
        digest = sha256_file(path)
        if digest != shard.sha256:
            out.problems.append(f"{shard.path}: sha256 {digest[:12]}… differs from lock {shard.sha256[:12]}… (modified)")
            continue
        try:
            rows = _footer_rows(path)
        except Exception as exc:  # noqa: BLE001 - any Parquet failure is a finding here, but not a failing disk
            if ours(exc):
                raise
            out.problems.append(f"{shard.path}: unreadable Parquet ({exc})")
            continue
        if rows != shard.rows:
            out.problems.append(f"{shard.path}: {rows} rows, lock says {shard.rows}")
            continue
        intact.append(index)
    rows_check = check_rows(release, intact, deep=deep, keep=pixels)
    out.problems += rows_check.problems
    out.frames_decoded, out.pixels = rows_check.frames_decoded, rows_check.pixels
    if absent:
        out.notes.append(f"{absent} of {len(lock.shards)} shards are not here (a partial download); "
                         "every file that is here was checked against the full lock")
    for name, digest in sorted({**lock.attachments, **{k: g.sha256 for k, g in lock.generated.items()}}.items()):
        path = release.path(name)
        if not path.is_file():
            out.problems.append(f"{name}: missing")
            continue
        out.checked += 1
        if sha256_file(path) != digest:
            what = " (hand-edited or stale)" if name in lock.generated else " (modified)"
            out.problems.append(f"{name}: sha256 differs from the one {LOCK_NAME} records{what}")
    if lock.source_format == FORMAT_V1:
        present = (release.root / CARD_NAME).is_file()
        out.notes.append(f"{CARD_NAME}: not checked: the lock is format {FORMAT_V1} (us4 0.1.0), which records no "
                         f"hash of the card{'' if present else ' (and the card is missing)'}; every shard and "
                         "attachment was checked")
    listed = set(lock.files())
    out.problems += [f"{name}: not in the lock (stray file)" for name in files_here(release.root) if name not in listed]
    return out


def files_here(root: Path) -> list[str]:
    """Every file under a release folder, by its path there, without entering the local state
    folders (a build's resume cache holds every clip's pixels)."""
    names = []
    for folder, dirs, files in os.walk(root):
        if folder == str(root):
            dirs[:] = [d for d in dirs if d not in LOCAL_STATE]
        base = Path(folder).relative_to(root)
        names += [(base / f).as_posix() for f in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]]
    return sorted(names)


# --- a rebuild against a published manifest -----------------------------------------

REPRODUCED = "reproduced"
REPRODUCED_PLUS = "reproduced plus additions"
DIFFERS = "differs"


@dataclass
class Reproduction:
    """How a rebuilt release's lock compares with a published manifest (a lock).

    "Same bytes" is decided on what the release holds (recipe, clips, labels, splits,
    frame pixels, shard hashes); the environment (library versions, Python, platform)
    is reported for information and never decides the verdict. The clip-by-clip part is
    `us4 diff`'s comparison, from the manifest to this build."""

    diff: ReleaseDiff
    manifest_clips: int
    manifest_frames: int
    verdict: str = REPRODUCED
    recipe: str | None = None  # how the recipes differ, if they do
    failed_here: list[str] = field(default_factory=list)  # manifest clips that failed in this build
    new_failures: list[str] = field(default_factory=list)  # files the manifest never had, failed here
    shards: list[str] = field(default_factory=list)
    #: (here, in the manifest) when the frames were PNG-encoded by other encoders: then shards
    #: whose frames all have the manifest's pixels differ in bytes alone, and that is no difference
    encoders: tuple[str, str] | None = None
    environment: list[str] = field(default_factory=list)  # information only
    unverified: int = 0  # problems of the release against its own lock: then it is the manifest's in nothing

    def counts(self) -> dict[str, int]:
        d = self.diff
        return {"clips added": len(d.clips_added), "clips removed": len(d.clips_removed),
                "clips relabelled": len(d.labels_changed), "clips replaced by another file": len(d.clips_replaced),
                "clips that moved split": len(d.moved), "frames with other pixels": sum(n for _, n, _ in d.pixels),
                "new files that failed here": len(self.new_failures), "shards that differ": len(self.shards)}

    def lines(self) -> list[str]:
        d = self.diff
        out = [f"verdict: {self.verdict}: {self._summary()}"]
        out += [f"  {name}: {n}" for name, n in self.counts().items()]
        if self.recipe:
            out.append(f"  recipe: {self.recipe}")
        out += [f"  environment (information only): {e}" for e in self.environment]
        out += [f"  note: {n}" for n in d.notes]
        details = ([f"  + {c.video_id} ({c.label}, {c.split}, {c.frames} frames)" for c in d.clips_added]
                   + [f"  - {c.video_id} ({c.label}, {c.split}, {c.frames} frames)" for c in d.clips_removed]
                   + [f"  ! {v}: built in the manifest, failed here" for v in self.failed_here]
                   + [f"  ! {v}: failed here (not in the manifest)" for v in self.new_failures]
                   + [f"  ~ {v}: another file under the same id" for v in d.clips_replaced]
                   + [f"  label {v}: {a} -> {b}" for v, a, b in d.labels_changed]
                   + [f"  split {v}: {a} -> {b}" for v, a, b in d.moved]
                   + [f"  pixels {v}: {n} of {m} frames differ" for v, n, m in d.pixels]
                   + [f"  shard {s}" for s in self.shards])
        # every value here comes from a lock, a manifest perhaps from anywhere: shown, never obeyed
        return [one_line(line) for line in out + (["details:", *details] if details else [])]

    def _summary(self) -> str:
        d = self.diff
        if self.unverified:
            return (f"the release does not match its own {LOCK_NAME} ({self.unverified} problems, listed above); "
                    "below, its decoded pixels and its lock's clips against the manifest")
        if self.verdict == REPRODUCED and self.shards:
            here, there = self.encoders or ("", "")
            return (f"every one of the manifest's {self.manifest_clips} clips and {self.manifest_frames} frames is "
                    f"here with identical pixels, labels and splits; {len(self.shards)} shards differ in bytes "
                    f"alone, the frames being PNG-encoded by {here} here and by {there} in the manifest")
        if self.verdict == REPRODUCED:
            return (f"byte-identical: every one of the manifest's {self.manifest_clips} clips and "
                    f"{self.manifest_frames} frames, and every shard")
        if self.verdict == REPRODUCED_PLUS:
            return (f"every one of the manifest's {self.manifest_clips} clips and {self.manifest_frames} frames is "
                    f"here with identical pixels, labels and splits; {len(d.clips_added)} clips were added"
                    + (f" and {len(self.new_failures)} new files failed" if self.new_failures else ""))
        hint = (" (build with --previous MANIFEST to keep the manifest's splits when clips are added)"
                if d.moved and d.clips_added else "")
        only_bytes = (" only the encoded bytes differ: every frame's pixels match (PNG/zlib or Parquet writer "
                      "version)" if self.shards and not any(list(self.counts().values())[:-1]) and not self.recipe
                      else "")
        return f"the release is not the manifest's{only_bytes}{hint}"


def reproduce(release: Release, manifest: Lock) -> tuple[Verification, Reproduction]:
    """A rebuilt release against a published manifest, pixels first: every frame's PNG is
    decoded and hashed here, and those hashes, never the ones the release's lock claims,
    are compared with the manifest's. A release that does not verify differs."""
    verification = verify_release(release, deep=True, pixels=True)
    decoded = verification.pixels or {}
    unseen = "not decoded"  # a frame the lock lists whose row was not found: equal to no hash
    observed = release.lock.model_copy(update={"clips": [
        clip.model_copy(update={"frame_sha256": [decoded.get(clip.video_id, {}).get(i, unseen)
                                                 for i in clip.frame_index]})
        for clip in release.lock.clips]})
    reproduction = compare_to_manifest(observed, manifest)
    reproduction.unverified = len(verification.problems)
    reproduction.verdict = _verdict(reproduction)
    return verification, reproduction


def compare_to_manifest(lock: Lock, manifest: Lock) -> Reproduction:
    """What differs between a rebuilt release's lock and a published manifest, taking the
    lock's pixel hashes as given (`reproduce` gives it the hashes of decoded pixels)."""
    out = Reproduction(diff_locks(manifest, lock), manifest_clips=len(manifest.clips),
                       manifest_frames=manifest.counts.frames)
    here, there = _stated(lock.recipe), _stated(manifest.recipe)
    if here != there:
        keys = sorted(k for k in set(here) | set(there) if here.get(k) != there.get(k))
        out.recipe = (f"differs in {', '.join(keys)} (sha256 {lock.recipe_sha256[:12]}… here, "
                      f"{manifest.recipe_sha256[:12]}… there)")
    failed = {f.video_id for f in lock.failures}
    out.failed_here = [c.video_id for c in out.diff.clips_removed if c.video_id in failed]
    known = {c.video_id for c in manifest.clips} | {f.video_id for f in manifest.failures}
    out.new_failures = sorted(v for v in failed if v not in known)
    shards_a = {s.path: s for s in lock.shards}
    shards_b = {s.path: s for s in manifest.shards}
    configs = set()  # of the shards that differ
    for path in sorted(set(shards_a) | set(shards_b)):
        a, b = shards_a.get(path), shards_b.get(path)
        if a is None or b is None or (a.sha256, a.rows) != (b.sha256, b.rows):
            out.shards.append(path + ("" if a and b else " (missing here)" if a is None else " (not in the manifest)"))
            configs.add((a or b).config)
    env_a = {**lock.environment.bytes, **lock.environment.host}
    env_b = {**manifest.environment.bytes, **manifest.environment.host}
    out.environment = [f"{k}: {env_a.get(k, 'absent')} here, {env_b.get(k, 'absent')} in the manifest"
                       for k in sorted(set(env_a) | set(env_b)) if env_a.get(k) != env_b.get(k)]
    encoders = tuple(_png_encoder(env) for env in (lock.environment.bytes, manifest.environment.bytes))
    if encoders[0] != encoders[1] and configs <= {"frames"}:  # an encoder writes frames shards alone
        out.encoders = encoders
    out.verdict = _verdict(out)
    return out


def _stated(recipe: Recipe) -> dict:
    """A lock's recipe with every default this us4 knows stated: a key added since the manifest
    was published (its default then implied) is not a difference in what was done. Nor is a
    source's fetch pin: it says where the raw files can be had, and the clips' hashes decide."""
    unpinned = {name: dataclasses.replace(spec, fetch=None) for name, spec in recipe.sources.items()}
    return dataclasses.replace(recipe, sources=unpinned).to_dict()


def _png_encoder(environment: dict[str, str]) -> str:
    """Who encoded a lock's frames: us4 0.3.x and earlier had Pillow do it and recorded no `png`."""
    return environment.get("png") or f"Pillow {environment.get('pillow', '(version not recorded)')} " \
                                      f"(zlib {environment.get('zlib', 'version not recorded')})"


def _verdict(r: Reproduction) -> str:
    if r.unverified:
        return DIFFERS
    counts = r.counts()
    core = ("clips removed", "clips relabelled", "clips replaced by another file", "clips that moved split",
            "frames with other pixels")
    if r.recipe or any(counts[k] for k in core):
        return DIFFERS
    if r.diff.clips_added or r.new_failures:
        return REPRODUCED_PLUS
    # every frame has the manifest's pixels (above): other shard bytes are another encoder's, or a difference
    return DIFFERS if r.shards and r.encoders is None else REPRODUCED
