"""Which differences in a run are real: its pairwise table (`obliviate compare RUN_DIR`) and its N-study
(`obliviate nstudy RUN_DIR`), both from the populations the run stored (no retraining).

    run_intervals(run, confidence=None, seed=None) -> {row name: keys of metrics.resample.board_intervals}
    pairwise_table(run_dir, confidence=None, markdown=False) -> str
    write_nstudy(run_dir, confidence=0.95, draws=STUDY_DRAWS) -> (study dict, [paths written])
    nstudy_table(study, markdown=False) -> str
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from ..board import REFERENCE, ROLE_ORDER, ROLE_TAGS, interval
from ..errors import UserError
from ..store import atomic_write_bytes
from ..metrics.resample import CONFIDENCE, STUDY_DRAWS, board_intervals, check_confidence, n_study
from ..report.folder import RunFolder, load_run, num

INTERVAL_KEYS = ("forgetting_quality_ci", "score_ci")
PAIR_KEYS = ("rank", "rank_ci", "p_beats_baseline", "p_beats_next", "beats_next")


def run_populations(run: RunFolder) -> tuple[dict, dict]:
    """({"reference": ref, row name: population, ...}, {row name: role}) of a run."""
    pops = {REFERENCE: run.reference()}
    for row in run.rows:
        pops[row["method"]] = run.row_population(row)
    return pops, {row["method"]: row["role"] for row in run.rows}


def run_intervals(run: RunFolder, confidence: float | None = None, seed: int | None = None) -> dict:
    """The run's own interval keys per row when leaderboard.json has them at this confidence; otherwise
    computed from its populations (runs written before intervals existed, or another --confidence)."""
    check_confidence(confidence)
    stored = run.board.get("confidence")
    have = all(all(k in r for k in INTERVAL_KEYS) for r in run.rows) and all(
        all(k in r for k in PAIR_KEYS) for r in run.rows if r["role"] == "method")
    if have and (confidence is None or confidence == stored):
        return {r["method"]: {k: r.get(k) for k in INTERVAL_KEYS + PAIR_KEYS} for r in run.rows}
    pops, roles = run_populations(run)
    if min(p["conf"].shape[0] for p in pops.values()) < 4:
        raise UserError(f"{run.path} has populations of fewer than 4 models: intervals need at least 4 per "
                        f"population (re-run with a larger --n-models).")
    seed = run.board.get("seed", 0) if seed is None else seed
    return board_intervals(pops, roles=roles, confidence=confidence or stored or CONFIDENCE, seed=int(seed))


def _ci(v, d=4) -> str:
    return interval(v, d)


def _p(x) -> str:
    return "–" if num(x) is None else f"{x:.2f}"


def pairwise_table(run_dir, confidence: float | None = None, markdown: bool = False) -> str:
    """One run's methods by score: interval, rank interval, P(beats finetune), P(beats the next one down)."""
    run = load_run(run_dir)
    iv = run_intervals(run, confidence)
    conf = confidence or run.board.get("confidence") or CONFIDENCE
    pct = f"{100 * conf:g}%"
    rows = sorted(run.rows, key=lambda r: (ROLE_ORDER[r["role"]], -r["score"]))
    header = ["rank", "method", "score", f"score {pct}", f"F {pct}", f"rank {pct}", "P(> finetune)",
              "P(> next)", "next"]
    body = []
    for r in rows:
        v = iv.get(r["method"], {})
        tag = ROLE_TAGS.get(r["role"], "")
        rk = v.get("rank_ci")
        body.append([str(v["rank"]) if v.get("rank") else "", r["method"] + tag, f"{r['score']:.4f}",
                     _ci(v.get("score_ci")), _ci(v.get("forgetting_quality_ci")),
                     f"{rk[0]}–{rk[1]}" if rk else "", _p(v.get("p_beats_baseline")), _p(v.get("p_beats_next")),
                     v.get("beats_next") or ""])
    foot = (f"Intervals: {pct}, half-sampling of both populations' models (docs/intervals.md). P(> X): the share "
            f"of paired draws in which the method's score exceeds X's (the reference resampled once per draw).")
    if markdown:
        esc = lambda s: s.replace("|", "\\|")
        lines = ["| " + " | ".join(header) + " |", "|---:|---|" + "---:|" * (len(header) - 3) + "---|"]
        lines += ["| " + " | ".join(esc(c) for c in cells) + " |" for cells in body]
        return "\n".join(lines) + "\n\n" + foot + "\n"
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"{run.name}: which differences are real", title_justify="left", caption=foot,
              caption_justify="left")
    for h in header:
        t.add_column(h, justify="left" if h in ("method", "next") else "right")
    for cells in body:
        t.add_row(*cells)
    buf = io.StringIO()
    Console(file=buf, width=150, color_system=None, force_terminal=False, legacy_windows=False,
            markup=False).print(t)
    return buf.getvalue()


# ----------------------------------------------------------------------------- N-study

def write_nstudy(run_dir, confidence: float = CONFIDENCE, draws: int = STUDY_DRAWS) -> tuple[dict, list]:
    """Run the N-study of a run folder and write nstudy.json, nstudy.md, nstudy.png and nstudy.svg into it."""
    from ..report import plots

    check_confidence(confidence)
    if draws < 10:
        raise UserError(f"--draws must be at least 10 (got {draws}): fewer subsamples give no usable interval.")
    run = load_run(run_dir)
    pops, roles = run_populations(run)
    n = min(p["conf"].shape[0] for p in pops.values())
    if n < 8:
        raise UserError(f"{run.path} has populations of {n} models: the N-study starts at 8 models per population "
                        f"(re-run with --n-models 16 or more).")
    seed = int(run.board.get("seed", 0))
    iv = run_intervals(run, confidence)
    study = n_study(pops, roles=roles, confidence=confidence, seed=seed, draws=draws, board=iv)
    study["roles"] = roles
    study["run"] = run.board.get("run") or run.name
    study["preset"] = run.board.get("preset")
    fig = plots.nstudy(study)
    paths = []
    for name, data in (("nstudy.json", json.dumps(study, indent=2).encode()),
                       ("nstudy.md", nstudy_table(study, markdown=True).encode()),
                       ("nstudy.png", plots.render(fig)), ("nstudy.svg", plots.render_svg(fig))):
        atomic_write_bytes(run.path / name, data)
        paths.append(run.path / name)
    return study, paths


def nstudy_table(study: dict, markdown: bool = False) -> str:
    """Rows: methods (+ ceiling, floor); columns: F at each n with its interval; last row: Spearman rho."""
    sizes = study["sizes"]
    place = ROLE_ORDER
    order = sorted(study["rows"], key=lambda k: (place[study["roles"].get(k, "method")], -study["rows"][k]["score"][-1]))
    pct = f"{100 * study['confidence']:g}%"
    header = ["method"] + [f"n={n}" for n in sizes]
    body = []
    for k in order:
        v = study["rows"][k]
        tag = ROLE_TAGS.get(study["roles"].get(k, "method"), "")
        body.append([k + tag] + [f"{f:.4f} ({lo:.4f}–{hi:.4f})" for f, (lo, hi) in zip(v["f"], v["f_ci"])])
    body.append(["rank rho vs n=N"] + ["–" if r is None else f"{r:.2f}" + (f" ({c[0]:.2f}–{c[1]:.2f})" if c else "")
                                       for r, c in zip(study["rho"], study["rho_ci"])])
    foot = (f"F per method with n models per population (mean over {study['draws']} subsamples of the run's models, "
            f"{pct} of them in brackets; n = N: the leaderboard's F and interval). Last row: Spearman's rho between "
            f"the methods' score ranking with n models and the full-N ranking.")
    if markdown:
        lines = [f"# N-study: {study.get('preset')} ({study.get('run')})", "",
                 "| " + " | ".join(header) + " |", "|---|" + "---:|" * len(sizes)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]
        return "\n".join(lines) + "\n\n" + foot + "\n\n![N-study](nstudy.png)\n"
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"N-study: {study.get('preset')} ({study.get('run')})", title_justify="left", caption=foot,
              caption_justify="left")
    for h in header:
        t.add_column(h, justify="left" if h == "method" else "right")
    for cells in body:
        t.add_row(*cells)
    buf = io.StringIO()
    Console(file=buf, width=max(120, 24 * len(header)), color_system=None, force_terminal=False,
            legacy_windows=False, markup=False).print(t)
    return buf.getvalue()


__all__ = ["run_populations", "run_intervals", "pairwise_table", "write_nstudy", "nstudy_table"]
