"""GoogLeNet (Inception v1) for 32×32 inputs, as used in CIFAR pruning papers."""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(True),
    )


class Inception(nn.Module):
    """Four branches concatenated: 1×1; 1×1→3×3; 1×1→3×3→3×3; 3×3 max-pool→1×1."""

    def __init__(self, in_channels, n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_planes):
        super().__init__()
        self.branch1 = conv_bn_relu(in_channels, n1x1, 1)
        self.branch2 = nn.Sequential(conv_bn_relu(in_channels, n3x3_reduce, 1), conv_bn_relu(n3x3_reduce, n3x3, 3))
        self.branch3 = nn.Sequential(
            conv_bn_relu(in_channels, n5x5_reduce, 1),
            conv_bn_relu(n5x5_reduce, n5x5, 3),
            conv_bn_relu(n5x5, n5x5, 3),
        )
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv_bn_relu(in_channels, pool_planes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class CifarGoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.pre_layers = conv_bn_relu(3, 192, 3)
        self.a3 = Inception(192, 64, 96, 128, 16, 32, 32)
        self.b3 = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.a4 = Inception(480, 192, 96, 208, 16, 48, 64)
        self.b4 = Inception(512, 160, 112, 224, 24, 64, 64)
        self.c4 = Inception(512, 128, 128, 256, 24, 64, 64)
        self.d4 = Inception(512, 112, 144, 288, 32, 64, 64)
        self.e4 = Inception(528, 256, 160, 320, 32, 128, 128)
        self.a5 = Inception(832, 256, 160, 320, 32, 128, 128)
        self.b5 = Inception(832, 384, 192, 384, 48, 128, 128)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b3(self.a3(self.pre_layers(x)))
        x = self.maxpool(x)
        x = self.e4(self.d4(self.c4(self.b4(self.a4(x)))))
        x = self.maxpool(x)
        x = self.b5(self.a5(x))
        return self.linear(torch.flatten(self.pool(x), 1))


@register_model("googlenet_cifar", description="GoogLeNet (Inception v1) for 32×32 inputs, 9 Inception blocks")
def googlenet_cifar(num_classes: int) -> nn.Module:
    return CifarGoogLeNet(num_classes)
