"""Models by name: `@register_model("name")` on a builder `(in_shape, num_classes, **kwargs) -> nn.Module`."""
from pathlib import Path

import torch

from ..errors import UserError
from ..usercode import import_user_file

MODELS: dict = {}


def register_model(name):
    def deco(fn):
        MODELS[name] = fn
        return fn
    return deco


def image_shape(model: str, in_shape) -> tuple:
    """(channels, height, width) of an image input, or one sentence saying this model needs one."""
    if len(in_shape) != 3:
        raise UserError(f"{model} needs image inputs (channels, height, width); got shape {tuple(in_shape)}: "
                        "use the mlp model for flat features.")
    return tuple(in_shape)


USER_MODEL = "file:"   # "file:/abs/path.py:factory": a user's model factory (obliviate unlearn), any process


def user_model(name: str):
    """The builder of a "file:PATH.py:FACTORY" model, imported on first use in this process (a spawned worker
    or a Ray task builds the user's model as the driver does): `factory(**kwargs)`, shapes unused."""
    if name not in MODELS:
        path, _, factory = name[len(USER_MODEL):].rpartition(":")
        fn = getattr(import_user_file(path, "model", f"obliviate_user_model_{Path(path).stem}"), factory)
        MODELS[name] = lambda in_shape, num_classes, **kw: fn(**kw)
    return MODELS[name]


def build_model(name: str, in_shape, num_classes: int, seed: int | None = None, **kwargs) -> torch.nn.Module:
    """Build a registered model; with `seed`, its initialisation is a pure function of that seed."""
    if name.startswith(USER_MODEL):
        user_model(name)
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(sorted(MODELS))}.")
    if seed is None:
        return MODELS[name](tuple(in_shape), num_classes, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](tuple(in_shape), num_classes, **kwargs)
