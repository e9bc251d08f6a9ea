"""A verified release as PyTorch datasets: frames for training a classifier, clips for video-aware sampling.

    >>> import torch, us4.torch                                            # doctest: +SKIP
    >>> ds = us4.torch.frames_dataset("releases/pocus", size=224)          # doctest: +SKIP
    >>> next(iter(torch.utils.data.DataLoader(ds, batch_size=32, num_workers=2)))["image"].shape  # doctest: +SKIP
    torch.Size([32, 1, 224, 224])

Images are resized and scaled as the benchmark's trainer does (`us4.train.data.decode_png`: grey,
squashed to size x size, bilinear; then [0, 1]); the trainer then normalises with
`us4.train.augment.normalise` ((x - 0.5) / 0.25). The datasets hold a few integers per clip and
the shards' paths: each DataLoader worker opens the Parquet files itself and reads one row group
(100 frames) at a time, so memory does not grow with the release. A shuffled sampler reads a row
group per item; sampling clips (`videos_dataset`) or consecutive frames reads each row group once.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch  # absolute: the real PyTorch, not this module
from torch.utils.data import Dataset

from .hub.load import open_verified
from .train.data import ReleaseIndex, RowGroupReader, decode_png, release_index

__all__ = ["FramesDataset", "VideosDataset", "frames_dataset", "videos_dataset"]


class _ReleaseDataset(Dataset):
    def __init__(self, index: ReleaseIndex, size: int):
        if not 8 <= size <= 4096:
            raise ValueError(f"size {size}: images are resized to size x size, 8 to 4096")
        self.index, self.size = index, size
        self.reader = RowGroupReader(index.shards)

    @property
    def labels(self) -> np.ndarray:
        """The class index of each clip (-1: none), for samplers that balance classes."""
        return self.index.label_ids

    def _image(self, shard: int, row: int) -> torch.Tensor:
        # scaled in numpy: torch ops on one small image cost more in thread hand-offs than in work
        scaled = decode_png(self.reader.png(shard, row), self.size).astype(np.float32)
        scaled /= 255
        return torch.from_numpy(scaled[None])


class FramesDataset(_ReleaseDataset):
    """One item a frame: {image: float 1 x size x size in [0, 1], label: int, video_id: str, frame_id: int}."""

    def __len__(self) -> int:
        return self.index.frames

    def __getitem__(self, item: int) -> dict:
        clip, shard, row, frame_id = self.index.where(int(item))
        return {"image": self._image(shard, row), "label": int(self.index.label_ids[clip]),
                "video_id": self.index.video_ids[clip], "frame_id": frame_id}

    @property
    def clip_of_frame(self) -> np.ndarray:
        """The clip (index in `labels`) of each item: groups frames by video for a sampler."""
        return np.repeat(np.arange(len(self.index)), np.diff(self.index.first))


class VideosDataset(_ReleaseDataset):
    """One item a clip: {images: float n x 1 x size x size, label: int, video_id: str, frame_ids: int64 n},
    its frames in order (`max_frames`: that many, spread evenly over the clip)."""

    def __init__(self, index: ReleaseIndex, size: int, max_frames: int | None = None):
        super().__init__(index, size)
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames {max_frames}: at least 1")
        self.max_frames = max_frames

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, clip: int) -> dict:
        if not 0 <= clip < len(self.index):
            raise IndexError(f"clip {clip} of {len(self.index)}")
        first, n = int(self.index.first[clip]), int(self.index.first[clip + 1] - self.index.first[clip])
        offsets = np.arange(n)
        if self.max_frames is not None and n > self.max_frames:
            offsets = np.linspace(0, n - 1, self.max_frames).round().astype(np.int64)
        where = [self.index.where(first + int(k)) for k in offsets]
        return {"images": torch.stack([self._image(shard, row) for _, shard, row, _ in where]),
                "label": int(self.index.label_ids[clip]), "video_id": self.index.video_ids[clip],
                "frame_ids": torch.tensor([fid for *_, fid in where], dtype=torch.int64)}


def _index(release_or_repo: str | os.PathLike[str], split: str | None, sources: Sequence[str] | None,
           revision: str | None, endpoint: str | None) -> ReleaseIndex:
    release = open_verified(release_or_repo, revision, sources=list(sources) if sources else None, endpoint=endpoint)
    return release_index(release, split, list(sources) if sources else None)


def frames_dataset(release_or_repo: str | os.PathLike[str], size: int = 224, split: str | None = None,
                   sources: Sequence[str] | None = None, revision: str | None = None,
                   endpoint: str | None = None) -> FramesDataset:
    """The frames of a release folder, or of a Hub repository `ORG/NAME` at `revision` (downloaded
    once per commit into `$US4_CACHE`, only the shards of `sources`), verified against its lock
    first; `split` and `sources` keep some of its clips. `endpoint` names a mirror (default
    $HF_ENDPOINT, else the Hub)."""
    return FramesDataset(_index(release_or_repo, split, sources, revision, endpoint), size)


def videos_dataset(release_or_repo: str | os.PathLike[str], size: int = 224, split: str | None = None,
                   sources: Sequence[str] | None = None, revision: str | None = None,
                   endpoint: str | None = None, max_frames: int | None = None) -> VideosDataset:
    """The clips of a release, one item each with its frames (as `frames_dataset` reads them)."""
    return VideosDataset(_index(release_or_repo, split, sources, revision, endpoint), size, max_frames)
