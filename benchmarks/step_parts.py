"""Where a stacked ResNet-18 training step goes, read by taking parts away, and what bf16 autocast does to it.

    python benchmarks/step_parts.py                      # width 8, 28 px, K = 8, 1 thread, 10 paired rounds
    python benchmarks/step_parts.py --width 16 --rounds 6

Every case is one training step of `train_grouped`'s network (obliviate.population.group_model: K models side
by side, channels_last, fused Adam, the sum of the K models' cross-entropies) on random data of the preset's
shape, timed in this process's CPU time, the cases in rotating order within each round so that a slow spell of
a shared machine lands on all of them. Printed: ms per model-step (median over rounds) and each case's ratio
to one model trained alone in float32 (`train_model`'s path), then one JSON line.

Cases: `stacked` (the trainer as it is); `no BatchNorm`, `no ReLU` (those layers replaced by Identity), `no Adam`
(no optimizer step): what each part costs, by removal (torch.profiler's per-op overhead on a step of ~90 small
ops inflated the small ops' share 2-7x here); `stacked bf16` / `alone bf16`: the same step under
torch.autocast("cpu", bfloat16), which pays only where the CPU has bf16 instructions (AVX-512 BF16 / AMX).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from obliviate import population  # noqa: E402
from obliviate.execute import keep_freed_memory  # noqa: E402
from obliviate.models import build_model  # noqa: E402

BATCH = 64      # the challenge's batch size


def case(width: int, size: int, k: int, *, drop=(), adam: bool = True, bf16: bool = False):
    """(step function, models per step): one training step of K stacked models (k = 1: a plain model)."""
    models = [build_model("resnet18", (1, size, size), 10, seed=s, width=width) for s in range(k)]
    net = (population.load_group(population.group_model(models[0], k), [m.state_dict() for m in models])
           if k > 1 else models[0]).train()
    for parent in list(net.modules()):
        for name, m in list(parent.named_children()):
            if isinstance(m, drop):
                setattr(parent, name, torch.nn.Identity())
    x = torch.randn(BATCH, k, size, size).contiguous(memory_format=torch.channels_last if k > 1 else
                                                     torch.contiguous_format)
    y = torch.randint(0, 10, (k * BATCH,))
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=5e-3, fused=True)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x).view(BATCH, k, -1).transpose(0, 1).flatten(0, 1)
        loss = F.cross_entropy(logits.float(), y, reduction="sum") / BATCH
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if adam:
            opt.step()
    return step, k


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--k", type=int, default=8, help="models stacked (the trainer's default chunk: 8)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    keep_freed_memory()                                   # as the runner's training processes do
    shape = (a.width, a.size)
    cases = {"alone": case(*shape, 1), "stacked": case(*shape, a.k),
             "no BatchNorm": case(*shape, a.k, drop=(torch.nn.BatchNorm2d,)),
             "no ReLU": case(*shape, a.k, drop=(torch.nn.ReLU,)), "no Adam": case(*shape, a.k, adam=False),
             "stacked bf16": case(*shape, a.k, bf16=True), "alone bf16": case(*shape, 1, bf16=True)}
    for step, _ in cases.values():                        # lazy initialisation out of the timings
        step(); step()
    times = {name: [] for name in cases}
    names = list(cases)
    for r in range(a.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            step, k = cases[name]
            t = time.process_time()
            step(); step()
            times[name].append((time.process_time() - t) / 2 / k)
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, v in med.items():
        print(f"{name:14s} {v * 1e3:7.2f} ms per model-step  {med['alone'] / v:5.2f}x alone", flush=True)
    share = {part: round(1 - med[part] / med["stacked"], 3) for part in ("no BatchNorm", "no ReLU", "no Adam")}
    print(json.dumps({"width": a.width, "size": a.size, "k": a.k, "rounds": a.rounds, "threads": a.threads,
                      "cpu": torch.backends.cpu.get_cpu_capability(),
                      "ms_per_model_step": {n: round(v * 1e3, 3) for n, v in med.items()},
                      "speedup": round(med["alone"] / med["stacked"], 2),
                      "share_of_step": {"BatchNorm": share["no BatchNorm"], "ReLU": share["no ReLU"],
                                        "Adam": share["no Adam"]},
                      "bf16_stacked_gain": round(med["stacked"] / med["stacked bf16"], 2),
                      "bf16_alone_gain": round(med["alone"] / med["alone bf16"], 2)}))


if __name__ == "__main__":
    main()
