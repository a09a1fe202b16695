"""Loss weights of Li et al. (2020), Table 5, as a registry of presets.

Each preset gives λm (mutual information), λk (KL), λs (sparsity) and R (target active ratio; a
list of (name pattern, R) pairs where it differs per layer). Any value can be overridden.
"""

from __future__ import annotations

# The fields a preset sets: a preset named where these are already set (by a lower layer of a
# configuration: a bundled config, a file) takes them over, so that its row of Table 5 applies.
PRESET_FIELDS = ("lambda_mi", "lambda_kl", "lambda_sparsity", "sparsity_ratio")

PRESETS: dict[str, dict] = {
    "resnet56": {"lambda_mi": 0.01, "lambda_kl": 1.0, "lambda_sparsity": 0.00015, "sparsity_ratio": 0.0},
    "vggnet": {"lambda_mi": 0.04, "lambda_kl": 1.0, "lambda_sparsity": 0.0002, "sparsity_ratio": 0.0},
    "googlenet": {"lambda_mi": 0.006, "lambda_kl": 1.0, "lambda_sparsity": 0.00005, "sparsity_ratio": 0.0},
    "resnet18": {"lambda_mi": 0.005, "lambda_kl": 1.0, "lambda_sparsity": 0.01, "sparsity_ratio": 0.6},
    # VGG-16 on ImageNet: R 0.5 for the first ten conv layers and 0.8 for the last three; the
    # ratios are matched to gated layers by position (see DecoupleConfig.layer_ratios).
    "vgg16": {"lambda_mi": 0.01, "lambda_kl": 1.0, "lambda_sparsity": 0.01, "sparsity_ratio": [0.5] * 10 + [0.8] * 3},
}

# Which preset a built-in model uses when ``preset="auto"``.
PRESET_FOR_MODEL: dict[str, str] = {
    "resnet20": "resnet56",
    "resnet32": "resnet56",
    "resnet44": "resnet56",
    "resnet56": "resnet56",
    "resnet110": "resnet56",
    "vgg16_slim": "vggnet",
    "googlenet_cifar": "googlenet",
}
