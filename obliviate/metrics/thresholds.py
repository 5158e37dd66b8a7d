"""Steps 2-5 of the official metric for ONE forget example, literally: the threshold grids, the epsilon
of a threshold as a table over integer counts, and every threshold evaluated (`exhaustive`).

This is the definition the fast search (search.py) must reproduce bit for bit; docs/metric.md derives why
it does. docs/challenge.md, "The official metric", is the contract; step numbers refer to it.
"""
import numpy as np

DELTA = 1e-5  # step 5
EPSILON_CAP = 50.0  # steps 3, 5
PER_UNIT = 100  # thresholds per unit of confidence (step 4)
BUFFER = 2.0  # double-threshold buffer (step 4)
N_LEFT = 400  # left thresholds per right threshold: ceil(2 * BUFFER * PER_UNIT)
PEAKY_RATIO = 0.01  # step 3


# ----------------------------------------------------------------------------- step 5 as a table

_TABLES = {}


def eps_table(n_neg, n_pos):
    """eps_table[fp * (n_pos + 1) + fn]: the epsilon of a threshold with fp false positives out
    of n_neg and fn false negatives out of n_pos (step 5).

    +inf where fp = fn = 0 (perfect separation); -inf where the threshold is discarded (fp = 0
    or fn = 0 but not both; both log terms NaN). Elsewhere the literal float64 formula, so a
    lookup equals computing it per threshold bit for bit. On fp, fn >= 1 the table never
    increases with fp or with fn (both log terms decrease; a NaN term only appears at the
    large-rate end): the branch-and-bound bounds rest on this.
    """
    key = (n_neg, n_pos)
    if key not in _TABLES:
        fpr = (np.arange(n_neg + 1, dtype=np.float64) / n_neg)[:, None]
        fnr = (np.arange(n_pos + 1, dtype=np.float64) / n_pos)[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = np.log(1 - DELTA - fpr) - np.log(fnr)
            t2 = np.log(1 - DELTA - fnr) - np.log(fpr)
        t = np.maximum(0.0, np.fmax(t1, t2))  # nanmax over the two terms, then clip at 0
        t[np.isnan(t1) & np.isnan(t2)] = -np.inf
        t[0, :] = t[:, 0] = -np.inf
        t[0, 0] = np.inf
        if len(_TABLES) > 8:
            _TABLES.clear()
        _TABLES[key] = t.ravel()
    return _TABLES[key]


def median_sorted(s):
    """np.median of each row of a row-sorted array, bit for bit (the mean of the middle two)."""
    n = s.shape[-1]
    return s[..., n // 2] if n % 2 else (s[..., n // 2 - 1] + s[..., n // 2]) / 2


def linspace_rows(lo, hi, num, width):
    """Row e is np.linspace(lo[e], hi[e], num[e]), padded to `width` by repeating its last value.

    The same float operations as np.linspace: k * ((hi - lo) / (num - 1)) + lo, last set to hi.
    """
    k = np.minimum(np.arange(width), np.maximum(num - 1, 0)[:, None])
    y = k * ((hi - lo) / np.maximum(num - 1, 1))[:, None] + lo[:, None]
    return np.where((k == num[:, None] - 1) & (num[:, None] > 1), hi[:, None], y)


# ----------------------------------------------------------------------------- one example, all thresholds

def exhaustive(u, r):
    """Every threshold of one example evaluated (~160k): (epsilon, best attack). Exact and simple;
    used by best_attack and by search.py for confidences beyond +-1e6 (where its block arithmetic is not trusted)."""
    u, r = np.sort(u), np.sort(r)
    pos_is_u = not median_sorted(r) > median_sorted(u)
    pos, neg = (u, r) if pos_is_u else (r, u)
    pos_rng, neg_rng = pos[-1] - pos[0], neg[-1] - neg[0]
    if max(pos_rng, neg_rng) > 0 and min(pos_rng, neg_rng) / max(pos_rng, neg_rng) < PEAKY_RATIO:
        return EPSILON_CAP, {"kind": "peaky"}
    # Double: P (peakier; equal ranges -> neg) predicted inside [left, right]; rates with P positive.
    p_is_pos = pos_rng < neg_rng
    P, Q = (pos, neg) if p_is_pos else (neg, pos)
    w = P[-1] - P[0]
    lo, hi = (P[0] + w) - BUFFER, P[-1] + BUFFER
    right = np.linspace(lo, hi, int(np.ceil((hi - lo) * PER_UNIT)))
    left = np.linspace((right - w) - BUFFER, (right - w) + BUFFER, N_LEFT, axis=1)  # == per-row np.linspace
    tp = np.maximum(0, P.searchsorted(right, "right")[:, None] - P.searchsorted(left, "left"))
    fp = np.maximum(0, Q.searchsorted(right, "right")[:, None] - Q.searchsorted(left, "left"))
    d_fn = P.size - tp
    d_vals = eps_table(Q.size, P.size)[fp * (P.size + 1) + d_fn].ravel()
    # Single: pos predicted when conf >= t.
    lo, hi = min(pos[0], neg[0]), max(pos[-1], neg[-1])
    t = np.linspace(lo, hi, int(np.ceil((hi - lo) * PER_UNIT)))
    s_fn = pos.searchsorted(t, "left")
    s_fp = neg.size - neg.searchsorted(t, "left")
    vals = np.concatenate([d_vals, eps_table(neg.size, pos.size)[s_fp * (pos.size + 1) + s_fn]])
    best = vals.max() if vals.size else -np.inf
    eps = float(np.clip(max(best, 0.0), 0.0, EPSILON_CAP))
    if best == -np.inf:
        return eps, {"kind": "none"}
    k = int(np.argmax(vals))  # first maximum in the organisers' order: double (right, left), then single
    if k < d_vals.size:
        i, j = divmod(k, N_LEFT)
        return eps, {"kind": "double", "thresholds": [float(left[i, j]), float(right[i])],
                     "p_is_u": p_is_pos == pos_is_u, "fpr": fp[i, j] / Q.size, "fnr": d_fn[i, j] / P.size}
    k -= d_vals.size
    return eps, {"kind": "single", "thresholds": [float(t[k])], "p_is_u": pos_is_u,
                 "fpr": s_fp[k] / neg.size, "fnr": s_fn[k] / pos.size}
