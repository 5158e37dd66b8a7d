"""Unlearning methods by name.

A method is `unlearn(model, retain, forget, val, *, generator, **hparams) -> model`: `retain`, `forget`
and `val` are challenge-style loaders (iterating yields `(inputs, targets)` batches, batch 64, shuffled
by the loader's own generator), `generator` is a torch.Generator seeded for this run, and every
hyperparameter is a keyword argument whose default (the published value) sits in the signature.
Register with `@register_method("name")`; a module in obliviate/methods/ is picked up on import.
"""
from __future__ import annotations

import importlib.util
import inspect
import pkgutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError


@dataclass(frozen=True)
class Method:
    name: str
    fn: object
    defaults: dict
    doc: str

    def __call__(self, model, retain, forget, val, *, generator, **hp):
        return self.fn(model, retain, forget, val, generator=generator, **{**self.defaults, **hp})

    def resolve(self, overrides: dict) -> dict:
        """Defaults with `overrides` applied, each coerced to the default's type; unknown names refused."""
        hp = dict(self.defaults)
        for k, v in overrides.items():
            if k not in hp:
                raise UserError(f"method {self.name!r} has no hyperparameter {k!r}: it has "
                                f"{', '.join(hp) or 'none'}.")
            hp[k] = _coerce(self.name, k, v, hp[k])
        return hp


METHODS: dict[str, Method] = {}


def register_method(name: str):
    def deco(fn):
        sig = inspect.signature(fn)
        defaults = {k: p.default for k, p in sig.parameters.items()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY and k != "generator"
                    and p.default is not inspect.Parameter.empty}
        METHODS[name] = Method(name, fn, defaults, inspect.getdoc(fn) or inspect.getdoc(inspect.getmodule(fn)) or "")
        return fn
    return deco


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


def discover() -> None:
    """Import every module of this package, so a method added in a new file registers itself."""
    pkg = Path(__file__).parent
    for info in pkgutil.iter_modules([str(pkg)]):
        if info.name not in ("registry", "__init__", "common"):
            importlib.import_module(f"{__package__}.{info.name}")


def load_user_method(spec: str) -> Method:
    """`path/to/file.py:function`: a Kaggle-style `unlearning(net, retain_loader, forget_loader, val_loader)`."""
    path, _, fname = spec.rpartition(":")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"method file {path!r} does not exist: pass --method path/to/file.py:function.")
    try:
        mod_spec = importlib.util.spec_from_file_location(f"obliviate_user_{p.stem}", p)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    except Exception as e:  # any import-time failure of user code
        raise UserError(f"method file {path!r} failed to import ({type(e).__name__}: {e}): fix the file "
                        f"and run again.") from None
    fn = getattr(module, fname, None)
    if not callable(fn):
        raise UserError(f"method file {path!r} has no function {fname!r}: define "
                        f"{fname}(net, retain_loader, forget_loader, val_loader) -> net.")

    def unlearn(model, retain, forget, val, *, generator):
        return fn(model, retain, forget, val)
    return Method(f"{p.stem}:{fname}", unlearn, {}, inspect.getdoc(fn) or "")


def get_method(name: str) -> Method:
    if ".py:" in name:
        return load_user_method(name)
    discover()
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}: run `obliviate methods` to list them, or pass "
                        f"path/to/file.py:function for your own.")
    return METHODS[name]
