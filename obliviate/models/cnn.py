"""A small CNN (the fashion preset): two conv-ReLU-maxpool blocks and a linear classifier. No BatchNorm,
so K of them can train together as grouped convolutions without per-model running statistics.

Module names follow torchvision's where a submission reaches for them: `conv1` (the stem), `conv2`, and the
classifier `fc` (`net.conv1` / `net.fc` in a Kaggle notebook work here too)."""
from collections import OrderedDict

from torch import nn

from .registry import image_shape, register_model


@register_model("cnn")
def cnn(in_shape, num_classes, width=16):
    c, h, w = image_shape("cnn", in_shape)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(c, width, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(width, 2 * width, 3, padding=1)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()), ("fc", nn.Linear(2 * width * (h // 4) * (w // 4), num_classes)),
    ]))
