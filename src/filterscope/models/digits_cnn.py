"""A small CNN for the 8×8 digits of scikit-learn: four conv-BN-ReLU units, GAP, one linear layer."""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model


class DigitsCNN(nn.Module):
    def __init__(self, num_classes: int = 10, widths=(16, 32, 32, 32)):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for index, width in enumerate(widths):
            layers += [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if index == 1:
                layers.append(nn.MaxPool2d(2))  # 8×8 → 4×4
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model(
    "digits_cnn",
    input_shape=(1, 8, 8),
    mean=(0.5,),
    std=(0.5,),
    description="small CNN for the 8×8 digits (4 conv-BN-ReLU units, 16-32-32-32 filters)",
)
def digits_cnn(num_classes: int) -> nn.Module:
    return DigitsCNN(num_classes)
