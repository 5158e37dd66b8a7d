"""ResNet-18 as torchvision builds it (same module names: conv1, bn1, relu, maxpool, layer1..4 of BasicBlocks
with conv1/bn1/conv2/bn2/downsample, avgpool, fc), written here because torchvision's PyPI build does not
import beside the CPU torch on our machines. The challenge used torchvision's resnet18(num_classes=10)
unchanged on 32x32 faces: 7x7 stride-2 stem and max-pool included; that is the default here.

`width` scales the four stages (width, 2w, 4w, 8w; torchvision: 64), so a narrow ResNet-18 has the same
20 conv layers, BatchNorms and names as the challenge's, and a method that picks layers by name (kookmin,
sun, forget, amnesiacs) picks the same layers at every width. Any channel count and any input size: with
the default stem an input of s px reaches layer4 at about s/32 px (28 px -> 1x1; below ~28 px the deep
BatchNorms normalise 1x1 maps). `stem="cifar"` (3x3 stride-1 conv1, no max-pool: `maxpool` is an Identity,
the names stay) keeps 4x the resolution for small inputs at 16x the early layers' cost.
"""
from torch import nn

from ..errors import UserError
from .registry import image_shape, register_model

STEMS = ("imagenet", "cifar")


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    def __init__(self, in_channels=3, num_classes=10, width=64, stem="imagenet"):
        super().__init__()
        small = stem == "cifar"      # the CIFAR starting kits' small-image stem; else torchvision's
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False) if small else \
            nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small else nn.MaxPool2d(3, 2, 1)
        widths, cin, stages = (width, 2 * width, 4 * width, 8 * width), width, []
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width, num_classes)
        for m in self.modules():   # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight); nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


@register_model("resnet18")
def resnet18(in_shape, num_classes, width=64, stem="imagenet"):
    channels = image_shape("resnet18", in_shape)[0]
    if not (isinstance(width, int) and width >= 1):
        raise UserError(f"resnet18 width must be a positive integer (torchvision's is 64); got {width!r}.")
    if stem not in STEMS:
        raise UserError(f"resnet18 stem must be one of {', '.join(STEMS)}; got {stem!r}.")
    return ResNet18(channels, num_classes, width, stem)
