"""The 16-layer CIFAR VGG of network slimming (Liu et al., 2017): 13 conv-BN-ReLU units, one linear layer."""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model

VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class SlimmingVGG(nn.Module):
    """VGG-16 for 32×32 inputs as in network slimming: ``features``, 2×2 average pool, ``classifier``."""

    def __init__(self, num_classes: int = 10, layout=VGG16_LAYOUT, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [
                    nn.Conv2d(in_channels, item, 3, padding=1, bias=False),
                    nn.BatchNorm2d(item),
                    nn.ReLU(inplace=True),
                ]
                in_channels = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(2)
        self.classifier = nn.Linear(in_channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 0.5)  # the slimming paper's initial scale
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("vgg16_slim", description="CIFAR VGG-16 of network slimming (13 conv-BN-ReLU, 1 linear)")
def vgg16_slim(num_classes: int) -> nn.Module:
    return SlimmingVGG(num_classes)
