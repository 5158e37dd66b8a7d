"""The held-out tests of the regime study's choice and their post-hoc analyses (docs/studies/heldout-*.md,
posthoc-*.md)."""
