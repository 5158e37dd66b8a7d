"""The exact branch-and-bound search: the epsilons of many forget examples without evaluating most thresholds.

Same result as thresholds.exhaustive, bit for bit (tests/test_metric_challenge.py), at ~1% of its cost:
  * counts come from np.searchsorted on the merged, sorted populations: one search counts both
    (prefix counts of each population in the merged order);
  * epsilons come from thresholds.eps_table over integer counts (the literal float64 formula);
  * on kept thresholds epsilon never grows with fp or fn, so a block of thresholds (some right thresholds
    x a value range of left thresholds; or a run of single thresholds) is bounded by
    eps_table[fp_min, fn_min], with fp_min, fn_min counted exactly at the block's edges. Blocks are refined
    in three levels; a first "dive" down the most promising path gives a good best early, then every block
    whose bound cannot beat the best is skipped and the rest is evaluated threshold by threshold, at the
    exact float values np.linspace gives;
  * everything is vectorised over a chunk of forget examples (columns).
Why each bound is exact: docs/metric.md. The geometry below changes speed only, never a result.
"""
import numpy as np

from .thresholds import (BUFFER, EPSILON_CAP, N_LEFT, PEAKY_RATIO, PER_UNIT, eps_table, exhaustive, linspace_rows,
                         median_sorted)

# Branch-and-bound geometry (speed only: any values give the same epsilons).
_H_FINE = 0.04  # value width of a bottom block of left thresholds (4 grid steps)
_LEVELS = ((64, 16), (16, 4), (4, 1))  # (right thresholds, value buckets of _H_FINE) per block level
_SINGLE_BLOCK = 32  # consecutive single thresholds per block
_FIRST_ROUND = 8  # bottom blocks per example evaluated before the rest is pruned again
_BIG = 1e6  # beyond |conf| > _BIG the block index arithmetic is not trusted: evaluate all
_BATCH_BLOCKS = 20000  # fine blocks evaluated at once (~0.7M thresholds: bounded memory)


def chunk_epsilons(u, r):
    """Epsilons of a chunk of forget examples; u [nu, E], r [nr, E] finite float64."""
    us, rs = np.sort(u.T, axis=1), np.sort(r.T, axis=1)
    eps = np.zeros(us.shape[0])
    pos_is_u = ~(median_sorted(rs) > median_sorted(us))  # step 2: ties -> unlearned is pos
    rng_u, rng_r = us[:, -1] - us[:, 0], rs[:, -1] - rs[:, 0]
    pos_rng, neg_rng = np.where(pos_is_u, rng_u, rng_r), np.where(pos_is_u, rng_r, rng_u)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 -> NaN, and NaN < 0.01 is False
        peaky = np.minimum(pos_rng, neg_rng) / np.maximum(pos_rng, neg_rng) < PEAKY_RATIO  # step 3
    eps[peaky] = EPSILON_CAP
    p_is_u = np.where(pos_rng < neg_rng, pos_is_u, ~pos_is_u)  # double: P = smaller range; equal -> neg
    big = np.maximum(np.maximum(-us[:, 0], us[:, -1]), np.maximum(-rs[:, 0], rs[:, -1])) > _BIG
    for e in np.flatnonzero(big & ~peaky):
        eps[e] = exhaustive(us[e], rs[e])[0]
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
        tab = eps_table(nu, nu)
        off_s = off_d = 0
        wid_s = wid_d = nu + 1
    else:
        t_u = eps_table(nr, nu)  # positive side = unlearned
        tab = np.concatenate([t_u, eps_table(nu, nr)])
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
    right = linspace_rows(r_lo, r_hi, R, Rw)  # rows past R[e] repeat the last: harmless duplicates
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
            np.maximum.at(best, be, vals.reshape(be.size, -1 if be.size else 0).max(axis=1, initial=-np.inf))

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
