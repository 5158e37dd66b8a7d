"""Intervals for F: coverage on synthetic populations, and the cost on a digits-sized leaderboard.

    python benchmarks/intervals.py coverage [--n 64] [--reps 200] [--draws 200] [--schemes half,boot]
                                            [--levels 2,4,8] [--scenarios oracle,close,far]
    python benchmarks/intervals.py timing [--run RUN_DIR]      # intervals + P(beats) + ranks for a whole board

coverage: per example j, retrained confidences ~ N(mu_j, sd_j) and unlearned ~ N(mu_j + shift * sd_j,
scale * sd_j), mu_j ~ N(3, 2), sd_j ~ U(0.5, 2.5) (as benchmarks/metric.py), 28 examples (the digits forget
set). The true mean F at N is the average over `--truth` fresh populations. Each replicate draws a fresh
pair of populations, builds the intervals of every scheme and records whether they contain the truth.
Schemes (all 95%, re-centred on F_hat unless said otherwise):
  sub2       m = N/2 models per population without replacement, percentiles   (the library's choice)
  sub4, sub8 m = N/4, N/8, no rescaling
  sub4_lin, sub8_lin   the same with the root-n rescaling sqrt(m / (N - m))
  rate       sub4 rescaled by a rate estimated from sub4 and sub8 (sd ~ m^-beta)
  boot       N draws with replacement, plain percentile interval [q2.5, q97.5] of F*   (--schemes half,boot)
  boot_c     the same draws re-centred; boot_basic: reflected (2 F_hat - q97.5, 2 F_hat - q2.5)
Prints one JSON line per (scenario, scheme): coverage, mean width, and the ratio of the scheme's mean
spread (sd of its re-centred draws) to the true sd of F over fresh populations.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from obliviate.metrics import example_epsilons, points
from obliviate.metrics.resample import board_intervals, draw_qualities, half_indices

SCENARIOS = {  # name: (shift in sd units, scale of the unlearned sd)
    "oracle": (0.0, 1.0),       # a perfect unlearner: F near the ceiling
    "close": (0.1, 0.9),        # a good method: slightly shifted and narrower
    "far": (0.4, 0.7),          # a weak method: F near the floor side
}
E = 28


def example_params(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(3, 2, E), rng.uniform(0.5, 2.5, E)


def draw_pair(rng, n, mu, sd, shift, scale):
    r = rng.normal(mu, sd, (n, E))
    u = rng.normal(mu + shift * sd, scale * sd, (n, E))
    return u, r


def quality(u, r):
    return float(points(example_epsilons(u, r), r.shape[0]).mean())


def true_f(n, mu, sd, shift, scale, k, seed):
    """Mean and sd of F over k fresh populations, vectorised: k populations = k * E columns."""
    rng = np.random.default_rng(seed)
    fs = []
    for a in range(0, k, 50):
        b = min(k, a + 50)
        r = rng.normal(np.tile(mu, b - a), np.tile(sd, b - a), (n, (b - a) * E))
        u = rng.normal(np.tile(mu + shift * sd, b - a), np.tile(scale * sd, b - a), (n, (b - a) * E))
        fs.append(points(example_epsilons(u, r), n).reshape(b - a, E).mean(axis=1))
    fs = np.concatenate(fs)
    return float(fs.mean()), float(fs.std(ddof=1))


def coverage(args):
    mu, sd = example_params(1)
    n = args.n
    for name in args.scenarios.split(","):
        shift, scale = SCENARIOS[name]
        t0 = time.perf_counter()
        truth, true_sd = true_f(n, mu, sd, shift, scale, args.truth, seed=2)
        rng = np.random.default_rng(3)
        hits, widths, spreads = {}, {}, {}

        def record(s, lo, hi, spread):
            lo, hi = max(lo, 0.0), min(hi, 1.0)
            hits.setdefault(s, []).append(lo <= truth <= hi)
            widths.setdefault(s, []).append(hi - lo)
            spreads.setdefault(s, []).append(spread)
        for rep in range(args.reps):
            u, r = draw_pair(rng, n, mu, sd, shift, scale)
            f_hat = quality(u, r)
            dev = {}
            for k in args.levels:        # m = N/k models per population, without replacement
                m = n // k
                fb = draw_qualities(u, r, half_indices(n, args.draws, rng, m), half_indices(n, args.draws, rng, m), n)
                dev[k] = fb - fb.mean()
                c = np.sqrt(m / (n - m))   # the root-n (linear statistic) rescaling; 1 at m = N/2
                q = np.quantile(c * dev[k], [0.025, 0.975])
                record(f"sub{k}" + ("_lin" if k > 2 else ""), f_hat + q[0], f_hat + q[1], (c * dev[k]).std(ddof=1))
                if k > 2:                  # no rescaling: F's spread taken as the same at m and N
                    q = np.quantile(dev[k], [0.025, 0.975])
                    record(f"sub{k}", f_hat + q[0], f_hat + q[1], dev[k].std(ddof=1))
            if 4 in dev and 8 in dev:
                # rate estimated from the spreads at N/8 and N/4 (sd ~ m^-beta, 0 <= beta <= 1/2), extrapolated
                s4, s8 = dev[4].std(ddof=1), dev[8].std(ddof=1)
                beta = float(np.clip(np.log(s8 / s4) / np.log(2), 0, 0.5)) if s4 > 0 and s8 > 0 else 0.5
                g = 4.0 ** -beta
                q = np.quantile(g * dev[4], [0.025, 0.975])
                record("rate", f_hat + q[0], f_hat + q[1], g * s4)
            if "boot" in args.schemes:
                fb = draw_qualities(u, r, rng.integers(0, n, (args.draws, n)), rng.integers(0, n, (args.draws, n)), n)
                q = np.quantile(fb, [0.025, 0.975])
                record("boot", q[0], q[1], fb.std(ddof=1))
                record("boot_c", f_hat + q[0] - fb.mean(), f_hat + q[1] - fb.mean(), fb.std(ddof=1))
                record("boot_basic", 2 * f_hat - q[1], 2 * f_hat - q[0], fb.std(ddof=1))
        for s in hits:
            k = len(hits[s])
            cov = float(np.mean(hits[s]))
            print(json.dumps({"scenario": name, "n_models": n, "scheme": s, "coverage": round(cov, 3),
                              "coverage_se": round(float(np.sqrt(cov * (1 - cov) / k)), 3), "reps": k,
                              "draws": args.draws, "true_mean_f": round(truth, 4), "true_sd_f": round(true_sd, 4),
                              "sd_ratio": round(float(np.mean(spreads[s])) / true_sd, 3) if true_sd > 0 else None,
                              "mean_width": round(float(np.mean(widths[s])), 4),
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


def synthetic_board(n, seed=0):
    """A digits-like board: retrained, oracle, original (far), 16 methods from close to far; 28 examples."""
    rng = np.random.default_rng(seed)
    mu, sd = example_params(seed)
    pops = {}

    def pop(shift, scale, acc):
        u, _ = draw_pair(rng, n, mu, sd, shift, scale)
        return {"conf": u, "retain_acc": np.clip(rng.normal(acc, 0.01, n), 0, 1),
                "test_acc": np.clip(rng.normal(acc - 0.03, 0.01, n), 0, 1)}
    pops["retrained"] = pop(0.0, 1.0, 0.99)
    pops["oracle"] = pop(0.0, 1.0, 0.99)
    pops["original"] = pop(1.5, 0.5, 1.0)
    for i, (shift, scale) in enumerate(zip(np.linspace(0.05, 1.2, 16), np.linspace(0.95, 0.5, 16))):
        pops[f"m{i}" if i else "finetune"] = pop(shift, scale, 0.98)
    return pops


def timing(args):
    if args.run:
        from obliviate.report.folder import load_run
        run = load_run(args.run)
        pops = {"retrained": run.reference()}
        for row in run.rows:
            pops[row["method"]] = run.row_population(row)
        roles = {row["method"]: row["role"] for row in run.rows}
        what = f"run {args.run}"
    else:
        pops = synthetic_board(args.n)
        roles = {"oracle": "ceiling", "original": "floor"}
        what = "synthetic digits-like board"
    n, e = pops["retrained"]["conf"].shape
    t0, c0 = time.perf_counter(), time.process_time()
    out = board_intervals(pops, roles=roles, seed=0, draws=args.draws)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    for k, v in out.items():
        print(k, v)
    print(json.dumps({"what": what, "rows": len(out), "n_models": n, "n_forget": e, "draws": args.draws,
                      "wall_seconds": round(secs, 2), "cpu_seconds": round(cpu, 2),
                      "load_average_1min": round(os.getloadavg()[0], 1)}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["coverage", "timing"])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--truth", type=int, default=1000, help="fresh populations for the true mean F")
    p.add_argument("--schemes", default="half,boot")
    p.add_argument("--scenarios", default="oracle,close,far")
    p.add_argument("--levels", default="2,4,8", type=lambda v: [int(x) for x in v.split(",")],
                   help="subsample sizes m = N/k to try (2: the library's half-samples)")
    p.add_argument("--run", default=None, help="timing: a run folder instead of the synthetic board")
    args = p.parse_args()
    coverage(args) if args.what == "coverage" else timing(args)


if __name__ == "__main__":
    main()
