"""The regime study (docs/studies/regime.md)."""
