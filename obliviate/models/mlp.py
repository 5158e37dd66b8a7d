"""Multi-layer perceptron for tiny images (the smoke and digits presets). No normalisation layers, so a
population of K of them trains batched as K stacked matmuls."""
import math

from torch import nn

from .registry import register_model


@register_model("mlp")
def mlp(in_shape, num_classes, hidden=(64,)):
    dims = [math.prod(in_shape), *hidden]
    layers = [nn.Flatten()]
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], num_classes))
    return nn.Sequential(*layers)
