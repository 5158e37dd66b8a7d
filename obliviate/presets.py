"""Benchmarks as records: data source, model and its kwargs, training recipe, forget spec, size limits, default N.

A preset is a `Preset` record. The built-in ones are TOML files in `obliviate/preset_records/` (one per
preset, each value with its evidence in a comment); a user's own TOML file works the same way:
`obliviate run --preset my.toml`. A record is validated as it is read: an unknown key, a missing field, a
value of the wrong type or range, or bad TOML syntax is refused with one sentence naming the file and the
key. `Preset.to_dict()` is what every run stores in its leaderboard.json; `to_toml()` writes a record
back out (load -> to_toml -> load gives the same record).

The challenge recipe (docs/challenge.md, "The original and retrained models"): 30 epochs, batch 64,
class-weighted cross-entropy, Adam lr 1e-4, weight decay 5e-3, cosine schedule. The small presets keep its
shape (Adam, weighted CE, cosine, batch 64) but use a larger learning rate, since a 64-unit MLP on 1,437
digits barely moves at 1e-4 in 30 epochs.

A record, every key but `source` and `model` optional (defaults below):

    name = "fashion"               # default: the file's stem
    source = "fashion"             # obliviate.data source
    model = "cnn"                  # obliviate.models model
    forget = "groups:15"           # groups:K | groups:K@common | groups:K@rare | random:FRACTION | class:C
    n_models = 16                  # default population size (the challenge: 512)
    group_size = 8                 # pseudo-identity size for sources without identities
    max_train = 4000               # subsample the training set (omit: all of it)
    imbalance = 1.0                # largest / smallest class size after subsampling classes (1: as the data is)
    pixel_scale = 1.0              # inputs' magnitude: standardised x this (255: the challenge's 0-255 images)
    frames = 16                    # identities of near-duplicate frames: 16 augmentations of each base image,
                                   # split by image (omit: the source's own images and split; data/frames.py)
    needs_path = false             # the user must pass --data PATH
    threads = 1                    # torch threads per process, or "auto" (PyTorch's default)
    [recipe]                       # epochs, batch_size, lr, weight_decay, class_weighted
    [model_kwargs]                 # passed to the model builder
    [source_kwargs]                # passed to the data source (e.g. size = 14)
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import UserError
from .suggest import nearest

RECORDS = Path(__file__).with_name("preset_records")     # the built-in presets, one TOML file each


@dataclass(frozen=True)
class Recipe:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 5e-3
    class_weighted: bool = True
    keep_best_from_epoch: int | None = None   # the organisers kept each model's best-validation checkpoint (the
                                              # retrained ones from epoch 20 of 30); None: the last epoch


@dataclass(frozen=True)
class Preset:
    name: str
    source: str                       # data source (obliviate.data)
    model: str                        # model (obliviate.models)
    recipe: Recipe
    forget: str = "groups:4"          # default forget set
    n_models: int = 64                # default population size (the challenge: 512)
    model_kwargs: dict = field(default_factory=dict)
    source_kwargs: dict = field(default_factory=dict)
    group_size: int = 8               # pseudo-identity size for sources without identities
    max_train: int | None = None      # subsample the training set (None: all of it)
    imbalance: float = 1.0            # class c keeps imbalance**(-(C-1-c)/(C-1)) of its examples (1: all)
    pixel_scale: float = 1.0          # standardised inputs times this (255: the challenge's 0-255 magnitude)
    frames: int | None = None         # identities of `frames` near-duplicate frames each, image-level split
                                      # (data/frames.py); None: the source's own images, split and identities
    needs_path: bool = False          # the user must pass --data PATH
    threads: int | None = 1           # torch threads per process: tiny models run fastest on one (measured:
                                      # a smoke MLP step ~1 ms on 1 thread, ~8x slower on 2 under load);
                                      # None = PyTorch's default (the CNN and ResNet-18 presets)

    def to_dict(self) -> dict:
        """The resolved record, JSON-ready (stored in every run's leaderboard.json)."""
        d = asdict(self)
        d["model_kwargs"], d["source_kwargs"] = _jsonable(d["model_kwargs"]), _jsonable(d["source_kwargs"])
        return d


    def to_toml(self) -> str:
        """The record as a TOML file that `load_preset` reads back into an equal record."""
        d = self.to_dict()
        lines = []
        for f in fields(self):
            v = d[f.name]
            if isinstance(v, dict) or v is None:             # tables go last; None is "key absent"
                continue
            lines.append(f"{f.name} = {_toml_value(v)}")
        if self.threads is None:
            lines.append('threads = "auto"')
        for table in ("recipe", "model_kwargs", "source_kwargs"):
            if d[table]:
                lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in d[table].items() if v is not None]
        return "\n".join(lines) + "\n"


def _jsonable(v):
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def _tupled(v):
    """TOML arrays -> tuples, so a record read from a file equals (and hashes like) one written in Python."""
    if isinstance(v, list):
        return tuple(_tupled(x) for x in v)
    if isinstance(v, dict):
        return {k: _tupled(x) for k, x in v.items()}
    return v


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")


# --- reading and validating a record ---------------------------------------------------------------------
def _int(lo):
    def check(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= lo
    check.want = f"an integer >= {lo}"
    return check


def _pos_float(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
_pos_float.want = "a positive number"


def _nonneg_float(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
_nonneg_float.want = "a number >= 0"


def _at_least_one(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 1
_at_least_one.want = "a number >= 1 (1: the data's own class sizes)"


def _bool(v):
    return isinstance(v, bool)
_bool.want = "true or false"


def _text(v):
    return isinstance(v, str) and v != ""
_text.want = "a non-empty string"


def _threads(v):
    return v == "auto" or _int(1)(v)
_threads.want = 'an integer >= 1 or "auto"'


def _table(v):
    return isinstance(v, dict)
_table.want = "a table ([name] section)"


TOP = {"name": _text, "source": _text, "model": _text, "forget": _text, "n_models": _int(2), "group_size": _int(1),
       "max_train": _int(1), "frames": _int(2), "imbalance": _at_least_one, "pixel_scale": _pos_float, "needs_path": _bool,
       "threads": _threads, "recipe": _table, "model_kwargs": _table, "source_kwargs": _table}
REQUIRED = ("source", "model")
RECIPE = {"epochs": _int(1), "batch_size": _int(1), "lr": _pos_float, "weight_decay": _nonneg_float,
          "class_weighted": _bool, "keep_best_from_epoch": _int(1)}


def _check(where: str, table: dict, spec: dict, prefix: str = "") -> None:
    for k, v in table.items():
        if k not in spec:
            hint = nearest(k, list(spec))
            raise UserError(f"{where}: unknown key '{prefix}{k}'" + (f" (did you mean '{prefix}{hint}'?)" if hint else "")
                            + f": use only {', '.join(spec)}.")
        if not spec[k](v):
            raise UserError(f"{where}: {prefix}{k} = {v!r} is not valid: it must be {spec[k].want}.")


def preset_from_dict(d: dict, where: str = "preset", default_name: str | None = None) -> Preset:
    """A validated Preset from a parsed record (a TOML file's contents); one UserError sentence if it is bad."""
    _check(where, d, TOP)
    missing = [k for k in (REQUIRED if "name" in d or default_name else ("name",) + REQUIRED) if k not in d]
    if missing:
        raise UserError(f"{where}: missing field {missing[0]!r}: every preset names at least its source and "
                        f"model (source = \"fashion\", model = \"cnn\").")
    _check(where, d.get("recipe", {}), RECIPE, "recipe.")
    from .data.splits import parse_forget
    try:
        parse_forget(d.get("forget", Preset.forget))
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    from .models import MODELS
    from .data import SOURCES
    if d["model"] not in MODELS:
        raise UserError(f"{where}: model = {d['model']!r} is not a registered model: use one of "
                        f"{', '.join(sorted(MODELS))}.")
    if d["source"] not in SOURCES:
        raise UserError(f"{where}: source = {d['source']!r} is not a registered data source: use one of "
                        f"{', '.join(sorted(SOURCES))}.")
    rec = dict(d.get("recipe", {}))
    for k in ("lr", "weight_decay"):
        if k in rec:
            rec[k] = float(rec[k])
    kw = {k: v for k, v in d.items() if k not in ("recipe", "model_kwargs", "source_kwargs", "threads")}
    for k in ("imbalance", "pixel_scale"):
        if k in kw:
            kw[k] = float(kw[k])
    kw.setdefault("name", default_name)
    if "threads" in d:
        kw["threads"] = None if d["threads"] == "auto" else d["threads"]
    return Preset(recipe=Recipe(**rec), model_kwargs=_tupled(d.get("model_kwargs", {})),
                  source_kwargs=_tupled(d.get("source_kwargs", {})), **kw)


def load_preset(path) -> Preset:
    """Read one TOML preset record (name defaults to the file's stem)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"preset file {path} cannot be read ({e.__class__.__name__}): check the path.") from None
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"preset file {path} is not valid TOML ({e}): fix the syntax.") from None
    return preset_from_dict(d, f"preset file {path}", default_name=path.stem)


def _builtins() -> dict:
    out = {}
    for f in sorted(RECORDS.glob("*.toml")):
        p = load_preset(f)
        out[p.name] = p
    return out


PRESETS = _builtins()


def get_preset(name_or_path) -> Preset:
    """A built-in preset by name, or a user's TOML record by path (anything ending in .toml or naming a file)."""
    s = str(name_or_path)
    if s in PRESETS:
        return PRESETS[s]
    if s.endswith(".toml") or "/" in s or Path(s).is_file():
        if not Path(s).is_file():
            raise UserError(f"preset file {s} does not exist: check the path, or use a built-in preset "
                            f"({', '.join(PRESETS)}).")
        return load_preset(s)
    from .suggest import nearest
    hint = nearest(s, PRESETS)
    raise UserError(f"unknown preset {s!r}" + (f" (did you mean {hint!r}?)" if hint else "") +
                    f": choose one of {', '.join(PRESETS)}, or pass a path to a .toml record.")
