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
the model `seeds.member_seed(seed, seeds.REFERENCE, i)` names, trained on the retain set exactly as a run
trains its own, in chunks of `plan.train_chunk(preset)` members: a kit-backed run at N scores against members
0..N-1, the same models a run without the kit trains for itself (identical on the instruction set that built
them). Each chunk records the instruction set it was trained on (`isa`).

Whether the kit still fits the code is a question of behaviour (`behaviour_check`): a tiny float64 training
of an MLP and of a ResNet-18, summarised as numbers that agree across instruction sets to ~1e-12; a change to
training's behaviour moves them far beyond the tolerance, a refactor that leaves training unchanged does not.
`verify(kit, retrain=K)` retrains K members with the current code and compares them with what the kit holds.
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import seeds
from .errors import UserError
from .protocol import EVAL_ARRAYS as ARRAYS
from .store import load_npz, tensors_sha256

KIT_FORMAT = 1
KITS_DIR = Path(__file__).resolve().parent / "kits"
RESULT_FIELDS = ("source", "source_kwargs", "model", "model_kwargs", "recipe", "forget", "group_size", "max_train",
                 "imbalance", "pixel_scale", "frames")   # a preset's fields that change a trained model or the split
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


def split_identity(splits) -> dict:
    """Digests of what the split is: which source rows are forget/retain/val/test, and the tensors every model
    sees (standardised inputs and labels). Two runs with equal identities train identical models."""
    parts = {"retain": splits.retain, "forget": splits.forget, "val": splits.val, "test": splits.test}
    out = {f"n_{k}": len(d) for k, d in parts.items()}
    out["rows"] = tensors_sha256(*[d.ids for d in parts.values() if d.ids is not None])
    out["tensors"] = tensors_sha256(*[t for d in parts.values() for t in (d.x, d.y)])
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

    def members(self, start: int, stop: int) -> tuple[dict, list]:
        """Members start..stop-1 of the reference population, as execute returns a population ({array: [models,
        ...]}), and their seeds; every file read is checked against its recorded digest."""
        if stop > self.n_built:
            raise UserError(f"kit {self.name!r} holds {self.n_built} reference models, fewer than the {stop} asked "
                            f"for: run with -n {self.n_built} or fewer, or finish the kit (obliviate kit build).")
        parts, seeds = [], []
        for c in sorted(self.record["reference"]["chunks"], key=lambda c: c["members"][0]):
            a, b = c["members"]
            if b <= start or a >= stop:
                continue
            z = self.read_npz(c["file"])
            lo, hi = max(start, a) - a, min(stop, b) - a
            parts.append({k: z[k][lo:hi] for k in ARRAYS})
            seeds += [int(s) for s in z["seeds"][lo:hi]]
        return {k: np.concatenate([p[k] for p in parts]) for k in ARRAYS}, seeds

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


def installed_kits(root: Path | None = None) -> list[Kit]:
    """The kits shipped with obliviate (obliviate/kits/<name>/), by name."""
    root = Path(root or KITS_DIR)
    return [load_kit(p) for p in sorted(root.iterdir()) if (p / "kit.json").is_file()] if root.is_dir() else []


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
