"""The nearest valid name to a near-miss (`--method finetun` -> `finetune`), for error messages."""
from __future__ import annotations

import difflib


def nearest(name: str, choices) -> str | None:
    """The closest of `choices` to `name` (difflib's ratio >= 0.6), or None."""
    got = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return got[0] if got else None
