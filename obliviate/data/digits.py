"""scikit-learn's bundled digits: 1,797 8x8 grey images of 10 digits (no download, no identities)."""
import numpy as np
import torch

from .base import RawData
from .registry import register_source


@register_source("digits")
def load_digits(path=None, **_) -> RawData:
    from sklearn.datasets import load_digits as sk_digits
    d = sk_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)   # [n, 1, 8, 8] in [0, 1]
    y = torch.from_numpy(d.target.astype(np.int64))
    return RawData(x=x, y=y, groups=torch.full_like(y, -1), is_test=None, num_classes=10, name="digits")
