"""Data: sources (one module each, registered by name), splits and forget sets."""
from .base import RawData, TensorLoader, TensorSet
from .registry import SOURCES, load_source, register_source
from .splits import Splits, class_weights, make_splits, parse_forget, pseudo_identities
from . import digits  # noqa: F401  (registers the source)

for _mod in ("fashion", "cifar10", "manifest"):   # sources written alongside; import those that exist
    try:
        __import__(f"{__name__}.{_mod}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{_mod}":
            raise
