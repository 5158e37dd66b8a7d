"""Model-agnostic handles on named layers, so methods that 'reset the first conv' or 'reset the classifier'
work on every registered model without knowing its attribute names."""
from torch import nn

WEIGHTED = (nn.Conv2d, nn.Linear)


def weighted_layers(model: nn.Module) -> list:
    """Conv2d and Linear modules in definition order."""
    return [m for m in model.modules() if isinstance(m, WEIGHTED)]


def first_layer(model: nn.Module) -> nn.Module:
    return weighted_layers(model)[0]


def last_layer(model: nn.Module) -> nn.Module:
    """The classifier: the last Linear layer."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def conv_layers(model: nn.Module) -> list:
    """Every Conv2d (projection shortcuts included); for a conv-free model (the MLP), its hidden Linear
    layers stand in, so conv-targeting methods still have something to act on."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs or [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]


def norm_layers(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def reset(module: nn.Module) -> None:
    """Re-initialise a layer with PyTorch's default initialisation (draws from the global RNG)."""
    module.reset_parameters()
