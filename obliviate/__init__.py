"""obliviate: the NeurIPS 2023 Machine Unlearning Challenge, runnable anywhere."""
__version__ = "0.1.0"
