"""Unlearning methods by name.

A method is `unlearn(model, retain, forget, val, *, generator, **hparams) -> model`: `retain`, `forget`
and `val` are challenge-style loaders (iterating yields `(inputs, targets)` batches, batch 64, shuffled
by the loader's own generator), `generator` is a torch.Generator seeded for this run, and every
hyperparameter is a keyword argument whose default (the published value) sits in the signature.
Register with `@register_method("name")`; a module in obliviate/methods/ is picked up on import. docs/methods.md
describes every registered method, its defaults' origin and its sources.
"""
from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..usercode import import_user_file


@dataclass(frozen=True)
class Method:
    name: str
    fn: object
    defaults: dict
    doc: str
    aliases: tuple = ()           # technique names that resolve to this method (one cache key, one row)
    place: int | None = None      # the challenge's prize place (1-8) for the eight winners, else None
    team: str = ""                # the winning team, as the organisers' slides and its write-up name it
    reported: str = ""            # the score the team's write-up reports (docs/challenge.md, "The winners")
    writeup: str = ""             # Kaggle discussion id of the team's write-up
    degenerate: object = None     # (model, hp) -> str | None: what the method becomes on a small model
    user: object = None           # a user's own function (file or Python callable): runs under the challenge's
                                  # harness semantics (protocol.unlearn_once); its cache key is its source (codehash)
    note: str = ""                # a user file that ran by the notebook rule (usercode): one line for the run
    notebook: tuple = ()          # ((hyperparameter, value), ...): the team's Kaggle notebook as ported by
                                  # xcadet/deepunlearn, where it differs from the write-up's values in the
                                  # signature (`--reading notebook`; docs/methods.md, "Two readings")

    def __call__(self, model, retain, forget, val, *, generator, **hp):
        return self.fn(model, retain, forget, val, generator=generator, **{**self.defaults, **hp})

    def degenerate_on(self, model, hp: dict | None = None) -> str | None:
        """One sentence when this method, run on `model` with these hyperparameters (defaults otherwise),
        is not what its authors ran (e.g. a layer-choosing winner on a 2-layer net); None when it is."""
        return self.degenerate(model, {**self.defaults, **(hp or {})}) if self.degenerate else None

    def resolve(self, overrides: dict) -> dict:
        """Defaults with `overrides` applied, each coerced to the default's type; unknown names refused."""
        hp = dict(self.defaults)
        for k, v in overrides.items():
            if k not in hp:
                raise UserError(f"method {self.name!r} has no hyperparameter {k!r}: it has "
                                f"{', '.join(hp) or 'none'}.")
            hp[k] = _coerce(self.name, k, v, hp[k])
        validate_hparams(self.name, hp)
        return hp

    def reading(self, which: str) -> dict:
        """The hyperparameters `which` reading sets: {} for "write-up" (the signature's defaults hold the
        write-up's values), the port's values for "notebook" ({} where the two agree)."""
        if which not in READINGS:
            from ..suggest import nearest
            hint = nearest(which, READINGS)
            raise UserError(f"unknown reading {which!r}" + (f" (did you mean {hint!r}?)" if hint else "") +
                            ": use " + " or ".join(repr(r) for r in READINGS) + ".")
        return dict(self.notebook) if which == "notebook" else {}


# How a winner's method is read where its write-up and its notebook disagree (docs/methods.md, "Two readings"):
# "notebook" is the code Kaggle ran and scored, as xcadet/deepunlearn ported it; "write-up" is the team's own
# description, whose values the signatures hold. On `w16` at N = 128 the two readings of `kookmin` and
# `seif` scored 0.0025 vs 0.085 and 0.0005 vs 0.106 (docs/studies/posthoc-port-readings.md).
READINGS = ("write-up", "notebook")

METHODS: dict[str, Method] = {}     # canonical name -> Method (one entry per method: aliases are not keys)
ALIASES: dict[str, str] = {}        # alias -> canonical name


def register_method(name: str, *, aliases=(), place=None, team="", reported="", writeup="", degenerate=None,
                    notebook=None):
    """Register `fn` as method `name`. Winners of the challenge carry their prize `place`, `team`, `reported`
    score and `writeup` id; `aliases` (technique names) resolve to the same Method; `degenerate(model, hp)`
    says in one sentence what the method becomes on a model it was not designed for; `notebook`
    ({hyperparameter: value}) is the port's reading where it differs from the write-up's defaults."""
    def deco(fn):
        sig = inspect.signature(fn)
        defaults = {k: p.default for k, p in sig.parameters.items()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY and k != "generator"
                    and p.default is not inspect.Parameter.empty}
        METHODS[name] = Method(name, fn, defaults, inspect.getdoc(fn) or inspect.getdoc(inspect.getmodule(fn)) or "",
                               tuple(aliases), place, team, reported, writeup, degenerate,
                               notebook=tuple((notebook or {}).items()))
        bad = [k for k in (notebook or {}) if k not in defaults]
        if bad:
            raise TypeError(f"method {name!r}: notebook reading names {bad[0]!r}, which is not a hyperparameter")
        for a in aliases:
            ALIASES[a] = name
        return fn
    return deco


def canonical_name(name: str) -> str:
    """The registered name behind `name` (an alias such as `conv_transpose` -> `toshi_k`); else `name`."""
    discover()
    return ALIASES.get(name, name)


def winners() -> list:
    """The challenge's eight winners, by prize place."""
    discover()
    return [m.name for m in sorted((m for m in METHODS.values() if m.place), key=lambda m: m.place)]


NOMINAL_INPUT = (3, 32, 32)     # the challenge's images; layer structure, not input size, decides the notes


def small_model_notes(models=None) -> dict:
    """{method: {model: note}} for every registered method that degenerates on a registered model (each model
    built with its defaults on a 3x32x32, 10-class input): what `obliviate methods` shows."""
    from ..models import MODELS, build_model
    discover()
    built = {}
    for m in models or sorted(MODELS):
        try:
            built[m] = build_model(m, NOMINAL_INPUT, 10, seed=0)
        except (UserError, TypeError, ValueError, RuntimeError):   # a model that takes no 3x32x32 input: no note
            continue
    notes = {}
    for name, method in METHODS.items():
        for mname, net in built.items():
            note = method.degenerate_on(net)
            if note:
                notes.setdefault(name, {})[mname] = note
    return notes


KAGGLE_FUNCTION = "unlearning"     # the function the challenge's notebook calls: a user file's default


USER_FILES = (".py", ".ipynb")       # a user's method: a Python file, or a notebook (obliviate/notebook.py)


def user_file_spec(name: str) -> str | None:
    """`path/to/file.py:function` for a user's method file or notebook (`path/to/file.py` or `.ipynb` alone names
    its `unlearning`, as on Kaggle); None when `name` is not a file spec."""
    if any(f"{ext}:" in name for ext in USER_FILES):
        return name
    if name.endswith(USER_FILES):
        return f"{name}:{KAGGLE_FUNCTION}"
    return None


def _unknown_method(name: str) -> UserError:
    from ..suggest import nearest
    hint = nearest(name, sorted(METHODS) + sorted(ALIASES) + ["all", "winners"])
    return UserError(f"unknown method {name!r}" + (f" (did you mean {hint!r}?)" if hint else "") +
                     ": run `obliviate methods` to list them, use `all` or `winners`, or pass path/to/file.py or "
                     f"a notebook.ipynb (its `{KAGGLE_FUNCTION}` function) or path/to/file.py:function for your own.")


def expand_method_names(names) -> list:
    """`--method` values -> canonical method names, in order, each once: "all" (every registered method),
    "winners" (the eight winners by place, then `finetune`, the official baseline), comma lists, aliases;
    a user file passes through as `path.py:function` (`path.py` alone: `path.py:unlearning`). An unknown name is
    refused in one sentence that names the nearest valid one."""
    discover()
    out = []
    for entry in names:
        if any(f"{ext}:" in entry for ext in USER_FILES) or entry.startswith(CALLABLE_PREFIX):  # a user's file or function
            out.append(entry)
            continue
        for n in (x.strip() for x in entry.split(",")):
            if not n:
                continue
            if n == "all":
                out += sorted(METHODS)
            elif n == "winners":
                out += winners() + ["finetune"]
            elif canonical_name(n) in METHODS:
                out.append(canonical_name(n))
            elif user_file_spec(n):
                out.append(user_file_spec(n))
            else:
                raise _unknown_method(n)
    return list(dict.fromkeys(out))


def _coerce(method, key, value, default):
    if not isinstance(value, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "1")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, (tuple, list)):
            return type(default)(float(v) for v in value.split(","))
    except ValueError:
        raise UserError(f"hyperparameter {key}={value!r} of method {method!r} is not a valid "
                        f"{type(default).__name__} (default {default!r}).") from None
    return value


# Values a method cannot use, by hyperparameter name: the first pattern that matches the name decides (checked
# on every element of a tuple value). Every registered method's defaults pass (tests/test_harness.py).
HP_RULES = [  # (name regex, test, what it must be)
    (r"batch_size$",                   lambda v: v >= 1 and v == int(v),  "a whole number >= 1"),
    (r"(epochs|steps|iters)$",         lambda v: v >= 0,                  "a number >= 0"),  # whole when the
                                       # default is an int (_coerce); sebastian's epochs=3.2 is fractional
    (r"(^|_)lrs?$|^lr_(?!decay)|learning_rate$", lambda v: v > 0,         "a learning rate > 0"),
    (r"weight_decay$|std$|eta_min$",   lambda v: v >= 0,                  "a number >= 0"),
    (r"momentum$",                     lambda v: 0 <= v < 1,              "in [0, 1)"),
    (r"(ratio|fraction|frac|prob|probability|quantile|rate|amount|decay)$",
                                       lambda v: 0 <= v <= 1,             "in [0, 1]"),
    (r"temperature$|^t_max$",          lambda v: v > 0,                   "a number > 0"),
]


def validate_hparams(method_name: str, hp: dict) -> None:
    """Refuse, in one sentence, a hyperparameter value the method cannot use (HP_RULES), before any work."""
    for k, value in hp.items():
        rule = next((r for r in HP_RULES if re.search(r[0], k)), None)
        if rule is None or isinstance(value, (str, bool)) or value is None:
            continue
        for v in value if isinstance(value, (tuple, list)) else (value,):
            try:
                ok = bool(math.isfinite(v) and rule[1](v))
            except TypeError:
                ok = True          # not a number: _coerce already vouched for its type
            if not ok:
                raise UserError(f"hyperparameter {k}={value!r} of method {method_name!r} must be {rule[2]}: "
                                f"pass another value with --hp {k}=VALUE.")


def discover() -> None:
    """Import every module of this package, so a method added in a new file registers itself."""
    pkg = Path(__file__).parent
    for info in pkgutil.iter_modules([str(pkg)]):
        if info.name not in ("registry", "__init__", "common"):
            importlib.import_module(f"{__package__}.{info.name}")


def load_user_method(spec: str) -> Method:
    """`path/to/file.py:function`: a Kaggle-style `unlearning(net, retain_loader, forget_loader, val_loader)`.
    A file without that function is refused with the list of the functions it does define."""
    path, _, fname = spec.rpartition(":")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"method file {path!r} does not exist: check the path, and pass --method path/to/file.py "
                        f"(its `{KAGGLE_FUNCTION}` function) or path/to/file.py:function.")
    module = import_user_file(p, "method", f"obliviate_user_{p.stem}", fname)
    fn = getattr(module, fname, None)
    if not callable(fn):
        raise _no_function(path, fname, module)

    return _user_method(f"{p.stem}:{fname}", fn, getattr(module, "__obliviate_note__", ""))


def _no_function(path: str, fname: str, module) -> UserError:
    """The file lacks `fname`: name the functions it does define, and the nearest to `fname` if one is close."""
    from ..suggest import nearest
    defined = [k for k, v in vars(module).items()
               if inspect.isfunction(v) and v.__module__ == module.__name__]
    hint = nearest(fname, defined)
    if not defined:
        return UserError(f"method file {path!r} defines no function: define "
                         f"{fname}(net, retain_loader, forget_loader, val_loader) in it.")
    return UserError(f"method file {path!r} has no function {fname!r}" +
                     (f" (did you mean {hint!r}?)" if hint else "") +
                     f": it defines {', '.join(defined)}; pass --method {path}:NAME with one of them, or define "
                     f"{fname}(net, retain_loader, forget_loader, val_loader) in it.")


def _user_method(name: str, fn, note: str = "") -> Method:
    def unlearn(model, retain, forget, val, *, generator):
        return fn(model, retain, forget, val)
    return Method(name, unlearn, {}, inspect.getdoc(fn) or "", user=fn, note=note)


CALLABLE_PREFIX = "python:"
CALLABLES: dict[str, Method] = {}   # "python:<name>#<source hash>" -> a function passed to obliviate.run in THIS
                                    # process (a notebook's function cannot be imported by a spawned worker)


def register_callable(fn) -> str:
    """A Python function `fn(net, retain_loader, forget_loader, val_loader)` as a method of this process;
    returns the name that stands for it in RunConfig.methods (keyed by its source: an edit is a new name)."""
    from ..codehash import code_fingerprint
    name = getattr(fn, "__name__", type(fn).__name__)
    method = _user_method(name, fn)
    key = f"{CALLABLE_PREFIX}{name}#{code_fingerprint(method)}"
    CALLABLES[key] = method
    return key


def get_method(name) -> Method:
    """A registered name or alias, `path/to/file.py:function` (`path/to/file.py`: its `unlearning`), a Python
    function, or a Method."""
    if isinstance(name, Method):
        return name
    if callable(name):
        return CALLABLES[register_callable(name)]
    if name.startswith(CALLABLE_PREFIX):
        if name not in CALLABLES:
            raise UserError(f"method {name!r} is a Python function of another process: functions run in the "
                            f"process that passed them; use a file (--method path/to/file.py:function) to run "
                            f"in workers or on Ray.")
        return CALLABLES[name]
    if user_file_spec(name):
        return load_user_method(user_file_spec(name))
    discover()
    name = ALIASES.get(name, name)
    if name not in METHODS:
        raise _unknown_method(name)
    return METHODS[name]
