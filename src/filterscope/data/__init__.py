"""Data sets: a registry of named ones (digits, cifar10, cifar100) and image folders or zips.

Every loader returns an :class:`ArrayDataset`: uint8 images in memory, handed out as normalised
float tensors, optionally augmented. Typical use::

    from filterscope.data import load_dataset

    train = load_dataset("cifar10", "train", augment=True, val_fraction=0.1)
    val = load_dataset("cifar10", "val", val_fraction=0.1)
    test = load_dataset("../shared/data/cifar10-jpeg.zip", "test", expected_num_classes=10)
"""

from .arrays import IMAGENET_MEAN, IMAGENET_STD, ArrayDataset, DatasetInfo
from .registry import DATASETS, register_dataset

# Importing these modules registers their data sets.
from . import cifar, digits  # noqa: E402,F401  isort: skip
from .image_folder import ImageFolderSource
from .loading import SPLITS, dataset_info, load_dataset
from .splits import stratified_split

__all__ = [
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SPLITS",
    "ArrayDataset",
    "DatasetInfo",
    "ImageFolderSource",
    "dataset_info",
    "load_dataset",
    "register_dataset",
    "stratified_split",
]
