"""The protocol as a job graph: original -> oracle population -> unlearned populations -> metrics -> rows.

    original      one model on the full train set (cached; every unlearning run starts from it)
    retrained     N models on the retain set: the reference every row is scored against (shared, cached)
    oracle        N more retrained models scored against `retrained`: the ceiling (a perfect unlearner)
    original*     N models on the full train set scored against `retrained`: the floor (no unlearning)
    <method>      N unlearning runs of the method from the one original, seeds 0..N-1

Jobs are chunks of population members; an executor (local loop, or Ray) runs them and the driver writes
each chunk's evaluation into the content-addressed store, so a killed run resumes chunk by chunk and a
second identical run recomputes nothing. The runner never special-cases a method.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import json
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .data import Splits, TensorSet, load_source, make_splits
from .errors import UserError
from .methods import get_method
from .metrics import challenge_score, example_epsilons, points
from .models import build_model
from .presets import Preset, get_preset
from .protocol import evaluate, unlearn_once
from .store import Store, atomic_write_text, content_key, npz_bytes
from .training import resolve_device, timed, train_model

EVAL_VERSION = "eval-1"          # bump when protocol.evaluate or the confidence definition changes
DEFAULT_THREADS = torch.get_num_threads()   # PyTorch's choice at import, before any preset changes it
UNLEARN_CHUNK = 16               # unlearning runs per job (resume granularity; one Ray task)
ARRAYS = ("conf", "loss_forget", "loss_test", "retain_acc", "test_acc", "forget_acc", "seconds")


def default_cache() -> Path:
    return Path(os.environ.get("OBLIVIATE_CACHE") or
                Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "obliviate")


@dataclass
class RunConfig:
    preset: str = "digits"
    methods: list = field(default_factory=lambda: ["finetune"])
    forget: str | None = None
    n_models: int | None = None
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    cache: str | None = None
    data: str | None = None
    quiet: bool = False
    hp: dict = field(default_factory=dict)          # name=value or method.name=value overrides
    executor: str = "local"
    address: str | None = None
    budget: float = 0.2                             # the challenge: ~20% of one retraining per run
    report: bool = True
    role: str = "eval"                              # "tune": a forget set disjoint from the evaluation one
    hp_preset: str | None = None                    # a name saved by `obliviate tune`
    workers: int | None = None                      # local executor processes (None: auto_workers)


@dataclass
class Population:
    name: str                 # row name / file name
    role: str                 # reference | ceiling | floor | method
    kind: str                 # train | unlearn
    tag: str                  # seed stream
    on: str = "retain"        # training data for kind=train: retain | train
    method: str | None = None
    hparams: dict = field(default_factory=dict)
    code: str = ""            # hash of the method's source: editing a method invalidates its cache


@dataclass
class Job:
    pop: Population
    seeds: list
    key: str


@dataclass
class Context:
    """Everything a worker needs; shipped once per worker (Ray: one object-store put)."""
    splits: Splits
    preset: Preset
    original: dict            # state_dict of the original model (CPU)
    device: str


def member_seed(seed: int, tag: str, i: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{tag}/{i}".encode()).digest()[:7], "little")


# --- what one job does (runs in the driver or in a worker) -----------------------------------------------
_DEVICE_SPLITS: dict = {}
_WARM: set = set()          # (preset, device) pairs this process has warmed up (ensure_warm)


def _splits_on(ctx: Context, device: torch.device) -> Splits:
    k = (ctx.splits.key, str(device))
    if k not in _DEVICE_SPLITS:
        _DEVICE_SPLITS.clear()
        _DEVICE_SPLITS[k] = ctx.splits.to(device)
    return _DEVICE_SPLITS[k]


def run_job(ctx: Context, job: Job) -> dict:
    """Train or unlearn the job's members and evaluate each; returns stacked arrays (no weights kept)."""
    device = resolve_device(ctx.device)
    splits, p, pop = _splits_on(ctx, device), ctx.preset, job.pop
    records = []
    if pop.kind == "train":
        from .population import train_population
        data = splits.retain if pop.on == "retain" else splits.train
        states, secs = timed(train_population, p.model, p.model_kwargs, splits.in_shape, data, p.recipe,
                             splits.num_classes, job.seeds)
        model = build_model(p.model, splits.in_shape, splits.num_classes, **p.model_kwargs).to(device)
        for state in states:
            model.load_state_dict(state)
            records.append({**evaluate(model, splits, "a retrained model"), "seconds": secs / len(states)})
    else:
        ensure_warm(p, splits, device)
        method = get_method(pop.method)
        original = build_model(p.model, splits.in_shape, splits.num_classes, **p.model_kwargs).to(device)
        original.load_state_dict(ctx.original)
        for s in job.seeds:
            model, secs = timed(unlearn_once, method, original, splits, s, pop.hparams)
            records.append({**evaluate(model, splits, f"method {pop.name!r}"), "seconds": secs})
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in ARRAYS}


def run_job_safe(ctx: Context, job: Job):
    """UserErrors travel back as values, so every executor reports them as the same one sentence."""
    try:
        return run_job(ctx, job)
    except UserError as e:
        return {"__error__": str(e)}


# --- executors ------------------------------------------------------------------------------------------
POOL_MIN_MODELS = 32     # auto workers: below this many models per population, spawning (~2 s each) doesn't pay


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


EXECUTORS = {"local": lambda cfg: LocalExecutor(cfg.workers, cfg.n_models or get_preset(cfg.preset).n_models)}


def _ray_executor(cfg):
    from .ray_executor import RayExecutor
    return RayExecutor(cfg.address)


EXECUTORS["ray"] = _ray_executor


# --- the run --------------------------------------------------------------------------------------------
def _method_populations(cfg: RunConfig) -> list:
    tuned = {}
    if cfg.hp_preset:
        from .tune import load_hp_preset
        tuned = load_hp_preset(cfg.cache, cfg.hp_preset, cfg.preset)
    names = []
    for m in cfg.methods:
        if m == "all":
            from .methods import METHODS
            names += sorted(METHODS)
        else:
            names += [x for x in m.split(",") if x] if ".py:" not in m else [m]
    names = list(dict.fromkeys(names))
    used, pops = set(), []
    for name in names:
        method = get_method(name)
        mine = dict(tuned.get(name, {}))
        for k, v in cfg.hp.items():
            scope, _, hk = k.rpartition(".")
            if (scope in ("", name)) and hk in method.defaults:
                mine[hk] = v; used.add(k)
        hp = method.resolve(mine)
        src = inspect.getsourcefile(method.fn) or ""
        code = hashlib.sha256(Path(src).read_bytes()).hexdigest()[:12] if src and Path(src).exists() else ""
        pops.append(Population(method.name, "method", "unlearn", "unlearn", method=name, hparams=hp, code=code))
    unused = [k for k in cfg.hp if k not in used]
    if unused:
        raise UserError(f"--hp {unused[0]} matches no hyperparameter of the chosen methods: run "
                        f"`obliviate methods` to see each method's hyperparameters.")
    return pops


TRAIN_CHUNK = {"mlp": 64, "cnn": 8}   # models per training job: batched together, and the resume unit


def _chunk_size(preset: Preset) -> int:
    from .population import population_supports_batching
    return TRAIN_CHUNK.get(preset.model, 8) if population_supports_batching(preset.model) else 1


def prepare(cfg: RunConfig):
    """Validate the config and load the data: everything that can fail on bad input fails here, first."""
    preset = get_preset(cfg.preset)
    if preset.needs_path and not cfg.data:
        raise UserError(f"preset {preset.name!r} needs its data: pass --data PATH.")
    if cfg.executor not in EXECUTORS:
        raise UserError(f"unknown executor {cfg.executor!r}: use local or ray.")
    if cfg.workers is not None and cfg.workers < 1:
        raise UserError(f"--workers {cfg.workers} must be at least 1 (or leave it out for one per core).")
    if not cfg.budget > 0:                          # NaN fails this too
        raise UserError(f"--budget {cfg.budget} must be a positive fraction of one retraining (the challenge: 0.2; "
                        f"inf for no budget).")
    n = cfg.n_models or preset.n_models
    if n < 2:
        raise UserError(f"--n-models {n} is too few: the metric compares populations of at least 2 models.")
    device = resolve_device(cfg.device)
    pops = _method_populations(cfg)
    raw = load_source(preset.source, path=cfg.data, **preset.source_kwargs)
    splits = make_splits(raw, cfg.forget or preset.forget, cfg.seed, group_size=preset.group_size,
                         max_train=preset.max_train, role=cfg.role)
    return preset, n, device, pops, splits


WARMUP_BATCHES = 8   # measured: a digits MLP's first training in a fresh process takes 1.75 s, later ones 0.22 s
                     # (fashion CNN 2.9 s vs 1.95 s); 8 throwaway batches first make the timing the warm one


def warm_up(preset: Preset, splits: Splits) -> None:
    """Train a throwaway model on a few batches so the next timed run pays no start-up costs."""
    n = min(len(splits.retain), preset.recipe.batch_size * WARMUP_BATCHES)
    model = build_model(preset.model, splits.in_shape, splits.num_classes, seed=0, **preset.model_kwargs)
    rng = torch.get_rng_state()
    part = TensorSet(splits.retain.x[:n], splits.retain.y[:n])
    train_model(model.to(part.x.device), part, replace(preset.recipe, epochs=1), splits.num_classes, seed=0)
    torch.set_rng_state(rng)


def ensure_warm(preset: Preset, splits: Splits, device) -> None:
    """Warm up once per process (driver, local worker, Ray worker) before its first timed training or unlearning
    run: a fresh process's first run pays one-off start-up costs (measured: digits unlearning 1.1 s against 7 ms
    for the next run; the original's training 1.75 s against 0.22 s) that no cost figure should include."""
    if (preset.name, str(device)) not in _WARM:
        warm_up(preset, splits)
        _WARM.add((preset.name, str(device)))


def run(cfg: RunConfig, progress=None) -> tuple[dict, Path]:
    t_start = time.perf_counter()
    preset, n, device, pops, splits = prepare(cfg)
    if device.type == "cpu":                        # the preset's count, or PyTorch's own default (all cores)
        torch.set_num_threads(preset.threads or DEFAULT_THREADS)
    store = Store(cfg.cache or default_cache())
    out = Path(cfg.out) if cfg.out else Path("runs") / f"{preset.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output folder {out} already exists and is not empty: pass another --out.")

    model_spec = {"model": preset.model, "kwargs": preset.model_kwargs, "recipe": asdict(preset.recipe)}
    orig_key = content_key({"original": splits.train_key, **model_spec, "seed": cfg.seed, "device": device.type,
                            "timing": "warm-1"})
    cached = store.load_weights(orig_key)
    if cached is None:
        if progress: progress.note("training the original model")
        dsplits = _splits_on(Context(splits, preset, {}, cfg.device), device)
        ensure_warm(preset, dsplits, device)
        torch.manual_seed(member_seed(cfg.seed, "original-init", 0))
        model = build_model(preset.model, splits.in_shape, splits.num_classes,
                            seed=member_seed(cfg.seed, "original-init", 0), **preset.model_kwargs).to(device)
        _, secs = timed(train_model, model, dsplits.train, preset.recipe, splits.num_classes,
                        member_seed(cfg.seed, "original-data", 0))
        store.save_weights(orig_key, model.state_dict(), {"seconds": secs})
        cached = store.load_weights(orig_key)
    original_state, original_meta = cached
    # one retraining alone, timed: the original's training time scaled to the retain set's size
    retrain_seconds = original_meta["seconds"] * len(splits.retain) / len(splits.train)

    base = [Population("retrained", "reference", "train", "oracle"),
            Population("oracle", "ceiling", "train", "oracle-b"),
            Population("original", "floor", "train", "original", on="train")]
    all_pops = base + pops
    train_chunk = _chunk_size(preset)
    jobs, ckeys = [], {}
    for pop in all_pops:
        size = train_chunk if pop.kind == "train" else UNLEARN_CHUNK
        ckeys[pop.name] = []
        for start in range(0, n, size):
            seeds = [member_seed(cfg.seed, pop.tag, i) for i in range(start, min(n, start + size))]
            ident = {"eval": EVAL_VERSION, "splits": splits.key, "seeds": seeds, "device": device.type, **model_spec}
            ident.update({"on": pop.on} if pop.kind == "train" else
                         {"original": orig_key, "method": pop.method, "hp": pop.hparams, "code": pop.code,
                          "timing": "warm-2"})
            key = content_key(ident)
            ckeys[pop.name].append(key)
            if not store.path("chunks", key, "npz").exists():
                jobs.append(Job(pop, seeds, key))

    ctx = Context(splits, preset, original_state, cfg.device)
    if progress: progress.start(sum(len(j.seeds) for j in jobs), f"{len(jobs)} jobs")

    def on_result(job, arrays):
        if "__error__" in arrays:
            raise UserError(arrays["__error__"])
        store.save_arrays("chunks", job.key, arrays)
        if progress: progress.advance(len(job.seeds), job.pop.name)

    workers = 0
    if jobs:
        executor = EXECUTORS[cfg.executor](cfg)
        executor.run(ctx, jobs, on_result)
        workers = getattr(executor, "used", 0)
    if progress: progress.stop()

    populations = {}
    for pop in all_pops:
        parts = [store.load_arrays("chunks", k) for k in ckeys[pop.name]]
        if any(p is None for p in parts):
            raise UserError(f"the cache at {store.root} lost part of population {pop.name!r} while running: "
                            f"run again to recompute it.")
        populations[pop.name] = {k: np.concatenate([p[k] for p in parts]) for k in ARRAYS}

    ref = populations["retrained"]
    rows = []
    for pop in all_pops[1:]:
        u = populations[pop.name]
        eps = example_epsilons(u["conf"], ref["conf"])
        fq = float(points(eps, len(ref["conf"])).mean())
        cost = {"ceiling": 1.0, "floor": 0.0}.get(pop.role, float(u["seconds"].mean() / retrain_seconds))
        row = {"method": pop.name, "role": pop.role, "forgetting_quality": fq,
               "score": challenge_score(fq, u["retain_acc"], ref["retain_acc"], u["test_acc"], ref["test_acc"]),
               "retain_acc": float(u["retain_acc"].mean()), "test_acc": float(u["test_acc"].mean()),
               "forget_acc": float(u["forget_acc"].mean()), "cost": cost, "n_models": n,
               "seconds": float(u["seconds"].sum()), "over_budget": pop.role == "method" and cost > cfg.budget,
               "hparams": pop.hparams, "population": f"populations/{pop.name}.npz"}
        row.update(_extra_metrics(u, ref))
        rows.append(row)
    order = {"ceiling": 0, "method": 1, "floor": 2}
    rows.sort(key=lambda r: (order[r["role"]], -r["score"]))
    board = {"run": out.name, "preset": preset.name, "n_models": n, "seed": cfg.seed, "forget": cfg.forget or preset.forget,
             "budget": cfg.budget if math.isfinite(cfg.budget) else None,          # --budget inf: no budget
             "created": dt.datetime.now().isoformat(timespec="seconds"),
             "device": device.type, "executor": cfg.executor, "workers": workers, "retrain_seconds": retrain_seconds,
             "n_forget": len(splits.forget), "n_retain": len(splits.retain), "n_test": len(splits.test),
             "hp_preset": cfg.hp_preset, "wall_seconds": time.perf_counter() - t_start, "versions": versions(), "rows": rows}
    _write_run_dir(out, board, populations, cfg.report)
    return board, out


def _extra_metrics(u, ref) -> dict:
    try:
        from .metrics.extra import extra_metrics
    except ModuleNotFoundError:
        return {}
    return extra_metrics(u, ref)


def versions() -> dict:
    import numpy, safetensors
    return {"obliviate": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "safetensors": safetensors.__version__, "python": platform.python_version()}


def _write_run_dir(out: Path, board: dict, populations: dict, report: bool) -> None:
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
