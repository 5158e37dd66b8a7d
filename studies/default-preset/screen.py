"""The default-preset study (issue 34 part 1; docs/studies/default-preset.md). Run from the repository root:

    python studies/default-preset/screen.py d8 d8-lr3e-4 ...     # N = 8 screens (gates 1 and 2), one row each
    python studies/default-preset/screen.py --board d8            # N = 64 default board, timed (gate 3)
    python studies/default-preset/screen.py --board d8 --kit DIR  # the same, backed by a kit
    python studies/default-preset/screen.py --table --write-doc   # the measured table into the study document

A screen is the project's own run cut to what the regime verdict needs (as studies/regime/regime.py): plan_run
plans the original, the retrained reference and `finetune`; the ceiling's and floor's populations are dropped;
execute trains them with the seeds `obliviate run` uses. One process, one thread, no kit. Each row is appended
to studies/default-preset/screen.jsonl (boards: boards.jsonl) with the command that produced it.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from obliviate.board import REFERENCE   # the reference population's row name

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CANDIDATES = HERE / "candidates"
TABLE = HERE / "screen.jsonl"
BOARDS = HERE / "boards.jsonl"
DOC = ROOT / "docs" / "studies" / "default-preset.md"
FIT_GATE = 0.95
BOARD_N = 64
WINNER_COST = 0.16        # retrainings per winner run (the calibration's median; docs/studies/regime.md)
N_METHODS = 17            # --method all
TWO_CORES = 1.8           # one-core wall / 1.8 = the two-core estimate (declared)
GATE_SECONDS = 7 * 60


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


def screen(cid: str, n: int = 8) -> dict:
    import torch
    torch.set_num_threads(1)
    from obliviate.execute import execute, train_original
    from obliviate.metrics import projection
    from obliviate.metrics.regime import verdict
    from obliviate.models import build_model
    from obliviate.plan import RunConfig, plan_run
    from obliviate.protocol import evaluate
    from obliviate.store import Store

    cache = Path(tempfile.mkdtemp(prefix=f"dp-{cid}-"))          # empty: every model trained and timed here
    cfg = RunConfig(preset=str(CANDIDATES / f"{cid}.toml"), methods=["finetune"], n_models=n, device="cpu",
                    cache=str(cache), quiet=True, report=False, workers=1, confidence=None, kit=None,
                    bounds=False)
    store = Store(cache)
    t0 = time.time()
    plan = plan_run(cfg, store, Path(tempfile.mkdtemp(prefix="dp-run-")))
    keep = (REFERENCE, "finetune")
    plan = replace(plan, pops=[p for p in plan.pops if p.name in keep],
                   jobs=[j for j in plan.jobs if j.pop.name in keep])
    state, meta = train_original(plan, store)
    pops, _, _ = execute(plan, store)
    wall = time.time() - t0
    splits = plan.splits
    original = build_model(plan.preset.model, splits.in_shape, splits.num_classes, **plan.preset.model_kwargs)
    original.load_state_dict(state)
    ev = evaluate(original, splits, "the original")
    n_r, n_f = len(splits.retain), len(splits.forget)
    ref, ft = pops[REFERENCE], pops["finetune"]
    v = verdict("finetune", ft["conf"], ref["conf"])
    point, ci = projection.project_forgetting_quality(ft["conf"], ref["conf"], n=512, seed=0)
    t_orig, t_model, t_ft = float(meta["seconds"]), float(np.mean(ref["seconds"])), float(np.mean(ft["seconds"]))
    board = t_orig + 3 * BOARD_N * t_model + BOARD_N * t_ft + (N_METHODS - 1) * BOARD_N * WINNER_COST * t_orig
    row = {"id": cid, "n": n, "command": command(), "date": time.strftime("%Y-%m-%d %H:%M"),
           "spread_ratio": v["spread_ratio"], "location_gap": v["location_gap"], "in_regime": v["in_regime"],
           "retrained_std": projection.retrained_std(ref["conf"]),
           "original_train_acc": (ev["retain_acc"] * n_r + ev["forget_acc"] * n_f) / (n_r + n_f),
           "original_test_acc": ev["test_acc"], "original_forget_acc": ev["forget_acc"],
           "retrained_retain_acc": float(np.mean(ref["retain_acc"])), "retrained_test_acc": float(np.mean(ref["test_acc"])),
           "retrained_forget_acc": float(np.mean(ref["forget_acc"])),
           "finetune_forget_acc": float(np.mean(ft["forget_acc"])), "finetune_test_acc": float(np.mean(ft["test_acc"])),
           "projected_f512": float(point), "projected_f512_ci": [float(c) for c in ci],
           "original_seconds": t_orig, "retrain_seconds_stacked": t_model, "finetune_seconds": t_ft,
           "screen_wall_seconds": wall, "projected_board_1core_seconds": board,
           "n_retain": n_r, "n_forget": n_f, "record": plan.preset.to_dict(),
           "load_avg": os.getloadavg()[0]}
    row["fit_gate"] = bool(row["original_train_acc"] >= FIT_GATE)
    row["passes_screen"] = bool(row["fit_gate"] and row["in_regime"])
    return row


def board(cid: str, kit: str | None, n: int = BOARD_N) -> dict:
    """The default board, timed from an empty cache: `obliviate run --method all -n 64`, bounds included."""
    out = Path(tempfile.mkdtemp(prefix=f"dp-board-{cid}-")) / "run"
    cache = Path(tempfile.mkdtemp(prefix=f"dp-bcache-{cid}-"))
    argv = [str(ROOT / ".venv/bin/obliviate"), "run", "--preset", str(CANDIDATES / f"{cid}.toml"), "--method", "all",
            "-n", str(n), "--workers", "1", "--no-report", "--cache", str(cache), "--out", str(out), "--quiet"]
    argv += ["--kit", kit] if kit else ["--no-kit"]
    t0 = time.time()
    subprocess.run(argv, check=True, cwd=ROOT)
    wall = time.time() - t0
    lb = json.loads((out / "leaderboard.json").read_text())
    reg = lb.get("regime") or {}
    rows = {r.get("method") or r.get("name"): r for r in lb.get("rows", [])}
    return {"id": cid, "n": n, "kit": kit, "command": command(), "argv": " ".join(argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M"), "wall_1core_seconds": wall,
            "two_core_estimate_seconds": wall / TWO_CORES, "gate3": bool(wall / TWO_CORES <= GATE_SECONDS),
            "regime": reg, "load_avg": os.getloadavg()[0], "run_dir": str(out),
            "finetune_F": (rows.get("finetune") or {}).get("forgetting_quality")}


def read(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def table() -> str:
    lines = ["| candidate | N | spread ratio | location gap | regime | original train / test acc | original forget acc "
             "| retrained retain / test / forget acc | finetune forget acc | retrained std | projected finetune F at 512 "
             "(95%) | screen s (1 core) | projected board min (1 core) | fit gate | passes screen |",
             "|" + "---|" * 15]
    for r in read(TABLE):
        lo, hi = r["projected_f512_ci"]
        lines.append(
            f"| {r['id']} | {r['n']} | {r['spread_ratio']:.2f} | {r['location_gap']:+.2f} | "
            f"{'in' if r['in_regime'] else 'out'} | {r['original_train_acc']:.3f} / {r['original_test_acc']:.3f} | "
            f"{r['original_forget_acc']:.3f} | {r['retrained_retain_acc']:.3f} / {r['retrained_test_acc']:.3f} / "
            f"{r['retrained_forget_acc']:.3f} | {r['finetune_forget_acc']:.3f} | {r['retrained_std']:.2f} | "
            f"{r['projected_f512']:.4f} ({lo:.4f}-{hi:.4f}) | {r['screen_wall_seconds']:.0f} | "
            f"{r['projected_board_1core_seconds'] / 60:.1f} | {'yes' if r['fit_gate'] else 'no'} | "
            f"{'yes' if r['passes_screen'] else 'no'} |")
    boards = read(BOARDS)
    if boards:
        lines += ["", "| board (N = 64, --method all, bounds, empty cache) | kit | wall, 1 core (min) | 2-core estimate "
                  "(min, /1.8) | regime row | spread ratio | location gap | in regime | gate 3 |", "|" + "---|" * 9]
        for b in boards:
            g = b["regime"]
            lines.append(f"| {b['id']} | {b['kit'] or 'no'} | {b['wall_1core_seconds'] / 60:.1f} | "
                         f"{b['two_core_estimate_seconds'] / 60:.1f} | {g.get('row')} | {g.get('spread_ratio', float('nan')):.2f} | "
                         f"{g.get('location_gap', float('nan')):+.2f} | {'yes' if g.get('in_regime') else 'no'} | "
                         f"{'yes' if b['gate3'] else 'no'} |")
    lines += ["", "Commands: every row's `command` in studies/default-preset/screen.jsonl and boards.jsonl."]
    return "\n".join(lines)


def write_doc() -> None:
    text = DOC.read_text()
    a, b = "<!-- default-preset-table:start -->", "<!-- default-preset-table:end -->"
    head, rest = text.split(a)
    _, tail = rest.split(b)
    DOC.write_text(head + a + "\n" + table() + "\n" + b + tail)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ids", nargs="*")
    ap.add_argument("-n", type=int, default=8)
    ap.add_argument("--board", action="store_true")
    ap.add_argument("--kit")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--write-doc", action="store_true")
    a = ap.parse_args()
    for cid in a.ids:
        if a.board:
            row = board(cid, a.kit)
            append(BOARDS, row)
        else:
            row = screen(cid, a.n)
            append(TABLE, row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("record",)}), flush=True)
    if a.table:
        print(table())
    if a.write_doc:
        write_doc()


if __name__ == "__main__":
    main()
