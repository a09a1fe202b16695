"""Settings of network decoupling: the paper's method first, then what this project added to make it work.

``PAPER_FIELDS`` are Li et al. (2020)'s own settings, with the paper's defaults (Table 5 presets for
the loss weights and R). ``EXTENSION_FIELDS`` are this project's additions, each one option whose
default is the paper's behaviour where the paper has one; docs/decoupling-options.md says what each
does, why it exists and what it measured.

These defaults are the API's (``DecoupleConfig()``, ``decouple(model)``) and what a stored config that
lacks a field was run with. ``filterscope decouple`` starts from other ones: the bundled config
``default`` (``pipelines/recipes/default.yaml``, the best measured recipe's settings that do not depend
on the network); its ``--config paper`` is these defaults with the gate input unstandardised (Eq. 4 as written).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, fields

from ...core.config import check_choices
from ...core.errors import UserInputError
from .presets import PRESET_FIELDS, PRESET_FOR_MODEL, PRESETS

SPARSITY_FORMS = ("paper", "mean", "batch", "network")
GATE_BIAS_ORDERS = ("uniform", "bn_scale")
SPARSITY_ON = ("noisy", "evaluation")


@dataclass
class DecoupleConfig:
    """How to decouple a network: the paper's settings, then the extensions (marked so).

    Attributes:
        preset: a name of ``PRESETS`` (Table 5 of the paper), "auto" (the preset of the built-in
            model, if any) or None; values set explicitly (not None) override the preset's.
        reduction: γ, the controlling module's squeeze ratio (hidden width C/γ).
        gate_bias_init: initial gate logit b; > 0 so every filter starts on, < 2.4 so the gate can learn.
        gate_noise_std: standard deviation of SemHash's training noise α (1 in the paper).
        semhash_hard_fraction: share of the samples trained with hard straight-through gates (½ in
            the paper); the others take the soft v1, whose scaled-down activations differ from what
            evaluation computes.
        lambda_mi: λm, weight of the mutual-information loss L_mi (Eq. 9).
        lambda_kl: λk, weight of KL(z ‖ y) (Eq. 10); 0 leaves the term out (and skips measuring the
            responses y it needs): the "no L_kl" rows of the paper's Table 7 ablation.
        lambda_sparsity: λs, weight of the sparsity loss L_s (Eq. 11).
        sparsity_ratio: R, the target share of active filters; one number, or one per gated layer.
        include: fnmatch patterns of unit names to gate (default: every gateable unit).
        exclude: fnmatch patterns of unit names not to gate. Each include or exclude pattern must match
            a unit of the model (one that matches none is an error).
        skip_first_and_last: leave the first and the last conv unit ungated (the paper's choice).
        standardize_gate_input: (extension) standardise the pooled input s per channel before W1
            (BatchNorm1d without affine parameters); without it the gates of a pretrained network
            barely depend on the input (see ControllingModule).
        gate_bias_order: (extension) "uniform" starts every gate of a layer at ``gate_bias_init`` (the
            paper); "bn_scale" spreads the starting logits over [¼, 1]·``gate_bias_init`` by the rank
            of |γ| of the unit's BatchNorm (the network-slimming importance), so the least important
            filters are the first to close. With equal starting logits and W2 = 0, the sparsity term
            pushes every gate of a layer by the same amount and they cross 0 together: whole layers
            went dark for a few dozen steps early in training (loss 22 → 41 on ResNet-20).
        detach_gate_input: (extension) the controlling modules read s = GAP(X) without passing
            gradients back into X, so the gate losses (λs·L_s above all, which is much larger than the
            cross-entropy's pull on a gate) train the gates but do not reshape the network's
            features; the features learn from the task loss through the gated path only. False
            trains everything jointly (the paper); it also costs a backward pass per gated layer.
        sparsity_form: (extension) "paper" is |‖z‖₁ − R·N| per layer (Eq. 11, grows with the layer
            width N); "mean" is |mean(z) − R| (the same target, width-independent scale); both hold
            every input to R. "batch" is |mean over the batch of mean(z) − R|: the budget holds on
            average, so an input may open more filters than another (not in the paper).
            "network" is one budget per input over all gated layers, each weighted by the FLOPs its
            gates control: |Σ_l w_l·(mean(z) − R^l)| with the w_l averaging 1; an input may keep
            more filters in one layer and fewer in another at the same FLOPs (not in the paper).
        sparsity_on: (extension) "noisy" applies L_s to the training gates z (the paper);
            "evaluation" applies it to the noise-free hard gates 1(g > 0) with a straight-through
            gradient, i.e. to what inference will skip (noise alone can satisfy L_s on z while every
            evaluation gate is on).
        sparsity_warmup_epochs: (extension) λs rises linearly from 0 over this many epochs; 0 applies
            it from the first step (the paper).
        sparsity_ratio_ramp_epochs: (extension) the target R^l itself moves from 1 (every filter on)
            to its final value over this many epochs, along the cubic schedule of gradual pruning
            (Zhu & Gupta, 2017): R(t) = R + (1 − R)·(1 − t/T)³. The gates then close a few at a time
            while the network adapts, instead of all at once when λs takes hold; 0 keeps R fixed (the paper).
        path_finetune_epochs: (extension) the last this-many epochs train the network on its
            evaluation paths (not in the paper): every gate is fixed to 1(g > 0) as evaluation
            computes it (no noise, running statistics, no gradient), the gate losses are off and the
            network learns, from the cross-entropy alone, the very computation inference will run.
            Until then training goes through gates that evaluation does not use (noisy or soft,
            moving), which static pruning's fine-tuning of a fixed mask does not pay.
        gate_lr_scale: (extension) learning rate of the gates and classifiers relative to the network's.
    """

    # --- the paper's method ---------------------------------------------------------------------
    preset: str | None = None
    reduction: int = 4
    gate_bias_init: float = 1.0
    gate_noise_std: float = 1.0
    semhash_hard_fraction: float = 0.5
    lambda_mi: float | None = None
    lambda_kl: float | None = None
    lambda_sparsity: float | None = None
    sparsity_ratio: float | list[float] | None = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    skip_first_and_last: bool = True
    # --- extensions (docs/decoupling-options.md); each default is the paper's behaviour ----------
    standardize_gate_input: bool = True
    gate_bias_order: str = field(default="uniform", metadata={"choices": GATE_BIAS_ORDERS})
    detach_gate_input: bool = False
    sparsity_form: str = field(default="paper", metadata={"choices": SPARSITY_FORMS})
    sparsity_on: str = field(default="noisy", metadata={"choices": SPARSITY_ON})
    sparsity_warmup_epochs: float = 0.0
    sparsity_ratio_ramp_epochs: float = 0.0
    path_finetune_epochs: float = 0.0
    gate_lr_scale: float = 1.0

    def resolved(self, model_name: str | None = None) -> "DecoupleConfig":
        """A copy with the preset's values filled in where this config leaves them None."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        preset = self.preset
        if preset == "auto":
            preset = PRESET_FOR_MODEL.get(model_name or "")
            if preset is None:
                warnings.warn(
                    f"no decoupling preset for model {model_name!r}; using explicit values "
                    "(λm 0.01, λk 1, λs 0.00015, R 0 unless set)", stacklevel=2,
                )
        if preset is not None:
            if preset not in PRESETS:
                raise UserInputError(f"unknown decoupling preset {preset!r}; choose one of: {', '.join(sorted(PRESETS))}.")
            for name, value in PRESETS[preset].items():
                if values[name] is None:
                    values[name] = value
        defaults = PRESETS["resnet56"]
        for name in PRESET_FIELDS:
            if values[name] is None:
                values[name] = defaults[name]
        values["preset"] = preset
        config = DecoupleConfig(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if self.reduction < 1:
            raise UserInputError(f"reduction γ must be at least 1, got {self.reduction}.")
        check_choices(self)  # gate_bias_order, sparsity_form, sparsity_on
        for name in ("lambda_mi", "lambda_kl", "lambda_sparsity", "sparsity_warmup_epochs", "sparsity_ratio_ramp_epochs",
                     "path_finetune_epochs"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise UserInputError(f"{name} must be >= 0, got {value}.")
        ratios = self.sparsity_ratio if isinstance(self.sparsity_ratio, list) else [self.sparsity_ratio]
        if any(r is not None and not 0.0 <= r <= 1.0 for r in ratios):
            raise UserInputError(f"sparsity ratio R must be in [0, 1], got {self.sparsity_ratio}.")

    def layer_ratios(self, num_layers: int) -> list[float]:
        """R for each gated layer, in order."""
        ratio = self.sparsity_ratio
        if isinstance(ratio, list):
            if len(ratio) != num_layers:
                raise UserInputError(
                    f"{len(ratio)} sparsity ratios were given for {num_layers} gated layers; give one number or one per layer."
                )
            return [float(r) for r in ratio]
        return [float(ratio or 0.0)] * num_layers


PAPER_FIELDS = ("preset", "reduction", "gate_bias_init", "gate_noise_std", "semhash_hard_fraction", "lambda_mi",
                "lambda_kl", "lambda_sparsity", "sparsity_ratio", "include", "exclude", "skip_first_and_last")
EXTENSION_FIELDS = tuple(f.name for f in fields(DecoupleConfig) if f.name not in PAPER_FIELDS)
# How a run trains, not what the decoupled model is: kept out of the model's checkpoint entry.
SCHEDULE_FIELDS = ("sparsity_warmup_epochs", "sparsity_ratio_ramp_epochs", "path_finetune_epochs", "gate_lr_scale")


def model_settings(config: DecoupleConfig) -> dict:
    """``config`` as a dict without the training schedule (``SCHEDULE_FIELDS``): what a checkpoint stores."""
    return {name: value for name, value in asdict(config).items() if name not in SCHEDULE_FIELDS}


def schedule_settings(config: DecoupleConfig) -> dict:
    """The training schedule of ``config`` (``SCHEDULE_FIELDS``)."""
    return {name: getattr(config, name) for name in SCHEDULE_FIELDS}
