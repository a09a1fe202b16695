"""Plugin (``filterscope --plugin``) registering the tests' MobileNetV2-style zoo model as ``mobilenet_v2_zoo``:
inverted residuals whose 1×1 projection has no activation of its own (the read-out question of issue #36)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

from zoo import MobileNetV2Like  # noqa: E402

from filterscope import register_model  # noqa: E402


@register_model("mobilenet_v2_zoo", description="the tests' MobileNetV2-style model (3 inverted residuals, ReLU6)")
def build(num_classes: int):
    return MobileNetV2Like(num_classes)
