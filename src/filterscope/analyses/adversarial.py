"""Adversarial inputs detected from calculation paths (Li et al., "Interpretable Neural Network Decoupling",
ECCV 2020, Section 4.4): attacks, features, detectors, the Table 6 grid and the Fig. 10 class pair.

``run(decoupled, dense_network, train, test, config, mean=..., std=...)``:

1. attacks the decoupled model (captum FGSM / PGD, untargeted, ε in pixels; :mod:`.attacks`) on a pool of
   training-split images and on a fixed set of test-split images; only successful adversarials go on;
2. reads the features of the real images and of the adversarials (:mod:`.adversarial_features`): the binary
   path, the dense network's binarised and real-valued pooled activations of the same units, the CDRP;
3. trains and scores the detectors (:mod:`.detection`) per attack, and FGSM-trained → PGD-tested;
4. for a class pair a → b, a targeted attack of the real a test images and the three groups' paths
   (:mod:`.adversarial_pair`).

The models are attacked and read as they are; neither is changed (training flags are restored).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..core.errors import UserInputError
from ..core.eval_mode import evaluation_mode
from .adversarial_features import DEFAULT_FEATURES, check_features, image_features, path_features
from .adversarial_pair import PairPaths, pair_paths
from .attacks import ATTACKS, AttackConfig, AttackResult, attack
from .detection import DetectionConfig, DetectionData, DetectionGrid, detection_grid
from .routing_paths import CriticalPathConfig


@dataclass
class AdversarialConfig:
    """What :func:`run` does.

    Attributes:
        attacks: attacks of the detection grid, from ``("fgsm", "pgd")``; with both, FGSM → PGD is added.
        eps: L∞ budget in pixel units of the un-normalised image, in (0, 1].
        pgd_steps, pgd_step_size: PGD's steps and step (None: 2.5 · eps / steps).
        zero_gradient_threshold: captum's FGSM threshold (0: the standard attack; see :mod:`.attacks`).
        features: from :data:`~.adversarial_features.FEATURES`.
        detection: classifiers, n per class, runs, seed.
        critical: the CDRP settings.
        pair: (a, b) class indices of the Fig. 10 pair, or None to skip it; ``pair_attack`` its attack.
        batch_size: images per batch of every pass.
    """

    attacks: tuple[str, ...] = ATTACKS
    eps: float = 8 / 255
    pgd_steps: int = 10
    pgd_step_size: float | None = None
    zero_gradient_threshold: float = 0.0
    features: tuple[str, ...] = DEFAULT_FEATURES
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    critical: CriticalPathConfig = field(default_factory=CriticalPathConfig)
    pair: tuple[int, int] | None = None
    pair_attack: str = "pgd"
    batch_size: int = 128

    def attack_config(self, method: str) -> AttackConfig:
        return AttackConfig(method=method, eps=self.eps, steps=self.pgd_steps, step_size=self.pgd_step_size,
                            zero_gradient_threshold=self.zero_gradient_threshold, batch_size=self.batch_size,
                            seed=self.detection.seed).validate()

    def validate(self, num_classes: int | None = None) -> "AdversarialConfig":
        if not self.attacks or any(method not in ATTACKS for method in self.attacks):
            raise UserInputError(f"unknown attacks {list(self.attacks)}; pass some of {', '.join(ATTACKS)}.")
        for method in (*self.attacks, self.pair_attack):
            self.attack_config(method)
        self.features = check_features(self.features)
        self.detection.validate()
        self.critical.validate()
        if self.pair is not None and num_classes is not None:
            for index in self.pair:
                if not 0 <= index < num_classes:
                    raise UserInputError(f"class {index} of the pair is not a class of the model (0 to {num_classes - 1}); "
                                         "pass class names or indices the data set has.")
            if self.pair[0] == self.pair[1]:
                raise UserInputError("the two classes of the pair are the same; pass two different classes (a → b).")
        return self


@dataclass
class LabelledImages:
    """Normalised images (N, C, H, W) with their classes (N,)."""

    images: torch.Tensor
    labels: np.ndarray


@dataclass
class AdversarialResult:
    """Everything :func:`run` measured.

    Attributes:
        attacks: per attack, the summaries of its training-pool and test attacks (success rate, dropped images,
            how many of the successful adversarials also fool the dense network).
        grids: the detection grids (one per attack, and FGSM → PGD).
        pair: the Fig. 10 paths, or None.
        features: the features compared; ``feature_widths`` their dimensions.
        seconds: time per stage.
        config: the settings.
    """

    attacks: dict[str, dict]
    grids: list[DetectionGrid]
    pair: PairPaths | None
    features: tuple[str, ...]
    feature_widths: dict[str, int]
    seconds: dict[str, float]
    config: AdversarialConfig

    def table(self) -> list[dict]:
        """Every row of every grid (attack, classifier, n, feature, AUC mean and std, the AUCs)."""
        return [row for grid in self.grids for row in grid.rows]

    def warnings(self) -> list[str]:
        return list(dict.fromkeys(w for grid in self.grids for w in grid.warnings))

    def summary(self) -> dict:
        """The JSON object written under ``metrics.json["adversarial"]``."""
        from dataclasses import asdict

        return {"attacks": self.attacks, "table": self.table(), "warnings": self.warnings(),
                "pair": self.pair.summary() if self.pair is not None else None, "features": list(self.features),
                "feature_widths": self.feature_widths, "seconds": self.seconds, "config": asdict(self.config)}

    def markdown(self) -> str:
        """The Table 6 layout: one block per attack, rows classifier × n, columns features, AUC mean ± std."""
        lines = []
        for grid in self.grids:
            lines += [f"### trained on {grid.train_attack.upper()}, tested on {grid.test_attack.upper()}", "",
                      "| classifier | n | " + " | ".join(self.features) + " |",
                      "|---|---|" + "---|" * len(self.features)]
            for classifier in self.config.detection.classifiers:
                for n in self.config.detection.n_per_class:
                    cells = [f"{grid.auc(classifier, n, f)['auc_mean']:.3f} ± {grid.auc(classifier, n, f)['auc_std']:.3f}"
                             for f in self.features]
                    lines.append(f"| {classifier} | {n} | " + " | ".join(cells) + " |")
            lines.append("")
        return "\n".join(lines)

    def arrays(self) -> dict[str, np.ndarray]:
        """What the figures are drawn from: the AUC grid and the pair's paths, groups, embedding, frequencies."""
        arrays: dict[str, np.ndarray] = {}
        for grid in self.grids:
            key = f"auc_{grid.train_attack}_to_{grid.test_attack}"
            arrays[key] = np.array([[[grid.auc(c, n, f)["auc_mean"] for f in self.features]
                                     for n in self.config.detection.n_per_class] for c in self.config.detection.classifiers])
            arrays[key + "_std"] = np.array([[[grid.auc(c, n, f)["auc_std"] for f in self.features]
                                              for n in self.config.detection.n_per_class]
                                             for c in self.config.detection.classifiers])
        if self.pair is not None:
            arrays.update({"pair_paths": np.packbits(self.pair.paths, axis=1), "pair_width": np.array(self.pair.paths.shape[1]),
                           "pair_groups": self.pair.groups, "pair_embedding": self.pair.embedding,
                           "pair_frequencies": self.pair.frequencies(), "pair_widths": np.array(self.pair.widths)})
        return arrays


def _log(progress: Callable[[str], None] | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _features_of(decoupled, dense_network, images, config: AdversarialConfig) -> dict[str, np.ndarray]:
    return image_features(decoupled, dense_network, images, config.features, critical_config=config.critical,
                          batch_size=config.batch_size)


@torch.no_grad()
def _dense_fooled(dense_network: nn.Module, result: AttackResult, batch_size: int) -> float:
    """Share of the successful adversarials whose label the dense network also gets wrong."""
    kept = np.flatnonzero(result.success)
    if len(kept) == 0:
        return float("nan")
    device = next(dense_network.parameters()).device
    with evaluation_mode(dense_network):
        predictions = torch.cat([dense_network(result.adversarial[kept[i:i + batch_size]].to(device)).argmax(1).cpu()
                                 for i in range(0, len(kept), batch_size)]).numpy()
    return float((predictions != result.labels[kept]).mean())


def _attack_split(decoupled, dense_network, split: LabelledImages, method: str, config: AdversarialConfig,
                  mean, std, clean: dict[str, np.ndarray]) -> tuple[dict, DetectionData]:
    result = attack(decoupled, split.images, split.labels, mean=mean, std=std, config=config.attack_config(method))
    kept = np.flatnonzero(result.success)
    adversarial = _features_of(decoupled, dense_network, result.adversarial[kept], config)
    summary = {**result.summary(), "dense_network_also_fooled": _dense_fooled(dense_network, result, config.batch_size)}
    return summary, DetectionData(clean, adversarial, np.asarray(split.labels), kept)


def run(decoupled: nn.Module, dense_network: nn.Module, train: LabelledImages, test: LabelledImages,
        config: AdversarialConfig | None = None, *, mean: Sequence[float], std: Sequence[float],
        class_names: Sequence[str] | None = None, progress: Callable[[str], None] | None = None) -> AdversarialResult:
    """Attack, read features, train and score the detectors, and gather the class pair (see the module).

    Args:
        decoupled: a decoupled model (with ``last_gates()``); attacked and read.
        dense_network: the same network without gates (``filterscope.engine.base_network(decoupled)``).
        train: the pool of training-split images the n per class are drawn from.
        test: the fixed test set.
        config: attacks, features, protocol, CDRP and pair settings.
        mean, std: the normalisation of the images (the attacks run on the pixels).
        class_names: names of the classes, for the pair.
        progress: called with one line per stage.
    """
    if not hasattr(decoupled, "last_gates"):
        raise UserInputError("the model has no gates; decouple it first (filterscope decouple) and pass the decoupled model.")
    config = (config or AdversarialConfig()).validate(getattr(decoupled, "num_classes", None))
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    _log(progress, f"features of {len(train.labels)} training and {len(test.labels)} test images")
    clean_train = _features_of(decoupled, dense_network, train.images, config)
    clean_test = _features_of(decoupled, dense_network, test.images, config)
    seconds["clean_features"] = time.perf_counter() - started
    attacks, data = {}, {}
    for method in config.attacks:
        started = time.perf_counter()
        _log(progress, f"{method}: attacking and reading the adversarials' features")
        train_summary, train_data = _attack_split(decoupled, dense_network, train, method, config, mean, std, clean_train)
        test_summary, test_data = _attack_split(decoupled, dense_network, test, method, config, mean, std, clean_test)
        if test_summary["successful"] == 0 or train_summary["successful"] == 0:
            raise UserInputError(f"the {method} attack at eps {config.eps:.4g} fooled the model on no "
                                 f"{'test' if test_summary['successful'] == 0 else 'training'} image, so there is "
                                 "nothing to detect; raise --eps or use --attack pgd.")
        attacks[method] = {"train": train_summary, "test": test_summary}
        data[method] = (train_data, test_data)
        seconds[f"attack_and_features_{method}"] = time.perf_counter() - started
    started = time.perf_counter()
    pairs = [(m, m) for m in config.attacks] + ([("fgsm", "pgd")] if {"fgsm", "pgd"} <= set(config.attacks) else [])
    grids = []
    for train_attack, test_attack in pairs:
        _log(progress, f"detectors: trained on {train_attack}, tested on {test_attack}")
        grids.append(detection_grid(data[train_attack][0], data[test_attack][1], config.features, config.detection,
                                    train_attack=train_attack, test_attack=test_attack))
    seconds["detectors"] = time.perf_counter() - started
    pair = None
    if config.pair is not None:
        started = time.perf_counter()
        _log(progress, "class pair: targeted attack and paths")
        pair = _pair(decoupled, test, config, mean, std, class_names)
        seconds["pair"] = time.perf_counter() - started
    widths = {name: int(values.shape[1]) for name, values in clean_test.items()}
    return AdversarialResult(attacks, grids, pair, config.features, widths, seconds, config)


def _pair(decoupled, test: LabelledImages, config: AdversarialConfig, mean, std, class_names) -> PairPaths:
    source, target = config.pair
    labels = np.asarray(test.labels)
    a_images, b_images = test.images[labels == source], test.images[labels == target]
    if len(a_images) == 0 or len(b_images) == 0:
        raise UserInputError(f"the test images hold no image of class {source if len(a_images) == 0 else target}; "
                             "pick a pair of classes the test set has.")
    result = attack(decoupled, a_images, np.full(len(a_images), source), mean=mean, std=std,
                    config=config.attack_config(config.pair_attack), targets=np.full(len(a_images), target))
    kept = np.flatnonzero(result.success)
    names = list(class_names) if class_names is not None else [str(i) for i in range(max(source, target) + 1)]
    return pair_paths(path_features(decoupled, a_images, config.batch_size),
                      path_features(decoupled, b_images, config.batch_size),
                      path_features(decoupled, result.adversarial[kept], config.batch_size),
                      source=source, target=target, source_name=names[source], target_name=names[target],
                      layer_names=list(decoupled.gated_units), widths=list(decoupled.out_channels),
                      attack=result.summary(), seed=config.detection.seed)
