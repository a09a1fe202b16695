"""``load_dataset`` and ``dataset_info``: one entry point for registered names and image paths."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .arrays import ArrayDataset, DatasetInfo
from .image_folder import ImageFolderSource
from .registry import DATASETS
from .splits import stratified_split
from ..core.errors import UserInputError

SPLITS = ("train", "val", "test")


def load_dataset(
    data: str | Path,
    split: str = "train",
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    augment: bool = False,
    val_fraction: float = 0.0,
    seed: int = 0,
    root: str | Path | None = None,
    expected_image_shape: tuple[int, int, int] | None = None,
    expected_num_classes: int | None = None,
) -> ArrayDataset:
    """Loads one split of a registered data set, an image folder or a zip of images.

    Args:
        data: A name in :data:`DATASETS` (``"digits"``, ``"cifar10"``, ``"cifar100"``) or the path
            of a folder or ``.zip`` laid out as ``[top/]split/class/image``.
        split: ``"train"``, ``"val"`` or ``"test"``. ``"val"`` is the stratified fraction
            ``val_fraction`` of the training split chosen with ``seed``; when ``val_fraction > 0``,
            ``"train"`` is the rest of the training split, so the two never overlap. With
            ``val_fraction == 0``, ``"val"`` is an image folder's own ``val`` folder, if it has one.
        mean: Per-channel normalisation mean (pixels scaled to [0, 1]); default the data set's own
            (ImageNet's for CIFAR and RGB folders, see :mod:`filterscope.data.digits` for digits).
            Pass the model's own values.
        std: Per-channel normalisation standard deviation, as ``mean``.
        augment: Random crop with zero padding and horizontal flip (see :class:`ArrayDataset`).
        val_fraction: Share of each class of the training split to hold out as ``"val"``, in [0, 1).
        seed: Seed of the validation hold-out (not of digits' fixed train/test split).
        root: Where a registered data set keeps its files (CIFAR: default ``cache_dir()/"cifar10"``).
        expected_image_shape: ``(C, H, W)`` the model needs; a mismatch raises an error.
        expected_num_classes: Number of classes the model predicts; a mismatch raises an error.

    Returns:
        The split as an :class:`ArrayDataset`.

    Raises:
        UserInputError: For an unknown name or missing path, a missing split, a broken file, or a
            data set that does not match ``expected_image_shape`` / ``expected_num_classes``.
    """
    if split not in SPLITS:
        raise UserInputError(f"split {split!r} is not one of {', '.join(SPLITS)}; pass one of those.")
    if not 0.0 <= val_fraction < 1.0:
        raise UserInputError(f"val_fraction {val_fraction} is outside [0, 1); pass a fraction such as 0.1.")

    folder: ImageFolderSource | None = None
    if _is_registered(data):
        loader = DATASETS[str(data)]
        load_split: Callable[[str], ArrayDataset] = lambda name: loader(name, _optional_path(root))  # noqa: E731
    else:
        folder = _image_folder(data)
        if split != "val" or val_fraction > 0:  # the split to read is there (a folder's own 'val' is checked below)
            folder.require_split("test" if split == "test" else "train")
        # Fail before a long first decode: classes and image size are known from the listing and one image.
        _check_expected(folder.info(), expected_image_shape, expected_num_classes, check_channels=False)
        load_split = folder.load

    if split == "test":
        dataset = load_split("test")
    elif val_fraction > 0:
        training = load_split("train")
        kept, held_out = stratified_split(training.targets, val_fraction, seed)
        dataset = training.subset(held_out if split == "val" else kept)
    elif split == "val":
        if folder is None or "val" not in folder.tree:
            raise UserInputError(
                "there is no validation split unless you hold one out; pass a val fraction "
                "(val_fraction=0.1, or --val-fraction 0.1) to use part of the training split."
            )
        dataset = folder.load("val")
    else:
        dataset = load_split("train")

    _check_expected(dataset.info, expected_image_shape, expected_num_classes, check_channels=True)
    return dataset.with_transform(mean=mean, std=std, augment=augment)


def dataset_info(data: str | Path, root: str | Path | None = None) -> DatasetInfo:
    """Name, classes and ``(C, H, W)`` image shape of a data set, without decoding a whole image folder.

    For a registered name this reads the (smaller) test split; for a folder or zip it lists the
    files and decodes the first image.
    """
    if _is_registered(data):
        return DATASETS[str(data)]("test", _optional_path(root)).info
    return _image_folder(data).info()


def _is_registered(data: str | Path) -> bool:
    return isinstance(data, str) and data in DATASETS


def _optional_path(root: str | Path | None) -> Path | None:
    return None if root is None else Path(root).expanduser()


def _image_folder(data: str | Path) -> ImageFolderSource:
    if not Path(data).expanduser().exists():
        raise UserInputError(
            f"data {str(data)!r} is neither a registered data set ({', '.join(sorted(DATASETS))}) "
            f"nor an existing path; pass one of those names or the path of an image folder or .zip file."
        )
    return ImageFolderSource(data)


def _check_expected(
    info: DatasetInfo,
    expected_image_shape: tuple[int, int, int] | None,
    expected_num_classes: int | None,
    *,
    check_channels: bool,
) -> None:
    """Raises when the data does not fit the model (``check_channels=False`` compares only H×W)."""
    if expected_num_classes is not None and expected_num_classes != info.num_classes:
        raise UserInputError(
            f"the model expects {expected_num_classes} classes but data '{info.name}' has {info.num_classes}; "
            f"pass a data set with {expected_num_classes} classes or a model built for {info.num_classes}."
        )
    if expected_image_shape is None:
        return
    expected, actual = tuple(expected_image_shape), tuple(info.image_shape)
    if (expected if check_channels else expected[1:]) != (actual if check_channels else actual[1:]):
        raise UserInputError(
            f"the model expects images of {'×'.join(map(str, expected))} (C×H×W) but data '{info.name}' has "
            f"{'×'.join(map(str, actual))}; pass data of that shape or a model built for it."
        )
