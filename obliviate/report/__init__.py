"""The report: a leaderboard and plots a person can read, from a run directory.

    write_report(run_dir) -> (html_path, md_path)   RUN_DIR/report.html (self-contained) and report.md
                                                    (+ its PNG figures in RUN_DIR/report_files/)
    compare_runs(run_dirs, metrics=None, markdown=False) -> str
    metric_glossary(markdown=False) -> list of {name, formula, direction, ideal} (or a Markdown table)
    load_run(run_dir) -> RunFolder                  the checked leaderboard, populations on demand
"""
from .compare import DEFAULT_METRICS, compare_runs
from .glossary import metric_glossary
from .render import write_report
from .folder import RunFolder, load_run

__all__ = ["write_report", "compare_runs", "metric_glossary", "load_run", "RunFolder", "DEFAULT_METRICS"]
