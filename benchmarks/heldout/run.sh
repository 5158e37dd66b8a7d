#!/usr/bin/env bash
# The regime study's held-out test (docs/regime.md): the eight winners + finetune on the `challenge` preset,
# run from a frozen commit (the cache keys cover the training and method code: a later edit on main would
# retrain everything) with its chunk cache committed here, so the run resumes across sessions.
#   bash benchmarks/heldout/run.sh N        # N = 32 first (a complete preview), then 128 (its chunks extend N = 32's)
set -euo pipefail
FROZEN=13af35256564d62d05f6ebd1a1a167c445a891ea
N=${1:?population size}
HERE=$(cd "$(dirname "$0")" && pwd)
MAIN=$(cd "$HERE/../.." && pwd)
WT=${HELDOUT_WORKTREE:-/work/heldout-wt}
[ -d "$WT" ] || git -C "$MAIN" worktree add -f "$WT" "$FROZEN"
[ "$(git -C "$WT" rev-parse HEAD)" = "$FROZEN" ] || { echo "$WT is not at $FROZEN" >&2; exit 1; }
cd "$WT"
PYTHONPATH="$WT" OBLIVIATE_CACHE="$HERE/cache" "$MAIN/.venv/bin/python" -m obliviate.cli run \
  --preset challenge --method winners -n "$N" --no-bounds --workers 2 --no-report \
  --out "$HERE/runs/challenge-winners-n$N"
