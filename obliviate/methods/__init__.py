"""The method zoo: one module per unlearning method, each registered by name (see registry.py)."""
from .registry import (ALIASES, METHODS, Method, canonical_name, discover, expand_method_names, get_method,
                       load_user_method, register_method, winners)

discover()
