"""A run's options: what a user chooses (the CLI's options and obliviate.run's keywords take their defaults from
here). No heavy imports: the CLI reads these defaults before it knows which command runs."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunConfig:
    preset: str = "digits"
    methods: list = field(default_factory=lambda: ["finetune"])
    forget: str | None = None
    n_models: int | None = None
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    cache: str | None = None
    data: str | None = None
    quiet: bool = False
    hp: dict = field(default_factory=dict)          # name=value or method.name=value overrides
    executor: str = "local"
    address: str | None = None
    budget: float = 0.2                             # the challenge: ~20% of one retraining per run
    report: bool = True
    role: str = "eval"                              # "tune": a forget set disjoint from the evaluation one
    hp_preset: str | None = None                    # a name saved by `obliviate tune`
    reading: str = "notebook"                       # a winner as its Kaggle notebook ran (the code that earned
                                                    # its place) or as its "write-up" reads, where they disagree
    kit: str | None = "auto"                        # "auto": an installed kit that fits this run; a kit's name
                                                    # or folder; None: train the original and reference here
    workers: int | None = None                      # local executor processes (None: auto_workers)
    confidence: float | None = 0.95                 # interval level of F, score, ranks (metrics/resample.py);
                                                    # None: no intervals
    pixel_scale: float | None = None                # inputs times this for every model (None: the preset's;
                                                    # 255: the challenge's 0-255 magnitude)
    bounds: bool = True                             # train the ceiling and with-forget-set populations:
                                                    # 2N of a run's 3N trainings; the methods' F and order
                                                    # need only the reference
