"""The small CNN with BatchNorm after each convolution (a candidate default preset: docs/studies/default-preset.md,
round 2). BatchNorm is what the ResNets of the regime study have and the plain CNN lacks: one epoch of `finetune`
in train mode re-estimates its running statistics in a shuffled order, a source of spread between models.

Module names as in `cnn` (`conv1`, `conv2`, `fc`), with `bn1`, `bn2` as torchvision names a ResNet's norms. Trained
one model at a time (no stacked path)."""
from collections import OrderedDict

from torch import nn

from .registry import image_shape, register_model


@register_model("cnn_bn")
def cnn_bn(in_shape, num_classes, width=16):
    c, h, w = image_shape("cnn_bn", in_shape)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(c, width, 3, padding=1, bias=False)), ("bn1", nn.BatchNorm2d(width)),
        ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)), ("bn2", nn.BatchNorm2d(2 * width)),
        ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()), ("fc", nn.Linear(2 * width * (h // 4) * (w // 4), num_classes)),
    ]))
