"""The resume journal: files per finished clip, each written atomically.

A clip's frames go to two files: `clips/KEY.pixels.arrow` (the PNG bytes and a small
thumbnail per frame) and then `clips/KEY.arrow`, its index (frame index, time, pixel and
perceptual hashes, size per frame, and the clip's facts), written last: the index is the
commit point, so a build killed at any instant resumes from the clips whose index exists.
Planning groups and shards reads indexes only, and thumbnails of candidate frames, so the
process that plans never holds frame bytes. A clip's failure goes to `clips/KEY.fail.json`.
Only a clip's own failures (media errors) are cached: anything else ends the build and is
retried by the next run.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

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
    ("thumb", pa.binary()),  # 64 x 64 grey, for confirming near-duplicates on pixels
])
#: every per-frame column a clip's ingest produces
CLIP_SCHEMA = pa.schema([*INDEX_SCHEMA, *PIXELS_SCHEMA])
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

    def _pixels(self, key: str) -> Path:
        return self.clips / f"{key}.pixels.arrow"

    def _fail(self, key: str) -> Path:
        return self.clips / f"{key}.fail.json"

    def has_result(self, key: str) -> bool:
        return self._index(key).is_file()

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

    def write_result(self, key: str, table: pa.Table, facts: dict) -> None:
        """Pixels first, index last (the commit point)."""
        atomic_write(self._pixels(key), _ipc(table.select(PIXELS_SCHEMA.names)))
        index = table.select(INDEX_SCHEMA.names)
        atomic_write(self._index(key), _ipc(index.replace_schema_metadata(
            {b"us4": json.dumps(facts, sort_keys=True).encode()})))
        self.forget_failure(key)

    def write_failure(self, key: str, failure: Failure) -> None:
        atomic_write(self._fail(key), failure.model_dump_json().encode())

    def read_index(self, key: str) -> tuple[pa.Table, dict]:
        """A clip's per-frame index (no pixels) and its facts: a small file, read whole."""
        reader = self._open(self._index(key), memory_map=False)
        return reader.read_all(), self._facts(reader, key)

    def read_facts(self, key: str) -> dict:
        """The clip's facts alone."""
        return self._facts(self._open(self._index(key), memory_map=False), key)

    def read_pixels(self, key: str, column: str) -> pa.Array:
        """One column of a clip's pixels file (`png` or `thumb`), memory-mapped: only the
        values used are read."""
        return self._open(self._pixels(key), memory_map=True).read_all().column(column).combine_chunks()

    def read_result(self, key: str) -> tuple[pa.Table, dict]:
        """Everything of a clip: its index and pixels as one table (CLIP_SCHEMA), and its facts."""
        index, facts = self.read_index(key)
        pixels = self._open(self._pixels(key), memory_map=True).read_all()
        if pixels.num_rows != index.num_rows:
            raise CacheError(f"{self._pixels(key)}: {pixels.num_rows} frames, its index {index.num_rows}; "
                             "delete the clip's files and build again")
        return pa.table([*index.columns, *pixels.columns], schema=CLIP_SCHEMA), facts

    def _open(self, path: Path, memory_map: bool) -> ipc.RecordBatchFileReader:
        try:
            return ipc.open_file(pa.memory_map(str(path)) if memory_map else pa.OSFile(str(path)))
        except (OSError, pa.ArrowInvalid) as exc:
            raise CacheError(f"{path}: damaged build cache ({exc}); delete it and build again") from None

    def _facts(self, reader: ipc.RecordBatchFileReader, key: str) -> dict:
        try:
            return json.loads(reader.schema.metadata[b"us4"])
        except (KeyError, TypeError, ValueError):
            raise CacheError(f"{self._index(key)}: build cache without clip facts; delete it and build again") from None


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
