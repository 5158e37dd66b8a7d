#!/usr/bin/env bash
# The regime study's held-out tests (docs/studies/heldout-*.md, posthoc-*.md): the eight winners + finetune on a
# candidate (studies/heldout/candidates.toml), run from its frozen commit (the cache keys cover the training and
# method code: a later edit on main would retrain everything) with its chunk cache committed here, so a run in
# progress resumes across sessions.
#   bash studies/heldout/run.sh N                        # `challenge`: N = 32 first (a preview), then 128
#   bash studies/heldout/run.sh N w16                    # the same test on `w16` (declared 2026-12-05)
#   WORKERS=1 bash studies/heldout/run.sh N w16          # one process (default 2); results do not depend on it
#   bash studies/heldout/run.sh N w16-notebook           # notebook readings, seed 1 (declared 2026-12-06)
#   bash studies/heldout/run.sh N w16-seed1-writeup      # post hoc: the same, write-up readings (declared 2026-12-07)
#   bash studies/heldout/run.sh N w16-seed0-notebook     # post hoc: w16, seed 0, notebook readings (2026-12-07)
#   bash studies/heldout/run.sh N challenge-notebook     # `challenge` with --reading notebook (declared 2026-12-07)
# A completed test's cache has left the tree: restore it first (studies/heldout/README.md), or the run retrains
# everything. The originals' weights (2.8 MB each) are not committed: a fresh clone retrains one (~4 min, one core)
# and the run goes on only if its tensors equal the original every committed chunk was unlearned from (measured for
# `challenge`: retrained at 13af352 on the AVX2 machine that ran it, max |difference| 0).
set -euo pipefail
N=${1:?population size}
CANDIDATE=${2:-challenge}
source "$(dirname "$0")/candidate.sh"
enter_frozen_worktree "$N"
"$PY" -m obliviate.cli run \
  --preset "$PRESET" --method winners -n "$N" --no-bounds --workers "${WORKERS:-2}" --no-report \
  --seed "$SEED" "${EXTRA[@]}" --out "$HERE/runs/$CANDIDATE-winners-n$N"
current_names "$HERE/runs/$CANDIDATE-winners-n$N"
