"""The MLP with BatchNorm after each hidden layer (a candidate default preset: docs/studies/default-preset.md,
round 4). Measured there on 4,000 Fashion-MNIST images at 14 px with the challenge's recipe: it fits them (0.97-0.98
at lr 3e-4 or width 512) where the round-2 CNNs underfit, but one epoch of `finetune` spreads its models 0.41-0.47
as much as retraining does (the plain `mlp`: 0.89-1.14, underfitting).

Module names as in `mlp` (`fc1`, `fc2`, ..., classifier `fc`), with `bn1`, `bn2`, ... as torchvision names a
ResNet's norms. The hidden layers have no bias (the BatchNorm's shift replaces it). Trained one model at a time
(no stacked path)."""
import math
from collections import OrderedDict

from torch import nn

from .registry import register_model


@register_model("mlp_bn")
def mlp_bn(in_shape, num_classes, hidden=(256, 256)):
    dims = [math.prod(in_shape), *hidden]
    layers = [("flatten", nn.Flatten())]
    for i, (a, b) in enumerate(zip(dims, dims[1:]), 1):
        layers += [(f"fc{i}", nn.Linear(a, b, bias=False)), (f"bn{i}", nn.BatchNorm1d(b)), (f"relu{i}", nn.ReLU())]
    layers.append(("fc", nn.Linear(dims[-1], num_classes)))
    return nn.Sequential(OrderedDict(layers))
