"""One unlearning run and one model's evaluation: the two steps the runner repeats N times per population.

`unlearn_once` never passes the test set to a method; `evaluate` records what the metrics need: the
forget-set logit-scaled confidences (the official metric), per-example losses on forget and test (the
starting kit's loss-based attack) and retain/test/forget accuracy.

A user's own method (a file `path.py:fn` or a Python function) runs under the challenge's harness, as real
submissions were written against it (docs/challenge.md, "The harness"): one `net` object per job (`harness_net`),
`net.load_state_dict(original)` before each call, the return value optional (None: the net was edited in
place), and the net's train/eval mode whatever the previous call left (the official starter ends with
`net.eval()`, so later calls start in eval mode, as on Kaggle). One net per *job* (a chunk of runs), not per
process, so a result does not depend on which worker a job lands on. A failure inside user code reads as the
user's own error (`user_code_error`): one block with the exception and the user's frames only.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Splits, TensorLoader
from .errors import UserError
from .usercode import UserCodeError, user_code_error  # noqa: F401  (the harness's errors; tests read them here)
from .settings import RUN
from .training import make_generator, predict

BATCH_SIZE = RUN["batch_size"]
EVAL_ARRAYS = ("conf", "loss_forget", "loss_test", "retain_acc", "test_acc", "forget_acc", "seconds")   # per model


def harness_net(method, original: nn.Module) -> nn.Module | None:
    """The one net a job reuses for a user's method (None for a registered method, which gets a fresh copy)."""
    return copy.deepcopy(original) if getattr(method, "user", None) is not None else None


def unlearn_once(method, original: nn.Module, splits: Splits, seed: int, hp: dict | None = None,
                 net: nn.Module | None = None) -> nn.Module:
    """Run `method` from `original`'s weights. All its randomness (data order, noise, re-inits, the order of a
    DataLoader the method builds itself) comes from `seed`: the loaders share one generator and the global
    torch RNG is seeded with it. A registered method gets a fresh copy of `original` (it may freeze
    requires_grad, attach hooks or swap modules: nothing may leak into the next run); a user's method gets
    `net` (harness_net) reloaded with the original's weights, as the challenge's harness did."""
    name = getattr(method, "name", getattr(method, "__name__", repr(method)))
    user = getattr(method, "user", None) is not None
    if user:
        model = net if net is not None else copy.deepcopy(original)
        model.load_state_dict(original.state_dict())
    else:
        model = copy.deepcopy(original)
    g = make_generator(seed)
    torch.manual_seed(seed)
    retain, forget, val = (TensorLoader(d, BATCH_SIZE, True, g) for d in (splits.retain, splits.forget, splits.val))
    if user:
        try:
            out = method(model, retain, forget, val, generator=g, **(hp or {}))
        except (Exception, SystemExit) as e:        # KeyboardInterrupt still stops the run
            raise user_code_error(f"method {name!r} failed", e) from e
        out = model if out is None else out
    else:
        out = method(model, retain, forget, val, generator=g, **(hp or {}))
    if not isinstance(out, nn.Module):
        raise UserError(f"method {name!r} returned {type(out).__name__}, not the model: return the network "
                        f"it was given (or nothing: the net edited in place).")
    ref, got = original.state_dict(), out.state_dict()
    if ref.keys() != got.keys() or any(ref[k].shape != got[k].shape for k in ref):
        raise UserError(f"method {name!r} returned a model of another architecture: it must return the "
                        f"network it was given, edited (or nothing).")
    return out if user else out.eval()


@torch.no_grad()
def evaluate(model: nn.Module, splits: Splits, what: str = "model") -> dict:
    """Forget confidences (float64), per-example losses on forget and test, and three accuracies. The model is
    scored in eval mode, and every module's train/eval mode is restored afterwards (the harness hands the
    next user call the net in the mode the last call left)."""
    from .metrics import logit_scaled_confidence
    modes = [(m, m.training) for m in model.modules()]
    try:
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
    finally:
        for m, training in modes:
            m.training = training
    return out
