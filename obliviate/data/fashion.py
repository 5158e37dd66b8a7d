"""Fashion-MNIST: 70,000 28x28 grey images of 10 clothing classes (60,000 train, 10,000 test).

Read from the four gzipped IDX files of the original distribution (github.com/zalandoresearch/fashion-mnist),
which Debian ships in the package `dataset-fashion-mnist` under /usr/share/datasets/fashion-mnist.
IDX format: a big-endian header — two zero bytes, the element type (0x08 = unsigned byte), the number of
dimensions, then one uint32 per dimension — followed by the elements in row-major order.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import RawData
from .registry import register_source

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """One gzipped IDX file of unsigned bytes with `ndim` dimensions -> uint8 array (validated)."""
    try:
        with gzip.open(path, "rb") as f:
            buf = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path} is not a readable gzip file ({e}): download it again.") from None
    if len(buf) < 4 or buf[:2] != b"\0\0" or buf[2] != 0x08 or buf[3] != ndim:
        raise UserError(f"{path} is not an IDX file of unsigned bytes with {ndim} dimension(s) "
                        f"(bad magic number): download it again.")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise UserError(f"{path} is truncated (incomplete IDX header): download it again.")
    dims = tuple(int(d) for d in np.frombuffer(buf, ">u4", ndim, 4))
    if len(buf) != header + int(np.prod(dims)):
        raise UserError(f"{path} holds {len(buf) - header} data bytes where its header {dims} announces "
                        f"{int(np.prod(dims))} (truncated or corrupt): download it again.")
    return np.frombuffer(buf, np.uint8, offset=header).reshape(dims)


@register_source("fashion")
def load_fashion(path=None, size=28, **_) -> RawData:
    root = Path(path if path is not None else DEFAULT_DIR).expanduser()
    missing = [n for pair in FILES.values() for n in pair if not (root / n).is_file()]
    if missing:
        raise UserError(f"Fashion-MNIST files were not found at {root} (missing {', '.join(missing)}): install them "
                        f"with `apt-get install dataset-fashion-mnist` (Debian) or pass --data DIR containing "
                        f"the four .gz files.")
    if not isinstance(size, int) or size < 1:
        raise UserError(f"fashion image size {size!r} is invalid: use a positive integer such as 28 or 14.")
    xs, ys = [], []
    for split, (img_name, lab_name) in FILES.items():
        x, y = read_idx(root / img_name, 3), read_idx(root / lab_name, 1)
        if x.shape[1:] != (28, 28) or len(x) != len(y):
            raise UserError(f"{root / img_name} ({x.shape}) and {root / lab_name} ({len(y)} labels) do not "
                            f"form a 28x28 image set: download them again.")
        if y.max(initial=0) > 9:
            raise UserError(f"{root / lab_name} holds labels above 9 (corrupt): download it again.")
        xs.append(x); ys.append(y)
    n_test = len(ys[1])
    x = torch.from_numpy(np.concatenate(xs)).unsqueeze(1).float().div_(255.0)      # [n, 1, 28, 28]
    if size < 28:
        x = F.interpolate(x, size=(size, size), mode="area")                       # area averaging
    elif size > 28:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    y = torch.from_numpy(np.concatenate(ys).astype(np.int64))
    is_test = torch.zeros(len(y), dtype=torch.bool)
    is_test[len(y) - n_test:] = True
    return RawData(x=x.contiguous(), y=y, groups=torch.full_like(y, -1), is_test=is_test, num_classes=10,
                   name="fashion")
