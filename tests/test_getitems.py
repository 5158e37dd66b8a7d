"""Issue 18 part 4: a submission's own `DataLoader(loader.dataset)` / `Subset(loader.dataset, idx)` fetches whole
batches (`ExampleDataset.__getitems__` + `collate_examples`) and gets the batches example-by-example fetching and
default_collate gave before: key for key, dtype for dtype, in order, shuffled or not; through Subset, worker
processes and a user's own collate_fn; and a notebook-style submission trains to the same weights either way.
The cost side (<= 1.25x the handed loaders) is benchmarks/batches.py --own-loader.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from obliviate import codehash
from obliviate.data import TensorLoader, TensorSet, base
from obliviate.methods import get_method
from obliviate.protocol import unlearn_once

FIXTURES = Path(__file__).parent / "fixtures"
NOTEBOOK = FIXTURES / "fanchuan_notebook.py"


class OneByOne(Dataset):
    """The same examples without __getitems__: torch fetches them one by one, as before the fast path."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


def data(n=300, known=True):
    x = torch.rand(n, 1, 6, 6)
    y = torch.arange(n) % 7
    return TensorSet(x, y, torch.arange(n) + 1000 if known else None, torch.arange(n) // 5 if known else None)


def same_batches(a, b):
    assert len(a) == len(b) > 0
    for p, q in zip(a, b):
        assert type(p) is type(q) is dict and list(p) == list(q) == list(base.KEYS)
        for k in p:
            assert p[k].dtype == q[k].dtype and p[k].shape == q[k].shape and torch.equal(p[k], q[k]), k


def batches(ds, seed, **kw):
    return list(DataLoader(ds, generator=torch.Generator().manual_seed(seed), **kw))


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("known", [True, False])
def test_dataloader_batches_equal_example_by_example(shuffle, known, monkeypatch):
    ds = TensorLoader(data(known=known)).dataset
    slow = batches(OneByOne(ds), 3, batch_size=64, shuffle=shuffle)
    calls = []
    monkeypatch.setattr(base.ExampleDataset, "__getitem__",
                        lambda self, i: calls.append(i) or pytest.fail("fetched one by one"))
    fast = batches(ds, 3, batch_size=64, shuffle=shuffle)        # the same generator: the same order
    same_batches(fast, slow)
    assert not calls and [len(b["image"]) for b in fast] == [64] * 4 + [44]
    ids = torch.cat([b["image_id"] for b in fast]).tolist()
    assert (ids == list(range(1000, 1300))) != shuffle if known else set(ids) == {-1}


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("kind", ["list", "tensor", "numpy", "range"])
def test_subset_batches_equal_example_by_example(shuffle, kind):
    ds = TensorLoader(data()).dataset
    idx = list(range(3, 300, 2))[::-1] + [-1, 0]                  # reversed, negative, unsorted
    idx = {"list": idx, "tensor": torch.tensor(idx), "numpy": np.array(idx), "range": range(5, 200)}[kind]
    fast = batches(Subset(ds, idx), 4, batch_size=32, shuffle=shuffle)
    slow = batches(OneByOne(Subset(ds, idx)), 4, batch_size=32, shuffle=shuffle)
    same_batches(fast, slow)
    if not shuffle:
        assert fast[0]["image_id"][:3].tolist() == ([1299, 1297, 1295] if kind != "range" else [1005, 1006, 1007])


def test_bad_indices_raise_what_one_example_raises():
    ds = TensorLoader(data(10)).dataset
    with pytest.raises(IndexError, match="out of range"):
        next(iter(DataLoader(Subset(ds, [1, 10]), batch_size=2)))
    with pytest.raises(TypeError, match="integers"):
        next(iter(DataLoader(Subset(ds, [0.0, 1.5]), batch_size=2)))


def test_own_collate_fn_sees_the_examples_and_default_collate_of_them_agrees():
    ds = TensorLoader(data(50)).dataset
    rows = ds.__getitems__([4, 2, 7])
    plain = [ds[i] for i in (4, 2, 7)]
    assert len(rows) == 3 and all(isinstance(r, dict) and list(r) == list(q) for r, q in zip(rows, plain))
    assert all(torch.equal(r[k], q[k]) and r[k].dtype == q[k].dtype for r, q in zip(rows, plain) for k in q)
    assert [int(r["image_id"]) for r in rows[1:]] == [1002, 1007]
    same_batches([default_collate(rows), default_collate(list(rows))], [default_collate(plain)] * 2)
    got = next(iter(DataLoader(ds, batch_size=5, collate_fn=lambda b: [int(e["age_group"]) for e in b])))
    assert got == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("collate_fn", [None, "identity"])
def test_worker_processes_give_the_same_batches(collate_fn):
    """num_workers > 0 (fork, Linux's default): collation runs in the workers; rows a user's collate_fn returns
    travel back as plain example dicts."""
    ds = TensorLoader(data(200)).dataset
    kw = dict(batch_size=64, shuffle=True)
    if collate_fn:
        kw["collate_fn"] = lambda b: b
    fast = batches(ds, 5, num_workers=2, **kw)
    slow = batches(OneByOne(ds), 5, num_workers=0, **kw)
    if collate_fn:
        assert all(type(b) is list for b in fast)
        fast, slow = [default_collate(b) for b in fast], [default_collate(b) for b in slow]
    same_batches(fast, slow)


def notebook():
    spec = importlib.util.spec_from_file_location("fanchuan_notebook", NOTEBOOK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.unlearning


def weights(model):
    return [t.clone() for t in model.state_dict().values()]


def test_notebook_function_is_reproducible_and_trains_as_before(smoke, monkeypatch):
    """The 1st place's notebook (its own two batch-256 DataLoaders over retain_loader.dataset): the same weights
    twice under one seed, and the same weights as example-by-example fetching gave (so the same batches)."""
    m = get_method(notebook())
    runs = [weights(unlearn_once(m, smoke.original, smoke.splits, 7)) for _ in range(2)]
    monkeypatch.delattr(base.ExampleDataset, "__getitems__")
    runs.append(weights(unlearn_once(m, smoke.original, smoke.splits, 7)))
    for w in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], w))


def test_finetune_through_its_own_dataloader_equals_the_given_loader(smoke):
    assert len(smoke.splits.retain) % 64 != 1          # no lone last example for TensorLoader to fold
    fns = [get_method(f"{FIXTURES / 'finetune_two_ways.py'}:{f}") for f in ("given", "own")]
    w = [weights(unlearn_once(m, smoke.original, smoke.splits, 3)) for m in fns]
    assert all(torch.equal(a, b) for a, b in zip(*w))


def test_a_user_methods_cache_key_covers_the_loaders(tmp_path, monkeypatch):
    """data/base.py (the Dataset, __getitems__, the collation) runs inside every user method: it is in the key."""
    import shutil
    pkg = tmp_path / "obliviate"
    shutil.copytree(codehash.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codehash, "PACKAGE", pkg)
    m = get_method(f"{NOTEBOOK}:unlearning")
    key = codehash.code_fingerprint(m)
    f = pkg / "data" / "base.py"
    f.write_text(f.read_text() + "\n_EDITED = 1\n")
    assert codehash.code_fingerprint(m) != key
