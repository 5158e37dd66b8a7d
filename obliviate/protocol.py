"""One unlearning run and one model's evaluation: the two steps the runner repeats N times per population.

`unlearn_once` never passes the test set to a method; `evaluate` records what the metrics need: the
forget-set logit-scaled confidences (the official metric), per-example losses on forget and test (the
starting kit's loss-based attack) and retain/test/forget accuracy.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Splits, TensorLoader
from .errors import UserError
from .training import make_generator, predict

BATCH_SIZE = 64   # the challenge's loaders


def unlearn_once(method, original: nn.Module, splits: Splits, seed: int, hp: dict | None = None) -> nn.Module:
    """Run `method` on a fresh copy of `original`. All its randomness (data order, noise, re-inits) comes
    from `seed`: the loaders share one generator and the global torch RNG is seeded with it."""
    model = copy.deepcopy(original)
    g = make_generator(seed)
    torch.manual_seed(seed)
    retain, forget, val = (TensorLoader(d, BATCH_SIZE, True, g) for d in (splits.retain, splits.forget, splits.val))
    out = method(model, retain, forget, val, generator=g, **(hp or {}))
    if not isinstance(out, nn.Module):
        raise UserError(f"method {getattr(method, 'name', method)!r} returned {type(out).__name__}, not the "
                        f"model: end it with `return net`.")
    ref, got = original.state_dict(), out.state_dict()
    if ref.keys() != got.keys() or any(ref[k].shape != got[k].shape for k in ref):
        raise UserError(f"method {getattr(method, 'name', method)!r} returned a model of another architecture: "
                        f"it must return the network it was given, edited.")
    return out.eval()


@torch.no_grad()
def evaluate(model: nn.Module, splits: Splits, what: str = "model") -> dict:
    """Forget confidences (float64), per-example losses on forget and test, and three accuracies."""
    from .metrics import logit_scaled_confidence
    out = {}
    for name, d in (("forget", splits.forget), ("retain", splits.retain), ("test", splits.test)):
        logits = predict(model, d.x).float()
        if not torch.isfinite(logits).all():
            raise UserError(f"{what} produced NaN or infinite logits on the {name} set: it diverged; lower its "
                            f"learning rate (--hp lr=...) or fix the method.")
        out[f"{name}_acc"] = float((logits.argmax(1) == d.y).double().mean())
        if name == "forget":
            out["conf"] = logit_scaled_confidence(logits.double().cpu().numpy(), d.y.cpu().numpy())
        if name in ("forget", "test"):
            out[f"loss_{name}"] = F.cross_entropy(logits, d.y, reduction="none").cpu().numpy().astype(np.float32)
    return out
