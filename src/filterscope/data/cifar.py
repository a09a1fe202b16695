"""``cifar10`` and ``cifar100``: readers for the official python-pickle archives.

The official archives (Krizhevsky, 2009) are

- ``cifar-10-python.tar.gz`` holding ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5``,
  ``test_batch`` and ``batches.meta`` (class names under ``label_names``, labels under ``labels``);
- ``cifar-100-python.tar.gz`` holding ``cifar-100-python/`` with ``train``, ``test`` and ``meta``
  (the 100 fine classes: names under ``fine_label_names``, labels under ``fine_labels``).

Each file is a pickle (written by Python 2, read with ``encoding="bytes"``) of a dict whose
``b"data"`` is an ``N×3072`` uint8 array, one row per image: the 1,024 red values, then green,
then blue, each row-major over 32×32.

The loader looks in ``root`` (default ``cache_dir()/"cifar10"`` or ``.../"cifar100"``) for the
extracted folder, or the ``.tar.gz`` (read directly, without extracting). When neither is there
it downloads the archive from the official address into that folder; offline, it says where to
put the archive. The pickles are read with an unpickler that only rebuilds numpy arrays, so a
tampered archive cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .arrays import IMAGENET_MEAN, IMAGENET_STD, ArrayDataset
from .registry import register_dataset
from .image_folder import one_line
from ..core.errors import UserInputError
from ..core.locations import cache_dir

DOWNLOAD_TIMEOUT_S = 10  # per socket operation: fail fast when offline


@dataclass(frozen=True)
class CifarFormat:
    """Where one CIFAR variant keeps its files and keys."""

    name: str
    archive: str
    folder: str
    url: str
    md5: str
    train_files: re.Pattern  # base names of the training files
    train_description: str  # the same, for messages
    test_file: str
    meta_file: str
    labels_key: bytes
    names_key: bytes


CIFAR10 = CifarFormat(
    name="cifar10", archive="cifar-10-python.tar.gz", folder="cifar-10-batches-py",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a",
    train_files=re.compile(r"data_batch_\d+"), train_description="data_batch_1 to data_batch_5",
    test_file="test_batch", meta_file="batches.meta", labels_key=b"labels", names_key=b"label_names",
)

CIFAR100 = CifarFormat(
    name="cifar100", archive="cifar-100-python.tar.gz", folder="cifar-100-python",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85",
    train_files=re.compile(r"train"), train_description="train",
    test_file="test", meta_file="meta", labels_key=b"fine_labels", names_key=b"fine_label_names",
)


@register_dataset("cifar10")
def cifar10(split: str, root: Path | None = None) -> ArrayDataset:
    """The CIFAR-10 ``"train"`` (50,000) or ``"test"`` (10,000) split, normalised with ImageNet mean/std."""
    return load_cifar(CIFAR10, split, root)


@register_dataset("cifar100")
def cifar100(split: str, root: Path | None = None) -> ArrayDataset:
    """The CIFAR-100 ``"train"`` (50,000) or ``"test"`` (10,000) split with the 100 fine labels."""
    return load_cifar(CIFAR100, split, root)


def load_cifar(fmt: CifarFormat, split: str, root: str | Path | None = None) -> ArrayDataset:
    """Reads one split of a CIFAR archive, downloading the archive first if it is nowhere to be found.

    The default mean/std are ImageNet's, which the shared pretrained CIFAR checkpoints were trained with.
    """
    folder = Path(root).expanduser() if root is not None else cache_dir() / fmt.name
    location = _locate(fmt, folder)

    def wanted(name: str) -> bool:
        if name == fmt.meta_file:
            return True
        return bool(fmt.train_files.fullmatch(name)) if split == "train" else name == fmt.test_file

    files = _read_files(fmt, location, wanted)
    if fmt.meta_file not in files:
        raise UserInputError(f"{location} has no {fmt.meta_file} file; delete it and download {fmt.archive} again.")
    meta = _unpickle(files.pop(fmt.meta_file), location / fmt.meta_file)
    if not isinstance(meta.get(fmt.names_key), list):
        raise UserInputError(
            f"{location / fmt.meta_file} has no {fmt.names_key.decode()} list; "
            f"delete it and download {fmt.archive} again."
        )
    classes = [name.decode("utf-8") for name in meta[fmt.names_key]]

    # Natural order: data_batch_1, ..., data_batch_5 (CIFAR-100 has a single "train" file).
    names = sorted(files, key=lambda name: (len(name), name))
    if not names:
        expected = fmt.train_description if split == "train" else fmt.test_file
        raise UserInputError(
            f"{location} has no {split} file named {expected}; delete it and download {fmt.archive} again."
        )

    images, targets = [], []
    for name in names:
        batch = _unpickle(files[name], location / name)
        data, labels = batch.get(b"data"), batch.get(fmt.labels_key)
        if not (
            isinstance(data, np.ndarray)
            and data.dtype == np.uint8
            and data.ndim == 2
            and data.shape[1] == 3072
            and isinstance(labels, (list, np.ndarray))
            and len(labels) == len(data)
        ):
            raise UserInputError(
                f"{location / name} is not a CIFAR batch (uint8 data of N×3072 and N {fmt.labels_key.decode()}); "
                f"delete it and download {fmt.archive} again."
            )
        # Channel-major rows: R plane, G plane, B plane -> (N, 32, 32, 3).
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        targets.append(np.asarray(labels, dtype=np.int64))
    return ArrayDataset(
        np.ascontiguousarray(np.concatenate(images)),
        np.concatenate(targets),
        classes,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        name=fmt.name,
    )


def _locate(fmt: CifarFormat, folder: Path) -> Path:
    """The extracted folder or the archive for ``fmt`` in ``folder``; downloads the archive if neither exists."""
    if folder.is_file():  # the user passed the archive itself
        return folder
    if (folder / fmt.folder / fmt.meta_file).is_file():
        return folder / fmt.folder
    if (folder / fmt.meta_file).is_file():  # the user passed the extracted folder itself
        return folder
    if (folder / fmt.archive).is_file():
        return folder / fmt.archive
    return _download(fmt, folder)


def _download(fmt: CifarFormat, folder: Path) -> Path:
    """Downloads ``fmt.archive`` into ``folder`` (atomically) and checks its MD5."""
    target = folder / fmt.archive
    advice = (
        f"put {fmt.archive} (or its extracted {fmt.folder}/ folder) in {folder}, "
        f"or pass the path of a folder or .zip of JPEG images (such as cifar10-jpeg.zip) instead"
    )
    temp_path = None
    try:
        with urllib.request.urlopen(fmt.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            folder.mkdir(parents=True, exist_ok=True)  # only once the download has started: no stray folders
            total = int(response.headers.get("Content-Length") or 0) or None
            digest = hashlib.md5()
            with tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False) as out:
                temp_path = Path(out.name)
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {fmt.archive}") as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        if digest.hexdigest() != fmt.md5:
            raise UserInputError(f"the downloaded {fmt.archive} has the wrong checksum; try again or {advice}.")
        os.replace(temp_path, target)
        temp_path = None
    except OSError as error:  # URLError, timeouts, no route, disk full, read-only folder
        reason = getattr(error, "reason", None) or error
        raise UserInputError(
            f"{fmt.name} is not in {folder} and downloading {fmt.url} failed ({one_line(reason)}); {advice}."
        ) from error
    finally:
        if temp_path is not None:
            temp_path.unlink(missing_ok=True)
    return target


def _read_files(fmt: CifarFormat, location: Path, wanted) -> dict[str, bytes]:
    """The bytes of the files whose base name ``wanted`` accepts, from a folder or a ``.tar.gz``."""
    if location.is_dir():
        return {path.name: path.read_bytes() for path in sorted(location.iterdir()) if wanted(path.name)}
    files = {}
    try:
        # One sequential pass over the archive; members are read without extracting anything to disk.
        with tarfile.open(location, mode="r:*") as archive:
            for member in archive:
                folder, _, name = member.name.rpartition("/")
                if member.isfile() and folder.endswith(fmt.folder) and wanted(name):
                    files[name] = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise UserInputError(
            f"{location} is not a readable {fmt.archive} ({one_line(error)}); delete it and download it again."
        ) from error
    return files


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays: the CIFAR files need nothing else."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how Python 3 protocol-2 pickles spell bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core"):  # numpy 2 moved numpy.core to numpy._core
            module = "numpy._core" + module[len("numpy.core") :] if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _unpickle(content: bytes, where: Path) -> dict:
    """Loads one CIFAR pickle with ``encoding="bytes"``, as the official files require."""
    try:
        result = _ArrayUnpickler(io.BytesIO(content), encoding="bytes").load()
    except Exception as error:  # a corrupt pickle can raise almost anything
        raise UserInputError(
            f"{where} is not a readable CIFAR pickle ({one_line(error)}); delete it and download it again."
        ) from error
    if not isinstance(result, dict):
        raise UserInputError(f"{where} is not a CIFAR pickle (no dict inside); delete it and download it again.")
    return result
