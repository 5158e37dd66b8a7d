"""Per-example distances between the unlearned and the retrained confidence distributions.

Both functions take ``u`` [N_u, n_forget] and ``r`` [N_r, n_forget]: logit-scaled
confidences of two model populations on the same forget examples (column j is example j).
For every example the two columns are compared as samples of two distributions; the
per-example values are then averaged over the forget examples.

* ``ks_distance``: the two-sample Kolmogorov-Smirnov statistic
  ``D_j = sup_x |F_u(x) - F_r(x)|`` (empirical CDFs; identical to
  ``scipy.stats.ks_2samp(u[:, j], r[:, j]).statistic``, ties included). In [0, 1]; 0 ideal.
* ``kl_divergence``: ``KL(retrained || unlearned) = sum_b p_b log(p_b / q_b)`` in nats,
  estimated from histograms. Binning, per example: ``KL_BINS`` (= 20) equal-width bins
  shared by both populations, spanning the pooled range [min, max] of that example's
  confidences in both populations (the max falls in the last bin); additive (Laplace)
  smoothing of ``KL_ALPHA`` (= 1) pseudo-count per bin, so ``p_b = (n_b + 1) / (N_r + 20)``
  for the retrained population and likewise ``q_b`` for the unlearned one. An example whose
  pooled range is zero (all models give the same confidence) has KL 0. The direction puts
  the retrained (the reference, "true") distribution first: the expected log-likelihood
  ratio, under retrained models, of "retrained" against "unlearned". 0 ideal; grows with
  the separation, bounded by the smoothing at about ``log((N + 20) / 1)``.
"""
from __future__ import annotations

import numpy as np

KL_BINS = 20
KL_ALPHA = 1.0


def _check(u, r) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(u, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    if u.ndim == 1:
        u = u[:, None]
    if r.ndim == 1:
        r = r[:, None]
    if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1] or u.shape[0] == 0 or r.shape[0] == 0:
        raise ValueError(f"distances want two populations [N_u, n_forget] and [N_r, n_forget] of confidences "
                         f"on the same forget examples; got shapes {u.shape} and {r.shape}.")
    if np.isnan(u).any() or np.isnan(r).any():
        raise ValueError("distances got NaN confidences; the evaluation produced bad logits.")
    return u, r


def ks_per_example(u, r) -> np.ndarray:
    """Two-sample KS statistic of every example (column) [n_forget]."""
    u, r = _check(u, r)
    nu, nr = u.shape[0], r.shape[0]
    pooled = np.concatenate([u, r], axis=0)                        # [nu + nr, n]
    order = np.argsort(pooled, axis=0, kind="stable")
    vals = np.take_along_axis(pooled, order, axis=0)
    cu = np.cumsum(order < nu, axis=0)                             # u values among the first k sorted
    cr = np.arange(1, nu + nr + 1)[:, None] - cu                   # r values among them
    diff = cu / nu - cr / nr                                       # F_u - F_r after each sorted value
    last_of_tie = np.ones_like(vals, dtype=bool)                   # only evaluate once all ties are in
    last_of_tie[:-1] = vals[1:] != vals[:-1]
    return np.abs(np.where(last_of_tie, diff, 0.0)).max(axis=0)


def ks_distance(u, r) -> float:
    """Mean over forget examples of the two-sample KS statistic (0 ideal, 1 = fully separated)."""
    return float(ks_per_example(u, r).mean())


def _histograms(x: np.ndarray, lo: np.ndarray, width: np.ndarray, bins: int) -> np.ndarray:
    """Counts [n, bins] of every column of x [N, n] in its own bins [lo, lo + width]."""
    n = x.shape[1]
    safe = np.where(width > 0, width, 1.0)
    idx = np.clip(np.floor((x - lo) / safe * bins), 0, bins - 1).astype(np.int64)
    idx += np.arange(n)[None, :] * bins
    return np.bincount(idx.ravel(), minlength=n * bins).reshape(n, bins).astype(np.float64)


def kl_per_example(u, r, bins: int = KL_BINS, alpha: float = KL_ALPHA) -> np.ndarray:
    """Histogram estimate of KL(retrained || unlearned) per example [n_forget], in nats."""
    u, r = _check(u, r)
    lo = np.minimum(u.min(0), r.min(0))
    hi = np.maximum(u.max(0), r.max(0))
    with np.errstate(invalid="ignore", over="ignore"):
        width = hi - lo
    if not np.isfinite(width).all():
        raise ValueError("kl_divergence got infinite confidences; clip them to a finite range first.")
    p = _histograms(r, lo, width, bins) + alpha
    q = _histograms(u, lo, width, bins) + alpha
    p /= p.sum(1, keepdims=True)
    q /= q.sum(1, keepdims=True)
    kl = (p * (np.log(p) - np.log(q))).sum(1)
    return np.where(width > 0, np.maximum(kl, 0.0), 0.0)


def kl_divergence(u, r, bins: int = KL_BINS, alpha: float = KL_ALPHA) -> float:
    """Mean over forget examples of the histogram KL(retrained || unlearned), in nats (0 ideal)."""
    return float(kl_per_example(u, r, bins, alpha).mean())
