"""``filterscope demo``: the whole pipeline on the embedded digits data, in about a minute.

It trains the small CNN on the 8×8 digits, evaluates it, then decouples it (gates + the three
losses) and reports accuracy, FLOPs and filter states under the gates; each analysis adds its
step here as it lands.
"""

from __future__ import annotations

from pathlib import Path

from ..core.flops import count_costs
from ..models import model_spec
from ..io.run_dir import RunDir
from ..training.train import TrainConfig, train
from ..core.units import find_units


def run_demo(run_dir: str | Path = "runs/demo", *, epochs: int = 30, decouple_epochs: int = 15, seed: int = 0,
             progress: bool = True) -> dict:
    """Train and evaluate ``digits_cnn`` on ``digits``, decouple it, and write ``run_dir``.

    One intra-op thread: on 8×8 images more threads only add synchronisation.

    Returns:
        The summary that is also written to ``metrics.json`` under ``"demo"``.
    """
    config = TrainConfig(
        model="digits_cnn", data="digits", epochs=epochs, batch_size=64, lr=0.05, weight_decay=5e-4,
        schedule="cosine", seed=seed, run_dir=str(run_dir), progress=progress, threads=1,
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
    if decouple_epochs > 0:
        summary["decouple"] = decouple_digits(Path(run_dir), result.run_dir / "checkpoints" / "last.pt", decouple_epochs, seed, progress)
    RunDir(run_dir).update_metrics("demo", summary)
    return summary


def decouple_digits(run_dir: Path, weights: Path, epochs: int, seed: int, progress: bool) -> dict:
    """Decouple the trained digits CNN (settings as in benchmarks/decouple_resnet20.py, scaled to its 2 gated layers)."""
    from ..methods.decoupling import DecoupleConfig
    from .decoupling import DecouplingRunOptions, run_decoupling

    train_config = TrainConfig(
        model="digits_cnn", data="digits", weights=str(weights), epochs=epochs, batch_size=64, lr=0.02,
        schedule="cosine", seed=seed, run_dir=str(run_dir / "decoupled"), progress=progress, threads=1,
    )
    decouple_config = DecoupleConfig(
        lambda_mi=0.01, lambda_kl=1.0, lambda_sparsity=5.0, sparsity_ratio=0.5, sparsity_form="mean",
        sparsity_on="evaluation", gate_lr_scale=10.0,
    )
    result = run_decoupling(train_config, decouple_config, DecouplingRunOptions(recalibrate_bn_images=2000))
    keys = ("accuracy", "mean_flops", "dense_flops", "flops_reduction", "energetic_fraction", "silent_fraction", "dynamic_fraction")
    return {"run_dir": train_config.run_dir, **{k: result[k] for k in keys}}
