"""`obliviate unlearn`: apply an unlearning method to a user's own trained model, and audit what it forgot.

    --model FILE.py:FACTORY --weights W --data DATA.csv --forget-groups ID,...  ->  DIR/model.safetensors,
                                                                                   DIR/audit.json, DIR/audit.html

One code path with `obliviate run`: the method is resolved as `run` resolves it (plan.method_populations: the
reading, tuned values, --hp), runs through protocol.unlearn_once (a registered method or a user's function,
Kaggle or starting-kit style, under the challenge's harness), and both models are scored by protocol.evaluate.
With `--reference N` the N retrained models and the N unlearning runs are jobs of execute.run_job, stored chunk
by chunk in the content-addressed Store under keys that cover the data, the model file, the weights, the
recipe, the seeds, the method and the code, so a run killed at any point resumes where it stopped.

The data: a manifest `path,label,group[,split]` (split: train, val or test). Retain = the train rows of every
group not forgotten; forget = the train rows of the forgotten groups; test = the manifest's test rows, or 10%
of all rows drawn by the seed (a shuffle of images, as in the challenge: the forgotten people's test rows stay
in test); val = the manifest's val rows, or 10% of the retain rows drawn by the seed (they stay in retain).
Images are read at their own size (or resized to --size), as floats in [0, 1] (one channel if every image is
greyscale, else RGB), standardised per channel with the train rows' statistics only with
`--normalise per-channel`, then multiplied by --pixel-scale.

From Python: `obliviate.unlearn(model, retain, forget, test=None, method="kookmin", **hp) -> (model, audit)`.
Nothing is written until the end, and then atomically: a refused input leaves no output folder.
"""
from __future__ import annotations

import ast
import copy
import hashlib
import json
import os
import platform
import re
import time
import tomllib
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import UserError
from .usercode import import_user_file
from .board import REFERENCE as REF_ROW
from .seeds import REFERENCE, UNLEARN, draw_label, member_seed, seeded_rng as _rng
from .store import content_key, tensors_sha256
from .suggest import nearest

if TYPE_CHECKING:
    from .data.manifest import ManifestRows

TEST_FRACTION = VAL_FRACTION = 0.1                   # drawn test (of all rows) and val (of the retain rows)
NORMALISE = ("none", "per-channel")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")      # PIL modes read as one channel


# --- the user's model ---------------------------------------------------------------------------------------
def parse_kwargs(items) -> dict:
    """`--model-kwargs k=v` (repeated, or comma-separated before each name=) -> {k: value}: numbers, True/False,
    tuples as Python literals (true/false too), anything else a string."""
    out = {}
    for item in [p for i in items or [] for p in re.split(r",(?=\s*[A-Za-z_]\w*\s*=)", str(i)) if p.strip()]:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise UserError(f"--model-kwargs {item!r} is not name=value: write e.g. --model-kwargs width=8.")
        v = v.strip()
        if v.lower() in ("true", "false"):
            out[k.strip()] = v.lower() == "true"
            continue
        try:
            out[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k.strip()] = v
    return out


def load_factory(spec: str):
    """`FILE.py:FACTORY` -> (the function, the file's Path)."""
    path, sep, name = str(spec).rpartition(":")
    if not sep or not path.endswith(".py") or not name:
        raise UserError(f"--model {spec!r} is not FILE.py:FACTORY: name the Python file and the function in it that "
                        f"returns your nn.Module, e.g. --model net.py:make_model.")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"model file {path!r} does not exist: pass --model path/to/file.py:FACTORY.")
    module = import_user_file(p, "model", f"obliviate_user_model_{p.stem}")
    fn = getattr(module, name, None)
    if not callable(fn):
        defined = [k for k, v in vars(module).items() if callable(v) and getattr(v, "__module__", "") ==
                   module.__name__]
        hint = nearest(name, defined)
        raise UserError(f"model file {path!r} has no function {name!r}{f' (did you mean {hint!r}?)' if hint else ''}"
                        f": define {name}() returning the nn.Module (keyword arguments come from --model-kwargs k=v)"
                        f"{', or name one it defines: ' + ', '.join(defined) if defined else ''}.")
    return fn, p


def build(factory, kwargs: dict, spec: str) -> nn.Module:
    """The factory's model; an exception inside it reads as the user's own error (their frames only)."""
    from torch import nn
    from .protocol import user_code_error
    try:
        model = factory(**kwargs)
    except (Exception, SystemExit) as e:
        raise user_code_error(f"model factory {spec!r} failed", e) from None
    if not isinstance(model, nn.Module):
        raise UserError(f"model factory {spec!r} returned {type(model).__name__}, not a torch nn.Module: return the "
                        f"network itself.")
    return model


def read_weights(path) -> dict:
    """A state_dict from safetensors, or from a torch.save file read with weights_only=True; never unpickled."""
    import torch
    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file {p} does not exist: pass --weights MODEL.safetensors (or a torch.save'd "
                        f"state_dict).")
    with open(p, "rb") as f:
        head = f.read(9)
    fix = ("save the weights with safetensors.torch.save_file(model.state_dict(), 'model.safetensors') or "
           "torch.save(model.state_dict(), 'model.pt')")
    if len(head) == 9 and head[8:9] == b"{":                              # safetensors: 8-byte length, JSON header
        from safetensors.torch import load_file
        try:
            return load_file(str(p))
        except Exception as e:
            raise UserError(f"weights file {p} is not a readable safetensors file ({e}): {fix}.") from None
    try:
        with warnings.catch_warnings():       # torch warns about a pickle's protocol before refusing it
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:                         # the restricted unpickler refused it, or it is no torch file
        what = ("holds pickled Python objects, not only tensors (a whole model saved with torch.save(model)?)"
                if head[:2] == b"PK" else "is a pickle file, which obliviate does not load (unpickling runs code)"
                if head[:1] == b"\x80" else "is neither safetensors nor a torch state_dict file")
        raise UserError(f"weights file {p} {what}: {fix}.") from None
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in ("state_dict", "model_state_dict") if isinstance(obj.get(k), Mapping)), None)
        obj = inner if inner is not None else obj
    if not (isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise UserError(f"weights file {p} holds a {type(obj).__name__}, not a state_dict (tensor names to tensors): "
                        f"{fix}.")
    return dict(obj)


def check_fit(model: nn.Module, state: dict, weights, spec: str) -> None:
    """One sentence naming the first missing, unexpected or mis-shaped tensor."""
    ref = model.state_dict()
    missing = [k for k in ref if k not in state]
    unexpected = [k for k in state if k not in ref]
    shaped = [k for k in ref if k in state and tuple(state[k].shape) != tuple(ref[k].shape)]
    where = f"the weights in {weights} do not fit the model of {spec}"
    hint = " (saved from DataParallel? strip the 'module.' prefix)" if unexpected and all(
        k.startswith("module.") for k in unexpected) else ""
    if missing:
        raise UserError(f"{where}: tensor {missing[0]!r} is missing ({len(missing)} missing in all){hint}; pass the "
                        f"weights saved from this model, or the factory and --model-kwargs that built them.")
    if unexpected:
        raise UserError(f"{where}: they hold {unexpected[0]!r}, which the model has no tensor for ({len(unexpected)} "
                        f"unexpected in all){hint}; pass the factory and --model-kwargs that built them.")
    if shaped:
        k = shaped[0]
        raise UserError(f"{where}: tensor {k!r} is {tuple(state[k].shape)} in the weights but {tuple(ref[k].shape)} "
                        f"in the model; pass the --model-kwargs the weights were trained with.")


def state_bytes(model_or_state) -> bytes:
    """The weights as safetensors bytes (CPU, contiguous): what DIR/model.safetensors holds."""
    from safetensors.torch import save
    state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
    return save({k: v.detach().cpu().contiguous().clone() for k, v in state.items()})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the user's data ----------------------------------------------------------------------------------------
def read_manifest(path) -> ManifestRows:
    """The manifest's rows, every one checked before an image is read (data/manifest.py; `val` rows allowed)."""
    from .data.manifest import read_rows
    return read_rows(path, splits=("train", "val", "test"))


def forget_list(groups: str | None, file) -> tuple[list, dict]:
    """The groups named by --forget-groups and --forget-file (one per line; blank lines and # comments skipped),
    in order, each once; and their record (the canonical list's sha256, the file's)."""
    names, rec = [g.strip() for g in (groups or "").split(",") if g.strip()], {}
    if file is not None:
        f = Path(file)
        if not f.is_file():
            raise UserError(f"forget file {f} does not exist: pass --forget-file FILE with one group per line.")
        data = f.read_bytes()
        names += [ln.strip() for ln in data.decode("utf-8-sig").splitlines() if ln.strip() and not
                  ln.strip().startswith("#")]
        rec.update(file=str(f), file_sha256=sha256(data))
    names = list(dict.fromkeys(names))
    if not names:
        raise UserError("no group to forget: name them with --forget-groups ID[,ID...] or --forget-file FILE "
                        "(one group per line).")
    rec.update(groups=names, list_sha256=sha256(("\n".join(sorted(names)) + "\n").encode()))
    return names, rec


def _unreadable(file, e: Exception) -> UserError:
    return UserError(f"image {file} cannot be read ({type(e).__name__}: {e}): replace it or remove its row.")


def _decode(file: Path, mode: str, size: int | None) -> np.ndarray:
    from PIL import Image
    try:
        with Image.open(file) as im:
            im = im.convert(mode)
            if size:
                im = im.resize((size, size), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except Exception as e:                               # PIL raises many types for damaged files
        raise _unreadable(file, e) from None
    return a[:, :, None] if a.ndim == 2 else a


def read_images(files: list, size: int | None) -> tuple[torch.Tensor, str]:
    """[n, C, H, W] float32 in [0, 1] and the PIL mode read ("L" when every image is greyscale, else "RGB")."""
    import torch
    from PIL import Image
    if size is not None and (not isinstance(size, int) or size < 1):
        raise UserError(f"--size {size!r} is invalid: use a positive integer such as 32 (or leave it out to read "
                        f"the images at their own size).")
    modes = []
    for f in files:
        try:
            with Image.open(f) as im:
                modes.append((im.mode, im.size))
        except Exception as e:
            raise _unreadable(f, e) from None
    if size is None:
        odd = next((i for i, (_, s) in enumerate(modes) if s != modes[0][1]), None)
        if odd is not None:
            (w0, h0), (w1, h1) = modes[0][1], modes[odd][1]
            raise UserError(f"the images differ in size ({files[0]} is {w0}x{h0}, {files[odd]} is {w1}x{h1}): pass "
                            f"--size S to resize every image to S x S, as your model saw them in training.")
    mode = "L" if all(m in GREY_MODES for m, _ in modes) else "RGB"
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = np.stack(list(pool.map(lambda f: _decode(f, mode, size), files)))
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).contiguous(), mode


def _digest(*tensors, chars: int = 16) -> str:
    """kit.tensors_sha256 of the tensors, its first `chars` hex digits."""
    return tensors_sha256(*tensors)[:chars]


def _splits(x, y, person, retain, forget, val, test, num_classes, forget_groups=()) -> Splits:
    """Splits from row indices; ids are the rows' indices (the Kaggle batches' image_id), groups their people."""
    import torch
    from .data import Splits, TensorSet
    def take(idx):
        idx = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return TensorSet(x[idx].contiguous(), y[idx].clone(), idx.clone(), person[idx].clone())
    s = Splits(take(retain), take(forget), take(val), take(test), num_classes, list(forget_groups))
    s.key = s.train_key = _digest(*(t for d in (s.retain, s.forget, s.val, s.test) for t in (d.x, d.y, d.groups)))
    return s


def load_data(manifest: ManifestRows, forget: list, seed: int = 0, size: int | None = None, pixel_scale: float = 1.0,
              normalise: str = "none") -> tuple[Splits, dict]:
    """(Splits, the data record: rows, how test and val were chosen, the preprocessing)."""
    import torch
    from .data.manifest import _all_int, _ids
    if normalise not in NORMALISE:
        hint = nearest(normalise, NORMALISE)
        raise UserError(f"--normalise {normalise!r} is not known{f' (did you mean {hint!r}?)' if hint else ''}: use "
                        f"none (the default: pixels in [0, 1]) or per-channel (standardised with the train rows' "
                        f"per-channel mean and std).")
    if not (isinstance(pixel_scale, (int, float)) and np.isfinite(pixel_scale) and pixel_scale > 0):
        raise UserError(f"--pixel-scale {pixel_scale!r} must be a positive number: 1 (the default) or 255 for a model "
                        f"trained on 0-255 pixels.")
    groups = manifest.groups
    known = sorted({g for g in groups if g})
    numeric = bool(known) and _all_int(known)            # integer ids: "007" names group 7, as _ids reads them
    canon = (lambda g: int(g) if _all_int([g]) else g) if numeric else (lambda g: g)
    have = {canon(g) for g in known}
    for g in forget:
        if canon(g) not in have:
            hint = nearest(g, known)
            raise UserError(f"forget group {g!r} is not in the group column of {manifest.path}"
                            f"{f' (did you mean {hint!r}?)' if hint else ''}: name groups as the manifest writes them "
                            f"({len(known)} groups, e.g. {', '.join(known[:3])}).")
    wanted = {canon(g) for g in forget}
    in_forget = np.array([bool(g) and canon(g) in wanted for g in groups])
    n = len(groups)
    if manifest.split is not None:
        split = np.array(manifest.split)
        test_from, val_from = "the manifest's test rows", None
    else:
        split = np.full(n, "train", dtype=object)
        split[_rng("unlearn-test", seed).permutation(n)[:max(1, round(TEST_FRACTION * n))]] = "test"
        test_from = f"{TEST_FRACTION:.0%} of all rows, drawn with seed {seed} (a shuffle of images)"
    train = split == "train"
    forget_idx, retain_idx = np.flatnonzero(train & in_forget), np.flatnonzero(train & ~in_forget)
    test_idx = np.flatnonzero(split == "test")
    if len(forget_idx) == 0:
        raise UserError(f"the forget set would be empty: groups {', '.join(forget)} have no train rows in "
                        f"{manifest.path}; name groups whose training images the model saw.")
    if len(retain_idx) == 0:
        raise UserError(f"the retain set would be empty: every train row of {manifest.path} belongs to the groups "
                        f"to forget; a method needs the other people's training images.")
    if len(test_idx) == 0:
        raise UserError(f"{manifest.path} has no test rows: mark some rows test, or drop the split column and "
                        f"obliviate draws {TEST_FRACTION:.0%} of the rows as test.")
    val_idx = np.flatnonzero(split == "val")
    if len(val_idx):
        val_from = "the manifest's val rows"
    else:
        k = max(1, round(VAL_FRACTION * len(retain_idx)))
        val_idx = np.sort(_rng("unlearn-val", seed).permutation(retain_idx)[:k])
        val_from = f"{VAL_FRACTION:.0%} of the retain rows, drawn with seed {seed} (they stay in retain)"
    x, mode = read_images(manifest.files, size)
    mean = std = None
    if normalise == "per-channel":                       # the train rows' statistics, as make_splits takes them
        xtr = x[np.flatnonzero(train)]
        dims = [0, 2, 3]
        mean, std = xtr.mean(dims, keepdim=True), xtr.std(dims, keepdim=True).clamp(min=1e-6)
        x = (x - mean) / std
    if pixel_scale != 1:
        x = x * float(pixel_scale)
    person = np.full(n, -1, dtype=np.int64)
    if known:
        person[np.array([bool(g) for g in groups])] = _ids([g for g in groups if g])[0]
    unknown = person < 0                                 # a row of unknown identity: its own person
    person[unknown] = (person.max() + 1 if known else 0) + np.arange(unknown.sum())
    forget_ids = sorted({int(person[i]) for i in forget_idx})
    splits = _splits(x, torch.from_numpy(manifest.labels), torch.from_numpy(person), retain_idx, forget_idx, val_idx,
                     test_idx, int(manifest.labels.max()) + 1, forget_ids)
    record = {"manifest": str(manifest.path), "manifest_sha256": manifest.sha256, "rows": n,
              "images_sha256": _digest(x, chars=64), "retain": len(retain_idx), "forget": len(forget_idx),
              "val": len(val_idx), "test": len(test_idx), "test_from": test_from, "val_from": val_from,
              "forget_groups_in_test_rows": int((in_forget & (split == "test")).sum()),
              "labels": manifest.label_names or "integers", "splits_digest": splits.key}
    if manifest.split is None:                           # what was drawn, as CSV line numbers (header = line 1)
        record["test_lines"] = (test_idx + 2).tolist()
    if val_from != "the manifest's val rows":
        record["val_lines"] = (val_idx + 2).tolist()
    prep = {"size": list(x.shape[2:]), "resized": size is not None, "mode": mode, "channels": int(x.shape[1]),
            "scale": "pixels / 255, in [0, 1]", "normalise": normalise, "pixel_scale": float(pixel_scale)}
    if mean is not None:
        prep.update(mean=mean.flatten().tolist(), std=std.flatten().tolist())
    record["preprocessing"] = prep
    return splits, record


# --- data from Python: torch Datasets and DataLoaders ---------------------------------------------------------
def _rows(data, what: str):
    """Batches of `data` in a fixed order: a DataLoader's dataset re-read unshuffled (its own collate), a Dataset
    batched by torch's default collation."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset
    if isinstance(data, DataLoader):
        ds = data.dataset
        if isinstance(ds, IterableDataset) or not hasattr(ds, "__len__"):
            return data
        return DataLoader(ds, batch_size=data.batch_size or 256, shuffle=False, collate_fn=data.collate_fn)
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        return DataLoader(data, batch_size=256, shuffle=False)
    raise UserError(f"{what} is a {type(data).__name__}, not a torch Dataset or DataLoader: pass one that yields "
                    f"(inputs, targets) or the Kaggle dict batches (image, age_group).")


def as_tensor_set(data, what: str) -> TensorSet:
    """Every example of a Dataset or DataLoader yielding (inputs, targets[, ...]) or dict batches with `image` and
    `age_group` (and `person_id`, kept as the identity)."""
    import torch
    from .data import TensorSet
    if isinstance(data, TensorSet):
        return data
    if isinstance(getattr(data, "data", None), TensorSet):          # obliviate's own TensorLoader
        return data.data
    xs, ys, gs = [], [], []
    for batch in _rows(data, what):
        if isinstance(batch, Mapping):
            if "image" not in batch or "age_group" not in batch:
                raise UserError(f"{what}'s dict batches have the keys {', '.join(map(str, batch))}: obliviate reads "
                                f"'image' and 'age_group' (the Kaggle dataset's), or (inputs, targets) tuples.")
            x, y, g = batch["image"], batch["age_group"], batch.get("person_id")
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
            x, y, g = batch[0], batch[1], None
        else:
            raise UserError(f"{what} yields {type(batch).__name__} batches: obliviate reads (inputs, targets) tuples "
                            f"or the Kaggle dict batches (image, age_group).")
        xs.append(torch.as_tensor(x).float()), ys.append(torch.as_tensor(y).long().reshape(-1))
        gs.append(None if g is None else torch.as_tensor(g).long().reshape(-1))
    if not xs or sum(len(y) for y in ys) == 0:
        raise UserError(f"the {what} set is empty: pass a Dataset or DataLoader with at least one example.")
    g = torch.cat(gs) if all(t is not None for t in gs) else None
    y = torch.cat(ys)
    return TensorSet(torch.cat(xs).contiguous(), y, None, g)


def splits_from_data(retain, forget, val=None, test=None, seed: int = 0) -> tuple[Splits, dict]:
    """Splits from Python data (val drawn from retain as the CLI draws it; no test: an empty one)."""
    import torch
    from .data import Splits, TensorSet
    sets = {"retain": as_tensor_set(retain, "retain"), "forget": as_tensor_set(forget, "forget")}
    sets["val"] = as_tensor_set(val, "val") if val is not None else None
    sets["test"] = as_tensor_set(test, "test") if test is not None else None
    r = sets["retain"]
    if sets["val"] is None:
        k = max(1, round(VAL_FRACTION * len(r)))
        sets["val"] = _subset(r, np.sort(_rng("unlearn-val", seed).permutation(len(r))[:k]))
    if sets["test"] is None:
        sets["test"] = TensorSet(r.x[:0], r.y[:0])
    start, parts = 0, {}
    for name in ("retain", "forget", "val", "test"):              # ids: the rows' places, for image_id
        d = sets[name]
        ids = torch.arange(start, start + len(d)); start += len(d)
        parts[name] = TensorSet(d.x, d.y, ids if d.ids is None else d.ids,
                                d.groups if d.groups is not None else torch.full_like(d.y, -1))
    num_classes = int(max(int(parts[k].y.max()) for k in parts if len(parts[k]))) + 1
    s = Splits(parts["retain"], parts["forget"], parts["val"], parts["test"], num_classes)
    s.key = s.train_key = _digest(*(t for d in parts.values() for t in (d.x, d.y)))
    record = {"retain": len(s.retain), "forget": len(s.forget), "val": len(s.val), "test": len(s.test),
              "val_from": "given" if val is not None else f"{VAL_FRACTION:.0%} of retain, drawn with seed {seed}",
              "splits_digest": s.key}
    return s, record


def _subset(d: TensorSet, idx) -> TensorSet:
    import torch
    from .data import TensorSet
    idx = torch.as_tensor(idx, dtype=torch.long)
    pick = lambda t: None if t is None else t[idx]
    return TensorSet(d.x[idx], d.y[idx], pick(d.ids), pick(d.groups))


# --- the method ---------------------------------------------------------------------------------------------
def default_reading() -> str:
    from .methods import registry
    return getattr(registry, "DEFAULT_READING", "notebook")


def resolve_method(method, hp: dict | None = None, hp_preset: str | None = None, reading: str | None = None,
                   cache=None):
    """(Method, its plan.Population: resolved hyperparameters and code fingerprint), exactly as `run` resolves
    one. --hp-preset NAME[:PRESET]: the values `obliviate tune` saved for PRESET (without it: the one preset of
    NAME that holds values for this method)."""
    from .methods import canonical_name, get_method
    from .methods.registry import register_callable, user_file_spec
    from .plan import RunConfig, method_populations
    from .store import Store, default_cache
    if callable(method):
        name = register_callable(method)
    elif isinstance(method, str) and method.strip():
        name = method.strip()
        name = user_file_spec(name) or name
    else:
        raise UserError(f"method {method!r} is neither a name nor a function: pass a registered name, "
                        f"path/to/file.py[:function] or a function fn(net, retain, forget, val).")
    if "," in name or name in ("all", "winners"):
        raise UserError(f"--method {name!r} names several methods: `obliviate unlearn` applies one; pick one name.")
    store, preset = Store(cache or default_cache()), "unlearn"
    if hp_preset:
        hp_preset, _, preset = hp_preset.partition(":")
        method_obj = get_method(name)
        if method_obj.user is not None:
            raise UserError("--hp-preset applies to registered methods (`obliviate tune` saves their values): drop it "
                            "for your own function and set its values in your file.")
        key = canonical_name(name)
        if not preset:
            store.load_hp_preset(hp_preset, "")           # the store's own sentences: not found, not JSON
            saved = json.loads(store.hp_preset_path(hp_preset).read_text())
            holding = sorted(k for k, v in saved.items() if key in v)
            if len(holding) != 1:
                raise UserError(f"hyperparameter preset {hp_preset!r} holds values of {key} for "
                                f"{'no preset' if not holding else 'the presets ' + ', '.join(holding)}: pass "
                                f"--hp-preset {hp_preset}:PRESET" + (" with one of them." if holding else
                                f" after `obliviate tune --method {key} --name {hp_preset}`."))
            preset = holding[0]
        if key not in store.load_hp_preset(hp_preset, preset):
            raise UserError(f"hyperparameter preset {hp_preset!r} holds no values of {key} for preset {preset!r}: "
                            f"tune it with `obliviate tune --method {key} --preset {preset} --name {hp_preset}`, or "
                            f"drop --hp-preset.")
    cfg = RunConfig(preset=preset, methods=[name], hp=dict(hp or {}), hp_preset=hp_preset or None,
                    reading=reading or default_reading(), cache=str(store.root))
    pops = method_populations(cfg, store)
    if len(pops) != 1:
        raise UserError(f"--method {name!r} names {len(pops)} methods: `obliviate unlearn` applies one.")
    return get_method(pops[0].method), pops[0]


# --- applying it --------------------------------------------------------------------------------------------
@contextmanager
def registered(builder, ident: str):
    """The user's model under a name in obliviate's model registry while the block runs, so run's code (warm-up,
    retraining, jobs) builds it as it builds its own; `builder(**kwargs)` returns it."""
    from .models.registry import MODELS
    name = f"user-model-{ident}"
    MODELS[name] = lambda in_shape, num_classes, **kw: builder(**kw)
    try:
        yield name
    finally:
        MODELS.pop(name, None)


def _preset(model_name: str, kwargs: dict, recipe, key: str):
    from .presets import Preset, Recipe
    import torch
    # this process's thread count, for workers too: fp32 reductions round by the thread count, so a worker on
    # another count would train other models than the in-process run
    return Preset(name=f"unlearn-{key}", source="manifest", model=model_name, recipe=recipe or Recipe(),
                  model_kwargs=dict(kwargs), threads=torch.get_num_threads())


def _probe(model: nn.Module, splits: Splits, device) -> int:
    """The model's class count, from one forward pass on a retain image (eval mode, modes restored)."""
    import torch
    modes = [(m, m.training) for m in model.modules()]
    x = splits.retain.x[:2].to(device)
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as e:
        raise UserError(f"the model cannot take the data's images ({tuple(x.shape[1:])} after preprocessing: "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); pass --size, "
                        f"--normalise or --pixel-scale as the model was trained.") from None
    finally:
        for m, t in modes:
            m.training = t
    if out.dim() != 2:
        raise UserError(f"the model returns a tensor of shape {tuple(out.shape)} for a batch of images: an unlearning "
                        f"method needs class logits [batch, classes].")
    return int(out.shape[1])


def _check_labels(splits: Splits, num_classes: int) -> None:
    top = max(int(d.y.max()) for d in (splits.retain, splits.forget, splits.val, splits.test) if len(d))
    if top >= num_classes:
        raise UserError(f"the data has the label {top} but the model has {num_classes} outputs: labels must be "
                        f"0..{num_classes - 1}, in the order the model was trained with.")


def _view(e: dict, has_test: bool) -> dict:
    from .metrics.mia import simple_mia
    out = {"forget_acc": e["forget_acc"], "retain_acc": e["retain_acc"],
           "test_acc": e["test_acc"] if has_test else None, "mia": None}
    if has_test:
        m = simple_mia(e["loss_forget"][None], e["loss_test"][None])["mia"]
        out["mia"] = None if np.isnan(m) else m
    return out


def apply(original: nn.Module, splits: Splits, method, pop, seed: int, device, preset, progress=None) -> dict:
    """Evaluate the original, run the method once (seed `seed`, warm, timed), evaluate the result. {"model",
    "before", "after" (protocol.evaluate's), "seconds" (wall), "cost_seconds" (run's cost clock)}."""
    from .execute import ensure_warm
    from .protocol import evaluate, harness_net, unlearn_once
    from .training import timed
    before = evaluate(original, splits, "the original model")
    ensure_warm(preset, splits, device)
    if progress: progress.note(f"unlearning with {pop.name} (seed {seed})")
    t = time.perf_counter()
    model, cost = timed(device, unlearn_once, method, original, splits, seed, pop.hparams,
                        net=harness_net(method, original))
    wall = time.perf_counter() - t
    after = evaluate(model, splits, f"method {pop.name!r}")
    return {"model": model, "before": before, "after": after, "seconds": wall, "cost_seconds": cost}


# --- the reference: N retrained models and N unlearning runs, cached chunk by chunk ------------------------------
def read_recipe(path):
    """(Recipe, the table as read, the file's sha256) from a TOML file: a [recipe] table (a preset record's other
    keys are ignored) or the recipe keys alone. An unknown key is refused naming the nearest valid one."""
    from .presets import RECIPE, TOP, Recipe, _check
    p = Path(path)
    try:
        raw = p.read_bytes()
        d = tomllib.loads(raw.decode("utf-8"))
    except OSError as e:
        raise UserError(f"recipe file {p} cannot be read ({type(e).__name__}): check the path.") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"recipe file {p} is not valid TOML ({e}): fix the syntax.") from None
    table, top = (d["recipe"], TOP) if isinstance(d.get("recipe"), dict) else (d, RECIPE)
    for keys, allowed, pre in ((d, top, ""), (table, RECIPE, "recipe.")):
        bad = next((k for k in keys if k not in allowed), None)
        if bad is not None:
            hint = nearest(bad, list(allowed) + ([] if pre else ["recipe"]))   # [recipie] -> [recipe]
            raise UserError(f"recipe file {p}: unknown key '{pre}{bad}'"
                            f"{f' (did you mean {pre + hint!r}?)' if hint else ''}: a recipe has "
                            f"{', '.join(RECIPE)}, in a [recipe] table (a preset record's other keys are ignored) "
                            f"or alone.")
    _check(f"recipe file {p}", table, RECIPE, "recipe.")
    rec = {k: float(v) if k in ("lr", "weight_decay") else v for k, v in table.items()}
    return Recipe(**rec), dict(table), sha256(raw)


def reference(original_state: dict, splits: Splits, preset, pop, n: int, seed: int, device, store, ident: dict,
              progress=None, workers: int = 1, executor: str = "local", address: str | None = None) -> dict:
    """Train N models on retain from scratch and run the method N times from the original (member 0: seed `seed`,
    the run written to DIR), each chunk of models a job of execute.run_job stored under a key covering `ident`;
    return the populations {"reference", pop.name: arrays} and how many models were computed now."""
    from .codehash import modules_fingerprint
    from .execute import ARRAYS, Context, run_job
    from .plan import EVAL_VERSION, UNLEARN_CHUNK, UNLEARN_TIMING, Job, Population, train_chunk
    retrained = Population(REF_ROW, "reference", "train", REFERENCE)
    pops = [(retrained, [member_seed(seed, REFERENCE, i) for i in range(n)], train_chunk(preset)),
            (pop, [seed] + [member_seed(seed, UNLEARN, i) for i in range(1, n)], UNLEARN_CHUNK)]
    # the modules plan.training_code keys a run's trained models by; the user's model file is in ident
    train_code = modules_fingerprint(["obliviate.training", "obliviate.population", "obliviate.protocol"])
    keys, jobs = {}, []
    for p, seeds, size in pops:
        keys[p.name] = []
        for a in range(0, n, size):
            part = seeds[a:a + size]
            what = ({"recipe": asdict(preset.recipe), "code": train_code} if p.kind == "train" else
                    {"original": ident["weights_sha256"], "method": p.method, "hp": p.hparams, "code": p.code,
                     "timing": UNLEARN_TIMING})
            key = content_key({"what": f"unlearn-{p.kind}", "eval": EVAL_VERSION, "data": splits.key,
                               "classes": splits.num_classes, "seeds": part, "device": device.type,
                               "model": ident["model"], **what})
            keys[p.name].append(key)
            if store.load_arrays("chunks", key) is None:
                jobs.append(Job(p, part, key))
    computed = sum(len(j.seeds) for j in jobs)
    if progress: progress.start(computed, f"{len(jobs)} jobs")
    ctx = Context(splits, preset, original_state, str(device))

    def on_result(job, arrays):
        if "__error__" in arrays:
            raise UserError(arrays["__error__"])
        store.save_arrays("chunks", job.key, arrays)
        if progress: progress.advance(len(job.seeds), job.pop.name)
    if jobs and (workers > 1 or executor != "local"):
        if not preset.model.startswith("file:"):
            raise UserError("a model passed from Python runs only in this process: leave workers and the executor "
                            "unset, or save its factory to a file and use `obliviate unlearn --model FILE.py:FACTORY`.")
        from .execute import LocalExecutor, run_job_safe
        if executor == "ray":
            from .ray_executor import RayExecutor
            RayExecutor(run_job_safe, address).run(ctx, jobs, on_result)
        else:
            LocalExecutor(workers, n).run(ctx, jobs, on_result)
    else:
        for job in jobs:                            # in this process
            on_result(job, run_job(ctx, job))
    if progress: progress.stop()
    out = {}
    for p, _, _ in pops:
        parts = [store.load_arrays("chunks", k) for k in keys[p.name]]
        if any(x is None for x in parts):
            raise UserError(f"the cache at {store.root} lost part of the reference while running: run again to "
                            f"recompute it.")
        out[p.name] = {k: np.concatenate([x[k] for x in parts]) for k in ARRAYS}
    return {"populations": out, "computed": computed, "cached": 2 * n - computed}


def certificate(pops: dict, name: str, seed: int, confidence: float = 0.95) -> dict:
    """The challenge's measure from the two populations: F at N with its interval, the score, the projection to
    512 and the regime (spread ratio, location gap), and the retrained models' own figures (the target). The
    intervals and projections are `run`'s and `diagnose`'s (their draws, their seeds per row name)."""
    from .metrics import challenge_score, forgetting_quality, projection, resample
    from .metrics.mia import simple_mia
    from .metrics.projection import row_seed as _row_seed
    r, u = pops[REF_ROW], pops[name]
    n, pn = len(r["conf"]), projection.PROJECT_N
    f = forgetting_quality(u["conf"], r["conf"])
    ci = resample.board_intervals(pops, REF_ROW, rows=[name], confidence=confidence, seed=seed,
                                  draws=resample.DRAWS)[name]
    proj, (lo, hi) = projection.project_forgetting_quality(u["conf"], r["conf"], n=pn, draws=projection.DRAWS,
                                                           seed=_row_seed(seed, name), confidence=confidence)
    ceil, (clo, chi) = projection.project_forgetting_quality(r["conf"], r["conf"], n=pn, draws=projection.DRAWS,
                                                             seed=_row_seed(seed, draw_label(REF_ROW)), confidence=confidence)
    ratio, gap = projection.spread_and_gap(u["conf"], r["conf"])
    means = lambda p: {k: float(np.mean(p[k])) for k in ("forget_acc", "retain_acc", "test_acc")} | {
        "mia": simple_mia(p["loss_forget"], p["loss_test"])["mia"], "seconds": float(np.mean(p["seconds"]))}
    return {"n_models": n, "confidence": confidence, "forgetting_quality": f,
            "forgetting_quality_ci": ci["forgetting_quality_ci"],
            "score": challenge_score(f, u["retain_acc"], r["retain_acc"], u["test_acc"], r["test_acc"]),
            "score_ci": ci["score_ci"], "project_n": pn, "projected_forgetting_quality": proj,
            "projected_forgetting_quality_ci": [lo, hi], "projected_ceiling": ceil, "projected_ceiling_ci": [clo, chi],
            "spread_ratio": ratio, "location_gap": gap, "retrained_std": projection.retrained_std(r["conf"]),
            "retrained": means(r), "unlearned": means(u),
            "cost_retrainings": float(np.mean(u["seconds"]) / np.mean(r["seconds"])),
            "seeds": {"retrained": f"member_seed({seed}, {REFERENCE!r}, i), i < {n}",
                      "unlearned": f"{seed} (the run written), then member_seed({seed}, {UNLEARN!r}, i), "
                                   f"0 < i < {n}"}}


def cached_certificate(store, pops: dict, name: str, seed: int) -> dict:
    """certificate() through the store, keyed by the populations' contents, the seed, the draws and the code that
    computes it: a rerun served from the cache recomputes nothing (measured: ~20 s of a cached 8-model rerun)."""
    from .codehash import modules_fingerprint
    from .metrics import projection, resample
    from .store import arrays_digest
    ident = {"what": "unlearn-certificate", "populations": {k: arrays_digest(v) for k, v in pops.items()},
             "name": name, "seed": seed, "draws": [projection.DRAWS, projection.GROUP_DRAWS, resample.DRAWS],
             "code": modules_fingerprint(["obliviate.unlearn", "obliviate.metrics.projection"])}
    return store.memo_json("unlearn-certificate", ident, lambda: certificate(pops, name, seed))


# --- the audit and the output folder ------------------------------------------------------------------------
def versions() -> dict:
    import torch
    from importlib.metadata import PackageNotFoundError, version
    from .version import __version__
    out = {"obliviate": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__, "platform": platform.platform()}
    for pkg in ("safetensors", "pillow", "scikit-learn", "scipy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def build_audit(res: dict, pop, splits: Splits, seed: int, device, train_seconds: float | None,
                provenance: dict, cert: dict | None = None) -> dict:
    from .training import cost_clock_name
    has_test = len(splits.test) > 0
    before, after = _view(res["before"], has_test), _view(res["after"], has_test)
    mia_ideal = ({"value": cert["retrained"]["mia"], "basis": f"the mean over {cert['n_models']} models retrained "
                  f"without the forgotten examples"} if cert else
                 {"value": 0.5, "basis": "chance: ideal only if the forgotten and the test examples look alike to a "
                  "model that never saw the forgotten ones (on identity data a retrained model's own value is the "
                  "target: --reference N measures it)"})
    audit = {"format": 1, "method": pop.name, "hparams": pop.hparams, "seed": seed, "device": str(device),
             "seconds": res["seconds"], "cost_seconds": res["cost_seconds"], "cost_clock": cost_clock_name(device),
             "train_seconds": train_seconds,
             "fraction_of_training": res["seconds"] / train_seconds if train_seconds else None,
             "before": before, "after": after, "mia_ideal": mia_ideal if has_test else None,
             "sizes": {k: len(getattr(splits, k)) for k in ("retain", "forget", "val", "test")},
             "reference": cert, "provenance": provenance}
    from .audit import summary
    audit["summary"] = summary(audit)
    return audit


def check_train_seconds(s) -> None:
    if s is not None and not (isinstance(s, (int, float)) and np.isfinite(s) and s > 0):
        raise UserError(f"--train-seconds {s!r} must be a positive number of seconds (the original model's "
                        f"training time).")


def check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"output folder {out} is not empty: pass a new folder to --out (an audit is never "
                        f"overwritten).")


def write_out(out: Path, weights: bytes, audit: dict, html: str) -> None:
    """DIR/model.safetensors, audit.json and audit.html, swapped in whole (a temp folder renamed)."""
    from .report.render import _replace_dir
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _replace_dir(out, {"model.safetensors": weights, "audit.json": (json.dumps(audit, indent=1) + "\n").encode(),
                       "audit.html": html.encode()})


def run_unlearn(model: str, weights, data, out, method: str, forget_groups: str | None = None, forget_file=None,
                model_kwargs=None, size: int | None = None, pixel_scale: float = 1.0, normalise: str = "none",
                hp=None, hp_preset: str | None = None, reading: str | None = None, seed: int = 0,
                device: str = "auto", train_seconds: float | None = None, n_reference: int = 0, recipe=None,
                cache=None, progress=None, command: str | None = None, workers: int | None = None,
                executor: str = "local", address: str | None = None) -> tuple[Path, dict]:
    """The CLI's work: every input checked before any model runs, then the run, the audit, the folder."""
    from .audit import loss_figure, page
    from .store import Store, default_cache
    from .training import check_keep_best, resolve_device
    out = Path(out)
    check_out(out)
    check_train_seconds(train_seconds)
    dev = resolve_device(device)
    rec = None
    if n_reference or recipe is not None:
        if n_reference < 2:
            raise UserError(f"--reference {n_reference} is too few: the metric compares populations of at least 2 "
                            f"models (the challenge: 512), and --recipe is read only with --reference N.")
        if recipe is None:
            raise UserError("--reference N retrains N models from scratch: pass --recipe RECIPE.toml with the "
                            "[recipe] the original was trained with (epochs, lr, weight_decay, batch_size, ...).")
        rec = read_recipe(recipe)
    kwargs = parse_kwargs(model_kwargs)
    factory, model_file = load_factory(model)
    original = build(factory, kwargs, model)
    state = read_weights(weights)
    check_fit(original, state, weights, model)
    original.load_state_dict(state)
    original.train()                     # as run's jobs build it: a fresh module, then its weights
    man = read_manifest(data)
    groups, forget_rec = forget_list(forget_groups, forget_file)
    meth, pop = resolve_method(method, hp, hp_preset, reading, cache)
    splits, data_rec = load_data(man, groups, seed, size, pixel_scale, normalise)
    num_classes = _probe(original, splits, "cpu")
    _check_labels(splits, num_classes)
    splits.num_classes = num_classes
    if rec is not None:
        check_keep_best(rec[0], splits.val, rec[0].keep_best_from_epoch)
    model_bytes = model_file.read_bytes()
    weights_in = state_bytes(state)
    ident = {"model": {"file_sha256": sha256(model_bytes), "factory": model.rpartition(":")[2], "kwargs": kwargs},
             "weights_sha256": sha256(weights_in)}
    # the model by its file, so spawned workers and Ray tasks build it too (models.registry.user_model)
    name = f"file:{model_file.resolve()}:{model.rpartition(':')[2]}"
    from .models.registry import MODELS
    MODELS[name] = lambda in_shape, num_classes, **kw: build(factory, kw, model)   # here: the factory already read
    try:
        preset = _preset(name, kwargs, rec[0] if rec else None, splits.key)
        dsplits, original = splits.to(dev), original.to(dev)
        res = apply(original, dsplits, meth, pop, seed, dev, preset, progress)
        cert = ref_pops = None
        if rec is not None:
            store = Store(cache or default_cache())
            state = {k: v.cpu() for k, v in original.state_dict().items()}
            got = reference(state, dsplits, preset, pop, n_reference, seed, dev, store, ident, progress,
                            workers=workers or 1, executor=executor, address=address)
            ref_pops = got["populations"]
            cert = cached_certificate(store, ref_pops, pop.name, seed)
            # member 0 of the population is the run written to DIR (same seed, same code): recorded, not assumed
            cert["written_run_is_member_0"] = bool(np.array_equal(ref_pops[pop.name]["conf"][0],
                                                                  res["after"]["conf"]))
            cert.update(recipe=asdict(rec[0]), recipe_file=str(recipe), recipe_sha256=rec[2], cache=str(store.root),
                        models_computed=got["computed"], models_from_cache=got["cached"])
    finally:
        MODELS.pop(name, None)
    weights_out = state_bytes(res["model"])
    prep = data_rec.pop("preprocessing")
    provenance = {
        "weights_in": {"file": str(weights), "file_sha256": sha256(Path(weights).read_bytes()),
                       "sha256": ident["weights_sha256"]},
        "weights_out": {"file": "model.safetensors", "sha256": sha256(weights_out)},
        "model": {"file": str(model_file), **ident["model"], "classes": num_classes},
        "data": data_rec, "forget": forget_rec,
        "method": {"name": pop.name, "spec": str(method), "reading": reading or default_reading(),
                   "hp_preset": hp_preset, "hparams": pop.hparams, "code": pop.code},
        "seed": seed, "device": str(dev), "preprocessing": prep, "versions": versions(),
        "command": command}
    audit = build_audit(res, pop, splits, seed, dev, train_seconds, provenance, cert)
    fig = loss_figure(res["before"], res["after"], ref_pops[REF_ROW] if ref_pops else None)
    write_out(out, weights_out, audit, page(audit, fig))
    return out, audit


# --- from Python ----------------------------------------------------------------------------------------------
def unlearn(model: nn.Module, retain, forget, test=None, method="kookmin", *, val=None, seed: int = 0,
            device: str = "auto", reading: str | None = None, train_seconds: float | None = None, cache=None,
            **hp) -> tuple[nn.Module, dict]:
    """Apply `method` (a registered name, "path/to/file.py[:function]" or a function fn(net, retain_loader,
    forget_loader, val_loader), Kaggle or starting-kit style) to a copy of `model`, with `hp` overriding its
    hyperparameters; return (the unlearned model, the audit dict `obliviate unlearn` writes to audit.json).

    retain, forget, test, val: torch Datasets or DataLoaders yielding (inputs, targets) or the Kaggle dict batches
    (image, age_group, person_id); read once, in order. val defaults to 10% of retain drawn with `seed`; without
    test, the audit has no test accuracy and no membership-inference check. `model` itself is not changed."""
    import torch
    from torch import nn
    from .training import resolve_device
    if not isinstance(model, nn.Module):
        raise UserError(f"model is a {type(model).__name__}, not a torch nn.Module: pass the trained network.")
    check_train_seconds(train_seconds)
    dev = resolve_device(device)
    home = next((p.device for p in model.parameters()), torch.device("cpu"))
    meth, pop = resolve_method(method, hp, None, reading, cache)
    splits, data_rec = splits_from_data(retain, forget, val, test, seed)
    original = copy.deepcopy(model).cpu().train()     # as run's jobs build it: a fresh module, then its weights
    num_classes = _probe(original, splits, "cpu")
    _check_labels(splits, num_classes)
    splits.num_classes = num_classes
    weights_in = state_bytes(original)
    with registered(lambda **kw: copy.deepcopy(original), "python") as name:
        preset = _preset(name, {}, None, "python")
        dsplits, original = splits.to(dev), original.to(dev)
        res = apply(original, dsplits, meth, pop, seed, dev, preset)
    provenance = {"weights_in": {"sha256": sha256(weights_in)},
                  "weights_out": {"sha256": sha256(state_bytes(res["model"]))}, "data": data_rec,
                  "method": {"name": pop.name, "reading": reading or default_reading(), "hparams": pop.hparams,
                             "code": pop.code},
                  "seed": seed, "device": str(dev), "versions": versions()}
    audit = build_audit(res, pop, splits, seed, dev, train_seconds, provenance)
    return res["model"].to(home), audit
