"""Small pieces shared by method modules: optimisers, schedules, loaders at another batch size."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..data import TensorLoader


def sgd(params, lr, momentum=0.9, weight_decay=5e-4):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def rebatch(loader: TensorLoader, batch_size: int, shuffle: bool = True) -> TensorLoader:
    """The same data at another batch size, sharing the loader's generator (so the run stays seeded). A method's own
    loader folds a lone last example into the batch before it (BatchNorm cannot train on one example on 1x1 maps);
    the loaders a method is handed end as torch's do."""
    return TensorLoader(loader.data, batch_size, shuffle, loader.generator, fold_lone=True)


def cosine_epoch_lr(base: float, epoch: int, epochs: int, eta_min: float = 0.0) -> float:
    """CosineAnnealingLR(T_max=epochs) stepped once per epoch: the lr used during `epoch` (0-based)."""
    return eta_min + (base - eta_min) * 0.5 * (1 + math.cos(math.pi * epoch / max(1, epochs)))


def set_lr(opt, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def train_epoch(model, loader, opt, loss_fn=None) -> None:
    """One pass of plain (or custom) cross-entropy training."""
    model.train()
    loss_fn = loss_fn or (lambda m, x, y: F.cross_entropy(m(x), y))
    for x, y in loader:
        opt.zero_grad(set_to_none=True)
        loss_fn(model, x, y).backward()
        opt.step()
