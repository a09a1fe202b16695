"""Tiny copies of well-known CNN architectures, shared by the tests.

Each keeps the module structure and names of the original (torchvision style) with very
small widths, so tests run in milliseconds on 32x32 inputs (``digits``-like models aside).
Every function returns a freshly initialised model in training mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "resnet18_like",
    "resnet50_like",
    "vgg16_bn_like",
    "inception_like",
    "mobilenet_like",
    "grouped_conv_model",
    "control_flow_model",
    "no_conv_model",
    "TOY_MODELS",
]


# ----------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one ReLU module used twice."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class Bottleneck(nn.Module):
    """torchvision's Bottleneck: one ReLU module used three times."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet(nn.Module):
    """torchvision's ResNet layout: 7x7 stem, max pool, four stages, average pool, fc."""

    def __init__(self, block: type[nn.Module], layers: list[int], widths=(4, 8, 16, 32), num_classes: int = 10):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18_like(num_classes: int = 10) -> nn.Module:
    """ResNet-18 layout (BasicBlock x [2, 2, 2, 2], widths 8-64): 20 convs, 3 of them downsample."""
    return ResNet(BasicBlock, [2, 2, 2, 2], widths=(8, 16, 32, 64), num_classes=num_classes)


def resnet50_like(num_classes: int = 10) -> nn.Module:
    """ResNet-50 layout (Bottleneck x [3, 4, 6, 3], widths 4-32, expansion 4): 53 convs."""
    return ResNet(Bottleneck, [3, 4, 6, 3], widths=(4, 8, 16, 32), num_classes=num_classes)


# ----------------------------------------------------------------------------- VGG

VGG16_CONFIG = [8, 8, "M", 16, 16, "M", 32, 32, 32, "M", 64, 64, 64, "M", 64, 64, 64, "M"]


class VGG(nn.Module):
    """torchvision's VGG with batch norm: ``features`` (conv, bn, ReLU) ..., 7x7 pool, 3 Linear."""

    def __init__(self, config=VGG16_CONFIG, num_classes: int = 10, hidden: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                channels = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, hidden),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg16_bn_like(num_classes: int = 10) -> nn.Module:
    """VGG-16-BN layout (13 convs with bias, each followed by BatchNorm2d and ReLU, widths 8-64)."""
    return VGG(num_classes=num_classes)


# ----------------------------------------------------------------------------- Inception


class BasicConv2d(nn.Module):
    """torchvision GoogLeNet's conv + bn + functional ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """torchvision GoogLeNet's Inception block: four branches concatenated along channels."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int, pool_proj: int):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1), BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1)
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1), BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1)
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True), BasicConv2d(in_channels, pool_proj, kernel_size=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(outputs, 1)


class InceptionNet(nn.Module):
    """A stem conv, two Inception blocks (the second after a max pool), average pool, fc."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = BasicConv2d(3, 8, kernel_size=3, padding=1)
        self.inception3a = Inception(8, 4, 4, 8, 2, 6, 2)  # 4 + 8 + 6 + 2 = 20 channels
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3b = Inception(20, 6, 4, 6, 2, 4, 4)  # 6 + 6 + 4 + 4 = 20 channels
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(20, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.inception3a(x)
        x = self.maxpool3(x)
        x = self.inception3b(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def inception_like(num_classes: int = 10) -> nn.Module:
    """GoogLeNet layout in small: stem + two Inception blocks (13 convs, functional ReLU)."""
    return InceptionNet(num_classes)


# ----------------------------------------------------------------------------- MobileNet / grouped


class MobileNetLike(nn.Module):
    """MobileNet-v1 style: a stem, then depthwise 3x3 + pointwise 1x1 pairs with ReLU6."""

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def conv_bn(in_channels: int, out_channels: int, stride: int, groups: int = 1, kernel: int = 3) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU6(inplace=True),
            )

        self.features = nn.Sequential(
            conv_bn(3, 8, 2),  # features.0.0
            conv_bn(8, 8, 1, groups=8),  # features.1.0: depthwise
            conv_bn(8, 16, 1, kernel=1),  # features.2.0: pointwise
            conv_bn(16, 16, 2, groups=16),  # features.3.0: depthwise
            conv_bn(16, 16, 1, kernel=1),  # features.4.0: pointwise
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def mobilenet_like(num_classes: int = 10) -> nn.Module:
    """Depthwise-separable model: 5 convs, ``features.1.0`` and ``features.3.0`` depthwise."""
    return MobileNetLike(num_classes)


class GroupedConvModel(nn.Module):
    """A stem, a grouped conv (groups=4) and a 1x1 conv with bias and no BatchNorm."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.stem_relu = nn.ReLU()
        self.grouped = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4, bias=False)
        self.grouped_bn = nn.BatchNorm2d(16)
        self.grouped_relu = nn.ReLU()
        self.plain = nn.Conv2d(16, 12, 1)  # no BatchNorm: gated on its conv output
        self.plain_relu = nn.LeakyReLU(0.1)
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_relu(self.stem_bn(self.stem(x)))
        x = self.grouped_relu(self.grouped_bn(self.grouped(x)))
        x = self.plain_relu(self.plain(x))
        return self.fc(x.mean(dim=(2, 3)))


def grouped_conv_model(num_classes: int = 10) -> nn.Module:
    """Three convs: ``stem`` (gateable), ``grouped`` (groups=4, not gateable) and ``plain`` (no BatchNorm)."""
    return GroupedConvModel(num_classes)


# ----------------------------------------------------------------------------- control flow


class ControlFlowModel(nn.Module):
    """Data-dependent control flow that torch.fx cannot trace.

    After the ReLU the stem's output is non-negative, so ``x.sum() > 0`` holds for any
    input that is not all zeros: ``branch_a`` runs and ``branch_b`` never does.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.branch_a = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.branch_a_bn = nn.BatchNorm2d(8)
        self.branch_b = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.branch_b_bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 6, 1)  # no BatchNorm, reads the residual sum
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem_bn(self.stem(x)))
        if x.sum() > 0:
            y = self.relu(self.branch_a_bn(self.branch_a(x)))
        else:
            y = self.relu(self.branch_b_bn(self.branch_b(x)))
        x = self.head(x + y)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def control_flow_model(num_classes: int = 10) -> nn.Module:
    """``if x.sum() > 0`` in forward: fx fails, find_units falls back to hooks; 3 convs run."""
    return ControlFlowModel(num_classes)


class NoConvModel(nn.Module):
    """A two-layer perceptron on flattened 3x32x32 inputs."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 16), nn.ReLU(), nn.Linear(16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def no_conv_model(num_classes: int = 10) -> nn.Module:
    """A model with no ``nn.Conv2d`` at all."""
    return NoConvModel(num_classes)


#: Every toy CNN by name (no_conv_model aside), for tests that loop over architectures.
TOY_MODELS = {
    "resnet18_like": resnet18_like,
    "resnet50_like": resnet50_like,
    "vgg16_bn_like": vgg16_bn_like,
    "inception_like": inception_like,
    "mobilenet_like": mobilenet_like,
    "grouped_conv_model": grouped_conv_model,
    "control_flow_model": control_flow_model,
}
