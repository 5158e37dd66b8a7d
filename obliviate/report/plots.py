"""The report's figures (matplotlib, Agg canvas; no global pyplot state)."""
from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # headless; harmless when already selected
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .folder import num

ROLE_STYLE = {  # colour, marker, label suffix
    "method": ("#1f77b4", "o", ""),
    "ceiling": ("#2ca02c", "*", " (ceiling)"),
    "floor": ("#7f7f7f", "s", " (with forget set)"),
}
OVER = "#d62728"
ACC_COLORS = {"retain_acc": "#4c72b0", "test_acc": "#dd8452", "forget_acc": "#c44e52"}
ACC_LABELS = {"retain_acc": "retain", "test_acc": "test", "forget_acc": "forget"}

RC = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
"axes.spines.top": False, "axes.spines.right": False}


def new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


DPI = 130   # a 12-inch figure is 1560 px wide: sharp at the page's 1200 px, and on HiDPI screens


def render(fig: Figure) -> bytes:
    """PNG bytes of a figure (one rendering serves both the HTML, base64-embedded, and the Markdown)."""
    png = io.BytesIO()
    with matplotlib.rc_context(RC):
        fig.savefig(png, format="png", dpi=DPI, metadata={"Software": None})
    return png.getvalue()


def bucket_limit(n_models: int) -> int:
    """M = ceil(ln(N - 1)): epsilons of M or more earn 0 points (at least 1, for display)."""
    return max(1, math.ceil(math.log(max(n_models, 2) - 1))) if n_models > 2 else 1


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated (cost lower-or-equal and score higher-or-equal, one strictly)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    out, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            out.append(i)
            best = points[i][1]
    return out


def _place_labels(ax, xy: list, names: list, color: list) -> None:
    """Annotate points, trying a few offsets per label so that labels do not overlap each other (greedy)."""
    fig = ax.figure
    fig.canvas.draw()                                       # fixes the transforms
    renderer = fig.canvas.get_renderer()
    placed = []
    offsets = [(6, 5), (6, -13), (-6, 5), (-6, -13), (6, 16), (6, -24), (-6, 16), (-6, -24), (6, 27), (6, -35)]
    order = sorted(range(len(xy)), key=lambda i: -xy[i][1])
    for i in order:
        best = None
        for dx, dy in offsets:
            t = ax.annotate(names[i], xy[i], xytext=(dx, dy), textcoords="offset points", fontsize=9,
                            color=color[i], ha="left" if dx > 0 else "right")
            bb = t.get_window_extent(renderer).expanded(1.05, 1.15)
            if not any(bb.overlaps(p) for p in placed):
                best = (t, bb)
                break
            t.remove()
        if best is None:                                    # crowded: keep the first position anyway
            t = ax.annotate(names[i], xy[i], xytext=offsets[0], textcoords="offset points", fontsize=9,
                            color=color[i])
            best = (t, t.get_window_extent(renderer))
        placed.append(best[1])


def score_cost(rows: list, budget) -> Figure:
    """Methods as points (score vs cost); ceiling and floor as horizontal reference lines; budget line."""
    with matplotlib.rc_context(RC):
        fig = new_figure(12, 5.6)
        ax = fig.add_subplot()
        pts, names, colors = [], [], []
        for row in rows:
            c, s = num(row.get("cost")), num(row.get("score"))
            if row["role"] != "method" or c is None or s is None:
                continue
            over = row.get("_over", False)
            ax.scatter([c], [s], s=60, marker="X" if over else "o", color=OVER if over else ROLE_STYLE["method"][0],
                       edgecolor="black", linewidth=0.6, zorder=3)
            pts.append((c, s))
            names.append(row["method"])
            colors.append(OVER if over else "#222222")
        front = pareto(pts)
        if len(front) > 1:
            fx = [pts[i][0] for i in front]
            fy = [pts[i][1] for i in front]
            ax.step(fx, fy, where="post", color="#9467bd", linewidth=1.2, alpha=0.8,
                    label="Pareto frontier (no method is cheaper and better)", zorder=2)
        for row in rows:
            if row["role"] in ("ceiling", "floor") and num(row.get("score")) is not None:
                color, _, suffix = ROLE_STYLE[row["role"]]
                ax.axhline(row["score"], color=color, linestyle="--" if row["role"] == "ceiling" else ":",
                           linewidth=1.2, label=f"{row['method']}{suffix}: score {row['score']:.3f}", zorder=1)
        xmax = max([p[0] for p in pts] + [budget or 0, 0.05]) * 1.22
        if budget is not None:
            ax.axvline(budget, color=OVER, linestyle="-.", linewidth=1.2, label=f"budget: cost = {budget:g}")
            ax.axvspan(budget, xmax, color=OVER, alpha=0.06, zorder=0)
        ax.set_xlim(0, xmax)
        refs = [num(r.get("score")) or 0 for r in rows]
        ymax = max([p[1] for p in pts] + refs + [0.01])
        ax.set_ylim(0, ymax * 1.18)
        ylabel = "challenge score (F × accuracy ratios)"
        if pts and max(p[1] for p in pts) < 0.2 * ymax:   # methods crowd the bottom under the ceiling line
            nonzero = [v for v in [p[1] for p in pts] + refs if v > 0]   # (digits: 0.0002-0.002 vs 0.107)
            ax.set_yscale("symlog", linthresh=max(min(nonzero, default=1e-4), 1e-5), linscale=0.5)
            ax.set_ylim(0, ymax * 1.6)
            ylabel += ", symlog scale"
        ax.scatter([], [], marker="o", color=ROLE_STYLE["method"][0], edgecolor="black", label="method (in budget)")
        ax.scatter([], [], marker="X", color=OVER, edgecolor="black", label="method over budget")
        _finish_scatter(ax, "cost = mean unlearning time / mean retraining time (× one retraining)", ylabel,
                        "Score vs cost (better: up and left)", pts, names, colors)
    return fig


def _finish_scatter(ax, xlabel: str, ylabel: str, title: str, pts: list, names: list, colors: list) -> None:
    """Labels, grid, the legend outside on the right, and the points' names placed without overlaps."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if pts:
        _place_labels(ax, pts, names, colors)


def epsilon_histograms(rows: list, eps: dict, n_models: int) -> Figure:
    """Small multiples: per row, the histogram of per-example epsilons in the points buckets."""
    M = bucket_limit(n_models)
    edges = np.arange(0.0, M + 0.5 + 1e-9, 0.5)           # last bin [M, M + 0.5): ">= M", 0 points
    shown = [r for r in rows if r["method"] in eps]
    ncols = min(4, max(1, len(shown)))
    nrows = math.ceil(len(shown) / ncols)
    with matplotlib.rc_context(RC):
        fig = new_figure(max(12.0, 3.2 * ncols), 2.7 * nrows + 0.5)
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
        for ax in axes.ravel()[len(shown):]:
            ax.set_visible(False)
        for ax, row in zip(axes.ravel(), shown):
            e = np.asarray(eps[row["method"]], dtype=np.float64)
            color, _, suffix = ROLE_STYLE[row["role"]]
            counts, _ = np.histogram(np.minimum(e, M + 0.25), bins=edges)
            ax.bar(edges[:-1], counts, width=0.5, align="edge", color=[color] * (len(counts) - 1) + [OVER],
                   edgecolor="white", linewidth=0.5)
            ax.axvline(M, color=OVER, linestyle=":", linewidth=1)
            over = " [over budget]" if row.get("_over") else ""
            ax.set_title(f"{row['method']}{suffix}{over}\nF = {row['forgetting_quality']:.3f}, "
                         f"median ε = {np.median(e):.2f}", fontsize=10)
            ax.grid(True, axis="y", alpha=0.3)
            ax.set_xticks(np.arange(0, M + 1, 1 if M <= 8 else 2))
        for ax in axes[-1]:
            ax.set_xlabel("per-example ε (nats)")
        for ax in axes[:, 0]:
            ax.set_ylabel("forget examples (count)")
        fig.suptitle(f"Per-example ε against the retrained population: bins of width 0.5 earn "
                     f"1, 1/2, 1/4, ... points; the red bin (ε ≥ {M}) earns 0", fontsize=11)
    return fig


def example_distributions(method: str, u: np.ndarray, r: np.ndarray, picks: list, attacks: list) -> Figure:
    """For a few forget examples: both confidence distributions and the best attack's thresholds."""
    n = len(picks)
    with matplotlib.rc_context(RC):
        fig = new_figure(max(12.0, 4.0 * n), 4.3)
        axes = fig.subplots(1, n, squeeze=False)[0]
        for ax, (label, j), att in zip(axes, picks, attacks):
            uc, rc = u[:, j], r[:, j]
            lo, hi = min(uc.min(), rc.min()), max(uc.max(), rc.max())
            if hi <= lo:
                lo, hi = lo - 0.5, hi + 0.5
            bins = np.linspace(lo, hi, 31)
            ax.hist(rc, bins=bins, color="#2ca02c", alpha=0.55, label=f"retrained ({len(rc)} models)")
            ax.hist(uc, bins=bins, color="#1f77b4", alpha=0.55, label=f"{method} ({len(uc)} models)")
            th = att.get("thresholds") or []
            for k, t in enumerate(th):
                ax.axvline(t, color="black", linestyle="--", linewidth=1.3,
                           label="best attack's threshold(s)" if k == 0 else None)
            if att.get("kind") == "double" and len(th) == 2:
                ax.axvspan(th[0], th[1], color="black", alpha=0.07)
            who = method if att.get("positive") == "unlearned" else "retrained"
            kind = att.get("kind")
            if kind == "single" and len(th) == 1:
                how = f"attack says {who} when conf ≥ {th[0]:.2f}"
            elif kind == "double" and len(th) == 2:
                how = f"attack says {who} when {th[0]:.2f} ≤ conf ≤ {th[1]:.2f}"
            elif kind == "peaky":
                how = "a population is too peaky: ε = 50"
            else:
                how = "no threshold separates them"
            ax.set_title(f"{label}: forget example #{j}\nε = {att['epsilon']:.2f}; {how}", fontsize=10)
            ax.set_xlabel("logit-scaled confidence log(p_y / (1 - p_y)) (nats)")
            ax.set_ylabel("models (count)")
            ax.grid(True, axis="y", alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        for ax in axes[1:]:                          # thresholds may appear in some panels only
            for h, l in zip(*ax.get_legend_handles_labels()):
                if l not in labels:
                    handles.append(h)
                    labels.append(l)
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)
    return fig


def accuracy_bars(groups: list) -> Figure:
    """Grouped bars: per population (name, role, {metric: (mean, std)}), retain/test/forget accuracy in %."""
    n = len(groups)
    with matplotlib.rc_context(RC):
        fig = new_figure(min(13.0, max(10.0, 0.75 * n + 3)), 5.4)
        ax = fig.add_subplot()
        x = np.arange(n)
        w = 0.26
        ref = next((g for g in groups if g[1] == "reference"), None)
        handles = []
        for k, key in enumerate(ACC_COLORS):
            means = np.array([100 * g[2][key][0] for g in groups])
            stds = np.array([100 * g[2][key][1] for g in groups])
            handles.append(ax.bar(x + (k - 1) * w, means, w, yerr=stds, capsize=2, color=ACC_COLORS[key],
                                  label=f"{ACC_LABELS[key]} accuracy", edgecolor="white", linewidth=0.5,
                                  error_kw={"elinewidth": 0.8, "alpha": 0.7}))
            if ref is not None:
                handles.append(ax.axhline(100 * ref[2][key][0], color=ACC_COLORS[key], linestyle="--",
                                          linewidth=0.9, alpha=0.8, label=f"retrained {ACC_LABELS[key]} accuracy"))
        ax.set_xticks(x)
        labels = []
        for name, role, _ in groups:
            labels.append(name + {"ceiling": "\n(ceiling)", "floor": "\n(with forget set)", "reference": "\n(reference)"}
                          .get(role, ""))
        ax.set_xticklabels(labels, rotation=35 if n > 7 else 0, ha="right" if n > 7 else "center",
                           rotation_mode="anchor")
        lows = [100 * (g[2][k][0] - g[2][k][1]) for g in groups for k in ACC_COLORS if np.isfinite(g[2][k][0])]
        bottom = max(0.0, 5 * math.floor(min(lows + [100.0]) / 5) - 5)
        ax.set_ylim(bottom, 101)
        ax.set_ylabel("accuracy (%), mean ± 1 std over models"
                      + (f"\n(axis starts at {bottom:g}%)" if bottom else ""))
        ax.set_title("Retain / test / forget accuracy per population beside the retrained reference (dashed)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_xlim(-0.6, n - 0.4)
        fig.legend(handles, [h.get_label() for h in handles], loc="outside upper center", ncols=3,
                   frameon=False)                       # columns: retain, test, forget; rows: bars, lines
    return fig


def render_svg(fig: Figure) -> bytes:
    """SVG bytes of a figure (text kept as text: searchable, sharp at any size)."""
    out = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "obliviate"}):   # hashsalt: stable ids
        fig.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


NSTUDY_SHOWN = 5    # methods drawn in colour: the top ones by full-N score (plus finetune); the rest in grey


def nstudy(study: dict) -> Figure:
    """F against the number of models per population, with intervals; the ceiling; rank stability."""
    sizes = np.asarray(study["sizes"], dtype=float)
    roles = study["roles"]
    rows = study["rows"]
    methods = sorted((k for k in rows if roles.get(k, "method") == "method"), key=lambda k: -rows[k]["score"][-1])
    shown = methods[:NSTUDY_SHOWN] + [k for k in methods[NSTUDY_SHOWN:] if k == "finetune"]
    pct = f"{100 * study['confidence']:g}%"
    palette = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    with matplotlib.rc_context(RC):
        fig = new_figure(12.0, 4.6)
        ax, bx = fig.subplots(1, 2, width_ratios=[2.2, 1])
        vals = np.array([v for k in rows for v in rows[k]["f"] + [c for ci in rows[k]["f_ci"] for c in ci]], float)
        pos = vals[vals > 0]
        floor = float(pos.min()) / 2 if pos.size and pos.max() / pos.min() > 30 else None
        clip = (lambda y: np.maximum(np.asarray(y, float), floor)) if floor else (lambda y: np.asarray(y, float))
        for k in methods[NSTUDY_SHOWN:]:
            if k not in shown:
                ax.plot(sizes, clip(rows[k]["f"]), color="#c8c8c8", linewidth=0.8, zorder=1)
        styles = [(k, palette[i % len(palette)], "-", "o") for i, k in enumerate(shown)]
        styles += [(k, ROLE_STYLE[roles[k]][0], "--" if roles[k] == "ceiling" else ":", ROLE_STYLE[roles[k]][1])
                   for k in rows if roles.get(k) in ("ceiling", "floor")]
        for k, color, ls, marker in styles:
            f = np.asarray(rows[k]["f"])
            ci = np.asarray(rows[k]["f_ci"], dtype=float)
            label = k + {"ceiling": " (ceiling)", "floor": " (with forget set)"}.get(roles.get(k, "method"), "")
            ax.fill_between(sizes, clip(ci[:, 0]), clip(ci[:, 1]), color=color, alpha=0.13, linewidth=0, zorder=2)
            ax.plot(sizes, clip(f), color=color, linestyle=ls, marker=marker, markersize=4, label=label, zorder=3)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(int(n)) for n in sizes])
        ax.set_xlabel("models per population (n)")
        if floor:                                 # methods far under the ceiling: a log axis shows them
            ax.set_yscale("log")
            ax.set_ylim(bottom=floor * 0.9)
        ax.set_ylabel("forgetting quality F" + (f" (log axis; 0 drawn at {floor:.0e})" if floor else ""))
        ax.set_title(f"F with n models (bands: {pct} of draws; grey: other methods)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", frameon=False, fontsize=8)
        rho = np.array([np.nan if r is None else r for r in study["rho"]], dtype=float)
        rci = np.array([[np.nan, np.nan] if c is None else c for c in study["rho_ci"]], dtype=float)
        bx.fill_between(sizes, rci[:, 0], rci[:, 1], color="#444444", alpha=0.15, linewidth=0)
        bx.plot(sizes, rho, color="#444444", marker="o", markersize=4)
        bx.axhline(1.0, color="#2ca02c", linestyle="--", linewidth=0.9)
        bx.set_xscale("log", base=2)
        bx.set_xticks(sizes, [str(int(n)) for n in sizes])
        bx.set_ylim(min(-0.05, float(np.nanmin(rci)) - 0.05) if np.isfinite(rci).any() else -0.05, 1.05)
        bx.set_xlabel("models per population (n)")
        bx.set_ylabel("Spearman rho with the full-N ranking")
        bx.set_title("Does the ranking hold with fewer models?")
        bx.grid(True, alpha=0.3)
        fig.suptitle(f"N-study of {study.get('run')}: how many models the comparison needs", fontsize=11)
    return fig


# F at N = 512 of synthetic normal populations (spread ratio, location gap) -> F, scored with the official metric
# (docs/challenge.md, "The regime"; retrained std 1-3: at std 0.1-0.3 the threshold
# grid lowers the ceiling to ~0.09, docs/projection.md)
REGIME_MARKS = [(1.0, 0.0, "F 0.19-0.21"), (1.0, 0.5, "F 0.04-0.08"), (0.7, 0.3, "F 0.013-0.022"),
                (0.5, 0.25, "F 0.002-0.007"), (0.14, 1.2, "F < 0.003")]
REGIME_BOX = (0.9, 1.0, 0.5)   # the challenge's implied region: spread ratio 0.9-1.0, |location gap| <= 0.5


def regime_plane(rows: list) -> Figure:
    """Rows on the (spread ratio, location gap) plane (keys "spread_ratio", "location_gap"), the challenge's
    implied region shaded and the synthetic F levels at N = 512 marked; points beyond the axes sit on the edge."""
    pts = [(r["method"], r["role"], num(r.get("spread_ratio")), num(r.get("location_gap"))) for r in rows]
    pts = [p for p in pts if p[2] is not None and p[3] is not None]
    xmax = min(2.0, max([1.3] + [1.1 * p[2] for p in pts]))
    ylo = max(-3.0, min([-0.6] + [p[3] - 0.2 for p in pts]))
    yhi = min(3.0, max([1.5] + [p[3] + 0.2 for p in pts]))
    with matplotlib.rc_context(RC):
        fig = new_figure(12, 5.6)
        ax = fig.add_subplot()
        lo, hi, g = REGIME_BOX
        ax.axhspan(-g, g, xmin=lo / xmax, xmax=hi / xmax, color="#2ca02c", alpha=0.15, zorder=0,
                   label="the challenge's implied region (finetune: F ~0.058 at N = 512)")
        for x, y, text in REGIME_MARKS:
            ax.scatter([x], [y], marker="+", s=80, color="#555555", zorder=2)
            ax.annotate(text, (x, y), xytext=(5, -12), textcoords="offset points", fontsize=8, color="#555555")
        ax.scatter([], [], marker="+", color="#555555", label="synthetic normal populations: F at N = 512")
        xy, names, colors = [], [], []
        for name, role, x, y in pts:
            color, marker, suffix = ROLE_STYLE[role]
            cx, cy = min(x, xmax * 0.98), min(max(y, ylo * 0.98), yhi * 0.98)
            clipped = (cx, cy) != (x, y)
            ax.scatter([cx], [cy], marker="D" if clipped else marker, s=90 if marker == "*" else 50, color=color,
                       edgecolor="black", linewidth=0.6, zorder=3)
            xy.append((cx, cy))
            names.append(name + suffix + (f" ({x:.2f}, {y:+.2f})" if clipped else ""))
            colors.append("#222222")
        ax.scatter([], [], marker="D", color="#aaaaaa", edgecolor="black", label="beyond the axes (value in label)")
        ax.axhline(0, color="#999999", linewidth=0.8, zorder=1)
        ax.axvline(1, color="#999999", linewidth=0.8, zorder=1)
        ax.set_xlim(0, xmax)
        ax.set_ylim(ylo, yhi)
        _finish_scatter(ax, "spread ratio = std(row) / std(retrained) per forget example, median",
                        "location gap = (median row - median retrained)\n/ std(retrained), median",
                        "Where the rows sit against the challenge's regime (1, 0: a perfect unlearner)", xy, names,
                        colors)
    return fig
