"""The resume journal: one file per finished clip, written atomically.

A clip's frames (PNG bytes, hashes and a small thumbnail for the near-duplicate
test) go to `clips/KEY.arrow`, a clip's failure to `clips/KEY.fail.json`. A file
either exists whole or not at all, so a build killed at any instant resumes from the
clips already on disk. Only a clip's own failures (media errors) are cached: anything
else ends the build and is retried by the next run.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from ..contract.lock import Failure
from ..errors import CacheError
from ..files import atomic_write

CLIP_SCHEMA = pa.schema([
    ("frame_index", pa.int32()),
    ("pts", pa.float64()),
    ("png", pa.binary()),
    ("frame_sha256", pa.string()),
    ("phash", pa.uint64()),
    ("thumb", pa.binary()),  # 64 x 64 grey, for confirming near-duplicates on pixels
    ("width", pa.int32()),
    ("height", pa.int32()),
])


class ClipCache:
    def __init__(self, root: Path):
        self.root = root
        self.clips = root / "clips"
        self.clips.mkdir(parents=True, exist_ok=True)

    def remove_partial_writes(self) -> None:
        """Drop temporary files a killed run left; only while no worker is writing."""
        for stale in self.clips.glob(".*.tmp"):
            stale.unlink()

    def _ok(self, key: str) -> Path:
        return self.clips / f"{key}.arrow"

    def _fail(self, key: str) -> Path:
        return self.clips / f"{key}.fail.json"

    def has_result(self, key: str) -> bool:
        return self._ok(key).is_file()

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
        table = table.replace_schema_metadata({b"us4": json.dumps(facts, sort_keys=True).encode()})
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        atomic_write(self._ok(key), sink.getvalue().to_pybytes())
        self.forget_failure(key)

    def write_failure(self, key: str, failure: Failure) -> None:
        atomic_write(self._fail(key), failure.model_dump_json().encode())

    def read_result(self, key: str, columns: list[str] | None = None) -> tuple[pa.Table, dict]:
        """A clip's frames (memory-mapped: columns not asked for are never read) and facts."""
        reader = self._open(key)
        table = reader.read_all()
        return (table.select(columns) if columns else table), self._facts(reader, key)

    def read_facts(self, key: str) -> dict:
        """The clip's facts alone: reads the file's footer, not its frames."""
        return self._facts(self._open(key), key)

    def _open(self, key: str) -> ipc.RecordBatchFileReader:
        try:
            return ipc.open_file(pa.memory_map(str(self._ok(key))))
        except (OSError, pa.ArrowInvalid) as exc:
            raise CacheError(f"{self._ok(key)}: damaged build cache ({exc}); delete it and build again") from None

    def _facts(self, reader: ipc.RecordBatchFileReader, key: str) -> dict:
        try:
            return json.loads(reader.schema.metadata[b"us4"])
        except (KeyError, TypeError, ValueError):
            raise CacheError(f"{self._ok(key)}: build cache without clip facts; delete it and build again") from None
