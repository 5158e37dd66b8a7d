"""Data sources by name: `@register_source("name")` on a function `(path=None, **options) -> RawData`."""
from ..errors import UserError

SOURCES: dict = {}


def register_source(name):
    def deco(fn):
        SOURCES[name] = fn
        return fn
    return deco


def load_source(name: str, path=None, **options):
    if name not in SOURCES:
        raise UserError(f"unknown data source {name!r}: choose one of {', '.join(sorted(SOURCES))}.")
    return SOURCES[name](path=path, **options)
