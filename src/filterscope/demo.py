"""``filterscope demo``: the whole pipeline on the embedded digits data, in about a minute.

For now it trains the small CNN on the 8×8 digits and evaluates it; each analysis adds its
step here as it lands.
"""

from __future__ import annotations

from pathlib import Path

from .engine import count_costs
from .models import model_spec
from .rundir import RunDir
from .train import TrainConfig, train
from .units import find_units


def run_demo(run_dir: str | Path = "runs/demo", *, epochs: int = 30, seed: int = 0, progress: bool = True) -> dict:
    """Train and evaluate ``digits_cnn`` on ``digits`` and write ``run_dir``.

    Returns:
        The summary that is also written to ``metrics.json`` under ``"demo"``.
    """
    config = TrainConfig(
        model="digits_cnn", data="digits", epochs=epochs, batch_size=64, lr=0.05, weight_decay=5e-4,
        schedule="cosine", seed=seed, run_dir=str(run_dir), progress=progress,
    )
    result = train(config)
    spec = model_spec("digits_cnn")
    units = find_units(result.model, spec.input_shape)
    costs = count_costs(result.model, spec.input_shape, units)
    summary = {
        "model": "digits_cnn",
        "data": "digits",
        "test_accuracy": result.final["accuracy"],
        "per_class_accuracy": result.final["per_class_accuracy"],
        "epochs": epochs,
        "conv_units": len(units),
        "flops_per_image": costs.total_flops,
        "parameters": costs.total_params,
        "run_dir": str(result.run_dir),
    }
    RunDir(run_dir).update_metrics("demo", summary)
    return summary
