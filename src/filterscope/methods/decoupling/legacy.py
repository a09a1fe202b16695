"""Settings written under the option names of earlier versions, translated to today's.

Checkpoints (``filterscope.decoupled/1``), run directories' ``decouple.yaml`` and YAML configs of
earlier versions name four options that are gone. Each is translated here, explicitly: a value that
today's code computes the same way is dropped or renamed; any other value is refused with one
sentence, never dropped in silence.

    kl_epsilon                 ε of the KL distributions; now fixed at ``KL_EPSILON`` (1e-6)
    kl_detach_response         the KL gradient stopped at the responses y; now always so (True)
    mi_classifier_full_rate    W_cla trained at full rate on detached gates; now always so (True)
    use_kl                     False is λk = 0 (the KL term left out); True keeps λk as given
"""

from __future__ import annotations

from typing import Any

from ...core.errors import UserInputError
from .losses import KL_EPSILON

# old name -> the one value today's code computes
FIXED_BEHAVIOUR = {"kl_epsilon": KL_EPSILON, "kl_detach_response": True, "mi_classifier_full_rate": True}


def upgrade_settings(values: dict[str, Any], source: str = "the settings") -> dict[str, Any]:
    """A copy of flat ``values`` (decoupling config and run options together, or either alone) under
    today's option names.

    Args:
        values: option name -> value, possibly with the names of earlier versions.
        source: what the values came from, for the error message (a file, a checkpoint).

    Raises:
        UserInputError: an old option has a value today's code does not compute.
    """
    upgraded = dict(values)
    for name, kept in FIXED_BEHAVIOUR.items():
        if name not in upgraded:
            continue
        value = upgraded.pop(name)
        if value != kept:
            raise UserInputError(f"{source} set {name}={value!r}, which this version no longer offers (it always "
                                 f"computes {name}={kept!r}); use an earlier filterscope for it, or drop the option.")
    if "use_kl" in upgraded:
        if not upgraded.pop("use_kl"):
            upgraded["lambda_kl"] = 0.0  # the KL term off is λk = 0
    return upgraded
