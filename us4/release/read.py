"""Open a release folder: its lock and its tables."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ReleaseError

LOCK_NAME = "release.json"
CARD_NAME = "README.md"


def dump_lock(lock: dict) -> bytes:
    """The one serialisation of `release.json`, shared by the build and by attachments."""
    return json.dumps(lock, indent=1, sort_keys=True).encode() + b"\n"


@dataclass(frozen=True)
class Release:
    """A release folder and its lock (`release.json`)."""

    root: Path
    lock: dict

    @property
    def name(self) -> str:
        return self.lock["name"]

    @property
    def version(self) -> str:
        return self.lock["version"]

    def shards(self, config: str) -> list[dict]:
        """Shard entries of one config (`frames` or `videos`), in lock order."""
        return [s for s in self.lock["shards"] if s["config"] == config]

    def table(self, config: str, columns: list[str] | None = None) -> pa.Table:
        """All rows of a config, in lock order (frames: by frame_id; videos: by video_id)."""
        parts = [pq.read_table(self.root / s["path"], columns=columns) for s in self.shards(config)]
        if not parts:
            raise ReleaseError(f"{self.root}: release has no {config!r} shards")
        return pa.concat_tables(parts)

    def frames(self, columns: list[str] | None = None) -> pa.Table:
        return self.table("frames", columns)

    def videos(self, columns: list[str] | None = None) -> pa.Table:
        return self.table("videos", columns)


def open_release(path: str | Path) -> Release:
    """Read a release's lock; raise ReleaseError naming what is missing."""
    root = Path(path)
    if not root.is_dir():
        raise ReleaseError(f"{root}: no such release folder")
    lock_path = root / LOCK_NAME
    if not lock_path.is_file():
        raise ReleaseError(f"{lock_path}: missing; not a us4 release (or its build did not finish)")
    try:
        lock = json.loads(lock_path.read_text())
    except (OSError, ValueError) as exc:
        raise ReleaseError(f"{lock_path}: unreadable lock ({exc})") from exc
    if not isinstance(lock, dict) or not str(lock.get("format", "")).startswith("us4-release/"):
        raise ReleaseError(f"{lock_path}: not a us4 release lock")
    return Release(root, lock)
