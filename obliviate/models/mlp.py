"""Multi-layer perceptron for tiny images (the smoke and digits presets). No normalisation layers, so a
population of K of them trains batched as K stacked matmuls.

Module names follow torchvision's habit where a submission reaches for them: the classifier is `fc`
(`net.fc.reset_parameters()` in a Kaggle notebook works here too), hidden layers `fc1`, `fc2`, ..."""
import math
from collections import OrderedDict

from torch import nn

from .registry import register_model


@register_model("mlp")
def mlp(in_shape, num_classes, hidden=(64,)):
    dims = [math.prod(in_shape), *hidden]
    layers = [("flatten", nn.Flatten())]
    for i, (a, b) in enumerate(zip(dims, dims[1:]), 1):
        layers += [(f"fc{i}", nn.Linear(a, b)), (f"relu{i}", nn.ReLU())]
    layers.append(("fc", nn.Linear(dims[-1], num_classes)))
    return nn.Sequential(OrderedDict(layers))
