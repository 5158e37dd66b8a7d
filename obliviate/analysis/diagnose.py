"""`obliviate diagnose RUN_DIR`: where each row of a run sits against the challenge's regime (spread ratio,
location gap, retrained std, forget accuracy) and the F it would score at --project-n models (docs/projection.md).
Reads the run folder; the arithmetic is obliviate/metrics/projection.py."""
from __future__ import annotations

import numpy as np

from ..board import REFERENCE, ROLE_TAGS, interval, regime_hint
from ..errors import UserError
from ..seeds import draw_label
from ..metrics.regime import board_verdict
from ..metrics.projection import (CONFIDENCE, DRAWS, PROJECT_N, project_forgetting_quality, retrained_std,
                                   row_seed, spread_and_gap)
from ..report.folder import REFERENCE_FILE, RunFolder, load_run

KEYS = ("method", "role", "n_models", "forgetting_quality", "forgetting_quality_ci", "spread_ratio", "location_gap",
        "retrained_std", "forget_acc", "retrained_forget_acc", "projected_forgetting_quality",
        "projected_forgetting_quality_ci")


def diagnose_run(run_dir, project_n: int = PROJECT_N, draws: int = DRAWS, confidence: float = CONFIDENCE,
                 methods: list[str] | None = None) -> dict:
    """{"run", "n_models", "project_n", "draws", "rows": [one dict per leaderboard row, KEYS]}; UserError when the
    run folder lacks its populations (the diagnostics need every model's confidences, not only the scores).
    `methods`: only those rows, in the board's order (each row's projection is seeded by its own name, so its
    figures are those of a whole-board diagnosis); the ceiling is always projected."""
    if project_n < 2:
        raise UserError(f"--project-n must be at least 2 models (got {project_n}); the challenge used 512.")
    if draws < 2:
        raise UserError(f"--draws must be at least 2 (got {draws}): the interval is read from their spread; "
                        f"{DRAWS} is the default.")
    run = run_dir if isinstance(run_dir, RunFolder) else load_run(run_dir)      # a loaded run folder is read as it is
    if not (run.path / REFERENCE_FILE).is_file():
        raise UserError(f"{run.path} has no {REFERENCE_FILE}, so there are no per-model confidences to "
                        f"diagnose: re-run `obliviate run` (it writes the populations) and diagnose that folder.")
    if methods is not None:
        if not methods:
            raise UserError("--method names no row: give one or more of the run's methods, comma-separated.")
        unknown = sorted(set(methods) - {row["method"] for row in run.rows})
        if unknown:
            raise UserError(f"{run.path} has no row for {', '.join(unknown)}: its rows are "
                            f"{', '.join(row['method'] for row in run.rows)}.")
    ref = run.reference()
    seed = int(run.board.get("seed", 0) or 0)
    r_forget = float(np.mean(ref["forget_acc"])) if "forget_acc" in ref else None
    rows = []
    for row in run.rows:
        if (methods is not None and row["method"] not in methods) or row.get("projected"):
            continue                          # a projected ceiling (a kit-backed run) has no population
        conf = run.row_population(row)["conf"]
        ratio, gap = spread_and_gap(conf, ref["conf"])
        point, (lo, hi) = project_forgetting_quality(conf, ref["conf"], n=project_n, draws=draws,
                                                     seed=row_seed(seed, draw_label(row["method"])), confidence=confidence)
        rows.append({"method": row["method"], "role": row["role"], "n_models": int(conf.shape[0]),
                     "forgetting_quality": row["forgetting_quality"],
                     "forgetting_quality_ci": row.get("forgetting_quality_ci"),
                     "spread_ratio": ratio, "location_gap": gap, "retrained_std": retrained_std(ref["conf"]),
                     "forget_acc": row["forget_acc"], "retrained_forget_acc": r_forget,
                     "projected_forgetting_quality": point, "projected_forgetting_quality_ci": [lo, hi]})
    # a perfect unlearner on this data: the reference projected against itself (gap and log ratio 0 up to noise).
    # The metric's ceiling depends on the confidences' scale (docs/projection.md: ~0.19 at retrained std 1, ~0.09 at
    # 0.3), so a row is read against this, and a run without a ceiling row (`run --no-bounds`) still has one.
    point, (lo, hi) = project_forgetting_quality(ref["conf"], ref["conf"], n=project_n, draws=draws,
                                                 seed=row_seed(seed, draw_label(REFERENCE)), confidence=confidence)
    verdict = board_verdict(run.rows, {r["method"]: run.row_population(r)["conf"] for r in run.rows
                                       if r["role"] == "method"}, ref["conf"])
    return {"run": str(run.path), "preset": run.board.get("preset"), "n_models": int(ref["conf"].shape[0]),
            "project_n": project_n, "draws": draws,
            "confidence": confidence, "projected_ceiling": point, "projected_ceiling_ci": [lo, hi],
            "regime": verdict, "rows": rows}


def _ci(x) -> str:
    return interval(x, missing="")


def diagnose_table(result: dict):
    """A rich Table of diagnose_run's result (the CLI's terminal output)."""
    from rich.table import Table
    n, pn = result["n_models"], result["project_n"]
    t = Table(title=f"{result['run']} · N = {n} · projected to N = {pn} ({result['draws']} draws) · "
                    f"challenge regime: spread ratio ~0.9-1.0, location gap <= ~0.5",
              caption=(result["regime"]["sentence"] + "\n" if result.get("regime") else "") +
                      (regime_hint(result) + "\n" if regime_hint(result) else "") +
                      f"a perfect unlearner on this data (the retrained models against themselves) projects to "
                      f"F = {result['projected_ceiling']:.4f} ({_ci(result['projected_ceiling_ci'])}) at N = {pn}; "
                      f"the challenge's finetune scored ~0.058 against ~0.19", caption_justify="left")
    for c in ("method", "spread ratio", "location gap", "retrained std", "forget acc / retrained", f"F at {n}",
              f"F at {pn}, projected (interval)"):
        t.add_column(c, justify="left" if c == "method" else "right", no_wrap=True)
    label = ROLE_TAGS
    for r in result["rows"]:
        rf = r["retrained_forget_acc"]
        t.add_row(r["method"] + label.get(r["role"], ""), f"{r['spread_ratio']:.2f}", f"{r['location_gap']:+.2f}",
                  f"{r['retrained_std']:.3f}", f"{r['forget_acc']:.3f}" + (f" / {rf:.3f}" if rf is not None else ""),
                  f"{r['forgetting_quality']:.4f}",
                  f"{r['projected_forgetting_quality']:.4f} ({_ci(r['projected_forgetting_quality_ci'])})",
                  style={"ceiling": "green", "floor": "red"}.get(r["role"]))
    return t
