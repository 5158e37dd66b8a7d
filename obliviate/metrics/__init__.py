"""Metrics: the challenge's official forgetting quality (challenge.py: the API; thresholds.py: steps 2-5 for one
example; search.py: the exact fast search; docs/metric.md), intervals and the N-study (resample.py)."""

from .challenge import best_attack, challenge_score, example_epsilons, forgetting_quality, logit_scaled_confidence, points
