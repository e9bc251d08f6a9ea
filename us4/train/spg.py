"""Sample pair generation (SPG), the USCL way, as pure functions on index arrays and tensors.

Each batch item is one video. From it come three frame rows (a, b, c) and a weight lam;
after each frame is augmented once, the two views are

    view1 = lam * a + (1 - lam) * b        view2 = lam * c + (1 - lam) * b

so b is the anchor both views share. The reference's special cases fit the same form:
a 2-frame video gives its two frames unmixed (a, c = the two frames, lam = 1), a 1-frame
video the same frame twice (a = c, lam = 1), and the no-SPG baseline (SimCLR-style:
two augmentations of one frame) is a = b = c with lam = 1 for every video.
Negatives are the other videos of the batch, never frames of the same video.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class PairBatch:
    videos: np.ndarray  # video index per item
    rows: np.ndarray  # int64 B x 3: frame rows (a, b = anchor, c)
    lam: np.ndarray  # float32 B, in [0, 1]

    def part(self, start: int, stop: int) -> PairBatch:
        """Items start..stop-1: one rank's slice of a global batch."""
        return PairBatch(self.videos[start:stop], self.rows[start:stop], self.lam[start:stop])


def sample_rows(members: Sequence[np.ndarray], videos: np.ndarray, rng: np.random.Generator,
                *, spg: bool = True, alpha: float = 0.5) -> PairBatch:
    """Frame rows and mixing weights for one batch of videos."""
    rows = np.empty((len(videos), 3), dtype=np.int64)
    lam = np.ones(len(videos), dtype=np.float32)
    for i, v in enumerate(videos):
        frames = members[v]
        if not spg:
            rows[i] = frames[rng.integers(len(frames))]
        elif len(frames) >= 3:
            a, b, c = rng.choice(len(frames), size=3, replace=False)
            rows[i] = frames[[a, b, c]]
            lam[i] = rng.beta(alpha, alpha)
        elif len(frames) == 2:
            a, c = rng.permutation(2)
            rows[i] = frames[[a, a, c]]
        else:
            rows[i] = frames[0]
    return PairBatch(np.asarray(videos, dtype=np.int64), rows, lam)


def mix_views(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two views of augmented frames a, b (anchor), c: lam*a + (1-lam)*b and lam*c + (1-lam)*b."""
    w = lam.to(a.dtype).view(-1, *([1] * (a.dim() - 1)))
    return w * a + (1 - w) * b, w * c + (1 - w) * b


def make_views(images: torch.Tensor, batch: PairBatch, augment_fn: Callable[[torch.Tensor], torch.Tensor], *,
               mix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment the batch's 3B frames in one call and mix them into two views.

    `images`: uint8 N x 1 x S x S (on the device); `augment_fn`: uint8 batch -> float batch.
    `mix=False` keeps lam = 1 (unmixed views, as the reference's validation uses).
    """
    idx = torch.as_tensor(batch.rows.reshape(-1), device=images.device)
    aug = augment_fn(images[idx])
    aug = aug.view(len(batch.rows), 3, *aug.shape[1:])
    lam = torch.as_tensor(batch.lam if mix else np.ones_like(batch.lam), device=aug.device)
    return mix_views(aug[:, 0], aug[:, 1], aug[:, 2], lam)


def epoch_batches(videos: np.ndarray, batch_size: int, rng: np.random.Generator, *,
                  max_steps: int | None = None, min_size: int = 2) -> Iterator[np.ndarray]:
    """Shuffled batches of video indices, at most `max_steps` of them.

    A final batch smaller than `min_size` is dropped: a batch of one has no negatives, and
    with N ranks each rank needs one video of it, two with batch norm per rank (min_size =
    max(2, N) or max(2, 2N)).
    """
    order = rng.permutation(np.asarray(videos, dtype=np.int64))
    for step, start in enumerate(range(0, len(order), batch_size)):
        chunk = order[start:start + batch_size]
        if (max_steps is not None and step >= max_steps) or len(chunk) < min_size:
            return
        yield chunk
