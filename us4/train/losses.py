"""Losses of the USCL method, as pure functions (named after the method, solo-learn style)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent of SimCLR with cosine similarity: mean over all 2N anchors.

    Item i of `z1` and item i of `z2` are positives; the other 2N - 2 projections of the
    batch are the negatives. Equal to the reference's `NTXentLoss` (sum over 2N / 2N).
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=1)
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))  # an item is not its own negative
    targets = torch.arange(2 * n, device=z.device).roll(n)  # i <-> i + n
    return F.cross_entropy(sim, targets)


def semi_supervised_ce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the items whose label is known (`mask`); 0 when none is.

    Unlabelled items contribute neither to the value nor to the gradient; their `labels`
    entries may hold anything (e.g. -1).
    """
    mask = mask.to(torch.bool)
    safe = torch.where(mask, labels, torch.zeros_like(labels))
    per_item = F.cross_entropy(logits.float(), safe, reduction="none")
    per_item = torch.where(mask, per_item, torch.zeros_like(per_item))
    return per_item.sum() / mask.sum().clamp(min=1)
