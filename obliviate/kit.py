"""Reference kits (Reuse-N-N, shipped): a preset's original model and its reference population, built once.

The organisers trained their 512 retrained models once and reused the outputs for every submission; every
participant unlearned from the same original checkpoint. A kit is the same thing as a folder:

    kit.json                  the record: what the kit is, how it was built, a sha256 per file
    original.safetensors      the original model every unlearning run starts from
    reference/m0000-0007.npz  the reference population, a chunk of members per file: what scoring needs
                              (confidences on the forget set, per-example losses, accuracies, seconds, seeds)

A kit is identified by behaviour-bearing facts only, never by the runner's cache keys or display names:
the preset's parsed record (the fields that change a trained model, `training_record`), the seed, the
device kind, and digests of the split's contents (`split_identity`). Member i of the reference population is
the model `plan.member_seed(seed, REFERENCE_SEED_LABEL, i)` names, trained on the retain set exactly as a run
trains its own, in chunks of `plan.train_chunk(preset)` members: a kit-backed run at N scores against members
0..N-1, the same models a run without the kit trains for itself (identical on the instruction set that built
them). Each chunk records the instruction set it was trained on (`isa`).

Whether the kit still fits the code is a question of behaviour (`behaviour_check`): a tiny float64 training
of an MLP and of a ResNet-18, summarised as numbers that agree across instruction sets to ~1e-12; a change to
training's behaviour moves them far beyond the tolerance, a refactor that leaves training unchanged does not.
`verify(kit, retrain=K)` retrains K members with the current code and compares them with what the kit holds.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .store import atomic_write_bytes, atomic_write_text, load_npz, npz_bytes

KIT_FORMAT = 1
REFERENCE_SEED_LABEL = "oracle"   # frozen: the seed stream of the reference population (plan.member_seed); never
                                  # renamed with the display names, or every cached and shipped model changes
KITS_DIR = Path(__file__).resolve().parent / "kits"
RESULT_FIELDS = ("source", "source_kwargs", "model", "model_kwargs", "recipe", "forget", "group_size", "max_train",
                 "imbalance", "pixel_scale", "frames")   # a preset's fields that change a trained model or the split
ARRAYS = ("conf", "loss_forget", "loss_test", "retain_acc", "test_acc", "forget_acc", "seconds")
BEHAVIOUR_RTOL = 1e-6             # float64 on AVX2 and AVX-512 agree to ~1e-12 here; a behaviour change moves >1e-3


# --- identity ---------------------------------------------------------------------------------------------
def instruction_set(device: str = "cpu") -> str:
    """What fp32 kernels round by: torch's CPU capability (AVX2, AVX512, ...) with +AMX where the CPU has it;
    on a GPU its name."""
    import torch
    if device != "cpu":
        return torch.cuda.get_device_name() if device == "cuda" and torch.cuda.is_available() else device
    cap = torch.backends.cpu.get_cpu_capability()
    try:
        amx = " amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        amx = False
    return cap + ("+AMX" if amx else "")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def training_record(preset) -> dict:
    """The preset's parsed values that change a trained model or the split (not its name, N or threads)."""
    d = preset.to_dict()
    return json.loads(json.dumps({k: d[k] for k in RESULT_FIELDS}, sort_keys=True))


def _sha(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a)
        h.update(f"{a.dtype.str}{a.shape}".encode() + a.tobytes())
    return h.hexdigest()


def split_identity(splits) -> dict:
    """Digests of what the split is: which source rows are forget/retain/val/test, and the tensors every model
    sees (standardised inputs and labels). Two runs with equal identities train identical models."""
    parts = {"retain": splits.retain, "forget": splits.forget, "val": splits.val, "test": splits.test}
    out = {f"n_{k}": len(d) for k, d in parts.items()}
    out["rows"] = _sha(*[d.ids for d in parts.values() if d.ids is not None])
    out["tensors"] = _sha(*[t for d in parts.values() for t in (d.x, d.y)])
    out["num_classes"] = splits.num_classes
    return out


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def weights_sha256(state: dict) -> str:
    """Digest of a state_dict's tensors (sorted names, dtype, shape, bytes): equal weights, equal digest."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}\0{t.dtype}\0{tuple(t.shape)}\0".encode() + t.numpy().tobytes())
    return h.hexdigest()


# --- the behaviour check ----------------------------------------------------------------------------------
def behaviour_check() -> dict:
    """Train two tiny models in float64 with the code every kit's models come from (train_model for an
    original, train_population for a stacked reference chunk) and summarise them as numbers: equal code
    behaviour gives equal numbers to ~1e-12 on any instruction set; a change to training's behaviour (the
    recipe, batching, data order, initialisation, a model's layers) moves them by far more than BEHAVIOUR_RTOL."""
    import torch
    from .data import TensorSet
    from .models import build_model
    from .population import train_population
    from .presets import Recipe
    from .training import make_generator, predict, train_model
    old = torch.get_default_dtype(), torch.get_num_threads(), torch.get_rng_state()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    try:
        g = make_generator(12345)
        out = {}
        for model, kw, shape, n in (("mlp", {"hidden": [16]}, (1, 8, 8), 130), ("resnet18", {"width": 2}, (1, 8, 8), 130)):
            x = torch.randn((n, *shape), generator=g, dtype=torch.float64)
            y = torch.randint(0, 3, (n,), generator=g)
            data = TensorSet(x, y)
            recipe = Recipe(epochs=2, batch_size=16, lr=1e-2, weight_decay=5e-3)
            net = build_model(model, shape, 3, seed=7, **kw).double()
            train_model(net, data, recipe, 3, 11)
            states = train_population(model, kw, shape, data, recipe, 3, [21, 22], chunk=2)
            probe = x[:16]
            values = [float(predict(net.eval(), probe).sum()), float(sum(v.double().abs().sum() for v in net.state_dict().values()))]
            for s in states:
                m = build_model(model, shape, 3, seed=0, **kw).double()
                m.load_state_dict(s)
                values += [float(predict(m.eval(), probe).sum()), float(sum(v.double().abs().sum() for v in s.values()))]
            out[model] = values
        return out
    finally:
        torch.set_default_dtype(old[0]); torch.set_num_threads(old[1]); torch.set_rng_state(old[2])


def behaviour_differs(recorded: dict, now: dict) -> str | None:
    """None when the two behaviour checks agree within BEHAVIOUR_RTOL; else which number moved."""
    for k in sorted(set(recorded) | set(now)):
        a, b = recorded.get(k), now.get(k)
        if a is None or b is None or len(a) != len(b):
            return f"the check of {k} is missing on one side"
        for i, (u, v) in enumerate(zip(a, b)):
            if not math.isclose(u, v, rel_tol=BEHAVIOUR_RTOL, abs_tol=1e-9):
                return f"{k} value {i}: {v!r} now, {u!r} when the kit was built"
    return None


# --- reading a kit ----------------------------------------------------------------------------------------
@dataclass
class Kit:
    path: Path
    record: dict                      # kit.json

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def n_built(self) -> int:
        return sum(c["members"][1] - c["members"][0] for c in self.record["reference"]["chunks"])

    def summary(self) -> dict:
        r = self.record
        return {"name": r["name"], "path": str(self.path), "preset": r["preset"], "seed": r["seed"],
                "device": r["device"], "n_reference": r["n_target"], "n_built": self.n_built,
                "complete": self.n_built >= r["n_target"], "built": r["provenance"].get("updated"),
                "isa": sorted({c["isa"] for c in r["reference"]["chunks"]}), "ceiling": "projected"}

    def reference(self, n: int) -> dict:
        """Members 0..n-1 of the reference population, as execute returns a population ({array: [n, ...]}), with
        their seeds; every file read is checked against its recorded digest."""
        if n > self.n_built:
            raise UserError(f"kit {self.name!r} holds {self.n_built} reference models, fewer than the {n} asked for: "
                            f"run with -n {self.n_built} or fewer, or finish the kit (obliviate kit build).")
        parts, seeds = [], []
        for c in sorted(self.record["reference"]["chunks"], key=lambda c: c["members"][0]):
            if c["members"][0] >= n:
                break
            z = self.read_npz(c["file"])
            take = min(n, c["members"][1]) - c["members"][0]
            parts.append({k: z[k][:take] for k in ARRAYS})
            seeds += [int(s) for s in z["seeds"][:take]]
        pop = {k: np.concatenate([p[k] for p in parts]) for k in ARRAYS}
        return pop, seeds

    def read_npz(self, rel: str) -> dict:
        p = self.path / rel
        want = self.record["files"].get(rel)
        if want is None or not p.exists() or file_sha256(p) != want:
            raise UserError(f"kit {self.name!r} at {self.path} is damaged: {rel} is missing or its digest differs "
                            f"from kit.json's; reinstall obliviate or rebuild the kit (obliviate kit build).")
        return load_npz(p)

    def original(self) -> tuple[dict, dict]:
        from safetensors.torch import load as st_load
        rel = self.record["original"]["file"]
        p = self.path / rel
        if not p.exists() or file_sha256(p) != self.record["files"].get(rel):
            raise UserError(f"kit {self.name!r} at {self.path} is damaged: {rel} is missing or its digest differs "
                            f"from kit.json's; reinstall obliviate or rebuild the kit (obliviate kit build).")
        return st_load(p.read_bytes()), self.record["original"]


def load_kit(path) -> Kit:
    path = Path(path)
    f = path / "kit.json"
    if not f.is_file():
        raise UserError(f"{path} is not a kit (no kit.json): `obliviate kit list` shows the kits installed.")
    try:
        record = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"kit at {path} is damaged: kit.json is not JSON ({e.msg}, line {e.lineno}).") from None
    if record.get("format") != KIT_FORMAT:
        raise UserError(f"kit at {path} has format {record.get('format')!r}; this obliviate reads format "
                        f"{KIT_FORMAT}: upgrade obliviate or rebuild the kit.")
    return Kit(path, record)


def installed_kits(root: Path = KITS_DIR) -> list[Kit]:
    return [load_kit(p) for p in sorted(Path(root).iterdir()) if (p / "kit.json").is_file()] if Path(root).is_dir() else []


def find_kit(name_or_dir: str) -> Kit:
    """A kit by name (installed with obliviate) or by folder."""
    p = Path(name_or_dir)
    if p.is_dir():
        return load_kit(p)
    kits = installed_kits()
    for k in kits:
        if k.name == name_or_dir:
            return k
    from .suggest import nearest
    names = [k.name for k in kits]
    hint = nearest(name_or_dir, names)
    raise UserError(f"no kit named {name_or_dir!r}" + (f" (did you mean {hint!r}?)" if hint else "") +
                    f": the installed kits are {', '.join(names) or 'none'}; or pass a kit's folder.")


def verify_files(kit: Kit) -> list[str]:
    """Every file's digest against kit.json: the list of problems (empty: intact)."""
    bad = []
    for rel, want in sorted(kit.record["files"].items()):
        p = kit.path / rel
        if not p.is_file():
            bad.append(f"{rel} is missing")
        elif file_sha256(p) != want:
            bad.append(f"{rel}'s digest differs from kit.json's")
    return bad


# --- building a kit ---------------------------------------------------------------------------------------
def _chunk_file(a: int, b: int) -> str:
    return f"reference/m{a:04d}-{b - 1:04d}.npz"


def _write_record(path: Path, record: dict) -> None:
    record["provenance"]["updated"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(path / "kit.json", json.dumps(record, indent=1, sort_keys=True) + "\n")


def build_kit(preset: str, n: int, out, *, seed: int = 0, name: str | None = None, device: str = "cpu",
              workers: int | None = None, hours: float | None = None, cache: str | None = None,
              cached_isa: str | None = None, command: str | None = None, progress=None) -> Kit:
    """Build (or resume) a kit at `out`: the original, then reference members in chunks until `n` are built or
    `hours` have passed (a piece: rerun the same command to go on). Each chunk is written, then kit.json, both
    atomically, so a killed build loses at most the chunks in flight. Chunks found in the run cache (`cache`,
    trained by an earlier run of the same code) are taken from it, recorded with `cached_isa`."""
    import torch
    from .execute import EXECUTORS, Context, train_original
    from .plan import RunConfig, plan_run, training_code
    from .store import Store, default_cache
    t0 = time.monotonic()
    out = Path(out)
    cfg = RunConfig(preset=preset, methods=[], n_models=n, bounds=False, seed=seed, device=device, workers=workers,
                    report=False, quiet=True, cache=cache)
    store = Store(cfg.cache or default_cache())
    plan = plan_run(cfg, store, out)
    if plan.device.type != device.split(":")[0] and device != "auto":
        raise UserError(f"--device {device} is not available here.")
    dev = plan.device.type
    isa = instruction_set(dev)
    record_now = {"record": training_record(plan.preset), "seed": seed, "device": dev,
                  "split": split_identity(plan.splits)}
    if (out / "kit.json").exists():
        kit = load_kit(out)
        r = kit.record
        for k, v in record_now.items():
            if r[k] != v:
                raise UserError(f"{out} holds a kit built with another {k}: build into another folder.")
        if verify_files(kit):
            raise UserError(f"{out} is damaged ({verify_files(kit)[0]}): move it away and build again.")
        r["n_target"] = max(r["n_target"], n)
    else:
        if out.exists() and any(out.iterdir()):
            raise UserError(f"{out} exists and is not a kit: pass an empty or new folder to --out.")
        r = {"format": KIT_FORMAT, "name": name or plan.preset.name, "preset": plan.preset.name, **record_now,
             "n_target": n, "reference": {"seed_label": REFERENCE_SEED_LABEL, "chunk_size": None, "chunks": []},
             "original": None, "files": {}, "behaviour": behaviour_check(),
             "provenance": {"command": command, "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                            "training_code": training_code(plan.preset)}}
    r["provenance"]["versions"] = _versions()
    if dev == "cpu":
        torch.set_num_threads(plan.preset.threads or torch.get_num_threads())
    if r["original"] is None:
        if progress: progress.note(f"training the original model (kit {r['name']!r})")
        state, meta = train_original(plan, store, progress)
        from safetensors.torch import save as st_save
        blob = st_save({k: v.detach().cpu().contiguous() for k, v in state.items()})
        atomic_write_bytes(out / "original.safetensors", blob)
        r["files"]["original.safetensors"] = hashlib.sha256(blob).hexdigest()
        retain, train = len(plan.splits.retain), len(plan.splits.train)
        r["original"] = {"file": "original.safetensors", "weights_sha256": weights_sha256(state), "isa": isa,
                         "seconds": meta["seconds"], "cpu": cpu_name() if dev == "cpu" else isa}
        r["cost_clock"] = {"retrain_seconds": meta["seconds"] * retain / train, "original_seconds": meta["seconds"],
                           "on": f"{cpu_name() if dev == 'cpu' else isa} ({isa}), {torch.get_num_threads()} thread(s)",
                           "how": "the original's training time scaled to the retain set's size"}
        _write_record(out, r)

    have = {c["members"][0] for c in r["reference"]["chunks"]}
    from .plan import train_chunk
    size = train_chunk(plan.preset)
    if r["reference"]["chunk_size"] not in (None, size):
        raise UserError(f"{out} was built in chunks of {r['reference']['chunk_size']}, the code now trains {size}: "
                        f"its models would differ; build into another folder.")
    r["reference"]["chunk_size"] = size
    keys = plan.chunk_keys["retrained"]
    todo_jobs = {j.key: j for j in plan.jobs}

    def add(a: int, arrays: dict, seeds: list, chunk_isa: str, source: str):
        rel = _chunk_file(a, a + len(seeds))
        blob = npz_bytes({**{k: arrays[k] for k in ARRAYS}, "seeds": np.asarray(seeds, dtype=np.uint64)})
        atomic_write_bytes(out / rel, blob)
        r["files"][rel] = hashlib.sha256(blob).hexdigest()
        r["reference"]["chunks"].append({"file": rel, "members": [a, a + len(seeds)], "isa": chunk_isa,
                                         "source": source,
                                         "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
        r["reference"]["chunks"].sort(key=lambda c: c["members"][0])
        _write_record(out, r)

    from .plan import member_seed
    pending = []
    for c, key in enumerate(keys):
        a = c * size
        if a in have:
            continue
        seeds = [member_seed(seed, REFERENCE_SEED_LABEL, i) for i in range(a, min(n, a + size))]
        if key not in todo_jobs:                       # already in the run cache
            add(a, store.load_arrays("chunks", key), seeds, cached_isa or "unknown", f"run cache {store.root}")
            continue
        job = todo_jobs[key]
        assert job.seeds == seeds, "the plan's seeds are the kit's"
        pending.append((a, job))
    ctx = Context(plan.splits, plan.preset, {}, device)
    executor = EXECUTORS["local"](plan)
    per = max(1, workers or 1)
    if progress: progress.start(sum(len(j.seeds) for _, j in pending), f"{len(pending)} chunks")
    while pending:
        if hours is not None and time.monotonic() - t0 > hours * 3600:
            break
        batch, pending = pending[:per], pending[per:]
        starts = {job.key: a for a, job in batch}

        def on_result(job, arrays):
            if "__error__" in arrays:
                raise UserError(arrays["__error__"])
            store.save_arrays("chunks", job.key, arrays)
            add(starts[job.key], arrays, job.seeds, isa, "trained by kit build")
            if progress: progress.advance(len(job.seeds), "reference")
        executor.workers = per
        executor.run(ctx, [j for _, j in batch], on_result)
    if progress: progress.stop()
    return load_kit(out)


def _versions() -> dict:
    import torch
    from .version import __version__
    return {"obliviate": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


# --- verifying a kit ---------------------------------------------------------------------------------------
def retrain_members(kit: Kit, k: int) -> dict:
    """Members 0..k-1 retrained here with the current code and evaluated as the kit's were. Whole chunks are
    retrained (a stack of K models rounds differently from a stack of fewer), so K = 1 costs one chunk."""
    import torch
    from .execute import Context, run_job
    from .plan import Job, Population, RunConfig, prepare
    r = kit.record
    cfg = RunConfig(preset=_preset_of(kit), methods=[], n_models=max(2, k), bounds=False, seed=r["seed"],
                    device=r["device"], quiet=True, report=False)
    preset, _, device, _, splits = prepare(cfg)
    if split_identity(splits) != r["split"]:
        raise UserError(f"kit {kit.name!r}: the split this code draws differs from the kit's (its data or "
                        f"splitting changed): the kit does not fit this code.")
    if device.type == "cpu":
        torch.set_num_threads(preset.threads or torch.get_num_threads())
    pop = Population("retrained", "reference", "train", REFERENCE_SEED_LABEL)
    ctx = Context(splits, preset, {}, r["device"])
    from .plan import member_seed
    parts = []
    for c in sorted(r["reference"]["chunks"], key=lambda c: c["members"][0]):
        if c["members"][0] >= k:
            break
        seeds = [member_seed(r["seed"], REFERENCE_SEED_LABEL, i) for i in range(*c["members"])]
        parts.append(run_job(ctx, Job(pop, seeds, "verify")))     # the whole chunk: a stack trains as built
    return {key: np.concatenate([p[key] for p in parts])[:k] for key in ARRAYS}


def _preset_of(kit: Kit) -> str:
    """The kit's preset as RunConfig takes it: the built-in of that name when its record matches, else the
    record written as a preset file beside the kit's temp files."""
    import tempfile
    from .presets import get_preset, preset_from_dict
    try:
        if training_record(get_preset(kit.record["preset"])) == kit.record["record"]:
            return kit.record["preset"]
    except UserError:
        pass
    p = preset_from_dict({"name": kit.record["preset"], **kit.record["record"]}, where=f"kit {kit.name!r}")
    f = Path(tempfile.mkdtemp(prefix="obliviate-kit-")) / f"{kit.record['preset']}.toml"
    f.write_text(p.to_toml())
    return str(f)


def verify(kit: Kit, retrain: int = 0) -> dict:
    """{"ok", "lines"}: files against their digests, training's behaviour against the kit's record, and with
    `retrain` K models retrained and compared: identical where this machine's instruction set built them,
    within the reference population's spread elsewhere."""
    lines, ok = [], True
    bad = verify_files(kit)
    if bad:
        return {"ok": False, "lines": [f"damaged: {b}" for b in bad]}
    lines.append(f"files: {len(kit.record['files'])} intact (sha256 as in kit.json)")
    moved = behaviour_differs(kit.record["behaviour"], behaviour_check())
    if moved:
        ok = False
        lines.append(f"training's behaviour changed since the kit was built ({moved}): its models no longer are "
                     f"what this code trains; rebuild the kit")
    else:
        lines.append("training's behaviour: as when the kit was built (float64 check within 1e-6)")
    if retrain:
        k = min(retrain, kit.n_built)
        new = retrain_members(kit, k)
        old, _ = kit.reference(k)
        here = instruction_set(kit.record["device"])
        isas = {i: c["isa"] for c in kit.record["reference"]["chunks"] for i in range(*c["members"])}
        full, _ = kit.reference(kit.n_built)
        lo, hi = np.percentile(full["conf"], 0.5, axis=0), np.percentile(full["conf"], 99.5, axis=0)
        for i in range(k):
            same = all(np.array_equal(new[a][i], old[a][i]) for a in ARRAYS if a != "seconds")
            if same:
                lines.append(f"member {i}: identical to the kit's")
            elif isas[i] == here:
                ok = False
                lines.append(f"member {i}: differs from the kit's, on the instruction set that built it ({here}): "
                             f"training changed; rebuild the kit")
            else:
                inside = float(((new["conf"][i] >= lo) & (new["conf"][i] <= hi)).mean())
                fits = inside >= 0.9 and abs(new["retain_acc"][i] - full["retain_acc"].mean()) <= \
                    max(0.02, 4 * full["retain_acc"].std())
                ok &= fits
                lines.append(f"member {i}: built on {isas[i]}, retrained on {here}: {inside:.0%} of its forget "
                             f"confidences within the population's 99% range, retain accuracy "
                             f"{new['retain_acc'][i]:.3f} (population {full['retain_acc'].mean():.3f})"
                             + ("" if fits else ": outside the population's spread; training changed"))
    return {"ok": bool(ok), "lines": lines}
