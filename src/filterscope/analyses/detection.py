"""Detectors of adversarial inputs trained on a few images per class, scored by ROC AUC (Li et al., 2020, Table 6).

Protocol: for each of ``runs`` seeds, n training-split images per class whose attack succeeded are drawn,
they and their adversarial versions train a classifier (real 0, adversarial 1) on one feature, and a fixed
test set — every test image and the adversarial version of each whose attack succeeded — scores it by the
area under the ROC curve of the predicted probability of "adversarial". The draw of a seed is the same for
every feature and classifier, so their AUCs are paired. The grid reports mean ± std over the seeds per
(classifier, n, feature), for one training attack and one test attack (FGSM → PGD is the case a user meets:
a detector trained on one attack, shown another).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from sklearn.ensemble import AdaBoostClassifier, GradientBoostingClassifier, RandomForestClassifier
from sklearn.metrics import roc_auc_score

from ..core.errors import UserInputError

CLASSIFIERS = {
    "random_forest": lambda seed: RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1),
    "adaboost": lambda seed: AdaBoostClassifier(n_estimators=50, random_state=seed),
    "gradient_boosting": lambda seed: GradientBoostingClassifier(n_estimators=100, random_state=seed),
}


@dataclass
class DetectionConfig:
    """The detection protocol (see the module).

    Attributes:
        classifiers: names from :data:`CLASSIFIERS`.
        n_per_class: training images per class, each with its adversarial version.
        runs: independent draws (seeds ``seed``, ``seed + 1``, ...).
        seed: the first seed.
    """

    classifiers: tuple[str, ...] = tuple(CLASSIFIERS)
    n_per_class: tuple[int, ...] = (1, 5, 10)
    runs: int = 5
    seed: int = 0

    def validate(self) -> "DetectionConfig":
        unknown = [name for name in self.classifiers if name not in CLASSIFIERS]
        if unknown or not self.classifiers:
            raise UserInputError(f"unknown classifiers {unknown or list(self.classifiers)}; pass some of "
                                 f"{', '.join(CLASSIFIERS)}.")
        if not self.n_per_class or min(self.n_per_class) < 1:
            raise UserInputError(f"the training images per class must be at least 1, got {list(self.n_per_class)}.")
        if self.runs < 1:
            raise UserInputError(f"runs must be at least 1, got {self.runs}.")
        return self


@dataclass
class DetectionData:
    """Features of real images and of their successful adversarial versions, one split.

    Attributes:
        clean: per feature, (N, D) for every real image.
        adversarial: per feature, (M, D) for the successful adversarials only.
        labels: the true class of each real image, (N,).
        source: for each adversarial, the index of the real image it was made from, (M,).
    """

    clean: dict[str, np.ndarray]
    adversarial: dict[str, np.ndarray]
    labels: np.ndarray
    source: np.ndarray

    def test_set(self, feature: str) -> tuple[np.ndarray, np.ndarray]:
        """Every real image and every adversarial: (features, 1 for adversarial)."""
        x = np.concatenate([self.clean[feature], self.adversarial[feature]])
        y = np.concatenate([np.zeros(len(self.labels)), np.ones(len(self.source))])
        return x, y

    def draw(self, n: int, rng: np.random.Generator, warnings: list[str]) -> np.ndarray:
        """Positions in ``source`` of n adversarials per class (fewer, with a warning, where a class has fewer)."""
        chosen = []
        for label in np.unique(self.labels):
            candidates = np.flatnonzero(self.labels[self.source] == label)
            if len(candidates) < n:
                warnings.append(f"class {int(label)} has {len(candidates)} training images with a successful attack, "
                                f"fewer than n = {n}; it trains with those")
            chosen.append(rng.choice(candidates, size=min(n, len(candidates)), replace=False))
        return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)

    def training_set(self, feature: str, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The drawn adversarials and the real images they came from: (features, 1 for adversarial)."""
        x = np.concatenate([self.clean[feature][self.source[positions]], self.adversarial[feature][positions]])
        y = np.concatenate([np.zeros(len(positions)), np.ones(len(positions))])
        return x, y


def detection_auc(classifier: str, seed: int, train: tuple[np.ndarray, np.ndarray],
                  test: tuple[np.ndarray, np.ndarray]) -> float | None:
    """ROC AUC on ``test`` of ``classifier`` fitted on ``train`` (each a (features, is-adversarial) pair); None when
    the classifier cannot be fitted because the training features do not separate the two at all (scikit-learn's
    AdaBoost refuses a first learner no better than chance, e.g. on features equal for real and adversarial)."""
    model = CLASSIFIERS[classifier](seed)
    try:
        model.fit(*train)
    except ValueError as error:
        if "worse than random" not in str(error):
            raise
        return None
    return float(roc_auc_score(test[1], model.predict_proba(test[0])[:, 1]))


@dataclass
class DetectionGrid:
    """AUC per (classifier, n, feature) and seed, for one training and one test attack."""

    train_attack: str
    test_attack: str
    rows: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def auc(self, classifier: str, n: int, feature: str) -> dict:
        return next(row for row in self.rows if (row["classifier"], row["n"], row["feature"]) == (classifier, n, feature))


def detection_grid(train: DetectionData, test: DetectionData, features: Sequence[str], config: DetectionConfig,
                   *, train_attack: str, test_attack: str) -> DetectionGrid:
    """The Table 6 grid: AUC mean ± std over ``config.runs`` seeds per (classifier, n, feature)."""
    config.validate()
    if len(test.source) == 0 or len(train.source) == 0:
        raise UserInputError(f"no {train_attack if len(train.source) == 0 else test_attack} attack succeeded, so there is "
                             "nothing to detect; raise --eps or use --attack pgd.")
    grid = DetectionGrid(train_attack, test_attack)
    scores: dict[tuple, list[float]] = {}
    test_sets = {feature: test.test_set(feature) for feature in features}
    for n in config.n_per_class:
        for run in range(config.runs):
            seed = config.seed + run
            positions = train.draw(n, np.random.default_rng(seed), grid.warnings)
            for feature in features:
                training = train.training_set(feature, positions)
                for classifier in config.classifiers:
                    auc = detection_auc(classifier, seed, training, test_sets[feature])
                    if auc is None:
                        grid.warnings.append(f"{classifier} could not be fitted on the {feature} features (n = {n}): they do "
                                             "not tell the training adversarials from real images at all; counted as AUC 0.5")
                        auc = 0.5
                    scores.setdefault((classifier, n, feature), []).append(auc)
    for (classifier, n, feature), values in scores.items():
        grid.rows.append({"train_attack": train_attack, "test_attack": test_attack, "classifier": classifier, "n": n,
                          "feature": feature, "auc_mean": float(np.mean(values)), "auc_std": float(np.std(values)),
                          "aucs": values})
    grid.warnings = list(dict.fromkeys(grid.warnings))
    return grid
