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


SHORTCUT_NAMES = ("downsample", "shortcut")   # torchvision's and the CIFAR starting kits' projection shortcuts


def projection_shortcuts(model: nn.Module) -> list:
    """Conv2d layers of a residual block's projection shortcut (the 1x1 convs of torchvision's `downsample`
    or a CIFAR kit's `shortcut`): ResNet-18 has 3; models without residual blocks have none."""
    return [m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)
            and any(part in SHORTCUT_NAMES for part in name.split("."))]


def main_convs(model: nn.Module) -> list:
    """`conv_layers` without the projection shortcuts: ResNet-18's 17 = its stem and the 16 convs of its
    blocks; the small CNN's 2; on the conv-free MLP, its hidden Linear layers stand in (as in conv_layers)."""
    skip = {id(m) for m in projection_shortcuts(model)}
    return [m for m in conv_layers(model) if id(m) not in skip]


def reset_all(model: nn.Module) -> None:
    """Every layer of `model` re-initialised with PyTorch's default initialisation (BatchNorm running statistics
    included): a fresh network of the same architecture, drawn from the global RNG."""
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
