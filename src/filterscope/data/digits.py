"""``digits``: scikit-learn's bundled 8×8 handwritten digits, the offline default data set.

1,797 grayscale images of the digits 0-9 (UCI "Optical Recognition of Handwritten Digits"),
shipped inside scikit-learn, so it needs no download. Pixel values 0..16 are scaled to uint8
as ``round(x * 255 / 16)``.

The data set has no official test split. filterscope makes a fixed, class-stratified 80/20
split with seed 0 (1,438 train / 359 test images); it does not depend on the ``seed`` argument of
:func:`~filterscope.data.load_dataset`, so "the digits test set" is the same everywhere.

Normalisation: :data:`DIGITS_MEAN` / :data:`DIGITS_STD` are the mean and standard deviation of
all pixels of that training split, scaled to [0, 1], computed once and written here as constants
(a test recomputes them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .arrays import ArrayDataset
from .registry import register_dataset
from .splits import stratified_split

DIGITS_MEAN: tuple[float] = (0.3055,)
DIGITS_STD: tuple[float] = (0.3759,)

# The fixed train/test split; deliberately independent of the user's seed.
TEST_FRACTION = 0.2
SPLIT_SEED = 0


@register_dataset("digits")
def digits(split: str, root: Path | None = None) -> ArrayDataset:
    """The digits ``"train"`` or ``"test"`` split (``root`` is ignored: the data is bundled)."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    targets = bunch.target.astype(np.int64)
    train_indices, test_indices = stratified_split(targets, TEST_FRACTION, SPLIT_SEED)
    indices = train_indices if split == "train" else test_indices
    return ArrayDataset(
        images[indices],
        targets[indices],
        [str(digit) for digit in range(10)],
        mean=DIGITS_MEAN,
        std=DIGITS_STD,
        name="digits",
    )
