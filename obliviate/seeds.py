"""Every model's seed: `member_seed(run seed, seed label, member index)`.

The seed labels are frozen: a population's display name may change, its seed label may not, or every cached
model and every shipped kit would stop matching the models a run trains (obliviate/kit.py identifies a kit's
models by these seeds).
"""
from __future__ import annotations

import hashlib

import numpy as np

REFERENCE = "oracle"        # the reference population: every row is scored against it (shipped in kits)
CEILING = "oracle-b"        # a second retrained population: the ceiling
WITH_FORGET = "original"    # models trained on the full training set, forget set included
UNLEARN = "unlearn"         # unlearning runs of every method (from the one original)

# The resampled intervals and projections draw from a generator seeded by the row's draw label, frozen the same
# way: the base rows' display names (board.REFERENCE, CEILING, WITH_FORGET) map to the names the draws were fixed
# under, so a renamed row keeps its intervals bit for bit. A method's draw label is its name.
DRAW_LABELS = {"reference": "retrained", "ceiling": "oracle", "with-forget-set": "original"}


def draw_label(name: str) -> str:
    return DRAW_LABELS.get(name, name)


def member_seed(seed: int, label: str, i: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{label}/{i}".encode()).digest()[:7], "little")


def seeded_rng(*parts) -> np.random.Generator:
    """A NumPy generator seeded by a label (the splits' and unlearn's draws: one stream per label)."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little"))
