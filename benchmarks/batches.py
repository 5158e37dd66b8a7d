"""What the challenge-style batches cost a registered method: `Batch` (a tuple that also answers to
batch["image"], ...) against the plain (inputs, targets) tuple the loaders yielded before, on the digits preset.

    python benchmarks/batches.py                 # 12 paired rounds x 3 methods, one JSON line per method
    python benchmarks/batches.py --rounds 4      # quicker

Each round times `unlearn_once` for every method twice, once per batch kind, in alternating order (paired
rounds: the machine's speed drifts between rounds, not within a pair); the figure is the median over rounds
of the per-pair ratio Batch / tuple. The same seed gives the same weights under both kinds (checked), so only
the cost differs. Data: the digits preset's splits (seed 0) and one original trained with its recipe.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from obliviate.data import base, load_source, make_splits          # noqa: E402
from obliviate.methods import get_method                            # noqa: E402
from obliviate.models import build_model                            # noqa: E402
from obliviate.presets import get_preset                            # noqa: E402
from obliviate.protocol import unlearn_once                         # noqa: E402
from obliviate.training import train_model                          # noqa: E402


def tuple_iter(self):
    """TensorLoader.__iter__ as it was: plain (inputs, targets) tuples (same order, same bounds)."""
    n = len(self.data)
    order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
    order = order.to(self.data.y.device)
    x, y = self.data.x, self.data.y
    for a, b in base.batch_bounds(n, self.batch_size):
        idx = order[a:b]
        yield x[idx], y[idx]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--methods", default="finetune,neggrad_plus,scrub")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = get_preset("digits")
    splits = make_splits(load_source(p.source), p.forget, 0, group_size=p.group_size)
    original = build_model(p.model, splits.in_shape, splits.num_classes, seed=0, **p.model_kwargs)
    train_model(original, splits.train, p.recipe, splits.num_classes, seed=0)
    batch_iter = base.TensorLoader.__iter__

    def once(method, kind, seed):
        base.TensorLoader.__iter__ = batch_iter if kind == "batch" else tuple_iter
        try:
            t = time.perf_counter()
            model = unlearn_once(method, original, splits, seed)
            return time.perf_counter() - t, model
        finally:
            base.TensorLoader.__iter__ = batch_iter

    for name in args.methods.split(","):
        method = get_method(name)
        once(method, "batch", 0)                       # warm-up
        ratios, secs = [], {"batch": [], "tuple": []}
        for r in range(args.rounds):
            order = ("batch", "tuple") if r % 2 == 0 else ("tuple", "batch")
            got = {k: once(method, k, r) for k in order}
            for k in order:
                secs[k].append(got[k][0])
            ratios.append(got["batch"][0] / got["tuple"][0])
            wa, wb = (list(got[k][1].state_dict().values()) for k in ("batch", "tuple"))
            assert all(torch.equal(a, b) for a, b in zip(wa, wb)), "the batch kinds gave different models"
        print(json.dumps({"method": name, "rounds": args.rounds,
                          "batch_ms": round(1e3 * statistics.median(secs["batch"]), 2),
                          "tuple_ms": round(1e3 * statistics.median(secs["tuple"]), 2),
                          "median_ratio": round(statistics.median(ratios), 3),
                          "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)]}))


if __name__ == "__main__":
    main()
