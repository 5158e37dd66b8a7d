"""Models (own code, no torchvision), registered by name, plus model-agnostic layer handles."""
from .registry import MODELS, build_model, register_model
from .layers import conv_layers, first_layer, last_layer, norm_layers, weighted_layers
from . import cnn, cnn_bn, cnn_deep, mlp, mlp_bn, resnet  # noqa: F401  (register)
