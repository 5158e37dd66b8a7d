"""The run's settings, in one visible place (each with the evidence for its value). Modules read them from here;
the preset records hold what belongs to a benchmark (data, model, recipe), RunConfig what a user chooses."""
from __future__ import annotations

RUN = dict(
    batch_size=64,            # the challenge's loaders: DataLoader(dataset, batch_size=64, shuffle=True)
    unlearn_chunk=16,         # unlearning runs per job: the resume unit and one Ray task (a killed run loses < 16)
    max_train_job=64,         # models per training job at most: the resume unit (the MLP would stack 256)
    warmup_batches=8,         # a fresh process's first training: digits MLP 1.75 s vs 0.22 s warm (fashion CNN
                              # 2.9 vs 1.95 s); 8 throwaway batches make every timed run the warm one
    pool_min_models=32,       # auto workers below this many models a population: spawning (~2 s each) does not pay
    clock_epochs=1,           # a kit-backed run times this many epochs of a retraining here, scaled to the recipe's
    draws=200,                # half-samples per interval: coverage 0.93-0.95 at N = 512 with 100 (docs/intervals.md);
                              # 200 put 5 draws in each 2.5% tail; 17.6 s of CPU for a 19-row digits board at N = 512
    confidence=0.95,          # the intervals' level
    study_draws=100,          # subsamples per n in the N-study (obliviate nstudy)
    small_n=64,               # a row from fewer models carries a caution: F at 8-32 models is far above F at 512
                              # (docs/projection.md)
    projection_draws=20,      # the board's projections to 512 (diagnose: 50): ~10-25 s a row at N = 64-128
    ray_object_store=256 * 2**20,   # the local Ray instance: small; the context shipped to workers is a few MB
    ray_tasks_per_gpu=4,      # a GPU task asks for 1/4 of a GPU: small models share a device
)
