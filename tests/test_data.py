"""Data sources (fashion, cifar10, manifest) and splits: formats, validation, and the purity of every split."""
import csv
import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from obliviate.data import RawData, load_source, make_splits, pseudo_identities
from obliviate.errors import UserError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------- fashion

@pytest.fixture(scope="module")
def fashion():
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_DIR} (apt-get install dataset-fashion-mnist)")
    return load_source("fashion", size=14)


def test_fashion_loads_real_files(fashion):
    assert fashion.x.shape == (70000, 1, 14, 14) and fashion.x.dtype == torch.float32
    assert 0 <= fashion.x.min() and fashion.x.max() <= 1
    assert int((~fashion.is_test).sum()) == 60000 and int(fashion.is_test.sum()) == 10000
    assert bool(fashion.is_test[60000:].all())
    assert fashion.num_classes == 10 and fashion.name == "fashion" and bool((fashion.groups == -1).all())
    assert torch.bincount(fashion.y).tolist() == [7000] * 10


def _write_idx(path, arr, truncate=0):
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(data[:len(data) - truncate])


def _fake_fashion(root, n_train=6, n_test=4, truncate=0):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)),
                   truncate if prefix == "t10k" else 0)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_fashion_size_option_and_pixels(tmp_path):
    _fake_fashion(tmp_path)
    full = load_source("fashion", path=tmp_path)
    assert full.x.shape == (10, 1, 28, 28) and full.is_test.tolist() == [False] * 6 + [True] * 4
    small = load_source("fashion", path=tmp_path, size=7)
    assert small.x.shape == (10, 1, 7, 7)
    # area averaging: each output pixel is the mean of its 4x4 input block
    assert torch.allclose(small.x[3, 0, 1, 2], full.x[3, 0, 4:8, 8:12].mean())


def test_fashion_wrong_path_says_how_to_install(tmp_path):
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        load_source("fashion", path=tmp_path / "nowhere")


def test_fashion_truncated_or_corrupt_file_is_refused(tmp_path):
    _fake_fashion(tmp_path, truncate=100)
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz.*truncated"):
        load_source("fashion", path=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz"):
        load_source("fashion", path=tmp_path)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\0\0\x0d\x03" + bytes(100))     # float elements: wrong magic
    with pytest.raises(UserError, match="magic"):
        load_source("fashion", path=tmp_path)


# ---------------------------------------------------------------- cifar10

class _Py2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2 `str` opcodes, as the official (cPickle, protocol 2) batches do."""
    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)
    dispatch[bytes] = save_bytes
    dispatch[str] = lambda self, obj: self.save_bytes(obj.encode("latin-1"))   # e.g. numpy's dtype code 'u1'


def _py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # the official batches name numpy 1's module path; numpy 2 writes numpy._core
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


CIFAR_ROWS = 20


def _cifar_batches():
    batches = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = np.random.default_rng(k).integers(0, 256, (CIFAR_ROWS, 3072), dtype=np.uint8)
        batches[name] = {b"batch_label": f"batch {k} of 6".encode(),
                         b"labels": [(k + i) % 10 for i in range(CIFAR_ROWS)], b"data": data,
                         b"filenames": [f"img_{k}_{i}.png".encode() for i in range(CIFAR_ROWS)]}
    return batches


def _write_cifar(tmp_path, batches, raw=None):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name, d in batches.items():
        (root / name).write_bytes(raw.get(name) if raw and name in raw else _py2_pickle(d))
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar-10-batches-py")
    return root, archive


def test_cifar10_archive_and_directory(tmp_path):
    batches = _cifar_batches()
    root, archive = _write_cifar(tmp_path, batches)
    a, d = load_source("cifar10", path=archive), load_source("cifar10", path=root)
    for r in (a, d, load_source("cifar10", path=tmp_path)):          # the parent directory works too
        assert r.x.shape == (6 * CIFAR_ROWS, 3, 32, 32) and r.x.dtype == torch.float32
        assert r.name == "cifar10" and r.num_classes == 10
        assert r.is_test.tolist() == [False] * 5 * CIFAR_ROWS + [True] * CIFAR_ROWS
    assert torch.equal(a.x, d.x) and torch.equal(a.y, d.y)
    # layout: row i of data_batch_2 is 1024 red, 1024 green, 1024 blue values, each plane row-major 32x32
    i, c, h, w = 7, 2, 5, 30
    value = batches["data_batch_2"][b"data"][i, c * 1024 + h * 32 + w]
    assert a.x[CIFAR_ROWS + i, c, h, w] == torch.tensor(value / 255.0, dtype=torch.float32)
    assert a.y[CIFAR_ROWS + i] == batches["data_batch_2"][b"labels"][i]


class _Evil:
    def __reduce__(self):
        import os
        return os.system, ("echo pwned",)


def test_cifar10_refuses_foreign_globals_and_bad_paths(tmp_path):
    batches = _cifar_batches()
    evil = _py2_pickle({b"data": _Evil(), b"labels": []})
    root, archive = _write_cifar(tmp_path, batches, raw={"data_batch_3": evil})
    for p in (root, archive):
        with pytest.raises(UserError, match="data_batch_3.*forbidden global (posix|os|nt).system"):
            load_source("cifar10", path=p)
    with pytest.raises(UserError, match="not found"):
        load_source("cifar10", path=tmp_path / "missing.tar.gz")
    with pytest.raises(UserError, match="--data"):
        load_source("cifar10")
    (tmp_path / "broken.tar.gz").write_bytes(archive.read_bytes()[:5000])
    with pytest.raises(UserError, match="broken.tar.gz"):
        load_source("cifar10", path=tmp_path / "broken.tar.gz")


# ---------------------------------------------------------------- manifest

def _make_manifest(tmp_path, split=False, n_ids=6, per_label=2, labels=("old", "young")):
    """n_ids identities x labels x per_label 8x8 images; image k is uniform with red = k (its row number)."""
    (tmp_path / "img").mkdir(exist_ok=True)
    rows, k = [], 0
    for g in range(n_ids):
        for li, lab in enumerate(labels):
            for j in range(per_label):
                name = f"img/p{g}_{lab}_{j}.png"
                Image.new("RGB", (8, 8), (k, 40 * li, 200)).save(tmp_path / name)
                row = {"path": name, "label": lab, "group": f"person{g}"}
                if split:
                    row["split"] = "test" if g == n_ids - 1 else "train"
                rows.append(row); k += 1
    csv_path = tmp_path / "faces.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader(); w.writerows(rows)
    return csv_path, rows


def test_manifest_loads_labels_groups_and_split(tmp_path):
    csv_path, rows = _make_manifest(tmp_path)
    r = load_source("manifest", path=csv_path, size=8)
    assert r.x.shape == (24, 3, 8, 8) and r.is_test is None and r.num_classes == 2
    assert torch.allclose(r.x[5, 0], torch.full((8, 8), 5 / 255))
    assert torch.allclose(r.x[5, 2], torch.full((8, 8), 200 / 255))
    assert r.y.tolist() == [0, 0, 1, 1] * 6                          # "old" < "young"
    assert r.groups.tolist() == [g for g in range(6) for _ in range(4)]
    assert load_source("manifest", path=csv_path, size=5).x.shape == (24, 3, 5, 5)

    csv_path, _ = _make_manifest(tmp_path, split=True)
    r = load_source("manifest", path=csv_path, size=8)
    assert r.is_test.tolist() == [False] * 20 + [True] * 4

    # integer labels: num_classes = max + 1; absolute paths are allowed
    (tmp_path / "int.csv").write_text("path,label,group\n" + "".join(
        f"{tmp_path / r['path']},{3 if r['label'] == 'old' else 0},{i % 3}\n" for i, r in enumerate(rows)))
    r = load_source("manifest", path=tmp_path / "int.csv", size=8)
    assert r.num_classes == 4 and set(r.y.tolist()) == {0, 3} and set(r.groups.tolist()) == {0, 1, 2}


def test_manifest_errors(tmp_path):
    csv_path, rows = _make_manifest(tmp_path)
    with pytest.raises(UserError, match="not found"):
        load_source("manifest", path=tmp_path / "nope.csv")
    for name in (rows[3]["path"], rows[9]["path"]):
        (tmp_path / name).unlink()
    with pytest.raises(UserError, match=f"2 image.*missing, first: .*{Path(rows[3]['path']).name}"):
        load_source("manifest", path=csv_path)
    (tmp_path / "cols.csv").write_text("file,label\na.png,1\n")
    with pytest.raises(UserError, match="path, group"):
        load_source("manifest", path=tmp_path / "cols.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty"):
        load_source("manifest", path=tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("path,label,group\n")
    with pytest.raises(UserError, match="no images"):
        load_source("manifest", path=tmp_path / "header.csv")
    (tmp_path / "split.csv").write_text(
        f"path,label,group,split\n{rows[0]['path']},0,a,train\n{rows[1]['path']},1,b,valid\n")
    with pytest.raises(UserError, match="line 3 has split 'valid'"):
        load_source("manifest", path=tmp_path / "split.csv")
    (tmp_path / "val.csv").write_text(
        f"path,label,group,split\n{rows[0]['path']},0,a,train\n{rows[1]['path']},1,b,val\n")
    with pytest.raises(UserError, match="line 3 has split 'val': use train or test"):
        load_source("manifest", path=tmp_path / "val.csv")     # a run has no val split; `unlearn` reads it
    from obliviate.unlearn import read_manifest
    assert read_manifest(tmp_path / "val.csv").split == ["train", "val"]
    (tmp_path / "bad.png").write_bytes(b"no image")
    (tmp_path / "bad.csv").write_text(f"path,label,group\n{rows[0]['path']},0,a\nbad.png,1,b\n")
    with pytest.raises(UserError, match="bad.png cannot be read"):
        load_source("manifest", path=tmp_path / "bad.csv")


# ---------------------------------------------------------------- splits

def _indexed(raw: RawData) -> RawData:
    """A copy whose first feature is the row index / n, so standardised split rows can be traced back."""
    x = raw.x.clone()
    x.view(len(x), -1)[:, 0] = torch.arange(len(x)) / len(x)
    return RawData(x, raw.y, raw.groups, raw.is_test, raw.num_classes, raw.name)


def _rows(splits) -> dict:
    """Source row indices of each split (the index feature is mapped by one increasing affine map)."""
    parts = {k: getattr(splits, k) for k in ("retain", "forget", "val", "test")}
    keys = {k: s.x.reshape(len(s), -1)[:, 0] for k, s in parts.items()}
    rank = torch.cat(list(keys.values())).argsort().argsort()
    out, start = {}, 0
    for k, v in keys.items():
        out[k] = set(rank[start:start + len(v)].tolist()); start += len(v)
    return out


@pytest.fixture(scope="module")
def digits():
    return _indexed(load_source("digits"))


def test_splits_are_pure_and_seeded(digits):
    a, b = make_splits(digits, "groups:4", seed=0), make_splits(digits, "groups:4", seed=0)
    for k in ("retain", "forget", "val", "test"):
        assert torch.equal(getattr(a, k).x, getattr(b, k).x) and torch.equal(getattr(a, k).y, getattr(b, k).y)
    assert a.key == b.key and a.forget_groups == b.forget_groups
    c = make_splits(digits, "groups:4", seed=1)
    assert _rows(c)["forget"] != _rows(a)["forget"] and c.key != a.key


def test_splits_cover_the_data_disjointly(digits):
    rows = _rows(make_splits(digits, "random:0.1", seed=0))
    assert sum(len(v) for v in rows.values()) == len(digits.y)
    assert set().union(*rows.values()) == set(range(len(digits.y)))
    train = len(rows["retain"]) + len(rows["forget"])
    assert abs(len(rows["forget"]) - 0.1 * train) <= 1


def test_groups_forget_whole_pseudo_identities(digits):
    s = make_splits(digits, "groups:5", seed=3)
    rows = _rows(s)
    train = np.array(sorted(rows["retain"] | rows["forget"]))
    groups = pseudo_identities(digits.x[train].numpy(), digits.y[train].numpy(), 8)
    forget = np.isin(train, list(rows["forget"]))
    assert len(s.forget_groups) == 5 and set(groups[forget]) == set(s.forget_groups)
    assert not np.isin(groups[~forget], s.forget_groups).any()


def test_pseudo_identities_are_small_single_class_clusters(digits):
    g = pseudo_identities(digits.x.numpy(), digits.y.numpy(), 8)
    assert (g >= 0).all()
    for gid in np.unique(g):
        members = g == gid
        assert members.sum() <= 8 and len(np.unique(digits.y.numpy()[members])) == 1
    assert np.array_equal(g, pseudo_identities(digits.x.numpy(), digits.y.numpy(), 8))


def test_class_forget_is_exactly_that_class(digits):
    s = make_splits(digits, "class:3", seed=0)
    rows = _rows(s)
    assert bool((s.forget.y == 3).all()) and not bool((s.retain.y == 3).any())
    train = rows["retain"] | rows["forget"]
    assert rows["forget"] == {i for i in train if digits.y[i] == 3}


def test_tune_groups_are_disjoint_from_eval(digits):
    ev, tu = make_splits(digits, "groups:6", seed=0), make_splits(digits, "groups:6", seed=0, role="tune")
    assert len(tu.forget_groups) == 6 and not set(ev.forget_groups) & set(tu.forget_groups)
    assert not _rows(ev)["forget"] & _rows(tu)["forget"]
    assert _rows(ev)["test"] == _rows(tu)["test"]


@pytest.mark.parametrize("spec", ["groups:0", "groups:1.5", "random:0", "random:1.5", "class:11",
                                  "class:2.5", "foo", "groups:", "groups:inf", "class:nan"])
def test_bad_forget_specs(digits, spec):
    with pytest.raises(UserError):
        make_splits(digits, spec, seed=0)


def test_manifest_groups_and_source_test_split(tmp_path):
    csv_path, _ = _make_manifest(tmp_path, split=True, n_ids=10)
    raw = load_source("manifest", path=csv_path, size=8)            # row k has red = k: already traceable
    s = make_splits(raw, "groups:3", seed=0)
    rows = _rows(s)
    assert rows["test"] == set(np.flatnonzero(raw.is_test.numpy()).tolist())
    assert set().union(*rows.values()) == set(range(len(raw.y))) and sum(map(len, rows.values())) == len(raw.y)
    forget_ids = {int(raw.groups[i]) for i in rows["forget"]}
    assert forget_ids == set(s.forget_groups) and len(forget_ids) == 3
    assert not forget_ids & {int(raw.groups[i]) for i in rows["retain"]}
    # every training example of a chosen identity is forgotten
    train = rows["retain"] | rows["forget"]
    assert rows["forget"] == {i for i in train if int(raw.groups[i]) in forget_ids}


def test_rows_of_unknown_identity_become_singletons_and_real_groups_are_kept():
    import torch
    from obliviate.data import RawData, make_splits
    n = 60
    groups = torch.arange(n) // 6                       # 10 real identities of 6 images
    groups[::10] = -1                                   # a few rows with no identity
    raw = RawData(x=torch.rand(n, 1, 4, 4), y=torch.arange(n) % 3, groups=groups, is_test=None,
                  num_classes=3, name="mixed")
    s = make_splits(raw, "groups:2", seed=0)
    # forgetting 2 identities takes at most 2 x 6 rows; a singleton identity forgets one row
    assert 1 <= len(s.forget) <= 12


def test_max_train_shrinks_val_and_test_in_proportion(digits):
    from obliviate.data import make_splits
    full = make_splits(digits, "groups:2", seed=0)
    small = make_splits(digits, "groups:2", seed=0, max_train=400)
    assert len(small.retain) + len(small.forget) == 400
    assert len(small.val) == len(small.test) == 50 < len(full.test)
    assert small.key != full.key and small.train_key != full.train_key
    again = make_splits(digits, "groups:2", seed=0, max_train=400)
    assert torch.equal(again.test.x, small.test.x) and torch.equal(again.val.y, small.val.y)


def test_train_set_and_original_do_not_depend_on_the_forget_spec(tmp_path):
    # the original is cached under train_key, which ignores the forget spec: its data (order included) must too;
    # with retain-then-forget order, a run's original depended on which forget spec had filled the cache first
    digits = load_source("digits")
    a, b = make_splits(digits, "groups:3", 0), make_splits(digits, "groups:5@common", 0)
    assert a.train_key == b.train_key and a.key != b.key
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
    assert torch.equal(a.train.ids, torch.sort(a.train.ids).values)        # the source's row order
    from obliviate.runner import RunConfig, run
    cfg = dict(preset="smoke", n_models=2, methods=["finetune"], report=False, quiet=True, confidence=None)
    run(RunConfig(forget="groups:3", cache=str(tmp_path / "shared"), out=str(tmp_path / "a"), **cfg))
    cached, _ = run(RunConfig(forget="groups:5", cache=str(tmp_path / "shared"), out=str(tmp_path / "b"), **cfg))
    fresh, _ = run(RunConfig(forget="groups:5", cache=str(tmp_path / "fresh"), out=str(tmp_path / "c"), **cfg))
    key = lambda board: [(r["method"], r["forgetting_quality"], r["retain_acc"], r["forget_acc"]) for r in board["rows"]]
    assert key(cached) == key(fresh)          # the cache's history does not change a result
