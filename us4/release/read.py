"""Open a release folder: its typed lock and its tables."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..contract.lock import CARD_NAME, LOCK_NAME, Lock, Shard, read_lock
from ..errors import ReleaseError
from ..paths import inside

__all__ = ["CARD_NAME", "LOCK_NAME", "Release", "locate_lock", "open_release", "read_lock_ref"]

MANIFESTS_PACKAGE = "us4.manifests"


@dataclass(frozen=True)
class Release:
    """A release folder and its lock (`release.json`)."""

    root: Path
    lock: Lock

    @property
    def name(self) -> str:
        return self.lock.name

    @property
    def version(self) -> str:
        return self.lock.version

    def path(self, rel: str) -> Path:
        """A file of the release by its path in the lock, proven to lie inside the folder."""
        return inside(self.root, rel)

    def shards(self, config: str, *, present_only: bool = False) -> list[Shard]:
        """Shard entries of one config (`frames` or `videos`), in lock order; with
        `present_only`, those whose file is here (a partial download holds some)."""
        shards = self.lock.shards_of(config)
        return [s for s in shards if self.path(s.path).is_file()] if present_only else shards

    def table(self, config: str, columns: list[str] | None = None) -> pa.Table:
        """All rows of a config, in lock order (frames: by frame_id; videos: by source, split, video_id)."""
        # ParquetFile, not pq.read_table: that imports pyarrow.dataset (0.33 s) for a plain read
        parts = [pq.ParquetFile(self.path(s.path)).read(columns=columns) for s in self.shards(config, present_only=True)]
        if not parts:
            raise ReleaseError(f"{self.root}: release has no {config!r} shards here")
        return pa.concat_tables(parts)

    def images(self, frame_ids: Iterable[int]) -> dict[int, bytes]:
        """The stored PNG bytes of some frames, by frame_id, read only from the shards here and,
        in each, only from the row groups that hold one of them."""
        wanted = np.unique(np.fromiter(frame_ids, dtype=np.int64))
        keep = set(wanted.tolist())  # `in` on the array would scan it for every row read
        out: dict[int, bytes] = {}
        for shard in self.shards("frames", present_only=True) if len(wanted) else ():
            file = pq.ParquetFile(self.path(shard.path))
            ids = file.read(columns=["frame_id"]).column("frame_id").to_numpy()
            starts = np.cumsum([0] + [file.metadata.row_group(k).num_rows for k in range(file.num_row_groups)])
            for group in np.unique(np.searchsorted(starts, np.flatnonzero(np.isin(ids, wanted)), side="right") - 1):
                part = file.read_row_group(int(group), columns=["frame_id", "image"])
                out.update({fid: image["bytes"] for fid, image in zip(part["frame_id"].to_pylist(),
                                                                     part["image"].to_pylist(), strict=True)
                            if fid in keep})
        return out

    def frames(self, columns: list[str] | None = None) -> pa.Table:
        return self.table("frames", columns)

    def videos(self, columns: list[str] | None = None) -> pa.Table:
        return self.table("videos", columns)


def open_release(path: str | Path) -> Release:
    """Read and validate a release's lock; ReleaseError (LockError) names what is wrong."""
    root = Path(path)
    if not root.is_dir():
        raise ReleaseError(f"{root}: no such release folder")
    lock_path = root / LOCK_NAME
    if not lock_path.is_file():
        raise ReleaseError(f"{lock_path}: missing; not a us4 release (or its build did not finish)")
    try:
        data = lock_path.read_bytes()
    except OSError as exc:
        raise ReleaseError(f"{lock_path}: unreadable lock ({exc})") from exc
    return Release(root, read_lock(data, str(lock_path)))


def locate_lock(ref: str | Path, base: Path | None = None) -> Path | None:
    """The lock file `ref` names: a release folder, a lock (manifest) file, or the name of a
    manifest us4 ships (`pocus-1.0.0`); a relative path is also tried against `base`.
    None when it names none of these."""
    ref = Path(ref)
    for path in [ref] + ([base / ref] if base is not None and not ref.is_absolute() else []):
        if path.is_dir() and (path / LOCK_NAME).is_file():
            return path / LOCK_NAME
        if path.is_file():
            return path
    if "/" not in str(ref):
        from importlib.resources import files

        name = str(ref) if str(ref).endswith(".json") else f"{ref}.json"
        packaged = files(MANIFESTS_PACKAGE) / name
        if packaged.is_file():
            return Path(str(packaged))
    return None


def read_lock_ref(ref: str | Path, base: Path | None = None) -> tuple[Lock, Release | None]:
    """The lock `ref` names (see `locate_lock`), and the release when `ref` is a release folder."""
    path = locate_lock(ref, base)
    if path is None:
        raise ReleaseError(f"{ref}: no such release folder, lock file, or manifest us4 ships")
    if path.name == LOCK_NAME and (path.parent / "data").is_dir():
        release = open_release(path.parent)
        return release.lock, release
    try:
        return read_lock(path.read_bytes(), str(path)), None
    except OSError as exc:
        raise ReleaseError(f"{path}: unreadable lock ({exc})") from None
