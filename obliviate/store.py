"""Content-addressed artifacts: every file is named by a hash of everything that determined it.

Weights are safetensors, arrays are .npz read with allow_pickle=False, metadata is JSON. Every write goes
to a temp file in the same folder and is renamed into place, so a killed run leaves either the whole
artifact or nothing, and a rerun picks up exactly where it stopped (Reuse-N-N: the reference population is
trained once and shared by every method and every later run).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import UserError


def default_cache() -> Path:
    """`OBLIVIATE_CACHE`, else `$XDG_CACHE_HOME/obliviate`, else `~/.cache/obliviate`."""
    return Path(os.environ.get("OBLIVIATE_CACHE") or
                Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "obliviate")


def content_key(obj) -> str:
    """Stable hash of a JSON-able description (sorted keys; tuples and lists alike)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def arrays_digest(arrays: dict, keys=None) -> str:
    """Hash of arrays' contents (name, dtype, shape, bytes): the key of results derived from a population."""
    h = hashlib.sha256()
    for k in sorted(arrays) if keys is None else keys:
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}\0{a.dtype.str}\0{a.shape}\0".encode() + a.tobytes())
    return h.hexdigest()[:24]


def tensors_sha256(*arrays) -> str:
    """sha256 over arrays' or torch tensors' dtypes, shapes and bytes, in order (a split's or a kit's identity)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a)
        h.update(f"{a.dtype.str}{a.shape}".encode() + a.tobytes())
    return h.hexdigest()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename it into place, with the permissions a plain open() would
    have given (mkstemp's are 0600: a report or leaderboard others could not read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def load_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class Store:
    """A folder of artifacts: `<root>/<kind>/<key[:2]>/<key>.<ext>`."""

    def __init__(self, root):
        self.root = Path(root).expanduser()

    def path(self, kind: str, key: str, ext: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.{ext}"

    # weights ------------------------------------------------------------------------------------------
    def save_weights(self, key: str, state: dict, meta: dict | None = None) -> None:
        from safetensors.torch import save as st_save    # torch only where weights are: `report`, `compare`
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}   # import no torch (~1.5-4 s)
        atomic_write_bytes(self.path("weights", key, "safetensors"),
                           st_save(tensors, metadata={"meta": json.dumps(meta or {})}))

    def load_weights(self, key: str) -> tuple[dict, dict] | None:
        """(state_dict, meta), or None when absent or unreadable (a damaged entry is recomputed)."""
        p = self.path("weights", key, "safetensors")
        if not p.exists():
            return None
        from safetensors.torch import load as st_load
        try:
            raw = p.read_bytes()
            n = int.from_bytes(raw[:8], "little")
            meta = json.loads(json.loads(raw[8:8 + n]).get("__metadata__", {}).get("meta", "{}"))
            return st_load(raw), meta
        except Exception:
            p.unlink(missing_ok=True)
            return None

    # arrays -------------------------------------------------------------------------------------------
    def save_arrays(self, kind: str, key: str, arrays: dict) -> None:
        atomic_write_bytes(self.path(kind, key, "npz"), npz_bytes(arrays))

    def load_arrays(self, kind: str, key: str) -> dict | None:
        p = self.path(kind, key, "npz")
        if not p.exists():
            return None
        try:
            return load_npz(p)
        except Exception:          # truncated or foreign file: drop it and recompute
            p.unlink(missing_ok=True)
            return None

    # small derived results (a leaderboard's intervals, a row's metrics) as JSON ---------------------------
    def memo_json(self, kind: str, ident: dict, compute):
        """compute()'s JSON-able value, stored under content_key(ident) and read back on the next call with the
        same ident. The first call returns the value as read back from JSON too, so a cached rerun's result is
        identical to the first run's (tuples become lists, float reprs round-trip exactly)."""
        p = self.path(kind, content_key(ident), "json")
        if p.exists():
            try:
                return json.loads(p.read_text())
            except (OSError, ValueError):      # truncated or foreign: recompute
                p.unlink(missing_ok=True)
        text = json.dumps(compute())
        atomic_write_text(p, text)
        return json.loads(text)

    # hyperparameter presets (`obliviate tune` saves, `run --hp-preset` reads) ---------------------------
    # <root>/hp-presets/<name>.json = {preset: {method: {hyperparameter: value}}}
    def hp_preset_path(self, name: str) -> Path:
        return self.root / "hp-presets" / f"{name}.json"

    def load_hp_preset(self, name: str, preset: str) -> dict:
        """{method: {hyperparameter: value}} saved under `name` for `preset` ({} when that preset has none)."""
        p = self.hp_preset_path(name)
        if not p.exists():
            raise UserError(f"hyperparameter preset {name!r} not found at {p}: create it with "
                            f"`obliviate tune --method M --name {name}`.")
        try:
            return json.loads(p.read_text()).get(preset, {})
        except json.JSONDecodeError:
            raise UserError(f"hyperparameter preset file {p} is not valid JSON: delete it and tune again.") from None

    def save_hp_preset(self, name: str, preset: str, method: str, values: dict) -> Path:
        p = self.hp_preset_path(name)
        saved = json.loads(p.read_text()) if p.exists() else {}
        saved.setdefault(preset, {})[method] = values
        atomic_write_text(p, json.dumps(saved, indent=2, sort_keys=True))
        return p
