"""Building and verifying reference kits (obliviate/kit.py reads them): `obliviate kit build | verify`.

A build plans a run of the preset with no methods and no bounds at N = the kit's size, trains the original and
the reference population's chunks on the local executor, and writes each finished chunk and then kit.json into
the kit's folder, atomically: a killed build loses at most the chunks in flight, and the same command resumes
it. `--hours` ends a piece of the build: no chunk starts after that long.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np

from . import seeds
from .board import REFERENCE
from .errors import UserError
from .kit import (BEHAVIOUR_RTOL, KIT_FORMAT, Kit, behaviour_check, behaviour_differs, cpu_name,
                  instruction_set, load_kit, split_identity, training_record, verify_files, weights_sha256)
from .protocol import EVAL_ARRAYS as ARRAYS
from .store import atomic_write_bytes, atomic_write_text, npz_bytes


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
                    report=False, quiet=True, cache=cache, kit=None)
    store = Store(cfg.cache or default_cache())
    plan = plan_run(cfg, store, out)
    if plan.device.type != device.split(":")[0] and device != "auto":
        raise UserError(f"--device {device} is not available here.")
    dev = plan.device.type
    isa = instruction_set(dev)
    record_now = {"record": training_record(plan.preset), "seed": seed, "device": dev,
                  "split": split_identity(plan.splits)}
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")     # this piece's start
    if (out / "kit.json").exists():
        kit = load_kit(out)
        r = kit.record
        for k, v in record_now.items():
            if r[k] != v:
                raise UserError(f"{out} holds a kit built with another {k}: build into another folder.")
        bad = verify_files(kit)                    # hashes every file once
        if bad:
            raise UserError(f"{out} is damaged ({bad[0]}): move it away and build again.")
        moved = behaviour_differs(r["behaviour"], behaviour_check())
        if moved:
            raise UserError(f"training's behaviour changed since {out} was started ({moved}): its models would mix "
                            f"two trainings; build a new kit into another folder.")
        r["n_target"] = max(r["n_target"], n)
    else:
        if out.exists() and any(out.iterdir()):
            raise UserError(f"{out} exists and is not a kit: pass an empty or new folder to --out.")
        r = {"format": KIT_FORMAT, "name": name or plan.preset.name, "preset": plan.preset.name, **record_now,
             "n_target": n, "reference": {"seed_label": seeds.REFERENCE, "chunk_size": None, "chunks": []},
             "original": None, "files": {}, "behaviour": behaviour_check(),
             "provenance": {"command": command, "started": now, "training_code": training_code(plan.preset)}}
    r["provenance"]["versions"] = _versions()
    r["provenance"].setdefault("pieces", []).append(      # every piece of the build: its command, start and machine
        {"command": command, "started": now, "isa": isa,
         "cpu": cpu_name() if dev == "cpu" else isa, "workers": workers or 1})
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
    keys = plan.chunk_keys[REFERENCE]
    todo_jobs = {j.key: j for j in plan.jobs}

    def add(a: int, arrays: dict, member_seeds: list, chunk_isa: str, source: str):
        rel = _chunk_file(a, a + len(member_seeds))
        blob = npz_bytes({**{k: arrays[k] for k in ARRAYS}, "seeds": np.asarray(member_seeds, dtype=np.uint64)})
        atomic_write_bytes(out / rel, blob)
        r["files"][rel] = hashlib.sha256(blob).hexdigest()
        r["reference"]["chunks"].append({"file": rel, "members": [a, a + len(member_seeds)], "isa": chunk_isa,
                                         "source": source,
                                         "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
        r["reference"]["chunks"].sort(key=lambda c: c["members"][0])
        _write_record(out, r)

    pending = []
    for c, key in enumerate(keys):
        a = c * size
        if a in have:
            continue
        want = [seeds.member_seed(seed, seeds.REFERENCE, i) for i in range(a, min(n, a + size))]
        if key not in todo_jobs:                       # already in the run cache
            add(a, store.load_arrays("chunks", key), want, cached_isa or "unknown", f"run cache {store.root}")
            continue
        job = todo_jobs[key]
        assert job.seeds == want, "the plan's seeds are the kit's"
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
                    device=r["device"], quiet=True, report=False, kit=None)
    preset, _, device, _, splits = prepare(cfg)
    if split_identity(splits) != r["split"]:
        raise UserError(f"kit {kit.name!r}: the split this code draws differs from the kit's (its data or "
                        f"splitting changed): the kit does not fit this code.")
    if device.type == "cpu":
        torch.set_num_threads(preset.threads or torch.get_num_threads())
    pop = Population(REFERENCE, "reference", "train", seeds.REFERENCE)
    ctx = Context(splits, preset, {}, r["device"])
    parts = []
    for c in sorted(r["reference"]["chunks"], key=lambda c: c["members"][0]):
        if c["members"][0] >= k:
            break
        want = [seeds.member_seed(r["seed"], seeds.REFERENCE, i) for i in range(*c["members"])]
        parts.append(run_job(ctx, Job(pop, want, "verify")))     # the whole chunk: a stack trains as built
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
        old, _ = kit.members(0, k)
        here = instruction_set(kit.record["device"])
        isas = {i: c["isa"] for c in kit.record["reference"]["chunks"] for i in range(*c["members"])}
        full, _ = kit.members(0, kit.n_built)
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
