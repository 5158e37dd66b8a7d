"""A run, start to end: plan -> execute -> score -> write, one stage per module, data flowing one way.

    plan.py      config, data and splits -> populations cut into jobs, each under a content key
    execute.py   the original (trained once, cached) -> the missing jobs on an executor (local or Ray)
    score.py     the populations' evaluations -> leaderboard rows -> the board
    write.py     the board and populations -> the run folder (all or nothing)

A second identical run recomputes nothing (every chunk is in the store); a killed run resumes chunk by chunk.
"""
from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import torch

from .errors import UserError
from .execute import check_executor, execute
from .plan import RunConfig, plan_run, prepare   # noqa: F401  (RunConfig, prepare: the public names)
from .score import score
from .store import Store, default_cache          # noqa: F401
from .write import write_run_dir

DEFAULT_THREADS = torch.get_num_threads()   # PyTorch's choice at import, before any preset changes it


def run_folder(cfg: RunConfig, preset_name: str) -> Path:
    out = Path(cfg.out) if cfg.out else Path("runs") / f"{preset_name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output folder {out} already exists and is not empty: pass another --out.")
    return out


def run(cfg: RunConfig, progress=None) -> tuple[dict, Path]:
    """Run the benchmark for `cfg`: returns the board (leaderboard.json's content) and the run folder."""
    t_start = time.perf_counter()
    check_executor(cfg.executor)
    store = Store(cfg.cache or default_cache())
    from .presets import get_preset
    out = run_folder(cfg, get_preset(cfg.preset).name)
    plan = plan_run(cfg, store, out)
    if plan.device.type == "cpu":                   # the preset's count, or PyTorch's own default (all cores)
        torch.set_num_threads(plan.preset.threads or DEFAULT_THREADS)
    if progress:
        for line in plan.kit_notes + plan.method_notes:
            progress.note(line)
        if plan.kit is not None:
            progress.note(f"reference from kit {plan.kit.name!r} ({plan.kit.path}): its original and {plan.n} of its "
                          f"{plan.kit.n_built} retrained models; only the methods' unlearning runs are computed")
    populations, workers, clock = execute(plan, store, progress)
    board = score(plan, populations, clock, workers, t_start, store)
    write_run_dir(out, board, populations, cfg.report, store)
    return board, out
