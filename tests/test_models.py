"""ResNet-18 at any width, stem and input size (obliviate/models/resnet.py), and the batching rule that keeps
a BatchNorm from ever training on one example (obliviate/training.py)."""
import pytest
import torch

from obliviate.data import TensorSet
from obliviate.errors import UserError
from obliviate.models import build_model, conv_layers, norm_layers
from obliviate.presets import Recipe
from obliviate.data.base import batch_bounds
from obliviate.training import train_model


def test_full_width_is_torchvisions_resnet18():
    net = build_model("resnet18", (3, 32, 32), 10, seed=0)
    # torchvision.models.resnet18(num_classes=10): 11,181,642 parameters, 20 convs, 20 BatchNorms
    assert sum(p.numel() for p in net.parameters()) == 11_181_642
    assert len(conv_layers(net)) == 20 and len(norm_layers(net)) == 20
    assert net.conv1.weight.shape == (64, 3, 7, 7) and net.fc.weight.shape == (10, 512)


@pytest.mark.parametrize("width,stem,shape", [(8, "imagenet", (1, 28, 28)), (16, "imagenet", (3, 32, 32)),
                                              (4, "cifar", (1, 14, 14)), (5, "imagenet", (2, 40, 36))])
def test_every_width_has_the_same_layers(width, stem, shape):
    full = build_model("resnet18", (3, 32, 32), 10)
    net = build_model("resnet18", shape, 7, seed=1, width=width, stem=stem).eval()
    names = [n for n, _ in full.named_modules()]
    assert [n for n, _ in net.named_modules()] == names and list(net.state_dict()) == list(full.state_dict())
    assert net.layer4[0].downsample[0].weight.shape == (8 * width, 4 * width, 1, 1)
    assert net.fc.in_features == 8 * width and net.conv1.in_channels == shape[0]
    assert net.conv1.kernel_size == ((3, 3) if stem == "cifar" else (7, 7))
    with torch.no_grad():
        assert net(torch.rand(3, *shape)).shape == (3, 7)


def test_bad_arguments_are_refused_in_one_sentence():
    for kw, word in [({"width": 0}, "width"), ({"stem": "deep"}, "stem")]:
        with pytest.raises(UserError, match=word):
            build_model("resnet18", (3, 32, 32), 10, **kw)
    for name in ("resnet18", "cnn", "cnn_bn", "cnn_deep"):    # every conv model, flat features: one sentence
        with pytest.raises(UserError, match=f"^{name} needs image inputs"):
            build_model(name, (64,), 10)


def test_batch_bounds_fold_a_lone_last_example():
    assert batch_bounds(65, 64) == [(0, 65)]
    assert batch_bounds(129, 64) == [(0, 64), (64, 129)]
    assert batch_bounds(130, 64) == [(0, 64), (64, 128), (128, 130)]
    assert batch_bounds(64, 64) == [(0, 64)]
    assert batch_bounds(10, 64) == [(0, 10)]
    assert batch_bounds(1, 64) == [(0, 1)]                      # nothing to fold into


def test_train_model_survives_a_last_batch_of_one():
    """The crash of the issue: 65 CIFAR-sized images, batch 64, layer4's output 1x1: the BatchNorm saw a
    batch of one ('Expected more than 1 value per channel when training')."""
    g = torch.Generator().manual_seed(0)
    data = TensorSet(torch.rand(65, 3, 32, 32, generator=g), torch.randint(0, 10, (65,), generator=g))
    net = build_model("resnet18", (3, 32, 32), 10, seed=0, width=4)
    before = net.fc.weight.detach().clone()
    train_model(net, data, Recipe(epochs=2, batch_size=64, lr=1e-3), 10, seed=0)
    assert int(net.bn1.num_batches_tracked) == 2                # one batch of 65 per epoch
    assert not torch.equal(before, net.fc.weight) and not net.training


@pytest.mark.parametrize("name,in_shape,kw", [("mlp", (1, 8, 8), {"hidden": (16,)}), ("cnn", (1, 8, 8), {"width": 4}),
                                             ("mlp_bn", (1, 14, 14), {"hidden": (8, 8)}),
                                             ("cnn_bn", (1, 14, 14), {"width": 4}),
                                             ("cnn_deep", (1, 8, 8), {"width": 4, "depth": 3}),
                                             ("resnet18", (3, 32, 32), {"width": 4})])
def test_submissions_find_the_classifier_as_fc_on_every_model(name, in_shape, kw):
    # Kaggle notebooks reach layers by torchvision's names (`net.fc.reset_parameters()`, `net.conv1`): the
    # classifier is `fc` on every registered model, and the stem `conv1` wherever there is a conv
    from obliviate.models import build_model
    from obliviate.models.layers import last_layer
    net = build_model(name, in_shape, 10, seed=0, **kw)
    assert net.fc is last_layer(net) and net.fc.out_features == 10
    if not name.startswith("mlp"):
        assert isinstance(net.conv1, torch.nn.Conv2d)
    before = net.fc.weight.clone()
    torch.manual_seed(1)
    net.fc.reset_parameters()
    assert not torch.equal(before, net.fc.weight)


def test_mlp_bn_has_a_norm_after_each_hidden_layer_and_trains_through_a_batch_of_65():
    # the default-preset study's round-4 model: the layer handles find its norms; seeded like every model
    net = build_model("mlp_bn", (1, 14, 14), 10, seed=0, hidden=(8, 6))
    assert [m.num_features for m in norm_layers(net)] == [8, 6] and net.fc1.bias is None
    assert torch.equal(build_model("mlp_bn", (1, 14, 14), 10, seed=0, hidden=(8, 6)).fc1.weight, net.fc1.weight)
    g = torch.Generator().manual_seed(0)
    data = TensorSet(torch.rand(129, 1, 14, 14, generator=g), torch.randint(0, 10, (129,), generator=g))
    train_model(net, data, Recipe(epochs=1, batch_size=64, lr=1e-3), 10, seed=0)     # 64 + 65: no batch of one
    assert int(net.bn1.num_batches_tracked) == 2 and not net.training


def test_cnn_bn_has_a_norm_after_each_conv_and_training_moves_its_statistics():
    # the default-preset study's round-2 model: what it adds to `cnn` is two BatchNorms the layer handles find
    net = build_model("cnn_bn", (1, 8, 8), 10, seed=0, width=4)
    assert len(conv_layers(net)) == 2 and [m.num_features for m in norm_layers(net)] == [4, 8]
    assert torch.equal(build_model("cnn_bn", (1, 8, 8), 10, seed=0, width=4).conv1.weight, net.conv1.weight)
    g = torch.Generator().manual_seed(0)
    data = TensorSet(torch.rand(130, 1, 8, 8, generator=g), torch.randint(0, 10, (130,), generator=g))
    train_model(net, data, Recipe(epochs=1, batch_size=64, lr=1e-3), 10, seed=0)
    assert not torch.equal(net.bn1.running_mean, torch.zeros(4)) and int(net.bn1.num_batches_tracked) == 3


def test_cnn_deep_stacks_depth_norms_at_the_input_resolution_and_refuses_a_bad_depth():
    # the default-preset study's round-3 model: `depth` conv-BatchNorm layers the layer handles find, no pooling
    # before the global one, so any input size works; a depth that is not a positive integer is one sentence
    from obliviate.errors import UserError
    net = build_model("cnn_deep", (1, 8, 8), 10, seed=0, width=4, depth=5)
    assert len(conv_layers(net)) == 5 and [m.num_features for m in norm_layers(net)] == [4] * 5
    assert net(torch.zeros(2, 1, 14, 14)).shape == (2, 10) and isinstance(net.conv5, torch.nn.Conv2d)
    with pytest.raises(UserError, match="depth must be a positive integer"):
        build_model("cnn_deep", (1, 8, 8), 10, depth=0)
