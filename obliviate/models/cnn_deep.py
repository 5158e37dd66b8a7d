"""A deep, narrow BatchNorm CNN (a candidate default preset: docs/studies/default-preset.md, round 3): `depth`
3x3 conv-BatchNorm-ReLU layers of `width` channels at the input's resolution (no pooling), a global average pool
and a linear classifier. The regime study's ResNets spread like retraining and the two-layer CNNs, with or
without BatchNorm, did not; this model keeps the ResNets' stack of BatchNorms at the small CNN's cost (measured
on digits' 8x8 inputs, 1,437 images, 30 epochs, one thread: depth 4 about 2.6 s a training, depth 6 about 4 s).

Module names: `conv1`..`conv{depth}`, `bn1`..`bn{depth}` (torchvision's names for a ResNet's stem and norms) and
the classifier `fc`. Trained one model at a time (no stacked path)."""
from collections import OrderedDict

from torch import nn

from ..errors import UserError
from .registry import image_shape, register_model


@register_model("cnn_deep")
def cnn_deep(in_shape, num_classes, width=16, depth=4):
    if not (isinstance(depth, int) and depth >= 1):
        raise UserError(f"cnn_deep depth must be a positive integer (the number of conv layers); got {depth!r}.")
    layers, cin = [], image_shape("cnn_deep", in_shape)[0]
    for i in range(1, depth + 1):
        layers += [(f"conv{i}", nn.Conv2d(cin, width, 3, padding=1, bias=False)), (f"bn{i}", nn.BatchNorm2d(width)),
                   (f"relu{i}", nn.ReLU())]
        cin = width
    layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(width, num_classes))]
    return nn.Sequential(OrderedDict(layers))
