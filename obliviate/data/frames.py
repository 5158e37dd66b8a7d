"""Identities made of near-duplicate frames: each identity is `frames` light augmentations of one base image.

The challenge's identities are people filmed in many near-identical frames (CASIA-SURF: ~27k training images
of a few hundred people; the forget set, 15 people, ~2% of train), and its split is a shuffle of *images*, not
people (the organisers' surf.py, seed 43), so a forgotten person's other frames sit in validation and test.
Pseudo-identities on Fashion-MNIST or digits (splits.pseudo_identities: look-alike images of one class) are
different things that merely resemble each other; frames of one base image are one thing seen again.

`with_frames(raw, frames, n_base)` draws `n_base` base images (a seeded permutation of the whole source, its
own train/test split dropped) and makes `frames` copies of each, every copy independently
  * shifted by whole pixels, dx and dy uniform in [-SHIFT, SHIFT], the border filled with 0 (background),
  * its contrast scaled by a factor uniform in [1 - CONTRAST, 1 + CONTRAST],
  * plus Gaussian pixel noise of std NOISE, clipped to [0, 1];
the identity (group) of a copy is its base image. The result has no predefined split (`is_test=None`), so
`make_splits` shuffles images 80/10/10 as surf.py did.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import RawData

SHIFT = 1          # pixels: a tracked, cropped face jitters a little between frames; measured on Fashion-MNIST
                   # (6 frames of 300 images): the nearest other image is a frame of the same identity for 83%
                   # of frames at SHIFT = 1, 56% at 2 (a 2 px shift moves a 28 px image past its look-alikes)
CONTRAST = 0.15    # +-15% contrast: lighting changing between frames
NOISE = 0.03       # sensor noise, in units of the [0, 1] pixel range


def base_images_needed(max_train: int | None, frames: int, imbalance: float, num_classes: int,
                       n_source: int) -> int:
    """Base images so that the 80% train share, after `imbalance` thins the classes, still holds `max_train`
    images (5% spare); all the source gives (n_source // frames, the same number of images as the source) when
    max_train is None."""
    if max_train is None:
        return max(1, n_source // frames)
    c = np.arange(num_classes)
    keep = float(np.mean(imbalance ** (-(num_classes - 1 - c) / max(1, num_classes - 1))))
    return min(n_source, int(np.ceil(1.05 * max_train / (0.8 * keep * frames))))


def with_frames(raw: RawData, frames: int, n_base: int) -> RawData:
    if not (isinstance(frames, int) and frames >= 2):
        raise UserError(f"frames = {frames!r} is not valid: use an integer >= 2 (frames per identity), or leave "
                        f"it out for the source's own images.")
    if raw.x.dim() != 4:
        raise UserError(f"frames need image data [n, C, H, W]; source {raw.name!r} has shape "
                        f"{tuple(raw.x.shape)}: leave frames out for flat features.")
    seed = int.from_bytes(hashlib.sha256(f"frames/{raw.fingerprint()}/{frames}/{n_base}".encode()).digest()[:8],
                          "little")
    g = torch.Generator().manual_seed(seed % 2**63)
    base = torch.randperm(len(raw.y), generator=g)[:n_base]
    x = raw.x[base].repeat_interleave(frames, 0)                           # [n_base * frames, C, H, W]
    n, _, h, w = x.shape
    shifts = torch.randint(-SHIFT, SHIFT + 1, (n, 2), generator=g)
    padded = F.pad(x, (SHIFT, SHIFT, SHIFT, SHIFT))
    out = torch.empty_like(x)
    for dy in range(-SHIFT, SHIFT + 1):                                   # one slice per shift: 25 at SHIFT = 2
        for dx in range(-SHIFT, SHIFT + 1):
            rows = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero().flatten()
            out[rows] = padded[rows, :, SHIFT + dy:SHIFT + dy + h, SHIFT + dx:SHIFT + dx + w]
    mean = out.mean((1, 2, 3), keepdim=True)
    scale = 1 + CONTRAST * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
    out = ((out - mean) * scale + mean + NOISE * torch.randn(out.shape, generator=g)).clamp_(0, 1)
    groups = torch.arange(n_base).repeat_interleave(frames)
    return RawData(x=out.contiguous(), y=raw.y[base].repeat_interleave(frames), groups=groups, is_test=None,
                   num_classes=raw.num_classes, name=f"{raw.name}+frames{frames}")
