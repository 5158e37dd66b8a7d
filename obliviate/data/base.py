"""What every data source returns, and the in-memory loader the methods iterate.

A source yields a `RawData`: images as float32 tensors already scaled to [0, 1] ([n, C, H, W] or [n, D]),
integer labels, optional identity groups (-1 where unknown) and an optional predefined split
("train"/"test"). Everything downstream works on tensors; there is no torch Dataset/DataLoader in the hot
path (a run trains thousands of small models, and DataLoader start-up would dominate).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class RawData:
    x: torch.Tensor                 # float32 in [0, 1]
    y: torch.Tensor                 # int64 labels 0..C-1
    groups: torch.Tensor            # int64 identity id per example, -1 = none (pseudo-identities are made)
    is_test: torch.Tensor | None    # bool: the source's own test split, None when it has none
    num_classes: int
    name: str

    def fingerprint(self) -> str:
        """Content hash: any change to the data changes every cache key built on it."""
        h = hashlib.sha256()
        for t in (self.x, self.y, self.groups) + ((self.is_test,) if self.is_test is not None else ()):
            a = np.ascontiguousarray(t.numpy())
            h.update(str(a.shape).encode()); h.update(a.tobytes())
        return h.hexdigest()[:16]


@dataclass
class TensorSet:
    """A labelled subset: x, y (and the index of each row in the source, for bookkeeping)."""
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> "TensorSet":
        return TensorSet(self.x.to(device), self.y.to(device))


class TensorLoader:
    """A challenge-style loader: iterating yields (inputs, targets) batches, `len()` is the batch count.

    Shuffles with its own torch.Generator, so two loaders seeded alike give the same order and a method's
    data order is part of its seed. Data already lives on the target device; batches are index views.
    """

    def __init__(self, data: TensorSet, batch_size: int = 64, shuffle: bool = True,
                 generator: torch.Generator | None = None):
        if len(data) == 0:
            raise ValueError("a loader needs at least one example")
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.dataset = data  # starting-kit code sometimes reads loader.dataset

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def __iter__(self):
        n = len(self.data)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.data.y.device)
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            yield self.data.x[idx], self.data.y[idx]
