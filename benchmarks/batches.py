"""What the challenge-style batches cost a registered method: `Batch` (a tuple that also answers to
batch["image"], ...) against the plain (inputs, targets) tuple the loaders yielded before, on the digits preset.
With --own-loader: what a submission pays for building its own DataLoader over `retain_loader.dataset`.

    python benchmarks/batches.py                 # 12 paired rounds x 3 methods, one JSON line per method
    python benchmarks/batches.py --rounds 4      # quicker
    python benchmarks/batches.py --own-loader    # a notebook-style finetune: own DataLoader / handed loader
    python benchmarks/batches.py --notebook      # the 1st place's notebook (own loaders) / the registered port

--own-loader times tests/fixtures/finetune_two_ways.py's `given` (the loader it is handed) and `own` (its own
DataLoader, the same batches in the same order: checked, identical weights) through `unlearn_once` as user
methods, and `own` once more with ExampleDataset.__getitems__ removed (example-by-example fetching, as before
issue 18); `own_ratio` and `one_by_one_ratio` are medians of per-round ratios to `given` (target: own <= 1.25).
--notebook does the same with tests/fixtures/fanchuan_notebook.py as `own` and the registered `fanchuan` port as
`given`: the same algorithm, not the same code, so only own vs one_by_one are checked equal.

Each round times `unlearn_once` for every method twice, once per batch kind, in alternating order (paired
rounds: the machine's speed drifts between rounds, not within a pair); the figure is the median over rounds
of the per-pair ratio Batch / tuple. The same seed gives the same weights under both kinds (checked), so only
the cost differs. Data: the digits preset's splits (seed 0) and one original trained with its recipe.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from obliviate.data import base, load_source, make_splits
from obliviate.methods import get_method
from obliviate.models import build_model
from obliviate.presets import get_preset
from obliviate.protocol import harness_net, unlearn_once
from obliviate.training import train_model


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
    ap.add_argument("--own-loader", action="store_true", help="own DataLoader vs the handed loader (see above)")
    ap.add_argument("--notebook", action="store_true", help="the 1st place's notebook vs the registered port")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = get_preset("digits")
    splits = make_splits(load_source(p.source), p.forget, 0, group_size=p.group_size)
    original = build_model(p.model, splits.in_shape, splits.num_classes, seed=0, **p.model_kwargs)
    train_model(original, splits.train, p.recipe, splits.num_classes, seed=0)
    if args.own_loader or args.notebook:
        return own_loader(args.rounds, original, splits, args.notebook)
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


def own_loader(rounds, original, splits, notebook=False):
    fixtures = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
    if notebook:        # not the same code (the port reads zr under no_grad, ...): same batches, other costs
        given, own = get_method("fanchuan"), get_method(f"{fixtures / 'fanchuan_notebook.py'}:unlearning")
    else:
        given, own = (get_method(f"{fixtures / 'finetune_two_ways.py'}:{f}") for f in ("given", "own"))
    getitems = base.ExampleDataset.__getitems__

    def once(kind, seed, repeat=5):
        """CPU seconds (the cost clock on CPU, training.cost_clock) of `repeat` unlearning runs (seeds seed..):
        one run is ~20 ms, too short to time alone on a shared machine."""
        method = given if kind == "given" else own
        if kind == "one_by_one":
            del base.ExampleDataset.__getitems__
        try:
            net = harness_net(method, original)
            t = time.process_time()
            for s in range(seed * repeat, (seed + 1) * repeat):
                model = unlearn_once(method, original, splits, s, net=net)
            return (time.process_time() - t) / repeat, model
        finally:
            base.ExampleDataset.__getitems__ = getitems

    kinds = ("given", "own", "one_by_one")
    for k in kinds:
        once(k, 0, repeat=1)                       # warm-up
    secs, ratios = {k: [] for k in kinds}, {k: [] for k in kinds[1:]}
    for r in range(rounds):
        order = kinds[r % 3:] + kinds[:r % 3]      # rotate: the machine's drift spreads over the kinds
        got = {k: once(k, r) for k in order}
        for k in kinds:
            secs[k].append(got[k][0])
        for k in kinds[1:]:
            ratios[k].append(got[k][0] / got["given"][0])
        w = [list(got[k][1].state_dict().values()) for k in kinds]
        assert all(all(torch.equal(a, b) for a, b in zip(w[-2], o)) for o in w[-1:]), "own and one by one differ"
        assert notebook or all(torch.equal(a, b) for a, b in zip(w[0], w[1])), "given and own differ"
    med = lambda v: statistics.median(v)
    print(json.dumps({"method": "fanchuan port (given) vs notebook (own)" if notebook else
                      "finetune (tests/fixtures/finetune_two_ways.py)", "rounds": rounds, "runs_per_round": 5,
                      "retain": len(splits.retain), "batch_size": "64 forget, 256 retain" if notebook else 64,
                      **{f"{k}_ms": round(1e3 * med(secs[k]), 2) for k in kinds},
                      "own_ratio": round(med(ratios["own"]), 3),
                      "own_ratio_range": [round(min(ratios["own"]), 3), round(max(ratios["own"]), 3)],
                      "one_by_one_ratio": round(med(ratios["one_by_one"]), 3),
                      "own_within_1.25": med(ratios["own"]) <= 1.25}))


if __name__ == "__main__":
    main()
