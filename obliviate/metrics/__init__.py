"""Metrics: the challenge's official forgetting quality (challenge.py)."""

from .challenge import best_attack, challenge_score, example_epsilons, forgetting_quality, logit_scaled_confidence, points
