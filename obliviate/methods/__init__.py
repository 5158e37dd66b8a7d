"""The method zoo: one module per unlearning method, each registered by name (see registry.py)."""
from .registry import METHODS, Method, discover, get_method, load_user_method, register_method

discover()
