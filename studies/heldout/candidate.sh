# Sourced by run.sh and variants.sh with N and CANDIDATE set: the candidate's frozen commit, original's digest,
# preset, cache, worktree, seed and extra flags; then its worktree (created if missing) becomes the current
# folder with PYTHONPATH and OBLIVIATE_CACHE set, and check_original.py trains or reads the original and stops
# unless its digest is the recorded one.
EXTRA=(); SEED=0
# every winner's notebook reading where its write-up's differs (docs/regime.md, 2026-12-06; `--reading notebook`)
NOTEBOOK_HP=(--hp seif.noise_layers=stem --hp seif.class_weights=balanced --hp seif.weighting=batch
             --hp kookmin.threshold=per_layer --hp sun.first_stage=picks --hp amnesiacs.warmup_classes=all)
case "$CANDIDATE" in
  challenge)   # the preset the rule chose (`combined`)
    FROZEN=13af35256564d62d05f6ebd1a1a167c445a891ea
    ORIGINAL_DIGEST=81f40acd5b7d8f29efc22a26   # sha256 of the original's tensors (sorted names + bytes), first 24
    PRESET=challenge; CACHE=cache; WT=${HELDOUT_WORKTREE:-/work/heldout-wt} ;;
  w16|w16-seed0-notebook)
    # w16: width 16, the challenge's most-common-class forget set (benchmarks/regime/w16.toml), seed 0, write-up
    # readings. w16-seed0-notebook: post hoc (declared 2026-12-07, docs/regime.md), the same commit, cache and
    # seed with the notebook readings (b4b9e59's obliviate/ is d04203b's: `git diff b4b9e59 d04203b -- obliviate`).
    FROZEN=b4b9e592d1501df040c0d649540d355f60df20aa
    ORIGINAL_DIGEST=98a2fbe8c2839be457acd909   # recorded from the N = 32 run (trained at b4b9e59 on the AVX-512 machine)
    PRESET=benchmarks/regime/w16.toml; CACHE=cache-w16; WT=${HELDOUT_WORKTREE:-/work/heldout-w16-wt}
    if [ "$CANDIDATE" = w16-seed0-notebook ]; then EXTRA=("${NOTEBOOK_HP[@]}"); fi ;;
  w16-notebook|w16-seed1-writeup)
    # w16-notebook: the next held-out test (declared 2026-12-06, docs/regime.md): w16, seed 1, every winner with
    # its notebook's reading where its write-up's differs. w16-seed1-writeup: post hoc (declared 2026-12-07,
    # docs/regime.md), the same commit, cache and seed with every winner read by its write-up (no --hp).
    FROZEN=d04203b99101afd52b9b638308a07af9c207757e
    ORIGINAL_DIGEST=0ffa5f55b576ff5de4f4b913   # recorded from the N = 32 run (trained at d04203b on the AVX-512 machine)
    PRESET=benchmarks/regime/w16.toml; CACHE=cache-w16-notebook; WT=${HELDOUT_WORKTREE:-/work/heldout-w16nb-wt}
    SEED=1
    if [ "$CANDIDATE" = w16-notebook ]; then EXTRA=("${NOTEBOOK_HP[@]}"); fi ;;
  challenge-notebook)
    # the held-out test on the built-in `challenge` preset with every winner's notebook reading (declared
    # 2026-12-07, docs/regime.md): seed 0, a new retrained population on this (AVX-512) machine. Its original is
    # `w16`'s (the same training set, seed and training code: the original's key does not depend on the forget set).
    FROZEN=0eeecb192d378d5f34321581f226fdf66413e929
    ORIGINAL_DIGEST=98a2fbe8c2839be457acd909   # w16's original, read from this cache (copied) or retrained
    PRESET=challenge; CACHE=cache-challenge-notebook; WT=${HELDOUT_WORKTREE:-/work/heldout-challenge-nb-wt}
    EXTRA=(--reading notebook) ;;
  *) echo "heldout: unknown candidate '$CANDIDATE': use challenge, w16, w16-notebook, w16-seed1-writeup, w16-seed0-notebook or challenge-notebook." >&2; exit 2 ;;
esac
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MAIN=$(cd "$HERE/../.." && pwd)
[ -d "$WT" ] || git -C "$MAIN" worktree add -f "$WT" "$FROZEN"
[ "$(git -C "$WT" rev-parse HEAD)" = "$FROZEN" ] || { echo "$WT is not at $FROZEN" >&2; exit 1; }
cd "$WT"
export PYTHONPATH="$WT" OBLIVIATE_CACHE="$HERE/$CACHE"
"$MAIN/.venv/bin/python" "$HERE/check_original.py" "$N" "$ORIGINAL_DIGEST" "$PRESET" "$SEED"
