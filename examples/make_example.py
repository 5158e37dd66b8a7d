"""Data anyone can generate for `obliviate unlearn`: synthetic face-like images of a few people, a manifest,
and a model trained on them, the way a user's own training script would.

    python examples/make_example.py DIR [--people 12] [--per-person 25] [--epochs 30] [--seed 0]

writes DIR/images/*.png (16 x 16 RGB), DIR/manifest.csv (path,label,group,split: each person's first 80% of
images `train`, the rest `test`), DIR/model.safetensors (examples/tiny_cnn.py's make_model, trained with
Adam and a cosine schedule on the train rows: the recipe examples/recipe.toml states for --reference) and
DIR/train_seconds.txt (its training time, for --train-seconds).

Each person has a fixed age group (label, person i: i mod 3) and their own smooth colour pattern; an age
group adds a weaker pattern of its own. A model trained on these images learns the people it saw as much as
their age groups, so forgetting a person shows in its accuracy and losses on that person's images.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np

SIZE = 16
CLASSES = 3


def _smooth(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """A 16 x 16 x 3 pattern: 4 x 4 random colours, each spread over a 4 x 4 block."""
    return np.kron(rng.uniform(-amplitude, amplitude, (4, 4, 3)), np.ones((SIZE // 4, SIZE // 4, 1)))


def make_images(people: int = 12, per_person: int = 25, seed: int = 0):
    """(images uint8 [n, 16, 16, 3], labels [n], person names [n], is_test [n])."""
    rng = np.random.default_rng(seed)
    classes = [_smooth(rng, 0.06) for _ in range(CLASSES)]   # measured: a model retrained without
    # two people classifies their images at 40-50% (chance 33%), the people it saw at 100%
    images, labels, names, test = [], [], [], []
    n_train = round(0.8 * per_person)
    for p in range(people):
        face = 0.5 + _smooth(rng, 0.3)
        for k in range(per_person):
            img = face + classes[p % CLASSES] + rng.normal(0, 0.05, face.shape) + rng.uniform(-0.05, 0.05)
            images.append(np.clip(np.rint(255 * img), 0, 255).astype(np.uint8))
            labels.append(p % CLASSES), names.append(f"person{p:02d}"), test.append(k >= n_train)
    return np.stack(images), np.array(labels), names, np.array(test)


def write_manifest(out: Path, images, labels, names, is_test) -> Path:
    from PIL import Image
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (img, y, g, t) in enumerate(zip(images, labels, names, is_test)):
        rel = f"images/{g}-{i:04d}.png"
        Image.fromarray(img).save(out / rel)
        rows.append((rel, int(y), g, "test" if t else "train"))
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("path", "label", "group", "split"))
        w.writerows(rows)
    return out / "manifest.csv"


def train(images, labels, epochs: int = 30, seed: int = 0):
    """The tiny CNN trained on `images` (uint8, read as floats in [0, 1]): (model, seconds)."""
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_cnn import make_model
    torch.manual_seed(seed)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(labels).long()
    model = make_model(num_classes=CLASSES)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    steps, step = epochs * -(-len(y) // 32), 0
    t = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 32):
            j = order[i:i + 32]
            for group in opt.param_groups:             # cosine per step: what examples/recipe.toml tells obliviate
                group["lr"] = 3e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
            step += 1
            loss = F.cross_entropy(model(x[j]), y[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--people", type=int, default=12)
    ap.add_argument("--per-person", type=int, default=25)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    images, labels, names, is_test = make_images(a.people, a.per_person, a.seed)
    manifest = write_manifest(a.out, images, labels, names, is_test)
    from safetensors.torch import save_file
    model, seconds = train(images[~is_test], labels[~is_test], a.epochs, a.seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(a.out / "model.safetensors"))
    (a.out / "train_seconds.txt").write_text(f"{seconds:.2f}\n")
    print(f"wrote {manifest} ({len(labels)} images of {a.people} people), {a.out / 'model.safetensors'} "
          f"(trained in {seconds:.1f} s)")


if __name__ == "__main__":
    main()
