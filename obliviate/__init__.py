"""obliviate: the NeurIPS 2023 Machine Unlearning Challenge, runnable anywhere."""
from .version import __version__  # noqa: F401

from .api import run  # noqa: E402,F401  obliviate.run(preset=..., methods=[fn, "finetune"]) -> leaderboard dict
from .unlearn import unlearn  # noqa: E402,F401  obliviate.unlearn(model, retain, forget, test) -> (model, audit)
