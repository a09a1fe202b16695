"""A user's VGG without BatchNorm, registered as a filterscope plugin (``--plugin plain_vgg.py``).

Six 3×3 convs with bias, each followed directly by its ReLU (no BatchNorm anywhere), 2×2 max-pool after every
second conv, and an MLP head on the flattened 4×4 map — the shape of torchvision's BN-free VGG at CIFAR size.
About 38 M multiply-adds per 32×32 image, close to the CIFAR ResNet-20's 41 M, so it trains in similar time here.
"""

from __future__ import annotations

import torch
from torch import nn

from filterscope import register_model

WIDTHS = (32, 32, 64, 64, 128, 128)


class PlainVGG(nn.Module):
    """conv(bias) → ReLU, ×2 then max-pool, three times; flatten; Linear 2048→256 → ReLU → dropout → Linear."""

    def __init__(self, num_classes: int = 10, widths=WIDTHS):
        super().__init__()
        layers, channels = [], 3
        for index, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            if index % 2 == 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(channels * 4 * 4, 256), nn.ReLU(inplace=True),
                                        nn.Dropout(0.3), nn.Linear(256, num_classes))
        for module in self.modules():  # He initialisation: without BatchNorm the scale of each layer matters
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("plain_vgg_cifar", input_shape=(3, 32, 32), mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
                description="VGG-style CIFAR network without BatchNorm (6 conv+bias+ReLU, max-pool, MLP head)")
def plain_vgg_cifar(num_classes: int) -> nn.Module:
    return PlainVGG(num_classes)
