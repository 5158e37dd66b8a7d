"""CIFAR-10: 60,000 32x32 colour images of 10 classes (50,000 train, 10,000 test).

Read from the "CIFAR-10 python version" of www.cs.toronto.edu/~kriz/cifar.html: either the archive
`cifar-10-python.tar.gz` itself (members read straight from the tar) or its extracted directory
`cifar-10-batches-py`. Each of data_batch_1..5 and test_batch is a (Python 2) pickle of a dict with
b"data" (uint8 numpy array [10000, 3072]: the 1024 red, then green, then blue pixels of each image, row-major)
and b"labels" (list of ints 0..9). Pickle can run arbitrary code, so the batches are read with an unpickler
that resolves only the three numpy globals an array needs and refuses every other.
"""
from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .base import RawData
from .registry import register_source

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
DIRNAME = "cifar-10-batches-py"

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:                                    # numpy < 2
    from numpy.core.multiarray import _reconstruct
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _read_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data, labels = d[b"data"], np.asarray(d[b"labels"], dtype=np.int64)
        ok = (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
              and data.shape[1] == 3072 and labels.shape == (len(data),) and labels.min(initial=0) >= 0
              and labels.max(initial=0) <= 9)
    except Exception as e:                             # any malformed or malicious pickle
        raise UserError(f"{where} is not a CIFAR-10 python batch ({type(e).__name__}: {e}): "
                        f"download cifar-10-python.tar.gz again.") from None
    if not ok:
        raise UserError(f"{where} does not hold uint8 [n, 3072] data with n labels in 0..9: "
                        f"download cifar-10-python.tar.gz again.")
    return data, labels


def _read_raw(path: Path) -> dict[str, bytes]:
    """The six batch files' bytes, from the archive or the (extracted) directory."""
    if path.is_dir():
        if not (path / BATCHES[0]).exists() and (path / DIRNAME).is_dir():
            path = path / DIRNAME                      # the directory the archive was extracted into
        missing = [b for b in BATCHES if not (path / b).is_file()]
        if missing:
            raise UserError(f"{path} lacks the CIFAR-10 batch file(s) {', '.join(missing)}: pass the "
                            f"{DIRNAME} directory or cifar-10-python.tar.gz as --data.")
        return {b: (path / b).read_bytes() for b in BATCHES}
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [b for b in BATCHES if b not in members]
            if missing:
                raise UserError(f"archive {path} lacks the CIFAR-10 batch file(s) {', '.join(missing)}: "
                                f"download cifar-10-python.tar.gz (the python version) again.")
            return {b: tar.extractfile(members[b]).read() for b in BATCHES}
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path} is neither a readable tar archive nor a {DIRNAME} directory ({e}): "
                        f"download cifar-10-python.tar.gz again.") from None


@register_source("cifar10")
def load_cifar10(path=None, **_) -> RawData:
    if path is None:
        raise UserError("the cifar10 data source needs the CIFAR-10 python archive: pass --data PATH "
                        "(cifar-10-python.tar.gz or its extracted cifar-10-batches-py directory).")
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"CIFAR-10 archive not found at {path}: download cifar-10-python.tar.gz from "
                        f"https://www.cs.toronto.edu/~kriz/cifar.html and pass --data PATH.")
    raw = _read_raw(path)
    parts = [_read_batch(raw[b], f"{path}:{b}") for b in BATCHES]
    x = torch.from_numpy(np.concatenate([d for d, _ in parts])).view(-1, 3, 32, 32).float().div_(255.0)
    y = torch.from_numpy(np.concatenate([l for _, l in parts]))
    is_test = torch.zeros(len(y), dtype=torch.bool)
    is_test[len(y) - len(parts[-1][1]):] = True
    return RawData(x=x, y=y, groups=torch.full_like(y, -1), is_test=is_test, num_classes=10, name="cifar10")
