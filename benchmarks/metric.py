"""Speed of the official metric: obliviate.metrics.example_epsilons vs a direct port of the organisers' code.

The port follows google-deepmind/unlearning_evaluation metric.py step by step, in numpy on
CPU: per forget example it builds every threshold (~160k double + ~1k single) and compares
every model against every threshold at once (models x thresholds boolean matrices; broadcast
rather than np.tile, which only favours the port), computes tpr/fnr/fpr/tnr as means, and
the epsilons with the same inf / discard / nanmax rules. Both must give identical epsilons on
the shared examples; the script fails otherwise.

    .venv/bin/python benchmarks/metric.py --quick      # < 30 s: 3 port examples, 200 library examples
    .venv/bin/python benchmarks/metric.py              # 8 port examples, 2000 library examples

Last line: {"speedup": ..., "ms_per_example": ..., "n_models": 512, "n_examples": ...}.
"""

import argparse
import json
import sys
import time
import warnings

import numpy as np

from obliviate import metrics

DELTA, CAP, PER_UNIT = 1e-5, 50, 100


# ----------------------------------------------------------------------------- the port

def _port_double(pos, neg):
    pos_diff, neg_diff = pos.max() - pos.min(), neg.max() - neg.min()
    width = neg_diff if pos_diff > neg_diff else pos_diff
    if pos_diff >= neg_diff:  # 'positive' = the peakiest distribution
        pos, neg = neg, pos
    buffer = 2.0
    min_, max_ = pos.min() + width - buffer, pos.max() + buffer
    right = np.linspace(min_, max_, int(np.ceil((max_ - min_) * PER_UNIT)))
    n_left = int(np.ceil(2 * buffer * PER_UNIT))
    thr_left = np.concatenate([np.linspace(t - width - buffer, t - width + buffer, n_left) for t in right])
    thr_right = np.repeat(right, n_left)

    def is_pp(c):  # [models, thresholds]
        return (thr_left[None, :] <= c[:, None]) & (c[:, None] <= thr_right[None, :])

    tpr, fnr = is_pp(pos).mean(0), (~is_pp(pos)).mean(0)
    fpr, tnr = is_pp(neg).mean(0), (~is_pp(neg)).mean(0)
    return tpr, fnr, fpr, tnr


def _port_single(pos, neg):
    allc = np.concatenate([pos, neg])
    lo, hi = allc.min(), allc.max()
    t = np.linspace(lo, hi, int(np.ceil((hi - lo) * PER_UNIT)))[None, :]
    return ((pos[:, None] >= t).mean(0), (pos[:, None] < t).mean(0),
            (neg[:, None] >= t).mean(0), (neg[:, None] < t).mean(0))


def port_epsilons(unlearned, retrained):
    retrain_is_positive = np.median(retrained, axis=0) > np.median(unlearned, axis=0)
    out = []
    for i in range(unlearned.shape[1]):
        pos, neg = (retrained[:, i], unlearned[:, i]) if retrain_is_positive[i] else (unlearned[:, i], retrained[:, i])
        pos_diff, neg_diff = np.ptp(pos), np.ptp(neg)
        with np.errstate(invalid="ignore"):
            if min(pos_diff, neg_diff) / max(pos_diff, neg_diff) < 0.01:
                out.append(CAP)
                continue
        tpr, fnr, fpr, tnr = (np.concatenate(x) for x in zip(_port_double(pos, neg), _port_single(pos, neg)))
        thr_eps = np.where((fpr + fnr == 0) & (tpr + tnr == 2), np.inf, 0.0)
        thr_eps = np.where((thr_eps == 0) & (fpr * fnr == 0), np.nan, thr_eps)
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmax of an all-NaN pair -> NaN -> discarded
            formula = np.clip(np.nanmax([np.log(1 - DELTA - fpr) - np.log(fnr),
                                         np.log(1 - DELTA - fnr) - np.log(fpr)], axis=0), 0, None)
        thr_eps = np.where(thr_eps == 0, formula, thr_eps)
        kept = thr_eps[~np.isnan(thr_eps)]
        out.append(kept.max() if kept.size else 0.0)  # the organisers' `assert thr_eps` stops here instead
    return np.clip(np.array(out, dtype=np.float64), 0, CAP)


# ----------------------------------------------------------------------------- data

def populations(n_models, n_examples, seed):
    """Normal confidences with per-example means/stds; the unlearned population is slightly
    shifted and rescaled (a decent, not perfect, unlearner)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(3.0, 2.0, n_examples)
    sd = rng.uniform(0.5, 2.5, n_examples)
    retrained = rng.normal(mu, sd, size=(n_models, n_examples))
    unlearned = rng.normal(mu + rng.normal(0, 0.3 * sd), sd * rng.uniform(0.8, 1.25, n_examples),
                           size=(n_models, n_examples))
    return unlearned, retrained


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run (< 30 s)")
    ap.add_argument("--models", type=int, default=512)
    ap.add_argument("--examples", type=int, default=None, help="forget examples for the library")
    ap.add_argument("--port-examples", type=int, default=None, help="examples also run through the port")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n_ex = args.examples or (200 if args.quick else 2000)
    n_port = args.port_examples or (3 if args.quick else 8)
    u, r = populations(args.models, n_ex, args.seed)

    metrics.example_epsilons(u[:, :2], r[:, :2])  # warm-up: epsilon tables
    t0 = time.perf_counter()
    eps = metrics.example_epsilons(u, r)
    lib_ms = (time.perf_counter() - t0) / n_ex * 1e3

    t0 = time.perf_counter()
    ref = port_epsilons(u[:, :n_port], r[:, :n_port])
    port_ms = (time.perf_counter() - t0) / n_port * 1e3
    if not np.array_equal(eps[:n_port], ref):
        sys.exit(f"MISMATCH: library {eps[:n_port]} vs port {ref}")

    print(f"port (models x thresholds matrices): {port_ms:9.1f} ms/example over {n_port} examples")
    print(f"obliviate.metrics.example_epsilons:  {lib_ms:9.3f} ms/example over {n_ex} examples "
          f"({args.models} models per population)")
    print(f"identical epsilons on the {n_port} shared examples; speedup {port_ms / lib_ms:.0f}x; "
          f"F = {np.mean(metrics.points(eps, args.models)):.4f}")
    print(json.dumps({"speedup": round(port_ms / lib_ms, 1), "ms_per_example": round(lib_ms, 4),
                      "n_models": args.models, "n_examples": n_ex}))


if __name__ == "__main__":
    main()
