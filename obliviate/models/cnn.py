"""A small CNN (the fashion preset): two conv-ReLU-maxpool blocks and a linear classifier. No BatchNorm,
so K of them can train together as grouped convolutions / vmap without per-model running statistics."""
from torch import nn

from .registry import register_model


@register_model("cnn")
def cnn(in_shape, num_classes, width=16):
    c, h, w = in_shape
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), num_classes),
    )
