"""The model zoo the tests sweep: what users bring to filterscope, written here (no downloads).

``toy_models`` holds small torchvision-style ResNets, VGG-BN, Inception, MobileNet-v1 and the fx-untraceable
model; this file adds what they miss: a plain VGG without BatchNorm (conv bias, max-pool, MLP head on a
flattened map), MobileNetV2 (depthwise, inverted residual, linear bottleneck, ReLU6), a squeeze-excitation
block, DenseNet-style concatenation, functional activations (``F.relu``, ``F.silu``, GELU, LeakyReLU) and a
grayscale model. :data:`ZOO` lists every zoo model with its input shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import toy_models


class PlainVGG(nn.Module):
    """VGG-style without BatchNorm: conv (with bias) → ReLU, max-pool, flatten, two-layer MLP head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths=(8, 8, 16, 16), spatial: int = 32):
        super().__init__()
        layers, channels = [], in_channels
        for index, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            if index % 2 == 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        side = spatial // 2 ** (len(widths) // 2)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, 32), nn.ReLU(inplace=True),
                                        nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1×1 expand → ReLU6, 3×3 depthwise → ReLU6, 1×1 linear projection (no activation)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int = 4):
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Like(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True))
        self.blocks = nn.Sequential(InvertedResidual(8, 8, 1), InvertedResidual(8, 12, 2), InvertedResidual(12, 12, 1))
        self.head = nn.Sequential(nn.Conv2d(12, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU6(inplace=True))
        self.classifier = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * scale


class SENet(nn.Module):
    """Conv-BN-ReLU units with a squeeze-excitation block (1×1 convs on the pooled map) after each."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1, self.bn1, self.se1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), SqueezeExcitation(8)
        self.conv2, self.bn2, self.se2 = nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), SqueezeExcitation(16)
        self.conv3, self.bn3 = nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se1(F.relu(self.bn1(self.conv1(x))))
        x = self.se2(F.relu(self.bn2(self.conv2(x))))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean(dim=(2, 3)))


class DenseNetLike(nn.Module):
    """DenseNet-style: each layer's BN-ReLU-conv output is concatenated onto its input."""

    def __init__(self, num_classes: int = 10, growth: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.layers = nn.ModuleList()
        channels = 8
        for _ in range(3):
            self.layers.append(nn.ModuleDict({"conv": nn.Conv2d(channels, growth, 3, 1, 1, bias=False),
                                              "bn": nn.BatchNorm2d(growth)}))
            channels += growth
        self.transition = nn.Conv2d(channels, 12, 1, bias=False)
        self.transition_bn = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        for layer in self.layers:
            x = torch.cat([x, F.relu(layer["bn"](layer["conv"](x)))], dim=1)
        x = F.relu(self.transition_bn(self.transition(F.avg_pool2d(x, 2))))
        return self.fc(x.mean(dim=(2, 3)))


class FunctionalActivations(nn.Module):
    """Four conv-BN units, each followed by a different functional activation."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False) for c_in, c_out in ((3, 8), (8, 8), (8, 12), (12, 12)))
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in (8, 8, 12, 12))
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activations = (F.relu, F.silu, F.gelu, lambda t: F.leaky_relu(t, 0.1))
        for conv, bn, activation in zip(self.convs, self.bns, activations):
            x = activation(bn(conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


@dataclass(frozen=True)
class ZooModel:
    """A zoo model's constructor and input shape (C, H, W)."""

    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int] = (3, 32, 32)


#: Every zoo model by name. Together with toy_models they cover what the issue lists.
ZOO: dict[str, ZooModel] = {
    "resnet18_like": ZooModel(toy_models.resnet18_like),  # basic blocks, one shared ReLU module
    "resnet50_like": ZooModel(toy_models.resnet50_like),  # bottleneck blocks
    "vgg16_bn_like": ZooModel(toy_models.vgg16_bn_like),
    "inception_like": ZooModel(toy_models.inception_like),  # multi-branch concatenation
    "mobilenet_v1_like": ZooModel(toy_models.mobilenet_like),  # depthwise separable
    "control_flow_model": ZooModel(toy_models.control_flow_model),  # forward does not trace with torch.fx
    "plain_vgg": ZooModel(PlainVGG),  # no BatchNorm, conv bias, max-pool, MLP head
    "mobilenet_v2_like": ZooModel(MobileNetV2Like),  # inverted residual, linear bottleneck, ReLU6
    "se_net": ZooModel(SENet),  # squeeze-excitation
    "densenet_like": ZooModel(DenseNetLike),  # concatenation
    "functional_activations": ZooModel(FunctionalActivations),  # F.relu, F.silu, GELU, LeakyReLU
    "plain_vgg_grayscale": ZooModel(lambda: PlainVGG(in_channels=1, widths=(8, 8), spatial=8), (1, 8, 8)),
}
