"""The calibration study (issue 13; docs/studies/calibration.md): how close does each candidate benchmark come to
the challenge, and which one is the default? Resumable: each finished candidate appends one JSON line to
studies/calibration/calibration.jsonl, and a candidate already there (same preset record, same N) is skipped, so
the study runs in pieces across sessions. Run from the repository root:

    python -m studies.calibration.calibrate                       # every candidate of GRID not yet in the table
    python -m studies.calibration.calibrate --only fashion-e30 -n 64
    python -m studies.calibration.calibrate --table               # the measured table (Markdown)
    python -m studies.calibration.calibrate --table --write-doc   # ... and put it into docs/studies/calibration.md
    python -m studies.calibration.calibrate --from-run runs/challenge-all-n64 --as challenge   # a confirmation's row

A candidate is a preset record, studies/calibration/candidates/<id>.toml (rerun any row with
`obliviate run --preset studies/calibration/candidates/<id>.toml`). Each runs the eight winners and `finetune` at
seed 0, budget 0.2, in its own cache folder (wall time "from empty" only when that folder was empty).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from obliviate.board import REFERENCE   # the reference population's row name
from obliviate.errors import UserError
from obliviate.metrics.projection import spread_and_gap  # noqa: F401  (the diagnostics; also calibrate.spread_and_gap)
from obliviate.presets import load_preset
from obliviate.report.folder import load_run  # a run folder's reader: one-sentence errors
from studies.regime.regime import write_block  # the one writer of the study documents' marked tables

HERE = Path(__file__).resolve().parent
GRID_DIR = HERE / "candidates"
TABLE = HERE / "calibration.jsonl"
DOC = HERE.parents[1] / "docs" / "studies" / "calibration.md"
CACHE = Path(os.environ.get("OBLIVIATE_CACHE") or HERE / ".cache")   # ignored by git

# (candidate id, screening N), cheapest first; N = 8 where a screen is projected past 40 minutes (the doc's rule)
GRID = [("digits", 16), ("fashion", 16), ("fashion-e30-2k", 16), ("fashion-e30", 8), ("fashion-e30-rare", 8),
        ("fashion-e30-12k", 8), ("fashion-e30-25k", 8), ("resnet-digits", 8), ("resnet-fashion14", 8),
        ("resnet-fashion28", 8), ("resnet-fashion28-rare", 8), ("resnet-fashion28-12k", 8)]

# the challenge's private leaderboard, in the organisers' order, then the official baseline (docs/challenge.md,
# "The winners");
# each team name with the registry name it had before the renaming (used when the team name is not registered)
CHALLENGE_ORDER = [("fanchuan", "fanchuan"), ("kookmin", "kookmin"), ("seif", "seif"), ("sebastian", "sebastian"),
                   ("toshi_k", "conv_transpose"), ("amnesiacs", "reset_distill"), ("sun", "noise_injection"),
                   ("forget", "kyungpook"), ("finetune", "finetune")]
BUDGET = 0.2           # the challenge: about 20% of one retraining
GATE_RETAIN_ACC = 0.80  # validity gate (docs/studies/calibration.md, rule 1)


def method_names() -> list[tuple[str, str]]:
    """(team name, name to run) for the nine rows: the team name once the registry knows it."""
    from obliviate.methods import METHODS
    return [(team, team if team in METHODS else old) for team, old in CHALLENGE_ORDER]


def n_registered_methods() -> int:
    from obliviate.methods import METHODS
    return len({m.name for m in METHODS.values()})        # aliases point at one Method


# --- the figures ---------------------------------------------------------------------------------------
def spearman_vs_challenge(scores: dict) -> float | None:
    """Spearman's rho between a candidate's ranking of the nine rows (by score, higher first) and the challenge's;
    None when the nine scores are all equal (no ranking to compare)."""
    teams = [t for t, _ in CHALLENGE_ORDER]
    if len({scores[t] for t in teams}) == 1:
        return None
    rho = spearmanr([-scores[t] for t in teams], np.arange(1, len(teams) + 1)).statistic
    return float(rho)


def spearman_interval(populations: dict, names: list, hats: dict, seed: int = 0,
                      draws: int | None = None) -> tuple[list, float] | None:
    """rho's 95% interval and P(rho > 0) over the leaderboard's own paired half-sample draws of the nine rows
    (obliviate/metrics/resample.py: the draws behind every score interval; `draws` of them, by default the
    board's); None where no draw ranks anything.
    populations: {"reference": ..., run name: ...}; hats: {run name: (F, score)} from the leaderboard."""
    from obliviate.metrics.resample import CONFIDENCE, DRAWS, board_draws, interval
    runs = [run for _, run in names]
    if min(populations[k]["conf"].shape[0] for k in [REFERENCE, *runs]) < 4:
        return None                                   # a half-sample needs 2 models (as annotate_rows)
    d = board_draws(populations, rows=runs, seed=seed, draws=draws or DRAWS, hats=hats)
    s = np.stack([d[run]["score"] for run in runs])                       # [9, draws]
    teams = [t for t, _ in names]
    rhos = np.array([r for b in range(s.shape[1])
                     if (r := spearman_vs_challenge(dict(zip(teams, s[:, b])))) is not None])
    if not len(rhos):
        return None
    return interval(rhos, CONFIDENCE, -1.0, 1.0), float((rhos > 0).mean())


def projected_wall(board: dict, t_original: float, n_to: int, n_methods: int) -> float:
    """The full leaderboard's wall time at `n_to` models and `n_methods` methods, from this screen: the time
    after the original shared among populations by their measured seconds, scaled by n_to / N; methods not
    screened count at the screened methods' median."""
    rows = board["rows"]
    train = [r["seconds"] for r in rows if r["role"] != "method"]
    train += [next(r["seconds"] for r in rows if r["role"] == "ceiling")]   # the reference: no row, as the ceiling
    meth = [r["seconds"] for r in rows if r["role"] == "method"]
    measured = sum(train) + sum(meth)
    full = measured + max(0, n_methods - len(meth)) * statistics.median(meth)
    variable = max(0.0, board["wall_seconds"] - t_original)
    return t_original + variable * (full / measured) * (n_to / board["n_models"])


def candidate_row(cid: str, run, names: list, wall: float, t_original: float, from_empty: bool,
                  load: tuple) -> dict:
    """The table row of a finished run (`obliviate.report.folder.RunFolder`: its leaderboard and populations)."""
    board = run.board
    by = {r["method"]: r for r in board["rows"]}
    ceiling = next(r for r in board["rows"] if r["role"] == "ceiling")
    floor = next(r for r in board["rows"] if r["role"] == "floor")
    nine = {team: by[run] for team, run in names}
    ft = nine["finetune"]
    winners = [t for t, _ in names if t != "finetune"]
    beats = [t for t in winners if not nine[t]["over_budget"] and nine[t]["score"] > ft["score"]]
    clearly = None                                  # intervals: absent on older runners, None at tiny N
    if ft.get("score_ci") and all(nine[t].get("score_ci") for t in beats):
        clearly = [t for t in beats if nine[t]["score_ci"][0] > ft["score_ci"][1]]
    arrays = {REFERENCE: run.reference(), **{m: run.row_population(by[m]) for _, m in names}}
    ratio, gap = spread_and_gap(arrays[dict(names)["finetune"]]["conf"], arrays[REFERENCE]["conf"])
    rho_ci = spearman_interval(arrays, names, {m: (by[m]["forgetting_quality"], by[m]["score"]) for _, m in names},
                               board.get("seed", 0))
    rec = board["preset_record"]
    n_train = board["n_retain"] + board["n_forget"]
    n_all = n_registered_methods()
    keep = ("forgetting_quality", "score", "retain_acc", "test_acc", "cost", "over_budget", "forgetting_quality_ci",
            "score_ci", "p_beats_baseline")      # P(row beats finetune) over half-sample draws (metrics/resample.py)
    return {
        "id": cid, "n_models": board["n_models"], "record_hash": record_hash(rec), "record": rec,
        "steps_per_epoch": n_train / rec["recipe"]["batch_size"], "n_train": n_train, "n_forget": board["n_forget"],
        "faithfulness": faithfulness(rec, n_train),
        "ceiling": {k: ceiling[k] for k in keep if k in ceiling}, "floor": {k: floor[k] for k in keep if k in floor},
        "rows": {t: {k: r[k] for k in keep if k in r} for t, r in nine.items()},
        "beats_finetune": beats, "clearly_beats_finetune": clearly,
        "spearman": spearman_vs_challenge({t: r["score"] for t, r in nine.items()}),
        "spearman_ci": rho_ci[0] if rho_ci else None, "p_spearman_positive": rho_ci[1] if rho_ci else None,
        "spread_ratio": ratio, "location_gap": gap,
        "winners_median_budget_units": statistics.median(nine[t]["cost"] / BUDGET for t in winners),
        "retrained_retain_acc": ceiling["retain_acc"],
        "eligible": bool(ceiling["forgetting_quality"] > floor["forgetting_quality"]
                         and ceiling["retain_acc"] >= GATE_RETAIN_ACC),
        "retrain_seconds": board["retrain_seconds"], "original_seconds": t_original,
        "cost_clock": board.get("cost_clock", "wall time"),     # CPU time from 2026-11-23 evening (README)
        "wall_seconds": wall, "from_empty_cache": from_empty,
        "projected_full_wall": {str(n): projected_wall(board, t_original, n, n_all) for n in (32, 64)},
        "n_methods_full": n_all, "load_start_end": load, "workers": board.get("workers"),
        "torch_threads": __import__("torch").get_num_threads(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": board.get("versions"),
    }


def faithfulness(rec: dict, n_train: int) -> list:
    """The choice rule's key (a, b, c, d): BatchNorm ResNet, 30-epoch recipe, steps per epoch, challenge-like forget."""
    return [int(rec["model"].startswith("resnet")), int(rec["recipe"]["epochs"] >= 30),
            round(n_train / rec["recipe"]["batch_size"]), int("@rare" in rec["forget"] and rec.get("imbalance", 1) > 1)]


def record_hash(rec: dict) -> str:
    """Hash of the record without its None values: a field added later with a None default (e.g. the recipe's
    keep_best_from_epoch) leaves the rows measured before it valid, since None means 'as before'."""
    def strip(v):
        return {k: strip(x) for k, x in v.items() if x is not None} if isinstance(v, dict) else v
    return hashlib.sha256(json.dumps(strip(rec), sort_keys=True).encode()).hexdigest()[:12]


# --- the table -----------------------------------------------------------------------------------------
def read_table(path: Path = TABLE) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_row(row: dict, path: Path = TABLE) -> None:
    """Append atomically: the table is rewritten beside itself and renamed, never left half-written; a
    lock on the table's folder serialises two study processes appending at once."""
    import fcntl
    lock = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = (path.read_text() if path.exists() else "") + json.dumps(row, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        os.close(lock)                       # releases the lock


def done(table: list, cid: str, n: int, rec: dict) -> bool:
    return any(r["id"] == cid and r["n_models"] == n and record_hash(r["record"]) == record_hash(rec) for r in table)


def run_candidate(cid: str, n: int, *, grid_dir: Path = GRID_DIR, cache: Path = CACHE, methods=None) -> dict:
    from obliviate.runner import RunConfig, prepare, run
    path = grid_dir / f"{cid}.toml"
    preset = load_preset(path)
    names = methods or method_names()
    # the winners read by their write-ups and every population trained here, as when the study ran (before the
    # notebook reading was the default, and before kits)
    cfg = RunConfig(preset=str(path), methods=[m for _, m in names], n_models=n, seed=0, budget=BUDGET,
                    cache=str(cache / cid), report=False, quiet=True, reading="write-up", kit=None)
    if preset.imbalance != 1:         # refuse to measure a balanced run under an imbalanced candidate's name
        y = prepare(cfg)[-1].train.y.numpy()
        counts = np.bincount(y)
        if counts.max() < 1.5 * counts.min():
            raise UserError(f"candidate {cid}: the runner ignored the preset's imbalance ({preset.imbalance}): "
                            f"wire preset.imbalance into make_splits first.")
    cdir = cache / cid
    from_empty = not (cdir.exists() and any(cdir.iterdir()))
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        board, out = run(replace(cfg, out=str(Path(tmp) / "run")))
        wall = time.perf_counter() - t0
        return candidate_row(cid, load_run(out), names, wall, _original_seconds(board), from_empty,
                             (load0, os.getloadavg()[0]))


def row_from_run(cid: str, run_dir: Path, from_empty: bool) -> dict:
    """The table row of a finished run folder (a confirmation at larger N, run with `obliviate run`): the same
    figures as a screen's; wall time is the run's own, the load at its start and end unknown."""
    done_run = load_run(run_dir)
    board, names = done_run.board, method_names()
    have = {r["method"] for r in board["rows"]}
    missing = [m for _, m in names if m not in have]
    if missing:
        raise UserError(f"{run_dir} has no row for {', '.join(missing)}: a confirmation run needs the eight "
                        f"winners and finetune (--method winners,finetune or all).")
    return candidate_row(cid, done_run, names, board["wall_seconds"], _original_seconds(board), from_empty,
                         (None, None))


def _original_seconds(board: dict) -> float:
    """The original's training time (trained once per candidate): one retraining scaled back to the full train set."""
    return board["retrain_seconds"] * (board["n_retain"] + board["n_forget"]) / board["n_retain"]


def study(ids, n_override=None, *, table_path: Path = TABLE, grid_dir: Path = GRID_DIR, cache: Path = CACHE,
          methods=None, log=print) -> list[dict]:
    """Run every candidate of `ids` not yet in the table; returns the rows added."""
    added = []
    grid = dict(GRID)
    for cid in ids:
        n = n_override or grid.get(cid, 16)
        rec = load_preset(grid_dir / f"{cid}.toml").to_dict()
        if done(read_table(table_path), cid, n, rec):
            log(f"{cid} N={n}: in the table, skipped")
            continue
        log(f"{cid} N={n}: running ({time.strftime('%H:%M:%S')})")
        row = run_candidate(cid, n, grid_dir=grid_dir, cache=cache, methods=methods)
        append_row(row, table_path)
        added.append(row)
        log(f"{cid} N={n}: {row['wall_seconds'] / 60:.1f} min, ceiling {row['ceiling']['score']:.4f}, "
            f"finetune {row['rows']['finetune']['score']:.4f}, beats {len(row['beats_finetune'])}/8, "
            f"rho {_rho(row['spearman'])}")
    return added


def by_faithfulness(table: list[dict]) -> list[dict]:
    """Rows in the choice rule's order, least faithful first (then by N)."""
    return sorted(table, key=lambda r: (tuple(r["faithfulness"]), r["id"], r["n_models"]))


def markdown(table: list[dict]) -> str:
    head = ("| candidate | N | key (a,b,c,d) | ceiling F / score | floor F / score | finetune F / score | "
            "winners > finetune in budget | rho vs challenge | spread ratio | location gap | "
            "winners' median cost (budgets) | retrained retain acc | eligible | screen wall (min) | "
            "projected full, N=32 / 64 (min) |")
    lines = [head, "|" + "---|" * 15]
    for r in by_faithfulness(table):
        ft = r["rows"]["finetune"]
        beats = f"{len(r['beats_finetune'])}/8"
        if r.get("clearly_beats_finetune") is not None:
            beats += f" ({len(r['clearly_beats_finetune'])} clearly)"
        pj = r["projected_full_wall"]
        lines.append(
            f"| {r['id']} | {r['n_models']} | {tuple(r['faithfulness'])} | "
            f"{r['ceiling']['forgetting_quality']:.4f} / {r['ceiling']['score']:.4f} | "
            f"{r['floor']['forgetting_quality']:.4f} / {r['floor']['score']:.4f} | "
            f"{ft['forgetting_quality']:.4f} / {ft['score']:.4f} | {beats} | {_rho(r['spearman'], r.get('spearman_ci'))} | "
            f"{r['spread_ratio']:.2f} | {r['location_gap']:+.2f} | {r['winners_median_budget_units']:.2f} | "
            f"{r['retrained_retain_acc']:.3f} | {'yes' if r['eligible'] else 'no'} | "
            f"{r['wall_seconds'] / 60:.1f}{'' if r['from_empty_cache'] else '*'} | "
            f"{pj['32'] / 60:.1f} / {pj['64'] / 60:.1f} |")
    return "\n".join(lines)


def _rho(rho, ci=None) -> str:
    if rho is None:
        return "n/a"
    return f"{rho:+.2f}" + (f" ({ci[0]:+.2f} to {ci[1]:+.2f})" if ci else "")


def winners_markdown(table: list[dict]) -> str:
    """Each candidate's nine scores (and cost in budgets), in the challenge's order."""
    teams = [t for t, _ in CHALLENGE_ORDER]
    lines = ["| candidate | N | " + " | ".join(teams) + " |", "|" + "---|" * (len(teams) + 2)]
    for r in by_faithfulness(table):
        cells = []
        for t in teams:
            x = r["rows"][t]
            ci = f" [{x['score_ci'][0]:.3f}, {x['score_ci'][1]:.3f}]" if x.get("score_ci") else ""
            cells.append(f"{x['score']:.4f}{ci} ({x['cost'] / BUDGET:.1f}{'!' if x['over_budget'] else ''})")
        lines.append(f"| {r['id']} | {r['n_models']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


START, END = "<!-- calibration-table:start -->", "<!-- calibration-table:end -->"


def write_doc(table: list[dict], doc: Path = DOC) -> None:
    body = (f"{markdown(table)}\n\nScores per winner, in the challenge's order (cost in budgets of 0.2 retrainings; "
            f"! = over budget):\n\n{winners_markdown(table)}")
    write_block(doc, START, END, body, after="## Measured table")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated candidate ids (default: the whole GRID, in order)")
    ap.add_argument("-n", "--n-models", type=int, help="population size (default: each candidate's screening N)")
    ap.add_argument("--table", action="store_true", help="print the measured table and stop")
    ap.add_argument("--write-doc", action="store_true", help="with --table: write it into docs/studies/calibration.md")
    ap.add_argument("--from-run", help="append the row of a finished run folder (a confirmation run) and stop")
    ap.add_argument("--as", dest="as_id", help="with --from-run: the row's candidate id (e.g. challenge)")
    ap.add_argument("--from-empty", action="store_true", help="with --from-run: the run started from an empty cache")
    a = ap.parse_args(argv)
    if a.from_run:
        if not a.as_id:
            sys.exit("calibrate: --from-run needs --as ID (the candidate the run confirms).")
        try:
            row = row_from_run(a.as_id, Path(a.from_run), a.from_empty)
        except UserError as e:
            sys.exit(f"calibrate: {e}")
        append_row(row)
        print(f"{a.as_id} N={row['n_models']}: appended to {TABLE}")
        return
    if a.table:
        table = read_table()
        print(markdown(table)); print(); print(winners_markdown(table))
        if a.write_doc:
            write_doc(table)
        return
    ids = a.only.split(",") if a.only else [c for c, _ in GRID]
    missing = [c for c in ids if not (GRID_DIR / f"{c}.toml").exists()]
    if missing:
        print(f"no candidate record {GRID_DIR / (missing[0] + '.toml')}: skipping {', '.join(missing)}",
              file=sys.stderr)
        ids = [c for c in ids if c not in missing]
    try:
        study(ids, a.n_models, log=lambda m: print(m, flush=True))
    except UserError as e:
        sys.exit(f"calibrate: {e}")


if __name__ == "__main__":
    main()
