"""The project's studies (calibration, regime, held-out tests): scripts, tables and evidence, apart from the library.
Run from the repository root as modules, e.g. `python -m studies.heldout.heldout --grid` (docs/studies/README.md)."""
