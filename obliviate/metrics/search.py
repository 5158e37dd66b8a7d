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
from typing import NamedTuple

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
    """Branch and bound over both threshold families for E examples (row-sorted us, rs): their epsilons."""
    merged = _merge(us, rs, pos_is_u, p_is_u)
    single_eps, double_eps = _eps_tables(us.shape[1], rs.shape[1], pos_is_u, p_is_u)
    single = _single_grid(merged.values)
    double = _double_grid(us, rs, p_is_u)
    first_below, last_below, counts = _counts_at_block_edges(merged, single, double)
    search = _Search(merged, single_eps, double_eps, single, double, counts)
    single_bounds = _single_block_bounds(search, first_below, last_below)
    top_blocks = _top_double_blocks(search)
    best = np.zeros(len(us))  # the epsilon is clipped at 0, so only bounds above 0 matter
    dived = _dive(search, best, single_bounds, top_blocks)
    _broad_search(search, best, single_bounds, dived, top_blocks)
    return np.clip(best, 0.0, EPSILON_CAP)


# ----------------------------------------------------------------------------- counts

class _Merged(NamedTuple):
    """Both populations of each example merged and sorted, with prefix counts in merged order, so that one
    searchsorted on the merged values counts both populations below any threshold."""
    values: np.ndarray      # [E, n] merged confidences, each row sorted
    pos_before: np.ndarray  # flat [E * (n + 1)]: positive-side values among the first s merged (single family)
    p_before: np.ndarray    # flat [E * (n + 1)]: P values among the first s merged (double family)
    row_start: np.ndarray   # [E]: where example e's prefix counts start in the flat arrays


def _merge(us, rs, pos_is_u, p_is_u):
    n_examples, nu = us.shape
    n = nu + rs.shape[1]
    both = np.concatenate([us, rs], axis=1)
    order = np.argsort(both, axis=1)
    values = np.take_along_axis(both, order, axis=1)
    u_before = np.zeros((n_examples, n + 1), np.int64)
    np.cumsum(order < nu, axis=1, out=u_before[:, 1:])
    r_before = np.arange(n + 1) - u_before
    return _Merged(values, np.where(pos_is_u[:, None], u_before, r_before).ravel(),
                   np.where(p_is_u[:, None], u_before, r_before).ravel(), np.arange(n_examples) * (n + 1))


def _count_below(values, examples, queries):
    """#(merged values of example examples[i] < queries[i]): one searchsorted per distinct example."""
    order = np.argsort(examples, kind="stable")
    sorted_examples, sorted_queries = examples[order], queries[order]
    counts = np.empty(queries.size, np.int64)
    cut = np.flatnonzero(np.diff(sorted_examples)) + 1
    for a, b in zip(np.r_[0, cut], np.r_[cut, sorted_examples.size]):
        counts[order[a:b]] = values[sorted_examples[a]].searchsorted(sorted_queries[a:b])
    return counts


# ----------------------------------------------------------------------------- epsilon tables and bounds

class _EpsTable(NamedTuple):
    """One threshold family's epsilons: eps = table[offset[e] + fp * width[e] + fn] for example e (offset and
    width are shared ints when both populations have the same size)."""
    table: np.ndarray
    offset: int | np.ndarray
    width: int | np.ndarray
    n_neg: np.ndarray       # [E] size of the side that gives false positives
    n_pos: np.ndarray       # [E] size of the side that gives false negatives


def _eps_tables(nu, nr, pos_is_u, p_is_u):
    """(single, double): fp of the negative side, fn of the positive side (single: pos, double: P)."""
    n = nu + nr
    n_pos = np.where(pos_is_u, nu, nr)
    n_p = np.where(p_is_u, nu, nr)
    if nu == nr:
        table = eps_table(nu, nu)
        single_offset = double_offset = 0
        single_width = double_width = nu + 1
    else:
        u_positive = eps_table(nr, nu)  # positive side = unlearned
        table = np.concatenate([u_positive, eps_table(nu, nr)])
        single_offset = np.where(pos_is_u, 0, u_positive.size)
        single_width = np.where(pos_is_u, nu + 1, nr + 1)
        double_offset = np.where(p_is_u, 0, u_positive.size)
        double_width = np.where(p_is_u, nu + 1, nr + 1)
    return (_EpsTable(table, single_offset, single_width, n - n_pos, n_pos),
            _EpsTable(table, double_offset, double_width, n - n_p, n_p))


def _per_example(x, examples):
    """A per-example value, or the shared scalar."""
    return x if isinstance(x, int) else x[examples]


def _lookup(eps, examples, fp, fn):
    """Epsilons of thresholds with these integer counts (the literal float64 formula, tabulated)."""
    return eps.table[_per_example(eps.offset, examples) + fp * _per_example(eps.width, examples) + fn]


def _bound(eps, examples, fp_min, fn_min):
    """Upper bound of eps over kept thresholds with fp >= fp_min, fn >= fn_min: the table never
    increases with fp or fn on fp, fn >= 1; +inf while perfect separation is not excluded."""
    n_neg, n_pos = eps.n_neg[examples], eps.n_pos[examples]
    ub = eps.table[_per_example(eps.offset, examples) + np.minimum(np.maximum(fp_min, 1), n_neg)
                   * _per_example(eps.width, examples) + np.minimum(np.maximum(fn_min, 1), n_pos)]
    ub[(fp_min <= 0) & (fn_min <= 0)] = np.inf
    ub[fn_min > n_pos] = -np.inf  # no kept threshold possible
    return ub


def _top_k(examples, bounds, k):
    """Mask of the k highest bounds of each example."""
    order = np.lexsort((-bounds, examples))
    rank = np.arange(examples.size) - np.searchsorted(examples[order], examples[order])
    mask = np.zeros(examples.size, bool)
    mask[order[rank < k]] = True
    return mask


# ----------------------------------------------------------------------------- threshold grids

class _SingleGrid(NamedTuple):
    """Single thresholds np.linspace(lo, hi, count) of the merged values, in blocks of _SINGLE_BLOCK
    consecutive thresholds: fp (neg >= t) falls and fn (pos < t) grows with t, so a block's bound uses fn at
    its first threshold and fp at its last."""
    lo: np.ndarray           # [E] smallest merged value
    hi: np.ndarray           # [E] largest
    count: np.ndarray        # [E] thresholds, ceil(100 (hi - lo))
    step: np.ndarray         # [E] np.linspace's step
    block_example: np.ndarray  # [blocks] the example of each block
    block_first: np.ndarray    # [blocks] index of its first threshold


def _single_grid(values):
    lo, hi = values[:, 0], values[:, -1]
    count = np.ceil((hi - lo) * PER_UNIT).astype(np.int64)
    step = (hi - lo) / np.maximum(count - 1, 1)
    n_blocks = -(-count // _SINGLE_BLOCK)
    block_example = np.repeat(np.arange(len(values)), n_blocks)
    block_first = _SINGLE_BLOCK * (np.arange(block_example.size) - np.repeat(np.cumsum(n_blocks) - n_blocks, n_blocks))
    return _SingleGrid(lo, hi, count, step, block_example, block_first)


def _single_threshold(grid, examples, k):
    """Threshold k of each example: np.linspace's k * step + lo, the last one exactly hi."""
    count = grid.count[examples]
    return np.where((k == count - 1) & (count > 1), grid.hi[examples], k * grid.step[examples] + grid.lo[examples])


class _DoubleGrid(NamedTuple):
    """Right thresholds and, per right threshold i, the row of left thresholds left_ij = j * step_i + start_i
    (j = N_LEFT - 1: stop_i), exactly np.linspace(right_i - w - 2, right_i - w + 2, 400); and value edges that
    cut left thresholds into buckets [edges_k, edges_k+1) of width _H_FINE."""
    n_right: np.ndarray      # [E] right thresholds of each example
    width: int               # columns of the [E, width] arrays (rows past n_right repeat the last: harmless)
    right: np.ndarray        # [E, width]
    left_start: np.ndarray   # [E, width]
    left_stop: np.ndarray    # [E, width]
    left_step: np.ndarray    # [E, width]
    edge0: np.ndarray        # [E] the first edge: two spare top-level buckets below the first left threshold
    n_edges: int
    edges: np.ndarray        # [E, n_edges]
    block_columns: np.ndarray  # column offsets of a bottom block (see _evaluate)


def _double_grid(us, rs, p_is_u):
    p_min, p_max = np.where(p_is_u, us[:, 0], rs[:, 0]), np.where(p_is_u, us[:, -1], rs[:, -1])
    p_width = p_max - p_min
    right_lo, right_hi = (p_min + p_width) - BUFFER, p_max + BUFFER
    n_right = np.ceil((right_hi - right_lo) * PER_UNIT).astype(np.int64)
    width = max(int(n_right.max()), 1)
    right = linspace_rows(right_lo, right_hi, n_right, width)
    left_start, left_stop = (right - p_width[:, None]) - BUFFER, (right - p_width[:, None]) + BUFFER
    left_step = (left_stop - left_start) / (N_LEFT - 1)
    edge0 = left_start[:, 0] - 2 * _LEVELS[0][1] * _H_FINE
    n_edges = int(np.ceil(((left_stop[:, -1] - edge0) / _H_FINE).max())) + 3 * _LEVELS[0][1]
    edges = edge0[:, None] + np.arange(n_edges) * _H_FINE
    # Columns of a bottom block: j with left_ij in [edges_k, edges_k+1), j ~ (edges_k - start_i) / step_i;
    # two spare columns each side absorb rounding (duplicates from clipping re-evaluate real thresholds).
    block_columns = np.arange(int(np.ceil(_H_FINE / left_step.min())) + 5)
    return _DoubleGrid(n_right, width, right, left_start, left_stop, left_step, edge0, n_edges, edges,
                       block_columns)


class _DoubleCounts(NamedTuple):
    """Counts at the double grid's right thresholds (<= right_i) and edges (< edges_k), flat."""
    p_upto_right: np.ndarray   # [E * width]
    q_upto_right: np.ndarray   # [E * width]
    p_below_edge: np.ndarray   # [E * n_edges]
    q_below_edge: np.ndarray   # [E * n_edges]


def _counts_at_block_edges(merged, single, double):
    """Merged values below each single block's first and last thresholds, and the double grid's counts
    (<= r is < nextafter(r)): one search for all."""
    n_examples = len(merged.values)
    examples = np.arange(n_examples)
    block_example, block_first = single.block_example, single.block_first
    block_last = np.minimum(block_first + _SINGLE_BLOCK, single.count[block_example]) - 1
    n_blocks, n_right = block_example.size, n_examples * double.width
    below = _count_below(merged.values,
                         np.concatenate([block_example, block_example, np.repeat(examples, double.width),
                                         np.repeat(examples, double.n_edges)]),
                         np.concatenate([_single_threshold(single, block_example, block_first),
                                         _single_threshold(single, block_example, block_last),
                                         np.nextafter(double.right, np.inf).ravel(), double.edges.ravel()]))
    first_below, last_below = below[:n_blocks], below[n_blocks:2 * n_blocks]
    upto_right, below_edge = below[2 * n_blocks:2 * n_blocks + n_right], below[2 * n_blocks + n_right:]
    p_upto_right = merged.p_before[np.repeat(merged.row_start, double.width) + upto_right]
    p_below_edge = merged.p_before[np.repeat(merged.row_start, double.n_edges) + below_edge]
    return first_below, last_below, _DoubleCounts(p_upto_right, upto_right - p_upto_right,
                                                  p_below_edge, below_edge - p_below_edge)


class _Search(NamedTuple):
    """Everything an example's blocks are bounded and evaluated against."""
    merged: _Merged
    single_eps: _EpsTable
    double_eps: _EpsTable
    single: _SingleGrid
    double: _DoubleGrid
    counts: _DoubleCounts


# ----------------------------------------------------------------------------- block bounds

def _single_block_bounds(search, first_below, last_below):
    """Bound of each single block: fn at its first threshold, fp at its last."""
    merged, examples = search.merged, search.single.block_example
    fp_last = search.single_eps.n_neg[examples] - (last_below - merged.pos_before[merged.row_start[examples]
                                                                                  + last_below])
    fn_first = merged.pos_before[merged.row_start[examples] + first_below]
    return _bound(search.single_eps, examples, fp_last, fn_first)


def _double_bound(search, examples, row0, bucket0, rows, buckets):
    """Bound of double blocks: rows [row0, row0 + rows), left thresholds in [edges_bucket0, edges_bucket0+buckets).
    For its kept thresholds (left <= right): fp >= q_upto_right[first row] - q_below_edge[upper edge] and
    fn >= n_p - p_upto_right[last row] + p_below_edge[lower edge]."""
    grid, counts = search.double, search.counts
    row_last = np.minimum(row0 + rows, grid.n_right[examples]) - 1
    upper_edge, lower_edge = examples * grid.n_edges + bucket0 + buckets, examples * grid.n_edges + bucket0
    return _bound(search.double_eps, examples,
                  counts.q_upto_right[examples * grid.width + row0] - counts.q_below_edge[upper_edge],
                  search.double_eps.n_pos[examples] - counts.p_upto_right[examples * grid.width + row_last]
                  + counts.p_below_edge[lower_edge])


def _children(grid, examples, row0, bucket0, level):
    """The sub-blocks (4 x 4 with the default _LEVELS) of blocks at `level`, at the next level."""
    (rows, buckets), (sub_rows, sub_buckets) = _LEVELS[level], _LEVELS[level + 1]
    row_splits, bucket_splits = rows // sub_rows, buckets // sub_buckets
    examples = np.repeat(examples, row_splits * bucket_splits)
    row0 = (row0[:, None] + sub_rows * np.arange(row_splits).repeat(bucket_splits)).ravel()
    bucket0 = (bucket0[:, None] + sub_buckets * np.tile(np.arange(bucket_splits), row_splits)).ravel()
    keep = row0 < grid.n_right[examples]
    return examples[keep], row0[keep], bucket0[keep]


def _top_double_blocks(search):
    """Top-level double blocks (examples, row0, bucket0, bounds). Rows' left thresholds lie in [start_i, stop_i],
    both increasing in i; one spare bucket each side covers rounding."""
    grid = search.double
    rows, buckets = _LEVELS[0]
    bucket_width = buckets * _H_FINE
    group_first = np.arange(0, grid.width, rows)
    group_last = np.maximum(np.minimum(group_first + rows, grid.n_right[:, None]) - 1, 0)
    column_lo = np.floor((grid.left_start[:, group_first] - grid.edge0[:, None]) / bucket_width).astype(np.int64) - 1
    column_hi = np.floor((np.take_along_axis(grid.left_stop, group_last, 1) - grid.edge0[:, None])
                         / bucket_width).astype(np.int64) + 1
    columns = column_lo[..., None] + np.arange(int((column_hi - column_lo).max()) + 1)
    examples, group, column = np.nonzero((group_first < grid.n_right[:, None])[..., None]
                                         & (columns <= column_hi[..., None]))
    row0, bucket0 = group_first[group], buckets * columns[examples, group, column]
    return examples, row0, bucket0, _double_bound(search, examples, row0, bucket0, rows, buckets)


# ----------------------------------------------------------------------------- evaluation and search

def _evaluate(search, best, single_examples, single_first, double_examples, double_row0, double_bucket0):
    """Exact epsilons of single blocks and bottom double blocks, every threshold; raises `best` in place."""
    merged, single, grid, counts = search.merged, search.single, search.double, search.counts
    left_start, left_stop, left_step = grid.left_start.ravel(), grid.left_stop.ravel(), grid.left_step.ravel()
    edges = grid.edges.ravel()
    bottom_rows = _LEVELS[-1][0]
    for a in range(0, max(single_examples.size, double_examples.size), _BATCH_BLOCKS):
        batch = slice(a, a + _BATCH_BLOCKS)
        d_examples, d_row0, d_bucket0 = double_examples[batch], double_row0[batch], double_bucket0[batch]
        rows = (d_examples * grid.width)[:, None] + np.minimum(d_row0[:, None] + np.arange(bottom_rows),
                                                                grid.n_right[d_examples][:, None] - 1)
        row_start, row_step = left_start[rows][..., None], left_step[rows][..., None]
        column = np.floor((edges[d_examples * grid.n_edges + d_bucket0][:, None, None] - row_start)
                          / row_step).astype(np.int64) - 2 + grid.block_columns
        column = np.minimum(np.maximum(column, 0), N_LEFT - 1)
        left = np.where(column == N_LEFT - 1, left_stop[rows][..., None], column * row_step + row_start)
        s_examples, s_first = single_examples[batch], single_first[batch]
        k = np.minimum(s_first[:, None] + np.arange(_SINGLE_BLOCK), single.count[s_examples][:, None] - 1)
        thresholds = _single_threshold(single, s_examples[:, None], k)
        s_ex, d_ex = s_examples[:, None], d_examples[:, None, None]
        below = _count_below(merged.values,
                             np.concatenate([np.broadcast_to(s_ex, thresholds.shape).ravel(),
                                             np.broadcast_to(d_ex, column.shape).ravel()]),
                             np.concatenate([thresholds.ravel(), left.ravel()]))
        below_t = below[:thresholds.size].reshape(thresholds.shape)
        below_left = below[thresholds.size:].reshape(column.shape)
        fn = merged.pos_before[merged.row_start[s_ex] + below_t]  # single: pos below t, neg at or above t
        eps = _lookup(search.single_eps, s_ex, search.single_eps.n_neg[s_ex] - (below_t - fn), fn)
        np.maximum.at(best, s_examples, eps.max(axis=1, initial=-np.inf))
        # double: fp = Q in [left, right] (0 if left > right), fn = P outside
        p_below_left = merged.p_before[merged.row_start[d_ex] + below_left]
        fp = np.maximum(0, counts.q_upto_right[rows][..., None] - (below_left - p_below_left))
        fn = search.double_eps.n_pos[d_ex] - np.maximum(0, counts.p_upto_right[rows][..., None] - p_below_left)
        eps = _lookup(search.double_eps, d_ex, fp, fn)
        np.maximum.at(best, d_examples,
                      eps.reshape(d_examples.size, -1 if d_examples.size else 0).max(axis=1, initial=-np.inf))


def _dive(search, best, single_bounds, top_blocks):
    """Evaluate the most promising single block and the most promising double path (best top block -> best
    child -> best 2 bottom blocks) first; a good best makes the broad pruning sharp. Returns the single blocks
    evaluated (mask)."""
    single = search.single
    single_pick = _top_k(single.block_example, single_bounds, 1)
    examples, row0, bucket0, bounds = top_blocks
    keep = _top_k(examples, bounds, 1)
    for level in range(len(_LEVELS) - 1):
        examples, row0, bucket0 = _children(search.double, examples[keep], row0[keep], bucket0[keep], level)
        bounds = _double_bound(search, examples, row0, bucket0, *_LEVELS[level + 1])
        keep = _top_k(examples, bounds, 1 if level < len(_LEVELS) - 2 else 2)
    _evaluate(search, best, single.block_example[single_pick], single.block_first[single_pick],
              examples[keep], row0[keep], bucket0[keep])
    return single_pick


def _broad_search(search, best, single_bounds, dived, top_blocks):
    """Every block whose bound beats the best so far, level by level; the bottom level in two rounds (highest
    bounds first)."""
    single = search.single
    single_left = ~dived & (single_bounds > best[single.block_example])
    examples, row0, bucket0, bounds = top_blocks
    keep = bounds > best[examples]
    for level in range(len(_LEVELS) - 1):
        examples, row0, bucket0 = _children(search.double, examples[keep], row0[keep], bucket0[keep], level)
        bounds = _double_bound(search, examples, row0, bucket0, *_LEVELS[level + 1])
        keep = bounds > best[examples]
    examples, row0, bucket0, bounds = examples[keep], row0[keep], bucket0[keep], bounds[keep]
    first = _top_k(examples, bounds, _FIRST_ROUND)
    _evaluate(search, best, single.block_example[single_left], single.block_first[single_left],
              examples[first], row0[first], bucket0[first])
    later = ~first & (bounds > best[examples])
    _evaluate(search, best, single.block_example[:0], single.block_first[:0],
              examples[later], row0[later], bucket0[later])
