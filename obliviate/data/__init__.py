"""Data: sources (one module each, registered by name), splits and forget sets."""
from .base import RawData, TensorLoader, TensorSet
from .registry import SOURCES, load_source, register_source
from .splits import Splits, class_weights, make_splits, parse_forget, pseudo_identities
from . import digits, fashion, cifar10, manifest  # noqa: F401  (each registers its source, in this order)
