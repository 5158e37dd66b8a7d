"""The held-out runs' guard (run.sh, variants.sh): train the candidate's original, or read it from the cache, and
stop unless its tensors' digest equals the one every committed chunk was unlearned from. Run from the frozen
worktree with PYTHONPATH and OBLIVIATE_CACHE set, as run.sh sets them.

    python check_original.py N DIGEST PRESET [SEED]   # DIGEST "": print it (a first run records it in candidates.toml)
"""
import hashlib
import sys
import tempfile
from pathlib import Path

import torch

from obliviate.execute import train_original
from obliviate.plan import RunConfig, plan_run
from obliviate.store import Store, default_cache

store = Store(default_cache())
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
plan = plan_run(RunConfig(preset=sys.argv[3], methods=["winners"], n_models=int(sys.argv[1]), bounds=False,
                          quiet=True, report=False, seed=seed), store, Path(tempfile.mkdtemp()))
torch.set_num_threads(plan.preset.threads)
state, _ = train_original(plan, store)          # from the cache, or trained (deterministic under the seed)
h = hashlib.sha256()
for k in sorted(state):
    h.update(k.encode() + state[k].contiguous().numpy().tobytes())
if not sys.argv[2]:
    print(f"original's digest {h.hexdigest()[:24]} (first run: record it in run.sh)", file=sys.stderr)
elif h.hexdigest()[:24] != sys.argv[2]:
    sys.exit(f"the original trained here differs from the one the committed chunks were unlearned from "
             f"({h.hexdigest()[:24]} != {sys.argv[2]}): resuming would mix two originals in one population.")
