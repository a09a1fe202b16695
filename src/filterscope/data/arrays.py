"""The in-memory data set every loader returns: uint8 images, int64 targets and the transforms.

All data sets in filterscope are small enough to sit in memory as one ``uint8`` array of shape
``(N, H, W, C)`` (CIFAR-10's 50,000 training images take 150 MB). Keeping them that way makes
loading fast, subsets cheap and the transforms a few tensor operations, with no torchvision
dependency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import UserInputError

# The normalisation the shared CIFAR-10 checkpoints were trained with (and most ImageNet models).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class DatasetInfo:
    """What a model needs to know about a data set.

    Attributes:
        name: The registered name (``"cifar10"``) or, for a folder or zip, its file name stem.
        classes: Class names in label order: ``classes[k]`` is the name of label ``k``.
        image_shape: ``(C, H, W)`` of one image as the model sees it.
    """

    name: str
    classes: list[str]
    image_shape: tuple[int, int, int]

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.classes)


def _per_channel(values: Sequence[float] | float, channels: int, what: str) -> tuple[float, ...]:
    """Returns ``values`` as one float per channel; a single value is repeated for every channel."""
    values = (values,) if isinstance(values, (int, float)) else tuple(float(v) for v in values)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise UserInputError(
            f"{what} has {len(values)} values but the images have {channels} channel(s); "
            f"pass one value per channel (or a single value for all)."
        )
    return tuple(float(v) for v in values)


class ArrayDataset(torch.utils.data.Dataset):
    """Images held as one uint8 array, returned as normalised float tensors.

    ``dataset[i]`` is ``(image, label)``: ``image`` a float32 tensor ``C×H×W`` computed as
    ``(pixel / 255 - mean) / std`` per channel, ``label`` an ``int``. With ``augment=True`` each
    access first takes a random ``H×W`` crop of the image zero-padded by ``padding`` pixels on
    every side, then flips it left-right with probability 0.5 (the standard CIFAR augmentation;
    padding is applied to the raw pixels, so padded pixels are black, as with torchvision's
    ``RandomCrop``). The random numbers come from torch's global generator, so
    ``torch.manual_seed`` (or a ``DataLoader`` generator, which seeds each worker) makes the
    augmentation repeatable.

    Args:
        images: ``uint8`` array ``(N, H, W, C)``.
        targets: Integer labels ``(N,)`` in ``[0, len(classes))``; stored as ``int64``.
        classes: Class names in label order.
        mean: Per-channel mean of pixels scaled to [0, 1]; default 0 (no shift). One value is
            used for every channel.
        std: Per-channel standard deviation; default 1 (no scaling).
        augment: Whether to apply the random crop and flip.
        padding: Zero-padding of the random crop; default ``max(1, H // 8)`` (4 for 32×32, 1 for 8×8).
        name: The data set's name, reported by :attr:`info`.
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        classes: Sequence[str],
        *,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        augment: bool = False,
        padding: int | None = None,
        name: str = "",
    ) -> None:
        images = np.asarray(images)
        targets = np.asarray(targets)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise UserInputError(
                f"images must be a uint8 array of shape (N, H, W, C), got {images.dtype} {images.shape}; "
                f"convert them with numpy before building an ArrayDataset."
            )
        if targets.shape != (len(images),):
            raise UserInputError(
                f"targets must have shape ({len(images)},) to match the images, got {targets.shape}; "
                f"pass one label per image."
            )
        if len(targets) and (targets.min() < 0 or targets.max() >= len(classes)):
            raise UserInputError(
                f"labels run from {targets.min()} to {targets.max()} but there are {len(classes)} classes; "
                f"pass labels in [0, {len(classes)})."
            )
        channels = images.shape[3]
        self.images = images
        self.targets = targets.astype(np.int64, copy=False)
        self.classes = [str(c) for c in classes]
        self.mean = _per_channel(0.0 if mean is None else mean, channels, "mean")
        self.std = _per_channel(1.0 if std is None else std, channels, "std")
        if min(self.std) <= 0:
            raise UserInputError(f"std {self.std} has a value that is not positive; pass positive values.")
        self.augment = bool(augment)
        self.padding = max(1, images.shape[1] // 8) if padding is None else int(padding)
        self.name = name
        # Shaped (C, 1, 1) so they broadcast over an image.
        self._mean_tensor = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        self._std_tensor = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = torch.from_numpy(self.images[index]).permute(2, 0, 1).float().div_(255.0)
        if self.augment:
            pixels = self._random_crop_and_flip(pixels)
        return (pixels - self._mean_tensor) / self._std_tensor, int(self.targets[index])

    def _random_crop_and_flip(self, pixels: torch.Tensor) -> torch.Tensor:
        """Random ``H×W`` crop of the zero-padded image, then a left-right flip half of the time."""
        _, height, width = pixels.shape
        pad = self.padding
        padded = F.pad(pixels, (pad, pad, pad, pad))  # zeros on raw [0, 1] pixels: black borders
        top, left = torch.randint(0, 2 * pad + 1, (2,)).tolist()
        crop = padded[:, top : top + height, left : left + width]
        if torch.rand(()) < 0.5:
            crop = crop.flip(-1)
        return crop

    @property
    def info(self) -> DatasetInfo:
        """Name, classes and ``(C, H, W)`` image shape."""
        _, height, width, channels = self.images.shape
        return DatasetInfo(self.name, list(self.classes), (channels, height, width))

    def subset(self, indices: Sequence[int] | np.ndarray) -> ArrayDataset:
        """A new data set with the images at ``indices`` (copied), and the same classes and transforms."""
        indices = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(
            self.images[indices],
            self.targets[indices],
            self.classes,
            mean=self.mean,
            std=self.std,
            augment=self.augment,
            padding=self.padding,
            name=self.name,
        )

    def with_transform(
        self,
        *,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        augment: bool | None = None,
    ) -> ArrayDataset:
        """The same images (shared, not copied) with other normalisation or augmentation.

        Arguments left as ``None`` keep this data set's value.
        """
        return ArrayDataset(
            self.images,
            self.targets,
            self.classes,
            mean=self.mean if mean is None else mean,
            std=self.std if std is None else std,
            augment=self.augment if augment is None else augment,
            padding=self.padding,
            name=self.name,
        )

    def __repr__(self) -> str:
        channels, height, width = self.info.image_shape
        return (
            f"ArrayDataset(name={self.name!r}, n={len(self)}, classes={len(self.classes)}, "
            f"shape={channels}x{height}x{width}, augment={self.augment})"
        )
