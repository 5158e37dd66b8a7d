"""The training recipe (original model and oracle retrains) and evaluation helpers.

One model: `train_model`. A population: `train_population` trains K models at once where the model allows
(stacked parameters + torch.func.vmap), each keeping its own initialisation seed and data order, so the
population is the same as K one-at-a-time runs (tests/test_training.py checks it).
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from .data import TensorLoader, TensorSet, class_weights
from .errors import UserError
from .presets import Recipe


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda or mps.")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was asked for but PyTorch sees no CUDA GPU: use --device cpu or auto.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("device 'mps' was asked for but is not available: use --device cpu or auto.")
    return torch.device(name)


def make_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) % (2**63))


def cosine_lr(base: float, step: int, total: int) -> float:
    return 0.5 * base * (1 + math.cos(math.pi * step / max(1, total)))


def train_model(model: nn.Module, data: TensorSet, recipe: Recipe, num_classes: int, seed: int) -> nn.Module:
    """Class-weighted CE, Adam, cosine schedule stepped per batch, fixed epochs; data order from `seed`."""
    weight = class_weights(data.y, num_classes).to(data.x.device) if recipe.class_weighted else None
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    loader = TensorLoader(data, recipe.batch_size, shuffle=True, generator=make_generator(seed))
    total, step = recipe.epochs * len(loader), 0
    model.train()
    for _ in range(recipe.epochs):
        for x, y in loader:
            for g in opt.param_groups:
                g["lr"] = cosine_lr(recipe.lr, step, total)
            loss = F.cross_entropy(model(x), y, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 2048) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)]) if len(x) else x.new_zeros(0, 1)


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t
