"""The calibration study (docs/studies/calibration.md)."""
