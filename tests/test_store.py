"""The content-addressed store: atomic writes, safetensors weights, no pickle, damaged entries dropped."""
import numpy as np
import pytest
import torch

from obliviate.store import Store, atomic_write_bytes, content_key


def test_content_key_is_stable_and_sensitive():
    a = content_key({"x": 1, "y": [1, 2], "z": {"b": 2, "a": 1}})
    assert a == content_key({"z": {"a": 1, "b": 2}, "y": [1, 2], "x": 1})   # key order does not matter
    assert a != content_key({"x": 1, "y": [1, 3], "z": {"b": 2, "a": 1}})


def test_weights_roundtrip_with_meta(tmp_path):
    s = Store(tmp_path)
    state = {"w": torch.randn(3, 4), "b": torch.zeros(4)}
    s.save_weights("k" * 24, state, {"seconds": 1.5})
    got, meta = s.load_weights("k" * 24)
    assert meta == {"seconds": 1.5} and torch.equal(got["w"], state["w"])
    assert s.path("weights", "k" * 24, "safetensors").read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle


def test_arrays_roundtrip_and_damaged_entry_is_dropped(tmp_path):
    s = Store(tmp_path)
    s.save_arrays("chunks", "a" * 24, {"conf": np.arange(6.0).reshape(2, 3)})
    assert np.array_equal(s.load_arrays("chunks", "a" * 24)["conf"], np.arange(6.0).reshape(2, 3))
    p = s.path("chunks", "a" * 24, "npz")
    p.write_bytes(p.read_bytes()[:40])                     # truncated, as by a crashed foreign writer
    assert s.load_arrays("chunks", "a" * 24) is None and not p.exists()
    assert s.load_weights("nothing" * 4) is None


def test_pickled_npz_is_refused(tmp_path):
    s = Store(tmp_path)
    p = s.path("chunks", "b" * 24, "npz"); p.parent.mkdir(parents=True)
    np.savez(p, obj=np.array([{"a": 1}], dtype=object))    # an object array needs pickle to load
    assert s.load_arrays("chunks", "b" * 24) is None


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    import os
    def boom(*a): raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "f.bin", b"data")
    assert list(tmp_path.iterdir()) == []


def test_atomic_writes_get_a_plain_files_permissions(tmp_path):
    """mkstemp creates 0600 files; a leaderboard, report or cached artifact renamed from one must end with the
    permissions open() would have given under the process's umask (else others sharing a cache cannot read it)."""
    import os
    import stat
    from obliviate.store import atomic_write_bytes
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a" / "f.json", b"{}")
        assert stat.S_IMODE((tmp_path / "a" / "f.json").stat().st_mode) == 0o644
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "a" / "f.json", b"{}")
        assert stat.S_IMODE((tmp_path / "a" / "f.json").stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.endswith(".tmp")]
