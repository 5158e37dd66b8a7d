#!/usr/bin/env bash
# The post-hoc analysis of the port's readings of seif and kookmin (docs/studies/posthoc-port-readings.md): each
# variant beside finetune on `w16`, from its held-out test's frozen commit and cache, so the original, the retrained
# population and finetune's row are the committed ones and only the variant's unlearning runs are new. (On `w16`,
# not `challenge`: the `challenge` test's original was trained on an AVX2 machine, and AVX-512 kernels train another
# from the same seed, which check_original.py refuses to mix.)
#   bash studies/heldout/variants.sh N            # N = 128: the held-out test's size
# First the original is checked (or retrained) as run.sh does (candidate.sh, check_original.py). `w16`'s cache has
# left the tree with its completed test: restore it first (studies/heldout/README.md).
set -euo pipefail
N=${1:?population size}
CANDIDATE=w16
source "$(dirname "$0")/candidate.sh"
enter_frozen_worktree "$N"
run() {   # name, method, hp...
  local name=$1 method=$2; shift 2
  local hps=(); for h in "$@"; do hps+=(--hp "$method.$h"); done
  "$PY" -m obliviate.cli run --preset "$PRESET" --method finetune --method "$method" \
    "${hps[@]}" -n "$N" --no-bounds --workers "${WORKERS:-2}" --no-report -q \
    --out "$HERE/runs/w16-$name-n$N"
  current_names "$HERE/runs/w16-$name-n$N"
}
run seif-balanced seif class_weights=balanced
run seif-port seif noise_layers=stem class_weights=balanced weighting=batch
run kookmin-per-layer kookmin threshold=per_layer
