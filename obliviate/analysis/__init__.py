"""Analyses of a finished run that compute (the report only reads): `diagnose` (regime and projection to 512),
`significance` (`compare` of one run: intervals, P(beats); `nstudy`), and `synthetic` (a run directory drawn
from distributions and scored as the runner scores, for tests and demos)."""
