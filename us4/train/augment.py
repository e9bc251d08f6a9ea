"""Batched augmentations on uint8 N x 1 x S x S tensors, on whatever device the batch is on.

One affine `grid_sample` does the random resized crop and the horizontal flip for the
whole batch; brightness and contrast are per-sample scalars. No per-image PIL work,
so the same code feeds a GPU without a pool of loader workers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import AugmentConfig


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def crop_flip_theta(n: int, cfg: AugmentConfig, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """Affine matrices (n x 2 x 3, normalised coordinates) of random resized crops with flips.

    Area fraction ~ U(scale), aspect ~ log-uniform(ratio) as torchvision draws them; a side that
    would leave the image is clamped to it (torchvision redraws, then falls back to a centre crop).
    """
    area = _uniform(n, *cfg.crop_scale, g, device)
    log_r = _uniform(n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), g, device)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)  # fraction of the image width
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (1.0 - w) * (torch.rand(n, generator=g, device=device) * 2 - 1)  # centre in [-1+w, 1-w]
    cy = (1.0 - h) * (torch.rand(n, generator=g, device=device) * 2 - 1)
    flip = torch.where(torch.rand(n, generator=g, device=device) < cfg.flip_p, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    return theta


def jitter(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator,
           of_batch: tuple[int, int] | None = None) -> torch.Tensor:
    """Brightness then contrast jitter of a float [0, 1] batch, each sample with probability jitter_p.

    `of_batch` as in `augment`.
    """
    n, device = x.shape[0], x.device
    start, total = of_batch or (0, n)
    part = slice(start, start + n)
    apply = (torch.rand(total, generator=g, device=device) < cfg.jitter_p)[part]
    b = _uniform(total, max(0.0, 1 - cfg.brightness), 1 + cfg.brightness, g, device)[part]
    c = _uniform(total, max(0.0, 1 - cfg.contrast), 1 + cfg.contrast, g, device)[part]
    b = torch.where(apply, b, torch.ones_like(b)).view(n, 1, 1, 1)
    c = torch.where(apply, c, torch.ones_like(c)).view(n, 1, 1, 1)
    x = (x * b).clamp_(0, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # contrast blends towards the grey image's mean
    return ((x - mean) * c + mean).clamp_(0, 1)


def normalise(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """uint8 or [0, 1] float batch -> (x - mean) / std."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    return (x - cfg.mean) / cfg.std


def augment(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator, *, colour: bool = True,
            of_batch: tuple[int, int] | None = None) -> torch.Tensor:
    """Random resized crop + h-flip (+ brightness/contrast jitter when `colour`) + normalise.

    `x`: uint8 N x C x S x S on any device; `g`: a generator on that device. Returns float32.
    `of_batch=(start, total)`: `x` is items start..start+N-1 of a batch of `total`; the random
    draws are made for the whole batch and this slice takes its share, so every rank augmenting
    its slice (with generators in the same state) gives what one call on the whole batch gives.
    """
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"augment wants a uint8 N x C x H x W batch, got {x.dtype} {tuple(x.shape)}")
    n = x.shape[0]
    start, total = of_batch or (0, n)
    xf = x.float().div_(255.0)
    theta = crop_flip_theta(total, cfg, g, x.device)[start:start + n]
    grid = F.affine_grid(theta, list(xf.shape), align_corners=False)
    xf = F.grid_sample(xf, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if colour and cfg.jitter_p > 0:
        xf = jitter(xf, cfg, g, (start, total))
    return normalise(xf, cfg)
