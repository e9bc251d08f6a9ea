"""The resume journal: files per finished clip, each written atomically.

A clip's frames go to two files: `clips/KEY.pixels.arrow` (the PNG bytes and, where the
recipe groups near-duplicate frames, a small thumbnail per frame) and then `clips/KEY.arrow`,
its index (frame index, time, pixel and perceptual hashes, size per frame, and the clip's
facts), written last: the index is the commit point, so a build killed at any instant resumes
from the clips whose index exists.
Planning groups and shards reads indexes only, and thumbnails of candidate frames, so the
process that plans never holds frame bytes. A clip's failure goes to `clips/KEY.fail.json`.
Only a clip's own failures (media errors) are cached: anything else ends the build and is
retried by the next run.

A clip's facts (`ClipFacts`) are validated when written and when read. An index whose facts
are of another layout (written by a us4 whose ingest made other facts of the same clip, under
the same key) is stale: it reads as absent, and the clip is ingested again. An index that is
no Arrow file, or whose facts are not JSON, is damaged: the cache is written atomically, so
that is the disk's doing or someone's edit, which a user must hear of (a `CacheError`), not a
rebuild that hides it. A read the disk fails (EIO) is ours: the OSError goes on, naming the
file, and the build stops with the one line a failing disk gives (`files.storage_error`).
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.ipc as ipc
from pydantic import BaseModel, ConfigDict, JsonValue, NonNegativeInt, ValidationError

from ..contract.lock import Failure
from ..errors import CacheError
from ..files import atomic_write

INDEX_SCHEMA = pa.schema([
    ("frame_index", pa.int32()),
    ("pts", pa.float64()),
    ("frame_sha256", pa.string()),
    ("phash", pa.uint64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
])
PIXELS_SCHEMA = pa.schema([
    ("png", pa.binary()),
    ("thumb", pa.binary()),  # 64 x 64 grey, for confirming near-duplicates on pixels; null where no
    # recipe's rule reads it (ClipParams.thumbnails)
])
#: every per-frame column a clip's ingest produces
CLIP_SCHEMA = pa.schema([*INDEX_SCHEMA, *PIXELS_SCHEMA])


class _Facts(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ClipDescription(_Facts):
    """What a clip declares about itself that may be published (`media.ClipInfo` without its path,
    regions and decoding details)."""

    container: str
    codec: str
    fps: float
    n_frames: NonNegativeInt
    duration: float
    width: NonNegativeInt
    height: NonNegativeInt
    rotation: int
    kind: str
    transfer_syntax: str | None
    timing: str
    attributes: dict[str, JsonValue]  # allow-listed DICOM values only


class TextFacts(_Facts):
    """Burned-in text in a clip: boxes in the stored image's coordinates; never the text read."""

    checked: bool  # a detector looked
    found: bool | None  # boxes inside the crop, or the file declares burned-in text; None: unchecked, undeclared
    boxes: tuple[tuple[int, int, int, int], ...]
    burned_in: bool | None  # DICOM's Burned In Annotation; None where the file does not say
    # masked/warned: boxes found inside the crop; declared: the file says text is burned in, but none lies
    # inside the crop (cropping removed it); none: nothing found
    action: Literal["none", "declared", "masked", "warned"]


class ClipFacts(_Facts):
    """What ingest learnt of one clip, beside its frames: what the shards, the lock and the build's
    warnings say of it."""

    info: ClipDescription
    crop_box: tuple[int, int, int, int]  # x, y, w, h in the decoded frame
    crop_fallback: bool  # no scan region was found: the full frame is kept
    colour: bool
    spacing_mm: tuple[float, float] | None  # x, y, where the scanner says
    text: TextFacts
    n_duplicates_dropped: NonNegativeInt
    views_left_out: NonNegativeInt  # the other views of a multi-view file, when the recipe keeps the largest
    region_problems: tuple[str, ...]  # declared scanner regions not used, and why
    png_bytes: NonNegativeInt
    rows: NonNegativeInt


#: in the work folder, beside the cache: the release being written, swapped into place when complete
STAGING = "staging"


def remove_partial_writes(work: Path) -> None:
    """Drop the temporary files (`.NAME.*.tmp`) a killed or failed run left in the cache and
    the staged release; only while no worker is writing."""
    for folder in (work / "clips", work / STAGING):
        for stale in folder.rglob(".*.tmp"):
            stale.unlink(missing_ok=True)


class ClipCache:
    def __init__(self, root: Path):
        self.root = root
        self.clips = root / "clips"
        self.clips.mkdir(parents=True, exist_ok=True)

    def _index(self, key: str) -> Path:
        return self.clips / f"{key}.arrow"

    def pixels_path(self, key: str) -> Path:
        return self.clips / f"{key}.pixels.arrow"

    def _fail(self, key: str) -> Path:
        return self.clips / f"{key}.fail.json"

    def has_result(self, key: str) -> bool:
        """Whether the clip's frames and facts of this us4's layout are here (a stale entry is not)."""
        return self._index(key).is_file() and self._facts(self._read_index(key), key) is not None

    def failure(self, key: str) -> Failure | None:
        path = self._fail(key)
        if not path.is_file():
            return None
        try:
            return Failure.model_validate_json(path.read_bytes())
        except ValueError:
            raise CacheError(f"{path}: damaged build cache; delete it and build again") from None

    def forget_failure(self, key: str) -> None:
        self._fail(key).unlink(missing_ok=True)

    def write_result(self, key: str, table: pa.Table, facts: ClipFacts) -> None:
        """Pixels first, index last (the commit point)."""
        stored = json.dumps(facts.model_dump(mode="json"), sort_keys=True).encode()
        ClipFacts.model_validate_json(stored)  # read back as a resumed build will: facts that do not are our bug
        atomic_write(self.pixels_path(key), _ipc(table.select(PIXELS_SCHEMA.names)))
        index = table.select(INDEX_SCHEMA.names)
        atomic_write(self._index(key), _ipc(index.replace_schema_metadata({b"us4": stored})))
        self.forget_failure(key)

    def write_failure(self, key: str, failure: Failure) -> None:
        atomic_write(self._fail(key), failure.model_dump_json().encode())

    def read_index(self, key: str) -> tuple[pa.Table, ClipFacts]:
        """A clip's per-frame index (no pixels) and its facts: a small file, read whole."""
        index = self._read_index(key)
        return index, self._current_facts(index, key)

    def read_facts(self, key: str) -> ClipFacts:
        """The clip's facts alone."""
        return self._current_facts(self._read_index(key), key)

    def read_pixels(self, key: str, column: str) -> pa.Array:
        """One column of a clip's pixels file (`png` or `thumb`), memory-mapped: only the
        values used are read."""
        return self._read(self.pixels_path(key), memory_map=True).column(column).combine_chunks()

    def read_result(self, key: str) -> tuple[pa.Table, ClipFacts]:
        """Everything of a clip: its index and pixels as one table (CLIP_SCHEMA), and its facts."""
        index, facts = self.read_index(key)
        pixels = self._read(self.pixels_path(key), memory_map=True)
        if pixels.num_rows != index.num_rows:
            raise CacheError(f"{self.pixels_path(key)}: {pixels.num_rows} frames, its index {index.num_rows}; "
                             "delete the clip's files and build again")
        return pa.table([*index.columns, *pixels.columns], schema=CLIP_SCHEMA), facts

    def _read_index(self, key: str) -> pa.Table:
        return self._read(self._index(key), memory_map=False)

    def _read(self, path: Path, memory_map: bool) -> pa.Table:
        with _reading(path):
            return ipc.open_file(_source(path, memory_map)).read_all()

    def _facts(self, index: pa.Table, key: str) -> ClipFacts | None:
        """The facts an index holds; None where they are of another layout (stale)."""
        raw = (index.schema.metadata or {}).get(b"us4")
        if raw is None:
            return None
        try:
            return ClipFacts.model_validate_json(raw)
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                raise CacheError(f"{self._index(key)}: damaged build cache (its clip facts are not JSON); delete "
                                 "it and build again") from None
            return None

    def _current_facts(self, index: pa.Table, key: str) -> ClipFacts:
        facts = self._facts(index, key)
        if facts is None:  # has_result said it was current: the file changed since
            raise CacheError(f"{self._index(key)}: clip facts of another us4's layout; build again to ingest "
                             "the clip again")
        return facts


def _source(path: Path, memory_map: bool) -> pa.NativeFile:
    """The cache file at `path`, opened for Arrow: mapped, or read on demand."""
    return pa.memory_map(str(path)) if memory_map else pa.OSFile(str(path))


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Around reading a cache file: bytes that are no Arrow file, or a part of an entry that is
    gone, are a damaged cache; any other OSError (a failing disk: EIO) is ours and goes on,
    naming the file (Arrow's own errors name none)."""
    try:
        yield
    except (pa.ArrowInvalid, FileNotFoundError) as exc:
        raise CacheError(f"{path}: damaged build cache ({exc}); delete it and build again") from None
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
