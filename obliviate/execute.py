"""Stage 2 of a run, execute: train the original if the store lacks it, then run the plan's jobs on an executor.

A job is a chunk of population members: train (batched where the model allows) or unlearn them from the one
original, then evaluate each (`protocol.evaluate`); only the evaluations come back (no weights kept). The
driver writes each chunk into the content-addressed store as it arrives, so a killed run resumes chunk by
chunk. Executors are registered in `EXECUTORS` by name: `local` (this process, or spawned worker processes)
and `ray` (obliviate/ray_executor.py); each gets the same `Context` once and calls `on_result(job, arrays)`.
The executors never special-case a method.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from .data import Splits, TensorSet
from .errors import UserError
from .methods import get_method
from .models import build_model
from .plan import Job, Plan, member_seed
from .presets import Preset
from .protocol import EVAL_ARRAYS as ARRAYS, evaluate, harness_net, unlearn_once
from .settings import RUN
from .store import Store
from .training import resolve_device, timed, train_model



@dataclass
class Context:
    """Everything a worker needs; shipped once per worker (Ray: one object-store put)."""
    splits: Splits
    preset: Preset
    original: dict            # state_dict of the original model (CPU)
    device: str


# --- what one job does (runs in the driver or in a worker) -----------------------------------------------
_DEVICE_SPLITS: dict = {}
_WARM: set = set()          # (preset, device) pairs this process has warmed up (ensure_warm)


def _splits_on(ctx: Context, device: torch.device) -> Splits:
    k = (ctx.splits.key, str(device))
    if k not in _DEVICE_SPLITS:
        _DEVICE_SPLITS.clear()
        _DEVICE_SPLITS[k] = ctx.splits.to(device)
    return _DEVICE_SPLITS[k]


def keep_best(preset: Preset, splits: Splits) -> dict:
    """The recipe's best-validation checkpointing, as train_model/train_population take it ({} when off)."""
    e = preset.recipe.keep_best_from_epoch
    return {} if e is None else {"val": splits.val, "keep_best_from_epoch": e}


def run_job(ctx: Context, job: Job) -> dict:
    """Train or unlearn the job's members and evaluate each; returns stacked arrays (no weights kept)."""
    keep_freed_memory()
    device = resolve_device(ctx.device)
    splits, p, pop = _splits_on(ctx, device), ctx.preset, job.pop
    records = []
    if pop.kind == "train":
        from .population import train_population
        data = splits.retain if pop.on == "retain" else splits.train
        states, secs = timed(device, train_population, p.model, p.model_kwargs, splits.in_shape, data, p.recipe,
                             splits.num_classes, job.seeds, **keep_best(p, splits))
        model = build_model(p.model, splits.in_shape, splits.num_classes, **p.model_kwargs).to(device)
        for state in states:
            model.load_state_dict(state)
            records.append({**evaluate(model, splits, "a retrained model"), "seconds": secs / len(states)})
    else:
        ensure_warm(p, splits, device)
        method = get_method(pop.method)
        original = build_model(p.model, splits.in_shape, splits.num_classes, **p.model_kwargs).to(device)
        original.load_state_dict(ctx.original)
        net = harness_net(method, original)   # a user's method: one net per job, reloaded before each run
        for s in job.seeds:
            model, secs = timed(device, unlearn_once, method, original, splits, s, pop.hparams, net=net)
            records.append({**evaluate(model, splits, f"method {pop.name!r}"), "seconds": secs})
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in ARRAYS}


def run_job_safe(ctx: Context, job: Job):
    """UserErrors travel back as values, so every executor reports them as the same one sentence."""
    try:
        return run_job(ctx, job)
    except UserError as e:
        return {"__error__": str(e)}


WARMUP_BATCHES = RUN["warmup_batches"]


def warm_up(preset: Preset, splits: Splits) -> None:
    """Train a throwaway model on a few batches so the next timed run pays no start-up costs."""
    n = min(len(splits.retain), preset.recipe.batch_size * WARMUP_BATCHES)
    model = build_model(preset.model, splits.in_shape, splits.num_classes, seed=0, **preset.model_kwargs)
    rng = torch.get_rng_state()
    part = TensorSet(splits.retain.x[:n], splits.retain.y[:n])
    train_model(model.to(part.x.device), part, replace(preset.recipe, epochs=1), splits.num_classes, seed=0)
    torch.set_rng_state(rng)


# glibc's malloc hands every freed block of 128 KB to 32 MB back to the kernel, so the next training step's
# tensor of the same size page-faults on each 4 KB page again. Measured (stacked ResNet-18 width 8, 28 px,
# K = 8, one thread): 1,351 minor page faults per step -> 0.2 with these settings, ~9% of the step's CPU
# time (73 vs 81 ms median); blocks up to 32 MB then come from the heap, and up to 256 MB of freed heap
# stays with the process for reuse. The numbers a run computes do not change.
MALLOC_SETTINGS = {-3: 32 << 20, -1: 256 << 20, -2: 64 << 20}    # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_TOP_PAD


@functools.cache
def keep_freed_memory() -> bool:
    """Apply MALLOC_SETTINGS to this process (glibc on Linux; elsewhere nothing): True if every one took. Called
    where training starts, `run_job` (any executor's worker, or the driver) and `train_original`."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):                # not glibc (musl, ...)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(k, v) == 1 for k, v in MALLOC_SETTINGS.items())


def ensure_warm(preset: Preset, splits: Splits, device) -> None:
    """Warm up once per process (driver, local worker, Ray worker) before its first timed training or unlearning
    run: a fresh process's first run pays one-off start-up costs (measured: digits unlearning 1.1 s against 7 ms
    for the next run; the original's training 1.75 s against 0.22 s) that no cost figure should include."""
    if (preset.name, str(device)) not in _WARM:
        warm_up(preset, splits)
        _WARM.add((preset.name, str(device)))


# --- executors ------------------------------------------------------------------------------------------
POOL_MIN_MODELS = RUN["pool_min_models"]


def auto_workers(ctx: Context, n_models: int, n_jobs: int) -> int:
    """One process per `preset.threads` cores, for CPU presets with a fixed thread count (the tiny MLPs, which
    gain nothing from a second thread) and enough work; presets with threads=None (CNN, ResNet) use one
    process with PyTorch's threads. Measured: benchmarks/README.md, "Leaderboard"."""
    threads = ctx.preset.threads
    if not threads or resolve_device(ctx.device).type != "cpu" or n_models < POOL_MIN_MODELS:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores // threads, n_jobs))


_WORKER_CTX: Context | None = None


def _init_worker(ctx: Context, threads: int | None, parent: int) -> None:
    global _WORKER_CTX
    import threading
    _WORKER_CTX = ctx
    if threads:
        torch.set_num_threads(threads)

    def orphaned():                              # the driver was killed (kill -9): don't linger
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)
    threading.Thread(target=orphaned, daemon=True).start()


def _work(job: Job) -> dict:
    return run_job_safe(_WORKER_CTX, job)


class LocalExecutor:
    """Jobs in this process, or in `workers` spawned processes that each receive the context once."""

    def __init__(self, workers: int | None = None, n_models: int = 0):
        self.workers, self.n_models = workers, n_models

    def run(self, ctx, jobs, on_result):
        workers = self.workers or auto_workers(ctx, self.n_models, len(jobs))
        self.used = workers = max(1, min(workers, len(jobs)))
        if workers == 1:
            for job in jobs:
                on_result(job, run_job_safe(ctx, job))
            return
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(ctx, ctx.preset.threads, os.getpid()))
        try:
            pending = {pool.submit(_work, job): job for job in jobs}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    on_result(pending.pop(f), f.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _ray_executor(plan: Plan):
    from .ray_executor import RayExecutor
    return RayExecutor(run_job_safe, plan.cfg.address)


EXECUTORS = {"local": lambda plan: LocalExecutor(plan.cfg.workers, plan.n), "ray": _ray_executor}


def check_executor(name: str) -> None:
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}: use {' or '.join(EXECUTORS)}.")


# --- the stage ------------------------------------------------------------------------------------------
def train_original(plan: Plan, store: Store, progress=None) -> tuple[dict, dict]:
    """The original model's (state_dict, meta), trained and stored if the store lacks it. Its training time,
    taken warm, is the cost unit: one retraining = that time scaled to the retain set's size."""
    if plan.kit is not None:                       # the kit's original: every kit-backed run unlearns from it
        return plan.kit.original()
    cached = store.load_weights(plan.original_key)
    if cached is not None:
        return cached
    if progress:
        progress.note(f"training the original model ({len(plan.splits.train)} examples; cached for every later run)")
        progress.start(plan.preset.recipe.epochs, "epochs")
    keep_freed_memory()
    p, splits, device, seed = plan.preset, plan.splits, plan.device, plan.cfg.seed
    dsplits = _splits_on(Context(splits, p, {}, plan.cfg.device), device)
    ensure_warm(p, dsplits, device)
    init = member_seed(seed, "original-init", 0)
    torch.manual_seed(init)
    model = build_model(p.model, splits.in_shape, splits.num_classes, seed=init, **p.model_kwargs).to(device)
    _, secs = timed(device, train_model, model, dsplits.train, p.recipe, splits.num_classes,
                    member_seed(seed, "original-data", 0), **keep_best(p, dsplits),
                    on_epoch=(lambda e: progress.advance(1, "original")) if progress else None)
    if progress: progress.stop()
    store.save_weights(plan.original_key, model.state_dict(), {"seconds": secs})
    return store.load_weights(plan.original_key)


CLOCK_EPOCHS = RUN["clock_epochs"]


def cost_unit(plan: Plan, store: Store, original_meta: dict) -> dict:
    """One retraining's seconds on this machine, the budget's unit, and how it was measured. Without a kit: the
    original's training time, taken warm, scaled to the retain set's size. With a kit (its original was timed on
    the machine that built it): CLOCK_EPOCHS epochs of a retraining timed here, warm, scaled to the recipe's
    epochs; cached per machine (CPU, instruction set, threads) and preset record."""
    p, splits = plan.preset, plan.splits
    if plan.kit is None:
        return {"retrain_seconds": original_meta["seconds"] * len(splits.retain) / len(splits.train),
                "how": "the original's training time here, scaled to the retain set's size"}
    from .kit import cpu_name, instruction_set, training_record
    device = plan.device

    def measure():
        keep_freed_memory()
        dsplits = _splits_on(Context(splits, p, {}, plan.cfg.device), device)
        ensure_warm(p, dsplits, device)
        seed = member_seed(plan.cfg.seed, "cost-clock", 0)
        model = build_model(p.model, splits.in_shape, splits.num_classes, seed=seed, **p.model_kwargs).to(device)
        part = replace(p.recipe, epochs=min(CLOCK_EPOCHS, p.recipe.epochs))
        _, secs = timed(device, train_model, model, dsplits.retain, part, splits.num_classes, seed)
        return {"retrain_seconds": secs * p.recipe.epochs / part.epochs, "epoch_seconds": secs / part.epochs}

    ident = {"what": "cost-clock", "record": training_record(p), "device": device.type, "n_retain": len(splits.retain),
             "cpu": cpu_name(), "isa": instruction_set(device.type), "threads": torch.get_num_threads(),
             "epochs": CLOCK_EPOCHS, "timing": "warm-1"}
    out = store.memo_json("clock", ident, measure)
    return {**out, "how": f"{CLOCK_EPOCHS} epoch of a retraining timed here ({out['epoch_seconds']:.2f} s), times "
                          f"{p.recipe.epochs} epochs"}


def kit_population(plan: Plan, pop) -> dict:
    arrays, _ = plan.kit.members(*pop.members)
    return arrays


def execute(plan: Plan, store: Store, progress=None) -> tuple[dict, int, dict]:
    """The original (trained, cached or the kit's), the cost unit, the plan's missing jobs; then every population
    from the store or the kit: ({name: arrays}, workers used, the cost unit)."""
    original_state, original_meta = train_original(plan, store, progress)
    clock = cost_unit(plan, store, original_meta)
    if progress: progress.start(sum(len(j.seeds) for j in plan.jobs), f"{len(plan.jobs)} jobs")

    def on_result(job, arrays):
        if "__error__" in arrays:
            raise UserError(arrays["__error__"])
        store.save_arrays("chunks", job.key, arrays)
        if progress: progress.advance(len(job.seeds), job.pop.name)

    workers = 0
    if plan.jobs:
        executor = EXECUTORS[plan.cfg.executor](plan)
        executor.run(Context(plan.splits, plan.preset, original_state, plan.cfg.device), plan.jobs, on_result)
        workers = getattr(executor, "used", 0)
    if progress: progress.stop()

    populations = {}
    for pop in plan.pops:
        if pop.kind == "kit":
            populations[pop.name] = kit_population(plan, pop)
            continue
        parts = [store.load_arrays("chunks", k) for k in plan.chunk_keys[pop.name]]
        if any(p is None for p in parts):
            raise UserError(f"the cache at {store.root} lost part of population {pop.name!r} while running: "
                            f"run again to recompute it.")
        populations[pop.name] = {k: np.concatenate([p[k] for p in parts]) for k in ARRAYS}
    return populations, workers, clock
