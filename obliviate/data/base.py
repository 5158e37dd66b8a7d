"""What every data source returns, and the in-memory loader the methods iterate.

A source yields a `RawData`: images as float32 tensors already scaled to [0, 1] ([n, C, H, W] or [n, D]),
integer labels, optional identity groups (-1 where unknown) and an optional predefined split
("train"/"test"). Everything downstream works on tensors; there is no torch DataLoader in the hot path (a run
trains thousands of small models, and DataLoader start-up would dominate).

The loaders a method receives serve the challenge's harness (docs/challenge.md, "The harness") in both styles real
submissions were written in:

* a batch is a `Batch`: a 2-tuple `(inputs, targets)` (the starting kit's `for inputs, targets in loader`)
  that also answers to the Kaggle notebook's keys, `batch["image"]`, `batch["age_group"]` (the label),
  `batch["person_id"]` (the identity group the splits carry: a real identity, or a pseudo-identity for
  sources without one; -1 where unknown), `batch["image_id"]` (the row's index in the source) and
  `batch["age"]` (no source here records an age: it is the label, as `age_group`). The keys cost nothing
  until read: a batch holds the two index-selected tensors, and the others are selected on access.
* `loader.dataset` is a real `torch.utils.data.Dataset` of dict examples, so a submission's own
  `DataLoader(loader.dataset, batch_size=256, shuffle=True)` or `Subset(loader.dataset, idx)` gives the same
  dict batches as on Kaggle (default collation). Such a DataLoader draws its order from torch's global RNG,
  which `protocol.unlearn_once` seeds per run, so those runs are reproducible too. It fetches a whole batch
  at tensor speed: torch's fetcher calls `dataset.__getitems__(indices)` when the dataset has one (Subset
  forwards it with its indices mapped), which returns the rows as `ExampleRows`, and default_collate hands
  those to `collate_examples` (registered for their example type) for two index selections instead of
  per-example dicts stacked key by key. The batch is the same, key for key, dtype for dtype, in order
  (tests/test_getitems.py). On `digits` N = 64 the 1st-place notebook's function costs 0.115 retrainings with
  this, 0.486 with example-by-example fetching (the registered port: 0.098; benchmarks/README.md, "Loaders").
* the last batch is what torch's DataLoader(dataset, batch_size, shuffle=True) gives: the rest, one example
  included (a submission that zips `retain_loader` with its own DataLoader of the same size relies on it).
  Training the original and retrained models (`fold_lone=True`, train_model) instead folds a lone last example
  into the batch before it: BatchNorm in train mode cannot normalise one example on 1x1 maps (ResNet-18's
  layer4 at 28-32 px), and every example is still seen every epoch.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data._utils.collate import collate, default_collate_fn_map


@dataclass
class RawData:
    x: torch.Tensor                 # float32 in [0, 1]
    y: torch.Tensor                 # int64 labels 0..C-1
    groups: torch.Tensor            # int64 identity id per example, -1 = none (pseudo-identities are made)
    is_test: torch.Tensor | None    # bool: the source's own test split, None when it has none
    num_classes: int
    name: str

    def fingerprint(self) -> str:
        """Content hash: any change to the data changes every cache key built on it."""
        h = hashlib.sha256()
        for t in (self.x, self.y, self.groups) + ((self.is_test,) if self.is_test is not None else ()):
            a = np.ascontiguousarray(t.numpy())
            h.update(str(a.shape).encode()); h.update(a.tobytes())
        return h.hexdigest()[:16]


@dataclass
class TensorSet:
    """A labelled subset: x, y, and per row its index in the source (`ids`) and identity group (`groups`,
    -1 = unknown). `ids`/`groups` are bookkeeping for the challenge's `image_id`/`person_id` keys; None
    reads as "unknown" (-1)."""
    x: torch.Tensor
    y: torch.Tensor
    ids: torch.Tensor | None = None
    groups: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> "TensorSet":
        move = lambda t: None if t is None else t.to(device)
        return TensorSet(self.x.to(device), self.y.to(device), move(self.ids), move(self.groups))

    def column(self, key: str, idx=None) -> torch.Tensor:
        """One of the challenge's example fields, for rows `idx` (all rows when None)."""
        if key == "image":
            t = self.x
        elif key in ("age_group", "age"):       # no source records an age: the label stands in
            t = self.y
        elif key in ("image_id", "person_id"):
            t = self.ids if key == "image_id" else self.groups
            if t is None:
                t = torch.full_like(self.y, -1)
        else:
            raise KeyError(f"{key!r}: a batch has the keys {', '.join(KEYS)} (or unpack it: inputs, targets = batch)")
        return t if idx is None else t[idx]


KEYS = ("image", "image_id", "age_group", "age", "person_id")   # the Kaggle dataset's example fields


class Batch(tuple):
    """`(inputs, targets)` that is also the Kaggle notebook's dict batch: `inputs, targets = batch` and
    `batch["image"]`, `batch["age_group"]`, ... both work. The two tensors are the index selections a plain
    tuple batch would hold; the other keys are selected from the source rows only when read."""

    def __new__(cls, x, y, data: TensorSet | None = None, idx=None):
        b = tuple.__new__(cls, (x, y))
        b._data, b._idx = data, idx
        return b

    def __getitem__(self, key):
        if not isinstance(key, str):
            return tuple.__getitem__(self, key)
        if key == "image":
            return tuple.__getitem__(self, 0)
        if key in ("age_group", "age"):
            return tuple.__getitem__(self, 1)
        if self._data is None:
            if key in KEYS:
                return torch.full_like(tuple.__getitem__(self, 1), -1)
            raise KeyError(f"{key!r}: a batch has the keys {', '.join(KEYS)}")
        return self._data.column(key, self._idx)

    def __contains__(self, key):
        return key in KEYS if isinstance(key, str) else tuple.__contains__(self, key)

    def keys(self):
        return list(KEYS)

    def values(self):
        return [self[k] for k in KEYS]

    def items(self):
        return [(k, self[k]) for k in KEYS]

    def get(self, key, default=None):
        return self[key] if key in KEYS else default

    def __reduce__(self):           # a plain (inputs, targets) tuple when pickled (e.g. by a user's code)
        return (tuple, (tuple(self),))


class ExampleDataset(torch.utils.data.Dataset):
    """A split as the challenge's Dataset: `ds[i]` is the dict {"image", "image_id", "age_group", "age",
    "person_id"} (0-dim tensors beside the image, on the data's device), so torch's default collation turns
    a DataLoader's batch into the Kaggle notebook's dict of stacked tensors."""

    def __init__(self, data: TensorSet):
        self.data = data
        self._labels = None

    def __len__(self) -> int:
        return len(self.data)

    def labels(self) -> torch.Tensor | None:
        """The integer keys (KEYS[1:]) as one [4, n] tensor, so that a batch selects them in one go (made once;
        None when their dtypes differ, then each is selected alone)."""
        if self._labels is None:
            cols = [self.data.column(k) for k in KEYS[1:]]
            self._labels = torch.stack(cols) if len({c.dtype for c in cols}) == 1 else False
        return self._labels if self._labels is not False else None

    def __getitem__(self, i) -> dict:
        if isinstance(i, torch.Tensor):
            i = int(i)
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"dataset indices must be integers, not {type(i).__name__}")
        n = len(self.data)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a dataset of {n} examples")
        return {k: self.data.column(k)[i] for k in KEYS}

    def __getitems__(self, indices) -> "ExampleRows | list[dict]":
        """A batch of examples for torch's fetcher (`[ds[i] for i in indices]` at tensor speed): the rows as
        `ExampleRows`, which default_collate turns into the dict batch by two index selections. Indices that
        are not one flat run of in-range integers go the example-by-example way, so they raise what ds[i]
        raises."""
        n, idx = len(self.data), None
        if len(indices) and set(map(type, indices)) == {int}:        # a BatchSampler's list: the usual case
            lo, hi = min(indices), max(indices)
            if -n <= lo and hi < n:
                idx = np.fromiter(indices, np.int64, len(indices))
        elif len(indices):                                           # numpy ints, 0-dim tensors (a Subset's)
            try:
                idx = np.asarray(indices)
            except (TypeError, ValueError):                          # ragged: ds[i] says what is wrong
                idx = None
            if idx is not None and idx.ndim == 1 and idx.dtype.kind in "iu" and -n <= idx.min() and idx.max() < n:
                lo, idx = idx.min(), idx.astype(np.int64, copy=False)
            else:
                idx = None
        if idx is None:
            return [self[i] for i in indices]
        if lo < 0:                                                   # index_select takes no negative index
            idx = np.where(idx < 0, idx + n, idx)
        idx = torch.from_numpy(idx)
        return ExampleRows(self, idx if self.data.y.device.type == "cpu" else idx.to(self.data.y.device))

    @property
    def targets(self) -> list:   # torchvision datasets expose labels so; some submissions read it
        return self.data.y.tolist()


class Example(dict):
    """One example of `ExampleRows`: the dict `ds[i]` gives; its own type so that default_collate finds
    `collate_examples` for a batch of them in torch's collate registry."""


class ExampleRows(Sequence):
    """What `ExampleDataset.__getitems__` returns: a batch's rows, read as the list of example dicts the
    fetcher would otherwise build (`rows[j]` is `ds[indices[j]]`'s values, made when read, for a user's own
    collate_fn), and collated by default_collate into the Kaggle dict batch with two index selections."""

    def __init__(self, dataset: ExampleDataset, idx: torch.Tensor):
        self.dataset, self.idx, self.n, self._batch = dataset, idx, idx.shape[0], None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, j):
        if isinstance(j, slice):
            return [self[k] for k in range(*j.indices(self.n))]
        # row j of the collated batch: ds[idx[j]]'s values (default_collate reads rows[0] for its type first)
        return Example({k: v[j] for k, v in self.collate().items()})

    def collate(self) -> dict:
        """default_collate's batch: {key: the rows' values stacked}, keys in the examples' order, each tensor
        contiguous. Two selections, as TensorLoader makes: the images, and the four integer keys in one [4, B]
        block whose rows are the keys' tensors (made once per rows)."""
        if self._batch is None:
            labels = self.dataset.labels()
            if labels is None:
                self._batch = {k: self.dataset.data.column(k, self.idx) for k in KEYS}
            else:
                x = self.dataset.data.x.index_select(0, self.idx)      # = x[idx]; measured 3x cheaper
                self._batch = dict(zip(KEYS, (x, *labels.index_select(1, self.idx).unbind(0))))
        return dict(self._batch)

    def __reduce__(self):           # pickled (a user's collate_fn returning the rows from a worker): a plain list
        return (list, (list(map(dict, self)),))


def collate_examples(batch, *, collate_fn_map=None) -> dict:
    """default_collate for a batch whose first element is an `Example`: the rows' own selection for
    `ExampleRows`, else (Examples gathered into a list by user code) the default per-key stacking."""
    if isinstance(batch, ExampleRows):
        return batch.collate()
    return {k: collate([d[k] for d in batch], collate_fn_map=collate_fn_map) for k in batch[0]}


# torch's documented extension point for default_collate (torch/utils/data/_utils/collate.py): a type -> its
# collate function; only `Example`s (made by ExampleRows alone) reach this entry
default_collate_fn_map[Example] = collate_examples


def batch_bounds(n: int, batch_size: int, fold_lone: bool = True) -> list[tuple[int, int]]:
    """[start, stop) of each batch over n shuffled rows: `batch_size` rows each, the rest in the last, except
    (fold_lone, training's batches) that a last batch of ONE row joins the batch before it (BatchNorm in train mode cannot take a batch of
    one; every row is still seen; measured: train_model on 65 CIFAR-sized images raised "Expected more than 1
    value per channel", ResNet-18's layer4 maps being 1x1). Shared by every loop that batches data (training,
    populations; loaders with fold_lone=False as torch's DataLoader)."""
    starts = list(range(0, n, batch_size))
    if fold_lone and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


class TensorLoader:
    """A challenge-style loader: iterating yields `Batch`es ((inputs, targets), also string-indexable);
    `len()` is the batch count; `.dataset` is the split as a torch Dataset of dict examples; `.batch_size`.

    Shuffles with its own torch.Generator, so two loaders seeded alike give the same order and a method's
    data order is part of its seed. Data already lives on the target device; batches are index selections.
    """

    def __init__(self, data: TensorSet, batch_size: int = 64, shuffle: bool = True,
                 generator: torch.Generator | None = None, fold_lone: bool = False):
        if len(data) == 0:
            raise ValueError("a loader needs at least one example")
        self.data, self.batch_size, self.shuffle, self.fold_lone = data, batch_size, shuffle, fold_lone
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.dataset = ExampleDataset(data)

    def __len__(self) -> int:
        return len(batch_bounds(len(self.data), self.batch_size, self.fold_lone))

    def __iter__(self):
        n = len(self.data)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.data.y.device)
        x, y = self.data.x, self.data.y
        for a, b in batch_bounds(n, self.batch_size, self.fold_lone):
            idx = order[a:b]
            yield Batch(x[idx], y[idx], self.data, idx)
