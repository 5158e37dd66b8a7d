"""A user's own model, as `obliviate unlearn --model examples/tiny_cnn.py:make_model` loads it: a file with a
function that returns the nn.Module (keyword arguments come from `--model-kwargs k=v`).

Two conv-BatchNorm-ReLU-pool blocks and a linear classifier, for the synthetic faces of make_example.py
(3 x 16 x 16 images, 3 age groups)."""
from collections import OrderedDict

from torch import nn


def make_model(num_classes: int = 3, width: int = 8, size: int = 16) -> nn.Module:
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, width, 3, padding=1, bias=False)), ("bn1", nn.BatchNorm2d(width)),
        ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)), ("bn2", nn.BatchNorm2d(2 * width)),
        ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()), ("fc", nn.Linear(2 * width * (size // 4) ** 2, num_classes)),
    ]))
