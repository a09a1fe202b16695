"""Tests of filterscope.data: registry, digits, CIFAR pickle readers, image folders/zips, splits, transforms.

Everything except the one ``shared`` test runs on tiny data that the tests write into ``tmp_path``.
"""

from __future__ import annotations

import os
import pickle
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from filterscope.data import (
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArrayDataset,
    DatasetInfo,
    ImageFolderSource,
    dataset_info,
    load_dataset,
    register_dataset,
    stratified_split,
)
from filterscope.data import cifar as cifar_module
from filterscope.data.digits import DIGITS_MEAN, DIGITS_STD
from filterscope.core.errors import UserInputError
from filterscope.core.locations import cache_dir, shared_dir

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Each test gets its own empty cache folder, so caches never leak between tests."""
    monkeypatch.setenv("FILTERSCOPE_CACHE", str(tmp_path / "cache"))


# --------------------------------------------------------------------------------------------------
# Writers of tiny data sets


def write_image_tree(
    root: Path,
    splits: dict[str, dict[str, int]],
    *,
    size: tuple[int, int] = (6, 5),
    mode: str = "RGB",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Writes ``root/split/class/NNN.png`` files of random pixels; returns the pixel arrays by relative path."""
    rng = np.random.default_rng(seed)
    written = {}
    width, height = size
    for split, classes in splits.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                shape = (height, width) if mode == "L" else (height, width, 3)
                pixels = rng.integers(0, 256, shape, dtype=np.uint8)
                relative = f"{split}/{name}/{index:03d}.png"
                Image.fromarray(pixels, mode=mode).save(root / relative)  # PNG: lossless, values exact
                written[relative] = pixels
    return written


def zip_tree(folder: Path, zip_path: Path, top: str | None = None) -> Path:
    """Zips the files under ``folder`` (optionally under a single top-level folder ``top``), without dir entries."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                relative = path.relative_to(folder).as_posix()
                archive.write(path, f"{top}/{relative}" if top else relative)
    return zip_path


TWO_SPLITS = {"train": {"cat": 3, "ant": 2, "dog": 4}, "test": {"cat": 1, "ant": 2, "dog": 1}}


def expected_arrays(written: dict[str, np.ndarray], split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """What a correct loader returns for ``split``: images sorted by path, labels from sorted class names."""
    names = sorted(name for name in written if name.startswith(split + "/"))
    classes = sorted({name.split("/")[1] for name in names})
    images = np.stack([written[name] for name in names])
    targets = np.array([classes.index(name.split("/")[1]) for name in names])
    return images, targets, classes


def cifar_batch(rng, count: int, num_classes: int, labels_key: bytes, extra: dict | None = None):
    """One pickled-batch dict in the official layout, and its data rows."""
    data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
    labels = [int(label) for label in rng.integers(0, num_classes, count)]
    batch = {b"batch_label": b"batch", labels_key: labels, b"data": data, b"filenames": [b"x.png"] * count}
    batch.update(extra or {})
    return batch, data


def write_cifar10(folder: Path, *, batches: int = 5, per_batch: int = 4, test_count: int = 6) -> dict[str, np.ndarray]:
    """Writes ``folder/cifar-10-batches-py/`` in the official format; returns the data rows and labels."""
    rng = np.random.default_rng(1)
    target = folder / "cifar-10-batches-py"
    target.mkdir(parents=True)
    meta = {
        b"label_names": [name.encode() for name in CIFAR10_CLASSES],
        b"num_cases_per_batch": per_batch,
        b"num_vis": 3072,
    }
    (target / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    train_data, train_labels = [], []
    for number in range(1, batches + 1):
        batch, data = cifar_batch(rng, per_batch, 10, b"labels")
        (target / f"data_batch_{number}").write_bytes(pickle.dumps(batch, protocol=2))
        train_data.append(data)
        train_labels += batch[b"labels"]
    test, test_data = cifar_batch(rng, test_count, 10, b"labels")
    (target / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    return {
        "train_data": np.concatenate(train_data),
        "train_labels": np.array(train_labels),
        "test_data": test_data,
        "test_labels": np.array(test[b"labels"]),
    }


def tar_folder(folder: Path, arcname: str, tar_path: Path) -> Path:
    with tarfile.open(tar_path, "w:gz") as archive:
        archive.add(folder, arcname=arcname)
    return tar_path


def block_downloads(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(cifar_module.urllib.request, "urlopen", offline)


# --------------------------------------------------------------------------------------------------
# Registry


def test_registry_lists_builtin_data_sets_and_rejects_duplicates():
    assert {"digits", "cifar10", "cifar100"} <= set(DATASETS)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("digits")(lambda split, root: None)


def test_a_registered_data_set_is_loadable_by_name(monkeypatch):
    images = np.arange(4 * 2 * 2 * 1, dtype=np.uint8).reshape(4, 2, 2, 1)

    def tiny(split, root):
        return ArrayDataset(images, np.array([0, 1, 0, 1]), ["a", "b"], mean=0.5, std=0.25, name="tiny")

    monkeypatch.setitem(DATASETS, "tiny", tiny)
    dataset = load_dataset("tiny", "test")
    assert dataset.info == DatasetInfo("tiny", ["a", "b"], (1, 2, 2))
    assert dataset.mean == (0.5,) and dataset.std == (0.25,)  # the data set's own defaults
    assert torch.allclose(dataset[3][0], (torch.tensor([[12.0, 13.0], [14.0, 15.0]]) / 255 - 0.5) / 0.25)


# --------------------------------------------------------------------------------------------------
# Digits


def test_digits_train_and_test_split_shapes_labels_and_scaling():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1438, 359)
    assert train.images.shape == (1438, 8, 8, 1) and train.images.dtype == np.uint8
    assert train.targets.dtype == np.int64
    assert train.classes == [str(digit) for digit in range(10)]
    assert train.info == DatasetInfo("digits", train.classes, (1, 8, 8))

    # Stratified 80/20 per class, and together exactly the 1,797 bundled images.
    bunch = load_digits()
    counts = np.bincount(bunch.target)
    assert np.array_equal(np.bincount(train.targets) + np.bincount(test.targets), counts)
    assert np.all(np.abs(np.bincount(test.targets) - 0.2 * counts) <= 1)

    # Pixels are round(x * 255 / 16) of sklearn's values, in the order of the fixed split.
    kept, held_out = stratified_split(bunch.target, 0.2, seed=0)
    expected = np.rint(bunch.images * 255 / 16).astype(np.uint8)
    assert np.array_equal(test.images[..., 0], expected[held_out])
    assert np.array_equal(train.targets, bunch.target[kept])
    assert train.images.max() == 255 and train.images.min() == 0


def test_digits_test_split_does_not_depend_on_the_seed_argument():
    first = load_dataset("digits", "test", seed=0)
    second = load_dataset("digits", "test", seed=123, val_fraction=0.3)
    assert np.array_equal(first.images, second.images) and np.array_equal(first.targets, second.targets)


def test_digits_mean_and_std_constants_match_the_training_split():
    pixels = load_dataset("digits", "train").images / 255.0
    assert DIGITS_MEAN[0] == pytest.approx(pixels.mean(), abs=1e-4)
    assert DIGITS_STD[0] == pytest.approx(pixels.std(), abs=1e-4)


def test_normalisation_uses_defaults_or_the_callers_mean_and_std():
    default = load_dataset("digits", "test")
    assert (default.mean, default.std) == (DIGITS_MEAN, DIGITS_STD)
    image, label = default[7]
    assert image.dtype == torch.float32 and image.shape == (1, 8, 8) and isinstance(label, int)
    raw = torch.from_numpy(default.images[7]).permute(2, 0, 1).float() / 255
    assert torch.allclose(image, (raw - DIGITS_MEAN[0]) / DIGITS_STD[0])
    assert label == int(default.targets[7])

    custom = load_dataset("digits", "test", mean=(0.5,), std=(0.5,))
    assert torch.allclose(custom[7][0], raw * 2 - 1)
    with pytest.raises(UserInputError, match="3 values but the images have 1 channel"):
        load_dataset("digits", "test", mean=IMAGENET_MEAN, std=IMAGENET_STD)


# --------------------------------------------------------------------------------------------------
# Validation split


def test_stratified_split_is_disjoint_complete_stratified_and_seeded():
    targets = np.repeat(np.arange(4), [10, 20, 30, 3])
    kept, held = stratified_split(targets, 0.2, seed=5)
    assert np.intersect1d(kept, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(targets)))
    assert np.bincount(targets[held]).tolist() == [2, 4, 6, 1]  # round(0.2 * n), at least one per class
    again_kept, again_held = stratified_split(targets, 0.2, seed=5)
    assert np.array_equal(held, again_held) and np.array_equal(kept, again_kept)
    assert not np.array_equal(held, stratified_split(targets, 0.2, seed=6)[1])


def test_val_split_of_load_dataset_is_the_held_out_part_of_train():
    full = load_dataset("digits", "train")
    train = load_dataset("digits", "train", val_fraction=0.25, seed=3)
    val = load_dataset("digits", "val", val_fraction=0.25, seed=3)
    kept, held = stratified_split(full.targets, 0.25, seed=3)
    assert len(train) + len(val) == len(full)
    assert np.array_equal(val.images, full.images[held]) and np.array_equal(val.targets, full.targets[held])
    assert np.array_equal(train.images, full.images[kept])
    counts = np.bincount(full.targets)
    assert np.all(np.abs(np.bincount(val.targets) - 0.25 * counts) <= 0.5 + 1e-9)
    other = load_dataset("digits", "val", val_fraction=0.25, seed=4)
    assert not np.array_equal(other.images, val.images)


def test_val_without_a_fraction_and_bad_split_arguments_raise():
    with pytest.raises(UserInputError, match="val_fraction"):
        load_dataset("digits", "val")
    with pytest.raises(UserInputError, match="not one of train, val, test"):
        load_dataset("digits", "validation")
    with pytest.raises(UserInputError, match=r"outside \[0, 1\)"):
        load_dataset("digits", "val", val_fraction=1.0)


# --------------------------------------------------------------------------------------------------
# ArrayDataset and augmentation


def random_dataset(count=6, height=32, width=32, channels=3, **options) -> ArrayDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, height, width, channels), dtype=np.uint8)
    return ArrayDataset(images, np.arange(count) % 2, ["even", "odd"], **options)


def test_default_padding_is_an_eighth_of_the_height():
    assert random_dataset().padding == 4
    assert random_dataset(height=8, width=8).padding == 1
    assert random_dataset(height=4, width=4).padding == 1


def test_augmentation_is_a_padded_crop_with_optional_flip_and_repeatable():
    plain = random_dataset(mean=0.0, std=1.0)
    augmented = random_dataset(mean=0.0, std=1.0, augment=True)
    torch.manual_seed(0)
    first = [augmented[i][0] for i in range(len(augmented))]
    torch.manual_seed(0)
    second = [augmented[i][0] for i in range(len(augmented))]
    assert all(torch.equal(a, b) for a, b in zip(first, second))  # repeatable under torch.manual_seed
    assert all(a.shape == (3, 32, 32) for a in first)
    assert any(not torch.equal(a, plain[i][0]) for i, a in enumerate(first))  # it does change images

    # Every augmented image is one of the 9 × 9 crops of the zero-padded original, maybe mirrored.
    for index, image in enumerate(first):
        padded = torch.nn.functional.pad(plain[index][0], (4, 4, 4, 4))
        candidates = [
            crop
            for top in range(9)
            for left in range(9)
            for crop in (padded[:, top : top + 32, left : left + 32],)
            for crop in (crop, crop.flip(-1))
        ]
        assert any(torch.equal(image, candidate) for candidate in candidates)


def test_augmentation_pads_with_black_before_normalising():
    images = np.full((1, 8, 8, 1), 255, dtype=np.uint8)
    dataset = ArrayDataset(images, np.array([0]), ["white"], mean=0.5, std=0.5, augment=True)
    torch.manual_seed(0)
    values = torch.cat([dataset[0][0].flatten() for _ in range(30)]).unique()
    # White pixels normalise to +1; the zero padding is black, i.e. (0 - 0.5) / 0.5 = -1.
    assert set(values.tolist()) == {-1.0, 1.0}


def test_augmentation_is_repeatable_with_dataloader_workers():
    dataset = random_dataset(count=8, augment=True)

    def batches():
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=4, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(7)
        )
        return [images for images, _ in loader]

    assert all(torch.equal(a, b) for a, b in zip(batches(), batches()))


def test_subset_keeps_transforms_and_copies_images():
    dataset = random_dataset(mean=0.2, std=0.3, augment=True, padding=2)
    part = dataset.subset([4, 1])
    assert len(part) == 2 and part.targets.tolist() == [0, 1]
    assert (part.mean, part.std, part.augment, part.padding) == ((0.2,) * 3, (0.3,) * 3, True, 2)
    assert np.array_equal(part.images[0], dataset.images[4])
    part.images[0] = 0
    assert dataset.images[4].any()  # a copy, not a view


def test_array_dataset_rejects_bad_input():
    with pytest.raises(UserInputError, match="uint8"):
        ArrayDataset(np.zeros((2, 4, 4, 1), np.float32), np.zeros(2), ["a"])
    with pytest.raises(UserInputError, match="one label per image"):
        ArrayDataset(np.zeros((2, 4, 4, 1), np.uint8), np.zeros(3), ["a"])
    with pytest.raises(UserInputError, match="labels run from 0 to 2"):
        ArrayDataset(np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 2]), ["a", "b"])
    with pytest.raises(UserInputError, match="not positive"):
        ArrayDataset(np.zeros((2, 4, 4, 1), np.uint8), np.zeros(2), ["a"], std=0.0)


# --------------------------------------------------------------------------------------------------
# CIFAR pickle archives


def check_cifar10(dataset: ArrayDataset, rows: np.ndarray, labels: np.ndarray) -> None:
    assert dataset.classes == CIFAR10_CLASSES
    assert dataset.images.shape == (len(rows), 32, 32, 3) and dataset.images.dtype == np.uint8
    assert np.array_equal(dataset.targets, labels)
    # Row layout: 1024 red, 1024 green, 1024 blue values, each row-major over 32 × 32.
    for n, h, w, c in [(0, 0, 0, 0), (1, 3, 17, 1), (len(rows) - 1, 31, 30, 2)]:
        assert dataset.images[n, h, w, c] == rows[n, c * 1024 + h * 32 + w]
    assert np.array_equal(dataset.images.reshape(len(rows), -1, 3).transpose(0, 2, 1).reshape(len(rows), -1), rows)
    assert (dataset.mean, dataset.std) == (IMAGENET_MEAN, IMAGENET_STD)


def test_cifar10_reads_the_official_tar_gz_and_the_extracted_folder(tmp_path):
    source = tmp_path / "source"
    written = write_cifar10(source)
    archive_root = tmp_path / "archive"
    archive_root.mkdir()
    tar_folder(source / "cifar-10-batches-py", "cifar-10-batches-py", archive_root / "cifar-10-python.tar.gz")

    for root in (source, archive_root):  # extracted folder, then tar.gz read in place
        train = load_dataset("cifar10", "train", root=root)
        test = load_dataset("cifar10", "test", root=root)
        assert (len(train), len(test)) == (20, 6)
        check_cifar10(train, written["train_data"], written["train_labels"])
        check_cifar10(test, written["test_data"], written["test_labels"])
    assert not (archive_root / "cifar-10-batches-py").exists()  # nothing was extracted
    assert dataset_info("cifar10", root=source) == DatasetInfo("cifar10", CIFAR10_CLASSES, (3, 32, 32))

    # The extracted folder itself also works as root, and the training batches come in numeric order.
    train = load_dataset("cifar10", root=source / "cifar-10-batches-py")
    check_cifar10(train, written["train_data"], written["train_labels"])

    # A normalised item: ImageNet statistics on pixels in [0, 1].
    image, label = test[2]
    pixels = torch.from_numpy(test.images[2]).permute(2, 0, 1) / 255
    expected = (pixels - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(image, expected) and label == written["test_labels"][2]


def test_cifar10_default_folder_is_in_the_cache(tmp_path):
    written = write_cifar10(cache_dir() / "cifar10")
    test = load_dataset("cifar10", "test")
    check_cifar10(test, written["test_data"], written["test_labels"])


def test_cifar100_reads_fine_labels_and_names(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine_names = [f"class{index:02d}" for index in range(100)]
    meta = {b"fine_label_names": [name.encode() for name in fine_names], b"coarse_label_names": [b"coarse"] * 20}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    written = {}
    for split, count in (("train", 7), ("test", 5)):
        batch, data = cifar_batch(rng, count, 100, b"fine_labels", {b"coarse_labels": [0] * count})
        (folder / split).write_bytes(pickle.dumps(batch, protocol=2))
        written[split] = (data, batch[b"fine_labels"])
    tar_folder(folder, "cifar-100-python", tmp_path / "cifar-100-python.tar.gz")
    folder.rename(tmp_path / "moved-away")  # only the archive is left

    for split, (data, labels) in written.items():
        dataset = load_dataset("cifar100", split, root=tmp_path)
        assert dataset.classes == fine_names and dataset.targets.tolist() == labels
        assert np.array_equal(dataset.images.transpose(0, 3, 1, 2).reshape(len(data), -1), data)


def test_cifar_missing_and_offline_says_where_to_put_the_archive(tmp_path, monkeypatch):
    block_downloads(monkeypatch)
    with pytest.raises(UserInputError) as raised:
        load_dataset("cifar10", root=tmp_path / "nowhere")
    message = str(raised.value)
    assert "cifar-10-python.tar.gz" in message and str(tmp_path / "nowhere") in message and ".zip" in message
    assert "no network in tests" in message
    assert not (tmp_path / "nowhere").exists()  # no stray folder from a failed download
    with pytest.raises(UserInputError, match="cifar-100-python.tar.gz"):
        load_dataset("cifar100", "test")  # default folder: cache_dir()/cifar100


def test_cifar_broken_archive_and_hostile_pickle_raise(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a tar file at all")
    with pytest.raises(UserInputError, match="not a readable cifar-10-python.tar.gz"):
        load_dataset("cifar10", root=tmp_path)

    written_root = tmp_path / "hostile"
    write_cifar10(written_root)
    # A pickle that would call os.system when loaded with plain pickle.load.
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (written_root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Exploit()}, protocol=2))
    with pytest.raises(UserInputError, match="refusing to load"):
        load_dataset("cifar10", "test", root=written_root)

    # A batch without labels is named, not a KeyError.
    (written_root / "cifar-10-batches-py" / "test_batch").write_bytes(
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2)
    )
    with pytest.raises(UserInputError, match="test_batch is not a CIFAR batch"):
        load_dataset("cifar10", "test", root=written_root)


# --------------------------------------------------------------------------------------------------
# Image folders and zips


def test_image_folder_loads_sorted_classes_exact_pixels_and_defaults(tmp_path):
    written = write_image_tree(tmp_path / "pets", TWO_SPLITS)
    for split in ("train", "test"):
        dataset = load_dataset(tmp_path / "pets", split)
        images, targets, classes = expected_arrays(written, split)
        assert classes == ["ant", "cat", "dog"] and dataset.classes == classes
        assert dataset.images.dtype == np.uint8 and dataset.images.shape == (len(images), 5, 6, 3)
        assert np.array_equal(dataset.images, images) and np.array_equal(dataset.targets, targets)
        assert (dataset.mean, dataset.std) == (IMAGENET_MEAN, IMAGENET_STD)
        assert dataset.info == DatasetInfo("pets", classes, (3, 5, 6))
    assert dataset_info(str(tmp_path / "pets")) == DatasetInfo("pets", ["ant", "cat", "dog"], (3, 5, 6))


@pytest.mark.parametrize("top", [None, "pets-jpeg"])
def test_zip_with_or_without_top_folder_matches_the_folder(tmp_path, top):
    written = write_image_tree(tmp_path / "pets", TWO_SPLITS)
    archive = zip_tree(tmp_path / "pets", tmp_path / "pets.zip", top=top)
    with zipfile.ZipFile(archive, "a") as extra:  # macOS metadata and other files are ignored
        extra.writestr(f"__MACOSX/{top or 'x'}/train/cat/._000.png", b"junk")
        extra.writestr(f"{top + '/' if top else ''}README.txt", b"about")
    train = load_dataset(str(archive), "train")
    images, targets, classes = expected_arrays(written, "train")
    assert train.classes == classes and np.array_equal(train.images, images) and np.array_equal(train.targets, targets)
    assert train.info.name == "pets"


def test_grayscale_images_give_one_channel_and_mixed_give_rgb(tmp_path):
    written = write_image_tree(tmp_path / "gray", {"train": {"a": 2, "b": 2}}, mode="L")
    gray = load_dataset(tmp_path / "gray")
    assert gray.images.shape == (4, 5, 6, 1) and (gray.mean, gray.std) == ((0.5,), (0.5,))
    assert np.array_equal(gray.images[..., 0], expected_arrays(written, "train")[0])

    write_image_tree(tmp_path / "mixed", {"train": {"a": 1}}, mode="L")
    write_image_tree(tmp_path / "mixed", {"train": {"b": 1}}, mode="RGB", seed=1)
    mixed = load_dataset(tmp_path / "mixed")
    assert mixed.images.shape == (2, 5, 6, 3)
    assert np.array_equal(mixed.images[0, ..., 0], mixed.images[0, ..., 2])  # the gray image, repeated


def test_decoded_split_is_cached_and_reused_until_the_zip_changes(tmp_path, monkeypatch):
    write_image_tree(tmp_path / "pets", TWO_SPLITS)
    archive = zip_tree(tmp_path / "pets", tmp_path / "pets.zip")
    first = load_dataset(archive, "train")
    cached_files = sorted(cache_dir().glob("images-pets-train-*.npz"))
    assert len(cached_files) == 1 and not list(cache_dir().glob("*.tmp"))

    decodes = []
    original = ImageFolderSource._decode_split

    def counting_decode(self, split):
        decodes.append(split)
        return original(self, split)

    monkeypatch.setattr(ImageFolderSource, "_decode_split", counting_decode)
    second = load_dataset(archive, "train", augment=True)
    assert decodes == [] and np.array_equal(second.images, first.images) and second.classes == first.classes

    # A changed zip (new size and time) is decoded again into a new cache file.
    write_image_tree(tmp_path / "pets", {"train": {"cat": 5}}, seed=9)
    zip_tree(tmp_path / "pets", archive)
    os.utime(archive, ns=(10**18, 10**18))
    third = load_dataset(archive, "train")
    assert decodes == ["train"] and len(third) == 11
    assert len(list(cache_dir().glob("images-pets-train-*.npz"))) == 2


def test_folder_cache_notices_an_edited_image(tmp_path):
    write_image_tree(tmp_path / "pets", TWO_SPLITS)
    before = load_dataset(tmp_path / "pets", "test")
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "pets/test/ant/000.png")
    os.utime(tmp_path / "pets/test/ant/000.png", ns=(10**18, 10**18))
    after = load_dataset(tmp_path / "pets", "test")
    assert before.images[0].any() and not after.images[0].any()


def test_an_image_folders_own_val_split_is_used_without_a_fraction(tmp_path):
    written = write_image_tree(tmp_path / "pets", {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    val = load_dataset(tmp_path / "pets", "val")
    assert np.array_equal(val.images, expected_arrays(written, "val")[0])
    assert len(load_dataset(tmp_path / "pets", "val", val_fraction=0.5)) == 2  # a fraction holds out train instead


def test_missing_path_names_the_registered_data_sets(tmp_path):
    with pytest.raises(UserInputError, match="neither a registered data set .*cifar10.*digits.* nor an existing path"):
        load_dataset(str(tmp_path / "nope.zip"))


def test_corrupt_zips_raise(tmp_path):
    (tmp_path / "garbage.zip").write_bytes(b"this is not a zip file" * 10)
    with pytest.raises(UserInputError, match="neither a folder nor a readable .zip"):
        load_dataset(tmp_path / "garbage.zip")

    write_image_tree(tmp_path / "pets", TWO_SPLITS)
    archive = zip_tree(tmp_path / "pets", tmp_path / "pets.zip")
    with zipfile.ZipFile(archive) as readable:
        member = readable.getinfo("train/cat/000.png")
    content = bytearray(archive.read_bytes())
    data_start = member.header_offset + 30 + len(member.filename) + len(member.extra)
    content[data_start + 40] ^= 0xFF  # damage the stored bytes: the CRC check fails on reading
    archive.write_bytes(bytes(content))
    with pytest.raises(UserInputError, match="damaged zip"):
        load_dataset(archive, "train")


def test_missing_and_empty_splits_and_classes_raise(tmp_path):
    write_image_tree(tmp_path / "pets", {"train": {"a": 1, "b": 1}})
    with pytest.raises(UserInputError, match=r"no split folder named 'test' \(found: train\)"):
        load_dataset(tmp_path / "pets", "test")

    (tmp_path / "pets" / "test").mkdir()
    with pytest.raises(UserInputError, match="split folder 'test' .* holds no images"):
        load_dataset(tmp_path / "pets", "test")

    (tmp_path / "pets" / "train" / "c").mkdir()
    with pytest.raises(UserInputError, match="class folder train/c .* holds no images"):
        load_dataset(tmp_path / "pets", "train")


def test_class_folders_that_differ_between_splits_raise(tmp_path):
    write_image_tree(tmp_path / "pets", {"train": {"a": 1, "b": 1, "c": 1}, "test": {"a": 1, "d": 1}})
    message = r"'test' lacks b, c, has extra d\); give every split the same class folders"
    with pytest.raises(UserInputError, match=message):
        load_dataset(tmp_path / "pets", "train")


def test_images_outside_the_layout_raise(tmp_path):
    write_image_tree(tmp_path / "pets", {"train": {"cat": 1}})
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "pets" / "train" / "stray.png")
    with pytest.raises(UserInputError, match="train/stray.png outside the layout split/class/image"):
        load_dataset(tmp_path / "pets")


def test_undecodable_image_is_named(tmp_path):
    write_image_tree(tmp_path / "pets", TWO_SPLITS)
    (tmp_path / "pets" / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(UserInputError, match="train/dog/broken.jpg cannot be decoded"):
        load_dataset(tmp_path / "pets", "train")


def test_images_of_different_sizes_raise_naming_the_odd_file(tmp_path):
    write_image_tree(tmp_path / "pets", TWO_SPLITS)
    Image.fromarray(np.zeros((9, 7, 3), np.uint8)).save(tmp_path / "pets" / "train" / "dog" / "big.png")
    with pytest.raises(UserInputError, match=r"train/dog/big.png is 7×9 pixels but .*ant/000.png is 6×5; resize"):
        load_dataset(tmp_path / "pets", "train")


def test_expected_shape_and_classes_are_checked_before_decoding(tmp_path, monkeypatch):
    write_image_tree(tmp_path / "pets", TWO_SPLITS)

    def must_not_decode(self, split):
        raise AssertionError("decoded before checking what the model expects")

    monkeypatch.setattr(ImageFolderSource, "_decode_split", must_not_decode)
    with pytest.raises(UserInputError, match="the model expects 10 classes but data 'pets' has 3"):
        load_dataset(tmp_path / "pets", expected_num_classes=10)
    with pytest.raises(UserInputError, match=r"expects images of 3×32×32 \(C×H×W\) but data 'pets' has 3×5×6"):
        load_dataset(tmp_path / "pets", expected_image_shape=(3, 32, 32))


def test_expected_shape_and_classes_for_registered_data():
    with pytest.raises(UserInputError, match=r"expects images of 3×32×32 \(C×H×W\) but data 'digits' has 1×8×8"):
        load_dataset("digits", expected_image_shape=(3, 32, 32))
    with pytest.raises(UserInputError, match="expects 100 classes but data 'digits' has 10"):
        load_dataset("digits", "test", expected_num_classes=100)
    assert len(load_dataset("digits", "test", expected_image_shape=(1, 8, 8), expected_num_classes=10)) == 359


# --------------------------------------------------------------------------------------------------
# The real CIFAR-10 JPEG zip


@pytest.mark.slow
@pytest.mark.shared
def test_real_cifar10_jpeg_zip():
    archive = shared_dir() / "data" / "cifar10-jpeg.zip"
    if not archive.is_file():
        pytest.skip(f"needs {archive} (set FILTERSCOPE_SHARED to the folder with data/cifar10-jpeg.zip)")
    train = load_dataset(archive, "train", expected_image_shape=(3, 32, 32), expected_num_classes=10)
    test = load_dataset(archive, "test")
    assert (len(train), len(test)) == (50_000, 10_000)
    assert train.classes == CIFAR10_CLASSES and test.classes == CIFAR10_CLASSES
    assert train.images.shape == (50_000, 32, 32, 3) and train.images.dtype == np.uint8
    assert np.bincount(train.targets).tolist() == [5_000] * 10
    assert np.bincount(test.targets).tolist() == [1_000] * 10
    assert (train.mean, train.std) == (IMAGENET_MEAN, IMAGENET_STD)
