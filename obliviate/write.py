"""Stage 4 of a run, write: the run folder, built beside its destination and renamed into place.

    <out>/leaderboard.json     the board (score.score)
    <out>/leaderboard.md       the same rows as a Markdown table
    <out>/populations/*.npz    every population's per-model evaluations (confidences, losses, accuracies)
    <out>/report.html, .md     the report (obliviate.report), unless --no-report
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .store import npz_bytes

COLUMNS = ("method", "forgetting_quality", "score", "retain_acc", "test_acc", "forget_acc", "cost",
           "n_models", "seconds")


def fmt(key, value) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if key == "seconds" else f"{value:.3f}" if key == "cost" else f"{value:.4f}"
    return str(value)


def row_label(row) -> str:
    tag = {"ceiling": " (ceiling)", "floor": " (floor)"}.get(row["role"], "")
    return f"{row['method']}{tag}{' [over budget]' if row.get('over_budget') else ''}"


def leaderboard_markdown(board: dict) -> str:
    head = (f"# Leaderboard: {board['preset']} (forget {board['forget']}, N = {board['n_models']}, "
            f"seed {board['seed']})\n\n")
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in board["rows"]:
        cells = [row_label(r)] + [fmt(c, r[c]) for c in COLUMNS[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    foot = (f"\n\nScored against a population of {board['n_models']} retrained models; `oracle` is a second "
            f"retrained population (the best any method can do), `original` is no unlearning. `cost` = mean "
            f"unlearning time / one retraining ({board['retrain_seconds']:.3f} s); budget "
            f"{board['budget'] if board['budget'] is not None else 'none'}.\n")
    return head + "\n".join(lines) + foot


def write_run_dir(out: Path, board: dict, populations: dict, report: bool) -> None:
    """Build the whole run folder beside its destination, then rename it into place: all or nothing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        (tmp / "populations").mkdir()
        for name, arrays in populations.items():
            (tmp / "populations" / f"{name}.npz").write_bytes(npz_bytes(arrays))
        (tmp / "leaderboard.json").write_text(json.dumps(board, indent=2))
        (tmp / "leaderboard.md").write_text(leaderboard_markdown(board))
        if report:
            try:
                from .report import write_report
            except ModuleNotFoundError:
                write_report = None
            if write_report:
                write_report(tmp)
        if out.exists():
            out.rmdir()           # empty (checked before the run)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
