"""The regime study's held-out tests (issue 17; docs/studies/heldout-challenge.md and the others it led to): the
eight winners and `finetune` on a candidate (studies/heldout/candidates.toml), read as declared before its first
row. Run from the repository root:

    bash studies/heldout/run.sh 32                                     # the run (resumable; frozen commit)
    python -m studies.heldout.heldout studies/heldout/runs/challenge-winners-n32 --write-doc
    bash studies/heldout/run.sh 32 w16                                 # the same test on `w16` (declared 2026-12-05)
    python -m studies.heldout.heldout studies/heldout/runs/w16-winners-n32 --candidate w16 --write-doc
    python -m studies.heldout.heldout --grid [--write-doc]             # readings x seeds on w16 (post hoc)

Per run: every row's score, F and intervals, cost in budgets, P(> finetune); the winners above `finetune`
(within the budget and P >= 0.975); Spearman's rho against the challenge's order with its interval
(studies/calibration/calibrate.py, the calibration study's own function); every row's spread ratio, location gap
and projected F at N = 512 (`obliviate diagnose`) and the projected ceiling; the declared verdict. One JSON line
per N in the candidate's table (studies/heldout/heldout*.jsonl; a rerun replaces its N's line) and the table into
the candidate's document (its `doc` in candidates.toml).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from obliviate.board import REFERENCE   # the reference population's row name
from obliviate.errors import UserError
from obliviate.analysis.diagnose import diagnose_run
from obliviate.report.folder import load_run
from studies.calibration.calibrate import BUDGET, method_names, spearman_interval, spearman_vs_challenge
from studies.heldout import candidates
from studies.regime import regime

HERE = Path(__file__).resolve().parent
TABLE = HERE / "heldout.jsonl"
START, END = "<!-- heldout-table:start -->", "<!-- heldout-table:end -->"


def candidate_files(candidate: str) -> tuple[Path, str, str]:
    """(table, start marker, end marker) of a candidate's held-out test: `challenge` (the preset the rule chose)
    has the names above; another candidate (`w16`) its own, so the two tests never share a line or a block."""
    if candidate == "challenge":
        return TABLE, START, END
    return HERE / f"heldout-{candidate}.jsonl", f"<!-- heldout-{candidate}-table:start -->", \
        f"<!-- heldout-{candidate}-table:end -->"
CLEARLY = 0.975          # P(> finetune) over the paired half-sample draws: the README boards' bold (declared)
VERDICT_N = 128          # the verdict is read at N >= 128 only; smaller runs are previews (declared)
REPRODUCES, PARTLY = 6, 4  # winners clearly above finetune (of 8), with rho's interval above 0 (declared)


def verdict(n_clearly: int, rho_ci) -> str:
    """The declared rule: reproduces (>= 6 of 8 and rho's interval above 0), partly (>= 4, or rho's interval
    above 0), does not."""
    rho_above = bool(rho_ci) and rho_ci[0] > 0
    if n_clearly >= REPRODUCES and rho_above:
        return "reproduces"
    return "partly" if n_clearly >= PARTLY or rho_above else "does not"


def heldout_row(run_dir: Path, project_n: int = 512) -> dict:
    run = load_run(run_dir)
    board, names = run.board, method_names()
    by = {r["method"]: r for r in board["rows"]}
    missing = [m for _, m in names if m not in by]
    if missing:
        raise UserError(f"{run_dir} has no row for {', '.join(missing)}: the held-out test needs the eight winners "
                        f"and finetune (--method winners).")
    nine = {team: by[m] for team, m in names}
    ft = nine["finetune"]
    winners = [t for t, _ in names if t != "finetune"]
    within = [t for t in winners if not nine[t]["over_budget"]]
    above = [t for t in within if nine[t]["score"] > ft["score"]]
    clearly = [t for t in within if (nine[t].get("p_beats_baseline") or 0) >= CLEARLY]
    arrays = {REFERENCE: run.reference(), **{m: run.row_population(by[m]) for _, m in names}}
    hats = {m: (by[m]["forgetting_quality"], by[m]["score"]) for _, m in names}
    rho_ci, p_rho = spearman_interval(arrays, names, hats, board.get("seed", 0)) or (None, None)
    diag = diagnose_run(run, project_n=project_n)
    dby = {r["method"]: r for r in diag["rows"]}
    rows = {team: row_figures(nine[team], dby[m]) for team, m in names}
    n = board["n_models"]
    return {"n_models": n, "run": run.path.name, "preset": board["preset"], "preset_record": board["preset_record"],
            "rows": rows, "within_budget": within, "above_finetune": above, "clearly_above_finetune": clearly,
            "spearman": spearman_vs_challenge({t: r["score"] for t, r in nine.items()}),
            "spearman_ci": rho_ci, "p_spearman_positive": p_rho,
            "projected_ceiling": diag["projected_ceiling"], "projected_ceiling_ci": diag["projected_ceiling_ci"],
            "project_n": project_n, "retrained_std": dby["finetune"]["retrained_std"],
            "verdict": verdict(len(clearly), rho_ci) if n >= VERDICT_N else "preview",
            "retrain_seconds": board["retrain_seconds"], "wall_seconds": board["wall_seconds"],
            "workers": board.get("workers"), "versions": board.get("versions"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def row_figures(row: dict, diag: dict) -> dict:
    """One board row's figures as the held-out tables show them: the leaderboard's, cost in budgets, and the
    diagnosis's spread ratio, location gap and projected F."""
    keep = ("forgetting_quality", "forgetting_quality_ci", "score", "score_ci", "retain_acc", "test_acc",
            "forget_acc", "cost", "over_budget", "p_beats_baseline", "rank", "rank_ci")
    return {**{k: row.get(k) for k in keep}, "budgets": row["cost"] / BUDGET,
            "spread_ratio": diag["spread_ratio"], "location_gap": diag["location_gap"],
            "projected_forgetting_quality": diag["projected_forgetting_quality"],
            "projected_forgetting_quality_ci": diag["projected_forgetting_quality_ci"]}


def variant_rows(run_dir: Path, project_n: int = 512) -> dict:
    """The post-hoc analysis (docs/studies/posthoc-port-readings.md): a run of `finetune` and one winner with
    overridden hyperparameters -> {winner: figures and the hyperparameters it ran with} (its `finetune` row is not
    diagnosed: the table reads finetune from the defaults' run)."""
    run = load_run(run_dir)
    winners = [r["method"] for r in run.board["rows"] if r["role"] == "method" and r["method"] != "finetune"]
    dby = {r["method"]: r for r in diagnose_run(run, project_n=project_n, methods=winners)["rows"]}
    return {r["method"]: {**row_figures(r, dby[r["method"]]), "hparams": r.get("hparams")}
            for r in run.board["rows"] if r["method"] in dby}


def read_table(path: Path | None = None) -> list[dict]:
    return regime.read_table(path or TABLE)


def put_row(row: dict, path: Path | None = None) -> list[dict]:
    """Replace the line of the row's N (a rerun of the same N), keep the others; rewritten atomically."""
    rows = sorted([r for r in read_table(path) if r["n_models"] != row["n_models"]] + [row],
                  key=lambda r: r["n_models"])
    regime.write_table(rows, path or TABLE)
    return rows


def _ci(x, fmt=".4f") -> str:
    return f" ({x[0]:{fmt}}–{x[1]:{fmt}})" if x else ""


def _cells(x: dict) -> str:
    """A row's cells from score to projected F (`row_figures`), as every held-out table shows them."""
    p = x.get("p_beats_baseline")
    return (f"{x['score']:.4f}{_ci(x.get('score_ci'))} | {x['forgetting_quality']:.4f} | "
            f"{x['retain_acc']:.3f} / {x['test_acc']:.3f} / {x['forget_acc']:.3f} | {x['budgets']:.2f}"
            f"{' over' if x['over_budget'] else ''} | {'' if p is None else f'{p:.2f}'} | "
            f"{x['spread_ratio']:.2f} | {x['location_gap']:+.2f} | "
            f"{x['projected_forgetting_quality']:.4f}{_ci(x['projected_forgetting_quality_ci'])}")


def markdown(rows: list[dict]) -> str:
    places = {t: i + 1 for i, (t, _) in enumerate(method_names()) if t != "finetune"}
    lines = []
    for r in rows:
        rho = "n/a" if r["spearman"] is None else f"{r['spearman']:+.2f}{_ci(r['spearman_ci'], '+.2f')}"
        lines += [f"**N = {r['n_models']}** ({r['verdict']}; run `{r['run']}`): winners within the budget and above "
                  f"`finetune` with P >= {CLEARLY}: **{len(r['clearly_above_finetune'])} of 8** "
                  f"({', '.join(r['clearly_above_finetune']) or 'none'}); above it at all: "
                  f"{len(r['above_finetune'])}; Spearman's rho against the challenge's order **{rho}**; projected "
                  f"ceiling at {r['project_n']}: {r['projected_ceiling']:.3f}{_ci(r['projected_ceiling_ci'], '.3f')}.",
                  "", f"| row (challenge place) | score (95%) | F | retain / test / forget acc | cost (budgets) | "
                      f"P(> finetune) | spread ratio | location gap | projected F at {r['project_n']} (95%) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for team, x in sorted(r["rows"].items(), key=lambda kv: -kv[1]["score"]):
            name = f"{team} (#{places[team]})" if team in places else f"{team} (official baseline)"
            lines.append(f"| {name} | {_cells(x)} |")
        lines.append("")
    return "\n".join(lines).rstrip() or "(not run yet)"


VARIANTS = "<!-- heldout-variants-table:start -->", "<!-- heldout-variants-table:end -->"
VARIANTS_DOC = candidates.DOCS / "posthoc-port-readings.md"


def variants_markdown(run_dirs: list[Path], defaults: dict, project_n: int = 512, runs: Path | None = None) -> str:
    """The variants' rows beside the same methods' default rows at the same N (`defaults`: a held-out table line;
    its run folder, under `runs`, gives the default hyperparameters, so a variant's column names what changed)."""
    n, default_run = defaults["n_models"], (runs or HERE / "runs") / defaults["run"]
    default_board = load_run(default_run).board
    default_hp = {r["method"]: r.get("hparams") or {} for r in default_board["rows"]}
    reading = default_board.get("reading") or "write-up"      # boards before --reading: the write-ups' only
    lines = [f"| row (N = {n}) | hyperparameters changed | score (95%) | F | retain / test / forget acc | "
             f"cost (budgets) | P(> finetune) | spread ratio | location gap | projected F at {project_n} (95%) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    shown = set()
    for d in run_dirs:
        for m, x in variant_rows(d, project_n).items():
            if m not in shown:
                lines.append(f"| {m} (default, run `{defaults['run']}`) | none: the {reading}'s reading | "
                             f"{_cells(defaults['rows'][m])} |")
                shown.add(m)
            changed = {k: v for k, v in (x["hparams"] or {}).items() if default_hp.get(m, {}).get(k) != v}
            lines.append(f"| {m} (run `{d.name}`) | {', '.join(f'{k}={v}' for k, v in sorted(changed.items()))} | "
                         f"{_cells(x)} |")
    lines.append(f"| finetune (run `{defaults['run']}`) | none | {_cells(defaults['rows']['finetune'])} |")
    return "\n".join(lines)


# Readings x seeds on `w16` (docs/studies/posthoc-notebook-seed0.md): which candidate's held-out line fills each
# cell. Two declared tests (w16, w16-notebook) and two post-hoc boards.
GRID = {(0, "write-up"): "w16", (0, "notebook"): "w16-seed0-notebook",
        (1, "write-up"): "w16-seed1-writeup", (1, "notebook"): "w16-notebook"}
GRID_BLOCK = "<!-- heldout-grid:start -->", "<!-- heldout-grid:end -->"
GRID_DOC = candidates.DOCS / "posthoc-notebook-seed0.md"


def grid_markdown(n: int = VERDICT_N, tables=lambda c: candidate_files(c)[0]) -> str:
    """The two-by-two at N = n, each cell from its candidate's committed line: verdict, winners clearly above
    `finetune` within the budget, rho with its interval; a cell whose line is missing says how to run it."""
    out = [f"| `w16`, N = {n} | write-up readings (the defaults) | notebook readings (`--reading notebook`) |",
           "|---|---|---|"]
    for seed in sorted({s for s, _ in GRID}):
        cells = []
        for reading in ("write-up", "notebook"):
            cand = GRID[seed, reading]
            line = [r for r in read_table(tables(cand)) if r["n_models"] == n]
            if not line:
                cells.append(f"not run (`bash studies/heldout/run.sh {n} {cand}`)")
                continue
            r = line[0]
            lo, hi = r["spearman_ci"] or (float("nan"), float("nan"))
            clearly = r["clearly_above_finetune"]
            cells.append(f"{r['verdict']}: {len(clearly)} of 8 ({', '.join(clearly) or 'none'}), "
                         f"rho {r['spearman']:+.2f} ({lo:+.2f} to {hi:+.2f}) (`{cand}`)")
        out.append(f"| seed {seed} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_doc(rows: list[dict], doc: Path | None = None, candidate: str = "challenge") -> None:
    """The candidate's table into `doc`, by default its study document (candidates.toml)."""
    _, start, end = candidate_files(candidate)
    regime.write_block(doc or candidates.doc(candidate), start, end, markdown(rows))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", type=Path, help="a finished `obliviate run --method winners` folder")
    ap.add_argument("--project-n", type=int, default=512)
    ap.add_argument("--write-doc", action="store_true",
                    help="write the table into the candidate's document under docs/studies/")
    ap.add_argument("--candidate", default="challenge", choices=list(candidates.load()),
                    help="whose test: `challenge` (default) or another candidate of studies/heldout/candidates.toml "
                         "(each its own table and block in its document)")
    ap.add_argument("--grid", action="store_true",
                    help="readings x seeds on w16 at N = 128 from the four committed lines "
                         "(docs/studies/posthoc-notebook-seed0.md)")
    ap.add_argument("--variants", type=Path, nargs="+", default=None,
                    help="post-hoc variant runs (studies/heldout/variants.sh): their rows beside the defaults' "
                         "of the candidate's held-out line at the same N (docs/studies/posthoc-port-readings.md)")
    a = ap.parse_args(argv)
    table, _, _ = candidate_files(a.candidate)
    try:
        if a.grid:
            text = grid_markdown()
            print(text)
            if a.write_doc:
                regime.write_block(GRID_DOC, *GRID_BLOCK, text)
            return
        if a.variants:
            n = load_run(a.variants[0]).board["n_models"]
            defaults = [r for r in read_table(table) if r["n_models"] == n]
            if not defaults:
                raise UserError(f"no held-out line at N = {n} in {table.name} to compare the variants with.")
            text = variants_markdown(a.variants, defaults[0], a.project_n)
            print(text)
            if a.write_doc:
                regime.write_block(VARIANTS_DOC, *VARIANTS, text)
            return
        rows = put_row(heldout_row(a.run_dir, a.project_n), table) if a.run_dir else read_table(table)
        print(markdown(rows))
        if a.write_doc:
            write_doc(rows, candidate=a.candidate)
    except UserError as e:
        sys.exit(f"heldout: {e}")


if __name__ == "__main__":
    main()
