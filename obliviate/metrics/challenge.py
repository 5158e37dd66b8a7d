"""The official forgetting-quality metric of the NeurIPS 2023 Machine Unlearning Challenge.

Source: google-deepmind/unlearning_evaluation, metric.py (the organisers' code), and the
challenge's write-up "Machine_Unlearning_Metric.pdf". The contract is DESIGN.md, section
"The official metric (implement exactly)"; every step below cites it by number.

Per forget example, the unlearned and retrained models' logit-scaled confidences are two
populations. Many threshold attacks try to tell them apart; each attack's (fpr, fnr) gives
an epsilon, the example's epsilon is the best attack's (step 5), epsilons are bucketed into
points (step 6) and the forgetting quality F is their mean.

The organisers compare every model against every threshold (models x thresholds matrices;
~160k double thresholds per example). Here nothing of that size is built:
  * counts come from np.searchsorted on the merged, sorted populations: one search counts
    both (prefix counts of each population in the merged order);
  * epsilons come from a table over integer counts, eps_table[fp, fn], built once per
    (N_neg, N_pos) with the literal float64 formula, so a lookup is bit-identical to
    computing the logs per threshold;
  * both families are searched branch-and-bound. On kept thresholds epsilon never grows
    with fp or fn, so a block of thresholds (some right thresholds x a value range of left
    thresholds; or a run of single thresholds) is bounded by eps_table[fp_min, fn_min],
    with fp_min, fn_min counted exactly at the block's edges. Blocks are refined in three
    levels; a first "dive" down the most promising path gives a good best early, then every
    block whose bound cannot beat the best is skipped and the rest is evaluated threshold by
    threshold, at the exact float values np.linspace gives. The pruning only skips
    thresholds that provably cannot raise the maximum; tests/test_metric_challenge.py checks
    bit-identical epsilons against a literal per-threshold reference. About 1% of the
    thresholds are evaluated at 512 models;
  * all of this is vectorised over a chunk of forget examples: per example only a few
    searchsorted calls run in Python loops.
"""

import numpy as np

DELTA = 1e-5  # step 5
EPSILON_CAP = 50.0  # steps 3, 5
PER_UNIT = 100  # thresholds per unit of confidence (step 4)
BUFFER = 2.0  # double-threshold buffer (step 4)
N_LEFT = 400  # left thresholds per right threshold: ceil(2 * BUFFER * PER_UNIT)
PEAKY_RATIO = 0.01  # step 3

# Branch-and-bound geometry (speed only: any values give the same epsilons).
_H_FINE = 0.04  # value width of a bottom block of left thresholds (4 grid steps)
_LEVELS = ((64, 16), (16, 4), (4, 1))  # (right thresholds, value buckets of _H_FINE) per block level
_SINGLE_BLOCK = 32  # consecutive single thresholds per block
_FIRST_ROUND = 8  # bottom blocks per example evaluated before the rest is pruned again
_BIG = 1e6  # beyond |conf| > _BIG the block index arithmetic is not trusted: evaluate all
_CHUNK = 256  # forget examples processed together
_BATCH_BLOCKS = 20000  # fine blocks evaluated at once (~0.7M thresholds: bounded memory)


# ----------------------------------------------------------------------------- inputs

def _to_numpy(x):
    """torch tensor or array-like -> numpy array (no copy when already numpy)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _population(x, name):
    a = _to_numpy(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [num_models, num_forget_examples], got shape {a.shape}.")
    if a.shape[0] < 2:
        raise ValueError(f"{name} has {a.shape[0]} model(s); the metric needs at least 2 models per population.")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}.")
    a = a.astype(np.float64, copy=False)
    bad = ~np.isfinite(a)
    if bad.any():
        m, e = np.argwhere(bad)[0]
        raise ValueError(f"{name} contains NaN or infinite confidences ({int(bad.sum())} values, first at model {m}, "
                         f"example {e}): a model diverged; recompute its confidences with logit_scaled_confidence "
                         f"after fixing or dropping that model.")
    return a


def _populations(unlearned, retrained):
    u = _population(unlearned, "unlearned")
    r = _population(retrained, "retrained")
    if u.shape[1] != r.shape[1]:
        raise ValueError(f"unlearned has {u.shape[1]} forget examples but retrained has {r.shape[1]}: both must be "
                         f"[num_models, num_forget_examples] over the same forget set.")
    return u, r


# ----------------------------------------------------------------------------- step 1

def logit_scaled_confidence(logits, labels):
    """Logit-scaled confidence log(p_y) - log(sum_{j != y} p_j) of each row (step 1), float64 [n].

    Follows the organisers' compute_logit_scaled_confidence (from LiRA): subtract the row max,
    softmax, zero the label's probability to sum the others, add 1e-45 inside both logs.
    """
    z = _to_numpy(logits)
    y = _to_numpy(labels)
    if z.ndim != 2:
        raise ValueError(f"logits must be a 2-D array [n, num_classes], got shape {z.shape}.")
    if y.ndim != 1 or y.shape[0] != z.shape[0]:
        raise ValueError(f"labels must be a 1-D array of length {z.shape[0]} (one per logits row), got shape {y.shape}.")
    if z.shape[1] < 2:
        raise ValueError(f"logits have {z.shape[1]} class(es); the confidence needs at least 2 classes.")
    z = z.astype(np.float64)  # all arithmetic in float64 (the organisers exp() in the input dtype, then cast)
    bad = ~np.isfinite(z)
    if bad.any():
        raise ValueError(f"logits contain NaN or infinite values ({int(bad.sum())} of {z.size}, first in row "
                         f"{int(np.argwhere(bad)[0][0])}): the model diverged; retrain or re-run the unlearning "
                         f"with a smaller learning rate before computing confidences.")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}.")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError(f"labels must lie in [0, {z.shape[1] - 1}] for {z.shape[1]} classes, got values in "
                         f"[{y.min()}, {y.max()}].")
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    rows = np.arange(z.shape[0])
    p_correct = p[rows, y].copy()
    p[rows, y] = 0.0
    p_wrong = p.sum(axis=1)
    return np.log(p_correct + 1e-45) - np.log(p_wrong + 1e-45)


# ----------------------------------------------------------------------------- step 5 as a table

_TABLES = {}


def _eps_table(n_neg, n_pos):
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


def _median_sorted(s):
    """np.median of each row of a row-sorted array, bit for bit (the mean of the middle two)."""
    n = s.shape[-1]
    return s[..., n // 2] if n % 2 else (s[..., n // 2 - 1] + s[..., n // 2]) / 2


def _linspace_rows(lo, hi, num, width):
    """Row e is np.linspace(lo[e], hi[e], num[e]), padded to `width` by repeating its last value.

    The same float operations as np.linspace: k * ((hi - lo) / (num - 1)) + lo, last set to hi.
    """
    k = np.minimum(np.arange(width), np.maximum(num - 1, 0)[:, None])
    y = k * ((hi - lo) / np.maximum(num - 1, 1))[:, None] + lo[:, None]
    return np.where((k == num[:, None] - 1) & (num[:, None] > 1), hi[:, None], y)


# ----------------------------------------------------------------------------- one example, all thresholds

def _exhaustive(u, r):
    """Every threshold of one example evaluated (~160k): (epsilon, best attack). Exact and simple;
    used by best_attack and for confidences beyond +-_BIG (where block arithmetic is not trusted)."""
    u, r = np.sort(u), np.sort(r)
    pos_is_u = not _median_sorted(r) > _median_sorted(u)
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
    d_vals = _eps_table(Q.size, P.size)[fp * (P.size + 1) + d_fn].ravel()
    # Single: pos predicted when conf >= t.
    lo, hi = min(pos[0], neg[0]), max(pos[-1], neg[-1])
    t = np.linspace(lo, hi, int(np.ceil((hi - lo) * PER_UNIT)))
    s_fn = pos.searchsorted(t, "left")
    s_fp = neg.size - neg.searchsorted(t, "left")
    vals = np.concatenate([d_vals, _eps_table(neg.size, pos.size)[s_fp * (pos.size + 1) + s_fn]])
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


# ----------------------------------------------------------------------------- many examples, pruned

def _chunk_epsilons(u, r):
    """Epsilons of a chunk of forget examples; u [nu, E], r [nr, E] finite float64."""
    us, rs = np.sort(u.T, axis=1), np.sort(r.T, axis=1)
    eps = np.zeros(us.shape[0])
    pos_is_u = ~(_median_sorted(rs) > _median_sorted(us))  # step 2: ties -> unlearned is pos
    rng_u, rng_r = us[:, -1] - us[:, 0], rs[:, -1] - rs[:, 0]
    pos_rng, neg_rng = np.where(pos_is_u, rng_u, rng_r), np.where(pos_is_u, rng_r, rng_u)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 -> NaN, and NaN < 0.01 is False
        peaky = np.minimum(pos_rng, neg_rng) / np.maximum(pos_rng, neg_rng) < PEAKY_RATIO  # step 3
    eps[peaky] = EPSILON_CAP
    p_is_u = np.where(pos_rng < neg_rng, pos_is_u, ~pos_is_u)  # double: P = smaller range; equal -> neg
    big = np.maximum(np.maximum(-us[:, 0], us[:, -1]), np.maximum(-rs[:, 0], rs[:, -1])) > _BIG
    for e in np.flatnonzero(big & ~peaky):
        eps[e] = _exhaustive(us[e], rs[e])[0]
    live = np.flatnonzero(~big & ~peaky)
    if live.size:
        eps[live] = _search(us[live], rs[live], pos_is_u[live], p_is_u[live])
    return eps


def _search(us, rs, pos_is_u, p_is_u):
    """Branch and bound over both threshold families for E examples (row-sorted us, rs)."""
    E, nu = us.shape
    nr = rs.shape[1]
    n = nu + nr
    ex = np.arange(E)
    # Merge both populations per example. Prefix counts in merged order (cpos: pos values among the
    # first s merged, cp: P values) let one searchsorted on the merged values count both populations.
    both = np.concatenate([us, rs], axis=1)
    order = np.argsort(both, axis=1)
    m = np.take_along_axis(both, order, axis=1)
    cu = np.zeros((E, n + 1), np.int64)
    np.cumsum(order < nu, axis=1, out=cu[:, 1:])
    cpos = np.where(pos_is_u[:, None], cu, np.arange(n + 1) - cu).ravel()
    cp = np.where(p_is_u[:, None], cu, np.arange(n + 1) - cu).ravel()
    base = ex * (n + 1)

    def count(e, q):
        """#(merged values of example e[i] < q[i]): one searchsorted per example."""
        o = np.argsort(e, kind="stable")
        es, qs, out = e[o], q[o], np.empty(q.size, np.int64)
        cut = np.flatnonzero(np.diff(es)) + 1
        for a, b in zip(np.r_[0, cut], np.r_[cut, es.size]):
            out[o[a:b]] = m[es[a]].searchsorted(qs[a:b])
        return out

    # eps tables: fp of the negative side, fn of the positive side (single: pos, double: P).
    n_pos = np.where(pos_is_u, nu, nr)
    n_p = np.where(p_is_u, nu, nr)
    n_neg, n_q = n - n_pos, n - n_p
    if nu == nr:
        tab = _eps_table(nu, nu)
        off_s = off_d = 0
        wid_s = wid_d = nu + 1
    else:
        t_u = _eps_table(nr, nu)  # positive side = unlearned
        tab = np.concatenate([t_u, _eps_table(nu, nr)])
        off_s, wid_s = np.where(pos_is_u, 0, t_u.size), np.where(pos_is_u, nu + 1, nr + 1)
        off_d, wid_d = np.where(p_is_u, 0, t_u.size), np.where(p_is_u, nu + 1, nr + 1)

    def at(x, e):  # per-example value, or the shared scalar
        return x if isinstance(x, int) else x[e]

    def bound(off, wid, nneg, npos, e, fp_min, fn_min):
        """Upper bound of eps over kept thresholds with fp >= fp_min, fn >= fn_min: the table never
        increases with fp or fn on fp, fn >= 1; +inf while perfect separation is not excluded."""
        ub = tab[at(off, e) + np.minimum(np.maximum(fp_min, 1), nneg[e]) * at(wid, e)
                 + np.minimum(np.maximum(fn_min, 1), npos[e])]
        ub[(fp_min <= 0) & (fn_min <= 0)] = np.inf
        ub[fn_min > npos[e]] = -np.inf  # no kept threshold possible
        return ub

    def top(e, ub, k):  # mask: the k highest bounds of each example
        o = np.lexsort((-ub, e))
        rank = np.arange(e.size) - np.searchsorted(e[o], e[o])
        mask = np.zeros(e.size, bool)
        mask[o[rank < k]] = True
        return mask

    # Single thresholds np.linspace(min, max, ceil(100 (max - min))) of the merged values, in blocks
    # of _SINGLE_BLOCK consecutive thresholds: fp (neg >= t) falls and fn (pos < t) grows with t, so
    # a block's bound uses fn at its first threshold and fp at its last.
    lo, hi = m[:, 0], m[:, -1]
    S = np.ceil((hi - lo) * PER_UNIT).astype(np.int64)
    step_s = (hi - lo) / np.maximum(S - 1, 1)

    def single_t(e, k):  # threshold k of example e: np.linspace's k * step + lo, last = hi
        return np.where((k == S[e] - 1) & (S[e] > 1), hi[e], k * step_s[e] + lo[e])

    nb = -(-S // _SINGLE_BLOCK)
    sb_e = np.repeat(ex, nb)
    sb_k = _SINGLE_BLOCK * (np.arange(sb_e.size) - np.repeat(np.cumsum(nb) - nb, nb))
    # Double: right thresholds, and the rows of left thresholds left_ij = j * step_i + start_i
    # (j = 399: stop_i), exactly np.linspace(right_i - w - 2, right_i - w + 2, 400).
    pmin, pmax = np.where(p_is_u, us[:, 0], rs[:, 0]), np.where(p_is_u, us[:, -1], rs[:, -1])
    w = pmax - pmin
    r_lo, r_hi = (pmin + w) - BUFFER, pmax + BUFFER
    R = np.ceil((r_hi - r_lo) * PER_UNIT).astype(np.int64)
    Rw = max(int(R.max()), 1)
    right = _linspace_rows(r_lo, r_hi, R, Rw)  # rows past R[e] repeat the last: harmless duplicates
    start, stop = (right - w[:, None]) - BUFFER, (right - w[:, None]) + BUFFER
    step = (stop - start) / (N_LEFT - 1)
    # Value edges of left thresholds: bucket k = [edges_k, edges_k+1), width _H_FINE.
    u0 = start[:, 0] - 2 * _LEVELS[0][1] * _H_FINE  # two spare top-level buckets below
    n_edges = int(np.ceil(((stop[:, -1] - u0) / _H_FINE).max())) + 3 * _LEVELS[0][1]
    edges = u0[:, None] + np.arange(n_edges) * _H_FINE

    # Counts at single block ends, right thresholds (<= r is < nextafter(r)) and edges.
    s = count(np.concatenate([sb_e, sb_e, np.repeat(ex, Rw), np.repeat(ex, n_edges)]),
              np.concatenate([single_t(sb_e, sb_k), single_t(sb_e, np.minimum(sb_k + _SINGLE_BLOCK, S[sb_e]) - 1),
                              np.nextafter(right, np.inf).ravel(), edges.ravel()]))
    s_first, s_last, s = s[:sb_e.size], s[sb_e.size:2 * sb_e.size], s[2 * sb_e.size:]
    sb_ub = bound(off_s, wid_s, n_neg, n_pos, sb_e, n_neg[sb_e] - (s_last - cpos[base[sb_e] + s_last]),
                  cpos[base[sb_e] + s_first])
    sr, se = s[:E * Rw], s[E * Rw:]
    ap = cp[np.repeat(base, Rw) + sr]  # P <= right_i, flat [E * Rw]
    aq = sr - ap
    bpe = cp[np.repeat(base, n_edges) + se]  # P < edges_k, flat [E * n_edges]
    bqe = se - bpe

    def dbound(e, i0, k0, rows, buckets):
        """Bound of the double block: rows [i0, i0 + rows), left thresholds in [edges_k0, edges_k0+buckets).
        For its kept thresholds (left <= right): fp >= aq[first row] - bqe[upper edge] and
        fn >= n_p - ap[last row] + bpe[lower edge]."""
        i1 = np.minimum(i0 + rows, R[e]) - 1
        return bound(off_d, wid_d, n_q, n_p, e, aq[e * Rw + i0] - bqe[e * n_edges + k0 + buckets],
                     n_p[e] - ap[e * Rw + i1] + bpe[e * n_edges + k0])

    def children(e, i0, k0, level):  # 4 x 4 sub-blocks at the next level
        (rows, buckets), (sub_rows, sub_buckets) = _LEVELS[level], _LEVELS[level + 1]
        e = np.repeat(e, (rows // sub_rows) * (buckets // sub_buckets))
        i0 = (i0[:, None] + sub_rows * np.arange(rows // sub_rows).repeat(buckets // sub_buckets)).ravel()
        k0 = (k0[:, None] + sub_buckets * np.tile(np.arange(buckets // sub_buckets), rows // sub_rows)).ravel()
        keep = i0 < R[e]
        return e[keep], i0[keep], k0[keep]

    # Top-level blocks. Rows' left thresholds lie in [start_i, stop_i], both increasing in i; one
    # spare bucket each side covers rounding.
    rows0, buckets0 = _LEVELS[0]
    g0 = np.arange(0, Rw, rows0)
    g1 = np.maximum(np.minimum(g0 + rows0, R[:, None]) - 1, 0)
    c_lo = np.floor((start[:, g0] - u0[:, None]) / (buckets0 * _H_FINE)).astype(np.int64) - 1
    c_hi = np.floor((np.take_along_axis(stop, g1, 1) - u0[:, None]) / (buckets0 * _H_FINE)).astype(np.int64) + 1
    c = c_lo[..., None] + np.arange(int((c_hi - c_lo).max()) + 1)
    d_e, d_g, d_c = np.nonzero((g0 < R[:, None])[..., None] & (c <= c_hi[..., None]))
    d_i, d_k = g0[d_g], buckets0 * c[d_e, d_g, d_c]
    d_ub = dbound(d_e, d_i, d_k, *_LEVELS[0])

    # Columns of a bottom block: j with left_ij in [edges_k, edges_k+1), j ~ (edges_k - start_i) / step_i;
    # two spare columns each side absorb rounding (duplicates from clipping re-evaluate real thresholds).
    cols = np.arange(int(np.ceil(_H_FINE / step.min())) + 5)
    start, stop, step, edges = start.ravel(), stop.ravel(), step.ravel(), edges.ravel()
    best = np.zeros(E)  # the epsilon is clipped at 0, so only bounds above 0 matter
    bottom_rows = _LEVELS[-1][0]

    def evaluate(se_, sk, de, di, dk):
        """Exact epsilons of single blocks (se_, sk) and bottom double blocks (de, di, dk); raises best."""
        for a in range(0, max(se_.size, de.size), _BATCH_BLOCKS):
            be, bi, bk = de[a:a + _BATCH_BLOCKS], di[a:a + _BATCH_BLOCKS], dk[a:a + _BATCH_BLOCKS]
            rows = (be * Rw)[:, None] + np.minimum(bi[:, None] + np.arange(bottom_rows), R[be][:, None] - 1)
            st, sp = start[rows][..., None], step[rows][..., None]
            j = np.floor((edges[be * n_edges + bk][:, None, None] - st) / sp).astype(np.int64) - 2 + cols
            j = np.minimum(np.maximum(j, 0), N_LEFT - 1)
            left = np.where(j == N_LEFT - 1, stop[rows][..., None], j * sp + st)
            ce, ck = se_[a:a + _BATCH_BLOCKS], sk[a:a + _BATCH_BLOCKS]
            k = np.minimum(ck[:, None] + np.arange(_SINGLE_BLOCK), S[ce][:, None] - 1)
            t = single_t(ce[:, None], k)
            e2, e3 = ce[:, None], be[:, None, None]
            s = count(np.concatenate([np.broadcast_to(e2, t.shape).ravel(), np.broadcast_to(e3, j.shape).ravel()]),
                      np.concatenate([t.ravel(), left.ravel()]))
            st, sl = s[:t.size].reshape(t.shape), s[t.size:].reshape(j.shape)
            fn = cpos[base[e2] + st]  # single: pos below t, neg at or above t
            vals = tab[at(off_s, e2) + (n_neg[e2] - (st - fn)) * at(wid_s, e2) + fn]
            np.maximum.at(best, ce, vals.max(axis=1, initial=-np.inf))
            bp = cp[base[e3] + sl]  # double: Q in [left, right] (0 if left > right), P outside
            fp = np.maximum(0, aq[rows][..., None] - (sl - bp))
            fn = n_p[e3] - np.maximum(0, ap[rows][..., None] - bp)
            vals = tab[at(off_d, e3) + fp * at(wid_d, e3) + fn]
            np.maximum.at(best, be, vals.reshape(be.size, j[0].size).max(axis=1, initial=-np.inf))

    # Dive: evaluate the most promising single block and the most promising double path (best top
    # block -> best child -> best 2 bottom blocks) first; a good best makes the broad pruning sharp.
    ds = top(sb_e, sb_ub, 1)
    e, i, k = d_e, d_i, d_k
    ub, keep = d_ub, top(d_e, d_ub, 1)
    for level in range(len(_LEVELS) - 1):
        e, i, k = children(e[keep], i[keep], k[keep], level)
        ub = dbound(e, i, k, *_LEVELS[level + 1])
        keep = top(e, ub, 1 if level < len(_LEVELS) - 2 else 2)
    evaluate(sb_e[ds], sb_k[ds], e[keep], i[keep], k[keep])
    # Broad search: every block whose bound beats the best so far, level by level; the bottom level
    # in two rounds (highest bounds first).
    sk = ~ds & (sb_ub > best[sb_e])
    e, i, k = d_e, d_i, d_k
    keep = d_ub > best[d_e]
    for level in range(len(_LEVELS) - 1):
        e, i, k = children(e[keep], i[keep], k[keep], level)
        ub = dbound(e, i, k, *_LEVELS[level + 1])
        keep = ub > best[e]
    e, i, k, ub = e[keep], i[keep], k[keep], ub[keep]
    first = top(e, ub, _FIRST_ROUND)
    evaluate(sb_e[sk], sb_k[sk], e[first], i[first], k[first])
    later = ~first & (ub > best[e])
    evaluate(sb_e[:0], sb_k[:0], e[later], i[later], k[later])
    return np.clip(best, 0.0, EPSILON_CAP)


# ----------------------------------------------------------------------------- public API

def example_epsilons(unlearned, retrained):
    """Epsilon of every forget example (steps 2-5), float64 [num_forget_examples].

    unlearned, retrained: [num_models, num_forget_examples] logit-scaled confidences (numpy or
    torch); the two populations may have different numbers of models.
    """
    u, r = _populations(unlearned, retrained)
    return np.concatenate([_chunk_epsilons(u[:, a:a + _CHUNK], r[:, a:a + _CHUNK])
                           for a in range(0, u.shape[1], _CHUNK)] or [np.zeros(0)])


def points(epsilons, num_models):
    """Points of each epsilon (step 6): 0.5**k for eps in [0.5k, 0.5(k+1)), k < 2M; 0 from M on.

    M = ceil(ln(num_models - 1)): 7 for 512 models, 3 for 20, 0 for 2 (every epsilon earns 0).
    """
    eps = np.asarray(_to_numpy(epsilons), dtype=np.float64)
    if np.isnan(eps).any() or (eps < 0).any():
        raise ValueError("epsilons must be non-negative numbers (no NaN); compute them with example_epsilons.")
    num_models = int(num_models)
    if num_models < 2:
        raise ValueError(f"num_models must be at least 2 (got {num_models}): the bucket count is ceil(ln(N - 1)).")
    n_buckets = 2 * int(np.ceil(np.log(num_models - 1)))  # buckets of width 0.5 up to M
    k = np.floor(2.0 * np.minimum(eps, n_buckets))  # 2 * eps is exact; k = bucket index
    return np.where(k < n_buckets, 0.5 ** np.minimum(k, n_buckets), 0.0)


def forgetting_quality(unlearned, retrained):
    """Forgetting quality F: mean points over the forget examples (step 6).

    M uses the retrained population's model count (the organisers use the unlearned count;
    in the challenge both are 512, and the retrained population is the fixed reference).
    """
    u, r = _populations(unlearned, retrained)
    return float(np.mean(points(example_epsilons(u, r), r.shape[0])))


def challenge_score(fq, retain_acc_u, retain_acc_r, test_acc_u, test_acc_r):
    """Final score (step 7): F * (retain acc ratio) * (test acc ratio), accuracies averaged over models."""
    means = []
    for name, acc in (("retain_acc_u", retain_acc_u), ("retain_acc_r", retain_acc_r),
                      ("test_acc_u", test_acc_u), ("test_acc_r", test_acc_r)):
        a = np.asarray(_to_numpy(acc), dtype=np.float64)
        if a.size == 0 or not np.isfinite(a).all() or (a < 0).any() or (a > 1).any():
            raise ValueError(f"{name} must be accuracies in [0, 1] (a scalar or one per model), got {a!r}.")
        means.append(float(a.mean()))
    fq = float(fq)
    if not 0.0 <= fq <= 1.0:
        raise ValueError(f"fq must be a forgetting quality in [0, 1], got {fq}.")
    if means[1] == 0.0 or means[3] == 0.0:
        raise ValueError("retrained accuracies are 0, so the accuracy ratios are undefined: check the retrained models.")
    return fq * (means[0] / means[1]) * (means[2] / means[3])


def best_attack(u_col, r_col):
    """The epsilon of ONE forget example and the attack achieving it, for plots.

    u_col, r_col: the unlearned and retrained confidences of one example ([num_models] each).
    Returns {"epsilon", "kind", "thresholds", "positive", "fpr", "fnr"}:
      kind "single": predict `positive` when conf >= thresholds[0];
      kind "double": predict `positive` (the peakier population) when
                     thresholds[0] <= conf <= thresholds[1];
      kind "peaky":  step 3 gave 50 (thresholds empty); kind "none": every threshold was
                     discarded, epsilon 0 (thresholds empty).
    Among equal epsilons the first in the organisers' order wins (double before single,
    right thresholds ascending, then left thresholds ascending).
    """
    cols = []
    for name, col in (("u_col", u_col), ("r_col", r_col)):
        a = _to_numpy(col)
        if a.ndim != 1:
            raise ValueError(f"{name} must be a 1-D array of one example's confidences, got shape {a.shape}.")
        cols.append(_population(a[:, None], name)[:, 0])
    eps, arg = _exhaustive(*cols)  # one example: evaluating all ~160k thresholds takes milliseconds
    out = {"epsilon": eps, "kind": arg["kind"], "thresholds": [], "positive": None, "fpr": None, "fnr": None}
    if arg["kind"] in ("single", "double"):
        out.update(thresholds=arg["thresholds"], positive="unlearned" if arg["p_is_u"] else "retrained",
                   fpr=float(arg["fpr"]), fnr=float(arg["fnr"]))
    return out


__all__ = ["logit_scaled_confidence", "example_epsilons", "forgetting_quality", "points", "challenge_score",
           "best_attack", "DELTA", "EPSILON_CAP"]
