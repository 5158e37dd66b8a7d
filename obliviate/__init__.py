"""obliviate: the NeurIPS 2023 Machine Unlearning Challenge, runnable anywhere."""
__version__ = "0.1.0"

from .api import run  # noqa: E402,F401  obliviate.run(preset=..., methods=[fn, "finetune"]) -> leaderboard dict
