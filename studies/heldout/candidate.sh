# Sourced by run.sh and variants.sh with CANDIDATE set. Sets, from candidates.toml (through candidates.py): the
# candidate's frozen commit FROZEN, its original's digest ORIGINAL_DIGEST, PRESET, CACHE, SEED, the extra flags
# EXTRA, and HERE (this folder), MAIN (the repository), PY (its .venv's python; HELDOUT_PYTHON overrides it),
# WT (the frozen worktree: studies/heldout/.worktrees/<worktree>, ignored by git; HELDOUT_WORKTREE overrides it).
# Nothing else happens until the caller runs enter_frozen_worktree N.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MAIN=$(cd "$HERE/../.." && pwd)
PY=${HELDOUT_PYTHON:-$MAIN/.venv/bin/python}
_vars=$("$PY" "$HERE/candidates.py" "${CANDIDATE:?which candidate}") || exit 2
eval "$_vars"
WT=${HELDOUT_WORKTREE:-$HERE/.worktrees/$WORKTREE}

# The frozen worktree (created if missing) becomes the current folder with PYTHONPATH and OBLIVIATE_CACHE set, and
# check_original.py trains or reads the original and stops unless its digest is the recorded one.
current_names() {   # RUN_DIR: a frozen commit wrote the reference population as retrained.npz; today's reader
  local f="$1/populations/retrained.npz"   # (obliviate.report.folder) reads populations/reference.npz, the same arrays
  if [ -f "$f" ]; then mv "$f" "$1/populations/reference.npz"; fi
}
enter_frozen_worktree() {   # N
  [ -d "$WT" ] || git -C "$MAIN" worktree add -f "$WT" "$FROZEN"
  [ "$(git -C "$WT" rev-parse HEAD)" = "$FROZEN" ] || { echo "$WT is not at $FROZEN" >&2; exit 1; }
  cd "$WT"
  export PYTHONPATH="$WT" OBLIVIATE_CACHE="$HERE/$CACHE"
  "$PY" "$HERE/check_original.py" "$1" "$ORIGINAL_DIGEST" "$PRESET" "$SEED"
}
