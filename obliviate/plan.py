"""Stage 1 of a run, plan: what must exist, and the key each piece is stored under.

    the original     one model on the full train set (cached, or a kit's; every unlearning run starts from it)
    reference        N models retrained on the retain set: every row is scored against them (cached, or a kit's)
    ceiling          N more retrained models scored against the reference (a perfect unlearner)
    with-forget-set  the control row: N models trained as the original was, forget set included (role "floor")
    <method>         N unlearning runs of the method from the one original, seeds from the run's seed
(row and file names, obliviate/board.py; each population's seeds come from its frozen seed label, obliviate/seeds.py)

`plan_run(cfg, store)` validates the config, loads the data, and returns a `Plan`: the populations, cut into
jobs (chunks of members: the resume unit, one Ray task), each under a content key that covers everything
that can change its result (data, forget split, seeds, model, recipe, device, the method, its
hyperparameters and its code). Nothing here trains or evaluates a model: `execute` does that.

    plan -> execute -> score -> write          (obliviate/runner.py composes them)
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .codehash import code_fingerprint, modules_fingerprint
from .board import BASE_NAMES, CEILING, REFERENCE, WITH_FORGET
from .data import Splits, load_source, make_splits
from .errors import UserError
from .metrics.resample import check_confidence
from .methods import canonical_name, expand_method_names, get_method
from .models import MODELS, build_model
from .presets import Preset, get_preset
from . import seeds
from .seeds import member_seed  # noqa: F401  (execute, tune and studies read it from here)
from .config import RunConfig  # noqa: F401  (the run's options: defined apart, light for the CLI)
from .settings import RUN
from .store import Store, content_key, default_cache
from .training import resolve_device

EVAL_VERSION = "eval-1"          # bump when protocol.evaluate or the confidence definition changes
UNLEARN_CHUNK = RUN["unlearn_chunk"]
MAX_TRAIN_JOB = RUN["max_train_job"]
# bump when how the original's training is timed changes (it is the cost unit), and the same for unlearning
# runs' timing, so a cost is never a run timed one way over an original timed the other (today: every training
# process keeps its freed memory, execute.keep_freed_memory).
ORIGINAL_TIMING = "warm-cpu-3"
UNLEARN_TIMING = "warm-cpu-4"


@dataclass
class Population:
    name: str                 # row name / file name
    role: str                 # reference | ceiling | floor | method
    kind: str                 # train | unlearn | kit (members read from a reference kit: no job)
    seed_label: str           # the seed stream (obliviate/seeds.py: frozen, apart from the display name)
    on: str = "retain"        # training data for kind=train: retain | train
    method: str | None = None
    hparams: dict = field(default_factory=dict)
    code: str = ""            # fingerprint of the code a method runs: editing it invalidates its cache
    members: tuple = ()       # kind=kit: the kit's members [start, stop)
    place: int | None = None  # a winner's place in the challenge
    note: str | None = None   # what a layer-choosing winner becomes on this preset's model (None: as designed)


@dataclass
class Job:
    pop: Population
    seeds: list
    key: str


@dataclass
class Plan:
    cfg: RunConfig
    preset: Preset
    n: int                    # models per population
    device: torch.device
    splits: Splits
    pops: list                # every Population: reference, ceiling, floor, then the methods
    original_key: str
    chunk_keys: dict          # population name -> [chunk key, ...] in member order
    jobs: list                # the chunks not yet in the store
    out: Path
    kit: object = None        # the reference kit the run reads (obliviate.kit.Kit), or None
    kit_notes: list = field(default_factory=list)   # one line per kit considered and not used, and why
    method_notes: list = field(default_factory=list)   # one line per user file that ran by the notebook rule


def model_spec(preset: Preset) -> dict:
    return {"model": preset.model, "kwargs": preset.model_kwargs, "recipe": asdict(preset.recipe)}


def method_populations(cfg: RunConfig, store: Store | None = None) -> list:
    """One Population per requested method: names expanded, hyperparameters resolved (the chosen reading, then
    tuned values, then --hp overrides), the code fingerprint that goes into every key, and the method's facts
    the board shows (its place in the challenge, what it becomes on this preset's model). Tuned values
    (--hp-preset) are read from `store`, which the caller passes."""
    if cfg.hp_preset and store is None:
        raise ValueError("method_populations: --hp-preset values are read from a store; pass the run's store")
    tuned = store.load_hp_preset(cfg.hp_preset, cfg.preset) if cfg.hp_preset else {}
    names = expand_method_names(cfg.methods)      # "all", "winners", comma lists, aliases -> canonical names
    used, pops = set(), []
    for name in names:
        method = get_method(name)
        if method.name in BASE_NAMES:          # its row and population file would overwrite the base row's
            raise UserError(f"the method {method.name!r} has the name of the board's own {method.name!r} row: "
                            f"register it under another name.")
        mine = {**method.reading(cfg.reading), **tuned.get(name, {})}
        for k, v in cfg.hp.items():
            scope, _, hk = k.rpartition(".")
            if (scope == "" or canonical_name(scope) == name) and hk in method.defaults:   # an alias scopes too
                mine[hk] = v; used.add(k)
        hp = method.resolve(mine)
        pops.append(Population(method.name, "method", "unlearn", seeds.UNLEARN, method=name, hparams=hp,
                               code=code_fingerprint(method), place=method.place))   # its code and what it runs on
    unused = [k for k in cfg.hp if k not in used]
    if unused:
        raise UserError(f"--hp {unused[0]} matches no hyperparameter of the chosen methods: run "
                        f"`obliviate methods` to see each method's hyperparameters.")
    return pops


def train_chunk(preset: Preset) -> int:
    """Models per training job: one stacked chunk (population.default_chunk: 8 for the CNN and for ResNets up
    to width 32 with torchvision's stem, 1 where stacking does not pay), capped at MAX_TRAIN_JOB so a killed run loses little."""
    from .population import default_chunk
    return min(default_chunk(preset.model, preset.model_kwargs), MAX_TRAIN_JOB)


def validate(cfg: RunConfig):
    """Everything that can fail on bad input fails here, first, before any data is loaded or model trained."""
    preset = get_preset(cfg.preset)
    if preset.needs_path and not cfg.data:
        raise UserError(f"preset {preset.name!r} needs its data: pass --data PATH.")
    if cfg.workers is not None and cfg.workers < 1:
        raise UserError(f"--workers {cfg.workers} must be at least 1 (or leave it out for one per core).")
    if not cfg.budget > 0:                          # NaN fails this too
        raise UserError(f"--budget {cfg.budget} must be a positive fraction of one retraining (the challenge: 0.2; "
                        f"inf for no budget).")
    check_confidence(cfg.confidence)
    n = preset.n_models if cfg.n_models is None else cfg.n_models
    if n < 2:
        raise UserError(f"--n-models {n} is too few: the metric compares populations of at least 2 models.")
    return preset, n, resolve_device(cfg.device)


def prepare(cfg: RunConfig, store: Store | None = None):
    """Validate, resolve the methods and load the splits: (preset, n, device, method populations, splits).
    `store`: where --hp-preset values are read (default: the run's cache)."""
    preset, n, device = validate(cfg)
    pops = method_populations(cfg, store or (Store(cfg.cache or default_cache()) if cfg.hp_preset else None))
    raw = load_source(preset.source, path=cfg.data, **preset.source_kwargs)
    if preset.frames:                                # identities of near-duplicate frames (data/frames.py)
        from .data.frames import base_images_needed, with_frames
        raw = with_frames(raw, preset.frames, base_images_needed(preset.max_train, preset.frames, preset.imbalance,
                                                                 raw.num_classes, len(raw.y)))
    from .models.layers import norm_layers
    bn = norm_layers(build_model(preset.model, tuple(raw.x.shape[1:]), raw.num_classes, seed=0,
                                      **preset.model_kwargs))
    splits = make_splits(raw, cfg.forget or preset.forget, cfg.seed, group_size=preset.group_size,
                         max_train=preset.max_train, role=cfg.role,
                         pixel_scale=cfg.pixel_scale if cfg.pixel_scale is not None else preset.pixel_scale,
                         imbalance=preset.imbalance, no_lone_batch=RUN["batch_size"] if bn else None)
    return preset, n, device, pops, splits


def training_code(preset: Preset) -> str:
    """Fingerprint of the code a trained model's result depends on: the recipe (training, batched populations),
    the model's own module and the evaluation (codehash.modules_fingerprint)."""
    builder = MODELS.get(preset.model)
    model_module = getattr(inspect.getmodule(builder), "__name__", "obliviate.models") if builder else "obliviate.models"
    return modules_fingerprint(["obliviate.training", "obliviate.population", "obliviate.protocol", model_module])


def original_key(cfg: RunConfig, preset: Preset, splits: Splits, device: torch.device, train_code: str) -> str:
    return content_key({"original": splits.train_key, **model_spec(preset), "seed": cfg.seed, "device": device.type,
                        "timing": ORIGINAL_TIMING, "code": train_code})


def base_populations(bounds: bool = True, kit=None, n: int = 0) -> list:
    """The reference (every row is scored against it) and, with `bounds`, the ceiling and the floor. With a kit:
    the reference is its members 0..n-1 and the ceiling its members n..2n-1 when it holds 2n (a second
    population of retrained models, independent of the first); otherwise score projects the ceiling from the
    reference, and the floor (models trained with the forget set) is left out: a kit does not hold them."""
    if kit is not None:
        ref = [Population(REFERENCE, "reference", "kit", seeds.REFERENCE, members=(0, n))]
        return ref + ([Population(CEILING, "ceiling", "kit", seeds.REFERENCE, members=(n, 2 * n))]
                      if bounds and kit.n_built >= 2 * n else [])
    ref = [Population(REFERENCE, "reference", "train", seeds.REFERENCE)]
    return ref + ([Population(CEILING, "ceiling", "train", seeds.CEILING),
                   Population(WITH_FORGET, "floor", "train", seeds.WITH_FORGET, on="train")] if bounds else [])


def choose_kit(cfg: RunConfig, preset: Preset, splits: Splits, device: torch.device, n: int):
    """(the kit this run reads, or None; lines saying why each kit considered was not used). A kit fits when its
    preset record's values, seed, device kind and split contents equal the run's and it holds n models; a
    damaged kit is refused (UserError), never read. `auto` considers the installed kits of the run's preset
    name or record; a named kit that does not fit is an error."""
    if cfg.kit is None:
        return None, []
    from .kit import find_kit, installed_kits, split_identity, training_record, verify_files
    record = {**training_record(preset), "forget": cfg.forget or preset.forget,            # the run's overrides
              "pixel_scale": cfg.pixel_scale if cfg.pixel_scale is not None else preset.pixel_scale}
    if cfg.kit == "auto":
        kits = [k for k in installed_kits() if k.record["preset"] == preset.name or k.record["record"] == record]
    else:
        kits = [find_kit(cfg.kit)]
    notes, ident = [], None
    for kit in kits:
        bad = verify_files(kit)
        if bad:
            raise UserError(f"kit {kit.name!r} at {kit.path} is damaged ({bad[0]}): reinstall obliviate or rebuild "
                            f"it with `obliviate kit build`, or pass --no-kit to train the reference here.")
        why = None
        if kit.record["record"] != record:
            diff = sorted(k for k in record if kit.record["record"].get(k) != record[k])
            why = f"its preset record differs in {', '.join(diff)}"
        elif kit.record["seed"] != cfg.seed:
            why = f"it was built with seed {kit.record['seed']}, this run uses seed {cfg.seed}"
        elif kit.record["device"] != device.type:
            why = f"it was built on {kit.record['device']}, this run is on {device.type}"
        elif kit.n_built < n:
            why = f"it holds {kit.n_built} reference models, fewer than N = {n}"
        else:
            ident = ident or split_identity(splits)
            if kit.record["split"] != ident:
                why = "its split (forget/retain/test rows or their data) differs from this run's"
        if why is None:
            return kit, notes
        if cfg.kit != "auto":
            raise UserError(f"kit {kit.name!r} does not fit this run: {why}; pass --no-kit to train the reference "
                            f"here, or build a kit for it (obliviate kit build).")
        notes.append(f"kit {kit.name!r} not used: {why}")
    return None, notes


def plan_run(cfg: RunConfig, store: Store, out: Path) -> Plan:
    """The whole job graph and its keys; `jobs` holds only the chunks the store does not have yet."""
    preset, n, device, method_pops, splits = prepare(cfg, store)
    layers = build_model(preset.model, splits.in_shape, splits.num_classes, seed=0, **preset.model_kwargs)
    method_notes = []
    for pop in method_pops:                     # what a layer-choosing winner becomes on this model
        method = get_method(pop.method)
        pop.note = method.degenerate_on(layers, pop.hparams)
        method_notes += [method.note] if method.note else []
    kit, kit_notes = choose_kit(cfg, preset, splits, device, n)
    train_code = training_code(preset)          # read once: it hashes ~20 source files
    okey = (content_key({"kit_original": kit.record["original"]["weights_sha256"]}) if kit else
            original_key(cfg, preset, splits, device, train_code))
    pops = base_populations(cfg.bounds, kit, n) + method_pops
    size_train = train_chunk(preset)
    jobs, ckeys = [], {}
    for pop in pops:
        size = size_train if pop.kind == "train" else UNLEARN_CHUNK
        ckeys[pop.name] = []
        if pop.kind == "kit":
            continue
        for start in range(0, n, size):
            seeds = [member_seed(cfg.seed, pop.seed_label, i) for i in range(start, min(n, start + size))]
            ident = {"eval": EVAL_VERSION, "splits": splits.key, "seeds": seeds, "device": device.type,
                     **model_spec(preset)}
            ident.update({"on": pop.on, "code": train_code} if pop.kind == "train" else
                         {"original": okey, "method": pop.method, "hp": pop.hparams, "code": pop.code,
                          "timing": UNLEARN_TIMING})
            key = content_key(ident)
            ckeys[pop.name].append(key)
            if not store.path("chunks", key, "npz").exists():
                jobs.append(Job(pop, seeds, key))
    return Plan(cfg, preset, n, device, splits, pops, okey, ckeys, jobs, out, kit, kit_notes, method_notes)
