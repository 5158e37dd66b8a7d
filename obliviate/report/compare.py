"""compare_runs: one table of chosen metrics across run directories (rows = (run, method))."""
from __future__ import annotations

import io
from pathlib import Path

from ..errors import UserError
from ..board import ROLE_TAGS
from .folder import load_run, num, over_budget

DEFAULT_METRICS = ("forgetting_quality", "score", "retain_acc", "test_acc", "forget_acc", "cost")


def _fmt(x) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    v = num(x)
    if v is None:
        return "–" if x is None or isinstance(x, (int, float)) else str(x)
    return f"{int(v)}" if float(v).is_integer() and abs(v) >= 10 else f"{v:.4f}"


def compare_runs(run_dirs, metrics=None, markdown: bool = False) -> str:
    """A table of `metrics` (default: F, score, accuracies, cost) for every (run, method) of the runs.

    markdown=False: the table rendered by rich as plain text; markdown=True: a Markdown pipe table.
    UserError for a missing/corrupt run directory or a metric that no row has.
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    runs = [load_run(d) for d in run_dirs]
    if not runs:
        raise UserError("compare_runs got no run directories: pass one or more folders written by `obliviate run`.")
    metrics = list(metrics or DEFAULT_METRICS)
    known = sorted({k for run in runs for row in run.rows for k in row})
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise UserError(f"no run has the metric(s) {', '.join(map(repr, unknown))}: choose from "
                        f"{', '.join(known)}.")
    labels = [run.path.name for run in runs]
    if len(set(labels)) < len(labels):
        labels = [str(run.path) for run in runs]
    header = ["run", "method"] + metrics
    body = []
    for label, run in zip(labels, runs):
        for row in run.rows:
            name = row["method"] + ROLE_TAGS.get(row["role"], "")
            if over_budget(row, run.budget):
                name += " [over budget]"
            body.append([label, name] + [_fmt(row.get(m)) for m in metrics])
    if markdown:
        esc = lambda s: s.replace("|", "\\|")
        lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(metrics)]
        lines += ["| " + " | ".join(esc(c) for c in cells) + " |" for cells in body]
        return "\n".join(lines) + "\n"
    from rich.console import Console
    from rich.table import Table
    table = Table(title="obliviate: runs compared", title_justify="left")
    table.add_column("run")
    table.add_column("method")
    for m in metrics:
        table.add_column(m, justify="right")
    prev = None
    for cells in body:
        if prev is not None and cells[0] != prev:
            table.add_section()
        prev = cells[0]
        table.add_row(*cells)
    buf = io.StringIO()
    Console(file=buf, width=max(100, 24 * (len(metrics) + 2)), color_system=None, force_terminal=False,
            legacy_windows=False, markup=False).print(table)          # markup off: "[over budget]" is text
    return buf.getvalue()
