"""Does the projection of F to N = 512 (obliviate/metrics/projection.py, `obliviate diagnose`) hit the truth?
docs/projection.md records the tables this prints.

    python benchmarks/projection.py synthetic                   # normal populations: projection from 64 vs a direct draw at 512
    python benchmarks/projection.py digits RUN64 RUN512         # a run at N = 64 projected, against the run at N = 512

Synthetic: E forget examples, retrained ~ Normal(mu_j, s), row ~ Normal(mu_j + g s, (r s)^2), the regime table's
cells (docs/challenge.md, "The regime") at retrained std s = 0.3 (digits' scale) and 1; plus a mixed row (half the
examples at the ceiling, half at gap 1.5: the empirical-Bayes prior is one normal, so this is its hard case).
Truth: F of `--direct` fresh draws at 512; projections from one draw of 64 models per population, with the
correction and without (the plug-in fit).

Digits: each row of RUN64 projected to RUN512's N, against RUN512's measured F and its interval; and, to see the
error's spread, every disjoint 64-model slice of RUN512 projected the same way (the slices are part of the measured
512 models, so they are not independent of the truth; RUN64's models are the first slice when the seeds agree).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from obliviate.metrics import forgetting_quality
from obliviate.metrics.projection import project_forgetting_quality, spread_and_gap
from obliviate.report.folder import load_run

CELLS = [(1.0, 0.0), (1.0, 0.5), (0.7, 0.3), (0.5, 0.25), (0.14, 1.2), ("mixed", None)]


def synthetic(scales=(0.3, 1.0), e=100, n_fit=64, n=512, direct=3, draws=50, seed=0):
    rng = np.random.default_rng(seed)
    print(f"| retrained std | spread ratio | location gap | F at {n}, direct ({direct} draws: mean, range) | "
          f"projected from {n_fit} (interval) | plug-in (no correction) |")
    print("|---|---|---|---|---|---|")
    for s in scales:
        for ratio, gap in CELLS:
            mu = rng.normal(0, 2, e)
            if ratio == "mixed":            # half the examples a perfect unlearner's, half far off (ratio 0.5, gap 1.5)
                rr, gg = np.where(np.arange(e) < e // 2, 1.0, 0.5), np.where(np.arange(e) < e // 2, 0.0, 1.5)
            else:
                rr, gg = np.full(e, ratio), np.full(e, gap)

            def pop(k, unlearned):
                z = rng.standard_normal((k, e))
                return mu + (gg * s + rr * s * z if unlearned else s * z)

            truth = [forgetting_quality(pop(n, True), pop(n, False)) for _ in range(direct)]
            u, r = pop(n_fit, True), pop(n_fit, False)
            p, (lo, hi) = project_forgetting_quality(u, r, n=n, draws=draws, seed=seed)
            q, _ = project_forgetting_quality(u, r, n=n, draws=draws, seed=seed, shrink=False)
            cell = ("half 1 / half 0.5", "half 0 / half 1.5") if ratio == "mixed" else (f"{ratio:g}", f"{gap:g}")
            print(f"| {s:g} | {cell[0]} | {cell[1]} | {np.mean(truth):.4f} ({min(truth):.4f}–{max(truth):.4f}) | "
                  f"{p:.4f} ({lo:.4f}–{hi:.4f}) | {q:.4f} |", flush=True)


COVER_CELLS = [(1.0, 0.0), (0.9, 0.2), (0.7, 0.3), (0.5, 0.25)]


def real_like(rng: np.random.Generator, e: int, ratio: float, gap: float, s: float = 1.0, rho: float = 0.1):
    """pop(k, unlearned) -> [k, e] confidences of populations like a real run's, not the textbook case: per-example
    stds, gaps and ratios vary (lognormal sd 0.3 around s; gap sd 0.3; log ratio sd 0.15), and every model shifts
    all examples together (correlation rho across examples; digits' forget examples: 0.08), which is noise
    shrinkage across examples cannot remove. Used by `coverage` and tests/test_diagnose.py."""
    mu, sd = rng.normal(0, 2, e), s * np.exp(rng.normal(0, 0.3, e))
    gg, rr = gap + rng.normal(0, 0.3, e), ratio * np.exp(rng.normal(0, 0.15, e))

    def pop(k: int, unlearned: bool) -> np.ndarray:
        z = np.sqrt(rho) * rng.standard_normal((k, 1)) + np.sqrt(1 - rho) * rng.standard_normal((k, e))
        return mu + (gg * sd + rr * sd * z if unlearned else sd * z)

    return pop


def coverage(n_fits=(8, 32), reps=16, e=99, n=512, s=1.0, rho=0.1, draws=50, seed=0):
    """Does the projection's interval cover a fresh board at n models at its nominal 95%? Populations like a real
    run's (`real_like`). Per replicate: fit from n_fit models per population, then one direct draw of n models per
    population is the board to cover."""
    rng = np.random.default_rng(seed)
    print(f"| spread ratio | location gap | fitted from N | F at {n}, direct (mean of {reps}) | projected (median) | "
          f"covered: draws only | covered: with the fit's jackknife | median interval width (x), with |")
    print("|---|---|---|---|---|---|---|---|")
    for ratio, gap in COVER_CELLS:
        for n_fit in n_fits:
            hits_old = hits_new = 0
            truth, proj, width = [], [], []
            for _ in range(reps):
                pop = real_like(rng, e, ratio, gap, s, rho)
                t = forgetting_quality(pop(n, True), pop(n, False))
                u, r = pop(n_fit, True), pop(n_fit, False)
                k = int(rng.integers(1 << 30))
                p, (lo0, hi0) = project_forgetting_quality(u, r, n=n, draws=draws, seed=k, fit_uncertainty=False)
                _, (lo, hi) = project_forgetting_quality(u, r, n=n, draws=draws, seed=k)
                hits_old += lo0 <= t <= hi0
                hits_new += lo <= t <= hi
                truth.append(t)
                proj.append(p)
                width.append(hi / lo)
            print(f"| {ratio:g} | {gap:g} | {n_fit} | {np.mean(truth):.4f} | {np.median(proj):.4f} | "
                  f"{hits_old}/{reps} | {hits_new}/{reps} | {np.median(width):.1f} |", flush=True)


def digits(small: Path, large: Path, draws=50, slice_draws=20):
    a, b = load_run(small), load_run(large)
    ra, rb = a.reference()["conf"], b.reference()["conf"]
    n_small, n = len(ra), len(rb)
    prefix = np.array_equal(ra, rb[:n_small])
    k = n // n_small
    print(f"{small} (N = {n_small}) -> {large} (N = {n}); the small run's retrained models are "
          f"{'the first' if prefix else 'not the first'} {n_small} of the large run's; {k} disjoint slices")
    print()
    print(f"| row | spread ratio / gap at {n_small} | at {n} | F at {n_small} | measured F at {n} (interval) | "
          f"projected from {n_small} (interval) | plug-in | slices: projected mean (min–max) | slices covering |")
    print("|---|---|---|---|---|---|---|---|---|")
    by_b = {r["method"]: r for r in b.rows}
    t0 = time.time()
    for row in a.rows:
        name = row["method"]
        if name not in by_b:
            continue
        big = by_b[name]
        ua, ub = a.row_population(row)["conf"], b.row_population(big)["conf"]
        sa, sb = spread_and_gap(ua, ra), spread_and_gap(ub, rb)
        p, (lo, hi) = project_forgetting_quality(ua, ra, n=n, draws=draws, seed=0)
        q, _ = project_forgetting_quality(ua, ra, n=n, draws=draws, seed=0, shrink=False)
        sl = [project_forgetting_quality(ub[i * n_small:(i + 1) * n_small], rb[i * n_small:(i + 1) * n_small], n=n,
                                         draws=slice_draws, seed=i) for i in range(k)]
        f = big["forgetting_quality"]
        cover = sum(lo_ <= f <= hi_ for _, (lo_, hi_) in sl)
        ci = big.get("forgetting_quality_ci")
        mark = {"ceiling": " (ceiling)", "floor": " (floor)"}.get(row["role"], "")
        print(f"| {name}{mark} | {sa[0]:.2f} / {sa[1]:+.2f} | {sb[0]:.2f} / {sb[1]:+.2f} | "
              f"{row['forgetting_quality']:.4f} | {f:.4f}" + (f" ({ci[0]:.4f}–{ci[1]:.4f})" if ci else "") +
              f" | {p:.4f} ({lo:.4f}–{hi:.4f}) | {q:.4f} | {np.mean([x for x, _ in sl]):.4f} "
              f"({min(x for x, _ in sl):.4f}–{max(x for x, _ in sl):.4f}) | {cover}/{k} |", flush=True)
    print(f"\n({time.time() - t0:.0f} s)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("synthetic")
    s.add_argument("--draws", type=int, default=50)
    c = sub.add_parser("coverage")
    c.add_argument("--reps", type=int, default=16)
    c.add_argument("--n-fit", type=int, nargs="+", default=[8, 32])
    d = sub.add_parser("digits")
    d.add_argument("small", type=Path)
    d.add_argument("large", type=Path)
    d.add_argument("--draws", type=int, default=50)
    d.add_argument("--slice-draws", type=int, default=20)
    a = ap.parse_args(argv)
    if a.what == "synthetic":
        synthetic(draws=a.draws)
    elif a.what == "coverage":
        coverage(n_fits=a.n_fit, reps=a.reps)
    else:
        digits(a.small, a.large, a.draws, a.slice_draws)


if __name__ == "__main__":
    main()
