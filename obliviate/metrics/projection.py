"""Where does a row sit, and what F would it score at N = 512? Arrays in, numbers out (docs/projection.md).

Diagnostics (docs/studies/calibration.md; docs/challenge.md, "The regime"), per forget
example over the models, each summarised by the median over forget examples:

    spread ratio   std(row) / std(retrained)                   1 for a perfect unlearner, 0 for identical models
    location gap   (median row - median retrained) / std(retrained)   0 for a perfect unlearner
    retrained std  std(retrained), in confidence units (the metric's threshold grid is not scale-free)

Unlike F they do not fall with the number of models, so a run at small N can be screened on them.

Projection of F to n models (`project_forgetting_quality`): each example's two populations are modelled as
normals, retrained N(m_r, s_r) and row N(m_r + g s_r, (s_r e^l)^2), with the gap g and log spread ratio l of
every example estimated from the run's models, then n models are drawn from each and scored with the official
metric. Fitted from N models, g and l carry sampling noise (sd ~ sqrt(2 / N) each): at N = 64 two samples of one
population look ~0.18 sd apart, a difference 512 models expose, so plugging the raw estimates in projects a
perfect unlearner far too low (digits, 64 -> 512: 0.073 against 0.107 measured). The correction is empirical
Bayes: across the forget examples, each estimate x_j (gap, and separately log ratio) = theta_j + noise of known
variance v_j (normal theory), theta_j ~ G, with G estimated by nonparametric maximum likelihood on a grid (`_npmle`),
and every draw takes each example's theta_j from its posterior. Shrinkage removes the noise that made two samples
of one population look different; a nonparametric G (not one normal) keeps a row whose examples are partly
forgotten and partly not from being pulled to their middle; drawing from the posterior (not plugging in its mean)
keeps the spread of the true differences across examples and carries their uncertainty into the interval.

The interval adds the fit's own uncertainty (`fit_se`: a delete-a-group jackknife over the run's models), which
the per-example posteriors miss because every example is scored by the same N models: measured on synthetic
populations built like a real run's, 184 of 192 fresh 512-model boards covered (nominal 95%) against 101 by the
draws alone (benchmarks/projection.py coverage; docs/projection.md).
"""
from __future__ import annotations

import numpy as np
from scipy.special import digamma, polygamma
from scipy.stats import norm

from .challenge import example_epsilons, points

PROJECT_N = 512        # the challenge's population size (docs/challenge.md)
DRAWS = 50             # repetitions of (posterior draw of g, l; n fresh models per population); docs/projection.md
CONFIDENCE = 0.95      # the interval's level, as the leaderboard's (metrics/resample.py)


def _stds(conf: np.ndarray) -> np.ndarray:
    """Per-example std over the models (ddof 1); exactly 0 where every model gives the same value (numpy's
    two-pass std leaves ~1e-16 of rounding there, which would read as a spread)."""
    conf = np.asarray(conf, np.float64)
    s = conf.std(0, ddof=1)
    s[np.ptp(conf, 0) == 0] = 0.0
    return s


def row_seed(seed: int, name: str) -> list[int]:
    """A projection's seed per (run seed, row): a row's projection does not depend on which other rows exist.
    Callers name the row by its draw label (seeds.draw_label), as resample's draws do."""
    return [seed & 0xFFFFFFFF, *name.encode()]


def spread_and_gap(conf_u: np.ndarray, conf_ref: np.ndarray) -> tuple[float, float]:
    """(spread ratio, location gap) of a row against the retrained models; conf: [models, forget examples].
    Per forget example: std(row) / std(retrained) and (median row - median retrained) / std(retrained), over
    the models (ddof 1); each the median over the forget examples whose retrained std is positive."""
    conf_u, conf_ref = np.asarray(conf_u, np.float64), np.asarray(conf_ref, np.float64)
    su, sr = _stds(conf_u), _stds(conf_ref)
    ok = sr > 0
    if not ok.any():
        return float("nan"), float("nan")
    ratio = float(np.median(su[ok] / sr[ok]))
    gap = float(np.median((np.median(conf_u, 0)[ok] - np.median(conf_ref, 0)[ok]) / sr[ok]))
    return ratio, gap


def spread_ratio(conf_u, conf_ref) -> float:
    return spread_and_gap(conf_u, conf_ref)[0]


def location_gap(conf_u, conf_ref) -> float:
    return spread_and_gap(conf_u, conf_ref)[1]


def retrained_std(conf_ref) -> float:
    """Median over forget examples of the per-example std of the retrained confidences (confidence units)."""
    return float(np.median(_stds(conf_ref)))


# --- the projection ---------------------------------------------------------------------------------------
def _log_sd_moments(n: int) -> tuple[float, float]:
    """Bias and variance of log(s), s the sample std (ddof 1) of n normal values, around log(sigma): exact,
    (n - 1) s^2 / sigma^2 ~ chi^2_(n - 1). Bias (digamma((n - 1) / 2) - log((n - 1) / 2)) / 2 (-0.008 at 64),
    variance trigamma((n - 1) / 2) / 4 (~ 1 / (2 (n - 1)); 0.0079 at 64)."""
    k = (n - 1) / 2
    return float(digamma(k) - np.log(k)) / 2, float(polygamma(1, k)) / 4


GRID = 200          # support points of the estimated prior (NPMLE): spacing (range of the estimates) / 200
EM_STEPS = 500      # EM iterations for the prior's weights (converged to ~1e-4 in F on the synthetic cases)


def _npmle(x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nonparametric empirical Bayes over examples: x_j = theta_j + noise ~ Normal(0, v_j), theta_j ~ G, G a
    discrete distribution on GRID points spanning the estimates, its weights the maximum-likelihood ones (EM;
    Kiefer-Wolfowitz NPMLE, as in Koenker & Mizera 2014 / Jiang & Zhang 2009). Returns (grid [K], posterior
    probabilities [E, K]) of each theta_j. One normal prior would pull a row whose examples are partly forgotten
    and partly not towards their middle (synthetic: F 0.046 projected against 0.088); a discrete G keeps both."""
    grid = np.linspace(x.min(), x.max(), GRID) if np.ptp(x) > 0 else x[:1].copy()
    loglik = -0.5 * (x[:, None] - grid[None, :]) ** 2 / v[:, None]
    lik = np.exp(loglik - loglik.max(1, keepdims=True))                 # per-row scale cancels in the posterior
    w = np.full(len(grid), 1 / len(grid))
    for _ in range(EM_STEPS):
        post = lik * w
        post /= post.sum(1, keepdims=True)
        w = post.mean(0)
    post = lik * w
    return grid, post / post.sum(1, keepdims=True)


def fit(conf_u: np.ndarray, conf_ref: np.ndarray, shrink: bool = True) -> dict:
    """Per-example normal model of the two populations from the run's models: {"m_r", "s_r", "m_u", "s_u",
    "gap", "log_ratio"} (raw estimates, [examples]; log_ratio corrected for the bias of log s when the model counts
    differ), "ok" (both populations spread: the examples whose gap and log ratio are drawn from a posterior) and,
    with shrink, "gap_post" / "log_ratio_post": (grid, posterior probabilities [ok examples, grid]) of `_npmle`."""
    u, r = np.asarray(conf_u, np.float64), np.asarray(conf_ref, np.float64)
    nu, nr = len(u), len(r)
    m_r, s_r, m_u, s_u = r.mean(0), _stds(r), u.mean(0), _stds(u)
    ok = (s_r > 0) & (s_u > 0)
    (bias_u, var_u), (bias_r, var_r) = _log_sd_moments(nu), _log_sd_moments(nr)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.where(s_r > 0, (m_u - m_r) / s_r, 0.0)
        log_ratio = np.where(ok, np.log(s_u / s_r) - (bias_u - bias_r), -np.inf)
    model = {"m_r": m_r, "s_r": s_r, "m_u": m_u, "s_u": s_u, "gap": gap, "log_ratio": log_ratio, "ok": ok}
    if shrink and ok.any():
        # sampling variances under normality: the gap's from both means and (delta method) from s_r in the
        # denominator; the log ratio's from both log stds
        v_gap = np.exp(2 * log_ratio[ok]) / nu + 1 / nr + gap[ok] ** 2 * var_r
        v_lr = np.full(ok.sum(), var_u + var_r)
        model["gap_post"] = _npmle(gap[ok], v_gap)
        model["log_ratio_post"] = _npmle(log_ratio[ok], v_lr)
    return model


def _sample(post: tuple, draws: int, rng: np.random.Generator) -> np.ndarray:
    """[draws, examples]: each example's theta drawn from its discrete posterior (grid, probabilities)."""
    grid, p = post
    cdf = np.cumsum(p, 1)
    idx = (cdf[None, :, :] < rng.random((draws, p.shape[0], 1)) * cdf[None, :, -1:]).sum(-1)
    return grid[np.minimum(idx, len(grid) - 1)]


def draw_populations(model: dict, n: int, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """[n, draws * E] row and retrained confidences (column b * E + j: draw b, example j) from a `fit`: retrained
    N(m_r, s_r); row N(m_r + gap s_r, (s_r e^log_ratio)^2), gap and log_ratio drawn from their posteriors when
    fitted with shrink (else the raw estimates). A row without spread stays constant; where the retrained models
    have none, the row keeps its own mean and std."""
    e, ok = len(model["m_r"]), model["ok"]
    m_r, s_r = model["m_r"], model["s_r"]
    gap = np.broadcast_to(model["gap"], (draws, e)).copy()
    lr = np.broadcast_to(model["log_ratio"], (draws, e)).copy()
    if "gap_post" in model:
        gap[:, ok] = _sample(model["gap_post"], draws, rng)
        lr[:, ok] = _sample(model["log_ratio_post"], draws, rng)
    loc_u = np.where(s_r > 0, m_r + gap * s_r, model["m_u"])
    sd_u = np.where(s_r > 0, s_r * np.exp(lr), model["s_u"])             # exp(-inf) = 0: a constant row stays constant
    r = m_r + s_r * rng.standard_normal((n, draws, e))
    u = loc_u + sd_u * rng.standard_normal((n, draws, e))
    return u.reshape(n, draws * e), r.reshape(n, draws * e)


GROUPS = 8             # delete-a-group jackknife over each population's models: 2 x 8 refits (docs/projection.md)
GROUP_DRAWS = 10       # draws per jackknife refit, on the point's seed (common random numbers cancel the draw noise)
LOG_FLOOR = 1e-6       # F below this (a row without spread scores 0) has no log: its interval is the draws' alone


def _draw_f(conf_u, conf_ref, n: int, draws: int, seed, shrink: bool) -> np.ndarray:
    """[draws] F at n models, each from a fresh posterior draw of every example's (gap, log ratio) and fresh models."""
    model = fit(conf_u, conf_ref, shrink=shrink)
    u, r = draw_populations(model, n, draws, np.random.default_rng(seed))
    return points(example_epsilons(u, r), n).reshape(draws, len(model["m_r"])).mean(1)


def fit_se(conf_u, conf_ref, n: int = PROJECT_N, seed: int = 0, shrink: bool = True, groups: int = GROUPS,
           draws: int = GROUP_DRAWS) -> float:
    """Standard error of log(projected F) over which models the run happened to train: a delete-a-group jackknife
    (Efron & Stein; Shao & Wu 1989), each population's models cut into `groups` groups, one left out per refit, the
    two populations' variances added ((g - 1) / g x sum of squared deviations, each). When the two are one population
    (the ceiling: the reference against itself) the same models leave both. Why: the posterior draws carry each
    example's own noise, which averages out over ~100 examples, but not the noise every example shares through
    the same N models (F from four disjoint 8-model slices of one run: 0.019 to 0.098, draw intervals apart)."""
    u, r = np.asarray(conf_u, np.float64), np.asarray(conf_ref, np.float64)
    same = conf_u is conf_ref or (u.shape == r.shape and np.array_equal(u, r))    # the reference against itself

    def log_f(uu, rr):
        return np.log(max(float(np.median(_draw_f(uu, rr, n, draws, seed, shrink))), LOG_FLOOR))

    var = 0.0
    for which in ((0,) if same else (0, 1)):
        m = len(u) if which == 0 else len(r)
        g = min(groups, m)
        if m - -(-m // g) < 2:                  # leaving the largest group out must leave a spread to fit
            return float("nan")
        vals = []
        for drop in np.array_split(np.arange(m), g):
            keep = np.setdiff1d(np.arange(m), drop)
            vals.append(log_f(u[keep], u[keep]) if same else log_f(u[keep], r) if which == 0 else log_f(u, r[keep]))
        vals = np.asarray(vals)
        var += (g - 1) / g * float(((vals - vals.mean()) ** 2).sum())
    return float(np.sqrt(var))


def project_forgetting_quality(conf_u, conf_ref, n: int = PROJECT_N, draws: int = DRAWS, seed: int = 0,
                               confidence: float = CONFIDENCE, shrink: bool = True,
                               fit_uncertainty: bool = True) -> tuple[float, tuple[float, float]]:
    """F that the row would score with n models per population: (median over draws, (lo, hi) at `confidence`).
    Each draw takes every example's gap and log spread ratio from its empirical-Bayes posterior (`fit`), draws n
    row and n retrained models from the normal model, and scores them with the official metric (points with
    M = ceil(ln(n - 1))). The interval is predictive: where a measured board at n models should fall, given the
    run's models. It adds, on the log scale, the draws' percentile half-widths and the fit's own uncertainty
    (`fit_se`, z x se; with fit_uncertainty=False the draws' percentiles alone, as before 2026-12-03)."""
    if n < 2:
        raise ValueError(f"n must be at least 2 models (got {n}).")
    f = _draw_f(conf_u, conf_ref, n, draws, seed, shrink)
    a = (1 - confidence) / 2
    point, (lo, hi) = float(np.median(f)), np.quantile(f, [a, 1 - a])
    if not fit_uncertainty or point < LOG_FLOOR:
        return point, (float(lo), float(hi))
    se = fit_se(conf_u, conf_ref, n, seed, shrink, draws=min(GROUP_DRAWS, draws))   # a cheap call stays cheap
    if not np.isfinite(se):
        return point, (float(lo), float(hi))
    z = float(norm.ppf(1 - a))
    down = np.hypot(np.log(point / max(lo, LOG_FLOOR)), z * se)
    up = np.hypot(np.log(max(hi, LOG_FLOOR) / point), z * se)
    return point, (float(point * np.exp(-down)), float(min(1.0, point * np.exp(up))))   # F <= 1 (points <= 1)
