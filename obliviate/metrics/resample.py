"""How much would F and the score move under another draw of models? Intervals, P(A beats B), ranks.

The randomness of a leaderboard figure is the draw of models: N retrained models (the reference every
row shares) and N models per row. We estimate it by HALF-SAMPLING both populations: each draw keeps
m = N // 2 models of every population, without replacement, and recomputes F and the score with the
run's own points function (M = ceil(ln(N - 1))). Every draw is re-centred on the run's estimate,
    F_b' = F_hat + (F_b - mean_b F_b),
and intervals are percentiles of F_b' (clipped to [0, 1]; scores to >= 0).

Why half-samples, measured (docs/intervals.md, benchmarks/intervals.py):
  * F is not a root-n statistic: over fresh populations its spread is flat in N (sd 0.018-0.019 from
    16 to 128 models), so m-out-of-N subsampling with the usual sqrt(m / (N - m)) rescaling is wrong
    at m = N/4 or N/8 (coverage 0.65 and 0.43 at N = 512). At m = N/2 the root-n rescaling is 1, the
    same as no rescaling: the one subsample size that does not need the rate. Coverage 0.95 at N = 512.
  * The bootstrap (N draws WITH replacement) duplicates models: threshold counts move in steps of a
    model's multiplicity and ranges shrink, so a bootstrap F is a different statistic from F; its plain
    percentile interval covers 0.25-0.55 at N = 64. Re-centred it does as well as half-samples, at 3x the
    cost (N models per draw instead of N/2: 0.54 against 0.16 ms per example at N = 512).

P(A beats B) is the share of draws with score_A' > score_B' (ties count half), and a rank interval the
percentiles of each method's rank among the methods over the draws. Draws are PAIRED: the retrained
indices of draw b are shared by every row, as every row of the run shares the reference.

Speed: a draw of one row is E more columns for example_epsilons (its search is vectorised over columns),
so each row is ONE call on [m, draws * E]; nothing models x thresholds is built.
"""
from __future__ import annotations

import numpy as np

from ..board import REFERENCE
from ..errors import UserError
from ..seeds import draw_label
from ..settings import RUN
from .challenge import challenge_score, example_epsilons, points

DRAWS = RUN["draws"]
CONFIDENCE = RUN["confidence"]


def check_confidence(confidence: float | None) -> None:
    """--confidence, wherever it is given (run, compare, nstudy, the Python API): None or strictly in (0, 1)."""
    if confidence is not None and not 0 < confidence < 1:
        raise UserError(f"--confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence}.")


def half_indices(n: int, draws: int, rng: np.random.Generator, m: int | None = None) -> np.ndarray:
    """[draws, m] sorted indices: each row m = n // 2 (or m) distinct models out of n."""
    m = n // 2 if m is None else m
    return np.sort(np.argsort(rng.random((draws, n)), axis=1)[:, :m], axis=1)


def draw_qualities(conf_u, conf_r, iu, ir, num_models: int) -> np.ndarray:
    """F of every draw b: the unlearned models iu[b] against the retrained models ir[b]; [draws].

    conf_u [Nu, E], conf_r [Nr, E]; iu [draws, mu], ir [draws, mr]; points use num_models (the run's N).
    """
    conf_u, conf_r = np.asarray(conf_u, np.float64), np.asarray(conf_r, np.float64)
    draws, e = iu.shape[0], conf_u.shape[1]
    u = conf_u[iu].transpose(1, 0, 2).reshape(iu.shape[1], draws * e)   # column b * E + j: draw b, example j
    r = conf_r[ir].transpose(1, 0, 2).reshape(ir.shape[1], draws * e)
    return points(example_epsilons(u, r), num_models).reshape(draws, e).mean(axis=1)


def _seed_seq(seed: int, name: str) -> np.random.Generator:
    """A generator per (run seed, row): a row's draws do not depend on which other rows exist. Callers name the
    row by its draw label (seeds.draw_label: frozen, apart from the row's display name)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, *name.encode()])


def draw_scores(pop: dict, f_b: np.ndarray, iu: np.ndarray, ratio_ref: np.ndarray) -> np.ndarray:
    """The challenge score of every draw: F_b x the draw's mean retain and test accuracy of the row's models
    iu[b], over `ratio_ref` (the same product for the draw's retrained models); [draws]."""
    return (f_b * np.asarray(pop["retain_acc"], float)[iu].mean(axis=1)
            * np.asarray(pop["test_acc"], float)[iu].mean(axis=1) / ratio_ref)


def board_draws(populations: dict, reference: str = REFERENCE, rows=None, seed: int = 0, draws: int = DRAWS,
                m: int | None = None, hats: dict | None = None) -> dict:
    """Re-centred draws of F and score for every row: {name: {"f": [draws], "score": [draws]}}, plus point
    estimates {"f_hat", "score_hat"}.

    populations: {name: {"conf": [N, E], "retain_acc": [N], "test_acc": [N], ...}} including `reference`;
    rows: the row names (default: every population but the reference); hats: {name: (F, score)} already
    computed by the caller (the leaderboard's rows), else computed here. Deterministic under `seed`.
    """
    ref = populations[reference]
    rows = [k for k in populations if k != reference] if rows is None else list(rows)
    n_ref = ref["conf"].shape[0]
    ir = half_indices(n_ref, draws, _seed_seq(seed, "/" + draw_label(reference)), m)
    ref_retain, ref_test = np.asarray(ref["retain_acc"], float), np.asarray(ref["test_acc"], float)
    ratio_ref = ref_retain[ir].mean(axis=1) * ref_test[ir].mean(axis=1)        # [draws] denominators
    out = {}
    for name in rows:
        pop = populations[name]
        n_u = pop["conf"].shape[0]
        iu = half_indices(n_u, draws, _seed_seq(seed, draw_label(name)), m)
        f_b = draw_qualities(pop["conf"], ref["conf"], iu, ir, n_ref)
        s_b = draw_scores(pop, f_b, iu, ratio_ref)
        f_hat, s_hat = hats[name] if hats else _point(pop, ref)                 # the leaderboard's own figures
        out[name] = {"f_hat": f_hat, "score_hat": s_hat,
                     "f": f_hat + (f_b - f_b.mean()), "score": s_hat + (s_b - s_b.mean())}
    return out


def interval(values: np.ndarray, confidence: float = CONFIDENCE, lo: float = 0.0, hi: float = np.inf) -> list:
    """[low, high]: the central `confidence` share of re-centred draws, clipped to [lo, hi]."""
    a = (1 - confidence) / 2
    q = np.quantile(values, [a, 1 - a])
    return [float(np.clip(q[0], lo, hi)), float(np.clip(q[1], lo, hi))]


def beats(a: np.ndarray, b: np.ndarray) -> float:
    """Share of paired draws where a > b (ties count half)."""
    return float(np.mean(a > b) + 0.5 * np.mean(a == b))


def board_intervals(populations: dict, reference: str = REFERENCE, rows=None, roles=None,
                    confidence: float = CONFIDENCE, seed: int = 0, draws: int = DRAWS, baseline: str = "finetune",
                    m: int | None = None, hats: dict | None = None) -> dict:
    """Per row: forgetting_quality_ci, score_ci; per method row also rank, rank_ci, p_beats_baseline,
    p_beats_next (the method ranked just below by score).

    roles: {name: "method" | "ceiling" | "floor"} (default: every row is a method); ranks and P(beats) are
    over the method rows only. Returns {name: {key: value}}; values are JSON-ready floats/lists/None.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence}.")
    d = board_draws(populations, reference, rows, seed, draws, m, hats)
    roles = roles or {}
    out = {name: {"forgetting_quality_ci": interval(v["f"], confidence, 0.0, 1.0),
                  "score_ci": interval(v["score"], confidence, 0.0)} for name, v in d.items()}
    methods = sorted((k for k in d if roles.get(k, "method") == "method"), key=lambda k: -d[k]["score_hat"])
    if methods:
        s = np.stack([d[k]["score"] for k in methods])                        # [methods, draws]
        ranks = 1 + (s[None, :, :] > s[:, None, :]).sum(axis=1)              # ties share the best place
        hat = np.array([d[k]["score_hat"] for k in methods])
        place = 1 + (hat[None, :] > hat[:, None]).sum(axis=1)
        a = (1 - confidence) / 2
        for i, k in enumerate(methods):
            lo, hi = np.quantile(ranks[i], [a, 1 - a], method="inverted_cdf")
            out[k].update(rank=int(place[i]), rank_ci=[int(lo), int(hi)],
                          p_beats_baseline=beats(s[i], d[baseline]["score"]) if baseline in d and k != baseline
                          else None,
                          beats_next=methods[i + 1] if i + 1 < len(methods) else None,
                          p_beats_next=beats(s[i], s[i + 1]) if i + 1 < len(methods) else None)
    return out


def row_intervals(rows: list, populations: dict, reference: str = REFERENCE, confidence: float = CONFIDENCE,
                  seed: int = 0, draws: int = DRAWS, baseline: str = "finetune") -> dict:
    """board_intervals' keys for leaderboard rows (rows carry "method", "role", "forgetting_quality", "score"):
    {row name: {key: value}}.

    Populations of fewer than 4 models cannot be half-sampled (a half needs 2 models): their rows get None.
    """
    names = [r["method"] for r in rows]
    if min(populations[k]["conf"].shape[0] for k in [reference, *names]) < 4:
        return {k: {"forgetting_quality_ci": None, "score_ci": None} for k in names}
    return board_intervals(populations, reference, names, {r["method"]: r["role"] for r in rows}, confidence, seed,
                           draws, baseline, hats={r["method"]: (r["forgetting_quality"], r["score"]) for r in rows})


def annotate_rows(rows: list, populations: dict, reference: str = REFERENCE, confidence: float = CONFIDENCE,
                  seed: int = 0, draws: int = DRAWS, baseline: str = "finetune") -> list:
    """Add row_intervals' keys to leaderboard rows in place; returns rows."""
    out = row_intervals(rows, populations, reference, confidence, seed, draws, baseline)
    for r in rows:
        r.update(out[r["method"]])
    return rows


# ----------------------------------------------------------------------------- how many models does a question need

STUDY_DRAWS = RUN["study_draws"]


def _avg_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..k of the last axis, ties sharing their average rank (as Spearman's rho needs)."""
    o = np.argsort(x, axis=-1, kind="stable")
    r = np.empty_like(x, dtype=float)
    np.put_along_axis(r, o, np.arange(1, x.shape[-1] + 1, dtype=float) * np.ones_like(x, dtype=float), axis=-1)
    out = r.copy()
    for idx in np.ndindex(x.shape[:-1]):              # average the ranks of tied values (rare: few rows)
        v = x[idx]
        _, inv, cnt = np.unique(v, return_inverse=True, return_counts=True)
        if (cnt > 1).any():
            out[idx] = (np.bincount(inv, r[idx]) / cnt)[inv]
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho between each row of a [..., k] and b [k] (nan when either is constant)."""
    ra, rb = _avg_ranks(np.asarray(a, float)), _avg_ranks(np.asarray(b, float)[None])[0]
    ra, rb = ra - ra.mean(-1, keepdims=True), rb - rb.mean()
    den = np.sqrt((ra ** 2).sum(-1) * (rb ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(-1) / den


def study_sizes(n_models: int, smallest: int = 8) -> list:
    """8, 16, 32, ... below n_models, then n_models itself."""
    sizes, n = [], smallest
    while n < n_models:
        sizes.append(n)
        n *= 2
    return sizes + [n_models]


def n_study(populations: dict, reference: str = REFERENCE, rows=None, roles=None, sizes=None,
            confidence: float = CONFIDENCE, seed: int = 0, draws: int = STUDY_DRAWS, board=None) -> dict:
    """F and score per row at n = 8, 16, ..., N models per population, from the stored models (no retraining).

    At n < N: `draws` subsamples of n models per population without replacement (the reference subsampled
    once per draw and shared by every row, as a run with n models would share it), each scored exactly as a
    run with n models would be (M = ceil(ln(n - 1))); reported: the mean F and score over the draws, their
    central `confidence` interval, and the mean Spearman rho between the methods' score ranking in a draw
    and the full-N ranking. At n = N: the run itself (F, score and intervals of `board`, or of
    board_intervals when board is None), rho = 1.
    Returns {"sizes": [...], "rows": {name: {"f": [...], "f_ci": [[lo, hi], ...], "score": [...],
    "score_ci": [...]}}, "rho": [...], "rho_ci": [...], "methods": [...]}.
    """
    ref = populations[reference]
    n_ref = ref["conf"].shape[0]
    rows = [k for k in populations if k != reference] if rows is None else list(rows)
    roles = roles or {}
    sizes = sizes or study_sizes(n_ref)
    if any(n < 2 or n > min(populations[k]["conf"].shape[0] for k in [reference, *rows]) for n in sizes):
        raise ValueError(f"study sizes must lie in [2, smallest population] ({sizes}).")
    full = board or board_intervals(populations, reference, rows, roles, confidence, seed)
    a = (1 - confidence) / 2
    out = {name: {"f": [], "f_ci": [], "score": [], "score_ci": []} for name in rows}
    methods = [k for k in rows if roles.get(k, "method") == "method"]
    ref_retain, ref_test = np.asarray(ref["retain_acc"], float), np.asarray(ref["test_acc"], float)
    full_scores = np.array([_point(populations[k], ref)[1] for k in methods])
    rho, rho_ci = [], []
    for n in sizes:
        if n == n_ref:
            for name in rows:
                f_hat, s_hat = _point(populations[name], ref)
                o = out[name]
                o["f"].append(f_hat), o["score"].append(s_hat)
                o["f_ci"].append(full[name]["forgetting_quality_ci"]), o["score_ci"].append(full[name]["score_ci"])
            rho.append(1.0), rho_ci.append([1.0, 1.0])
            continue
        ir = half_indices(n_ref, draws, _seed_seq(seed, f"/{draw_label(reference)}/n={n}"), n)
        ratio_ref = ref_retain[ir].mean(axis=1) * ref_test[ir].mean(axis=1)
        scores = {}
        for name in rows:
            pop = populations[name]
            iu = half_indices(pop["conf"].shape[0], draws, _seed_seq(seed, f"{draw_label(name)}/n={n}"), n)
            f_b = draw_qualities(pop["conf"], ref["conf"], iu, ir, n)
            s_b = draw_scores(pop, f_b, iu, ratio_ref)
            scores[name] = s_b
            o = out[name]
            o["f"].append(float(f_b.mean())), o["score"].append(float(s_b.mean()))
            o["f_ci"].append(np.quantile(f_b, [a, 1 - a]).tolist())
            o["score_ci"].append(np.quantile(s_b, [a, 1 - a]).tolist())
        if len(methods) > 1:
            r = spearman(np.stack([scores[k] for k in methods], axis=1), full_scores)
            rho.append(float(np.nanmean(r))), rho_ci.append(np.nanquantile(r, [a, 1 - a]).tolist())
        else:
            rho.append(None), rho_ci.append(None)
    return {"sizes": list(sizes), "rows": out, "rho": rho, "rho_ci": rho_ci, "methods": methods,
            "confidence": confidence, "draws": draws, "seed": seed}


def _point(pop: dict, ref: dict) -> tuple:
    """(F, score) of a population against the reference, as the leaderboard computes them."""
    f = float(points(example_epsilons(pop["conf"], ref["conf"]), ref["conf"].shape[0]).mean())
    return f, challenge_score(f, pop["retain_acc"], ref["retain_acc"], pop["test_acc"], ref["test_acc"])


__all__ = ["DRAWS", "CONFIDENCE", "STUDY_DRAWS", "half_indices", "draw_qualities", "board_draws", "board_intervals",
           "annotate_rows", "row_intervals", "interval", "beats", "spearman", "study_sizes", "n_study"]
