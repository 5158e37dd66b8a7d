"""Models by name: `@register_model("name")` on a builder `(in_shape, num_classes, **kwargs) -> nn.Module`."""
import torch

from ..errors import UserError

MODELS: dict = {}


def register_model(name):
    def deco(fn):
        MODELS[name] = fn
        return fn
    return deco


def build_model(name: str, in_shape, num_classes: int, seed: int | None = None, **kwargs) -> torch.nn.Module:
    """Build a registered model; with `seed`, its initialisation is a pure function of that seed."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(sorted(MODELS))}.")
    if seed is None:
        return MODELS[name](tuple(in_shape), num_classes, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](tuple(in_shape), num_classes, **kwargs)
