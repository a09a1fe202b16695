"""Image folders and zips laid out as ``[top/]split/class/file`` (for example ``cifar10-jpeg.zip``).

The layout is ``split/class/image`` with an optional single top-level folder, e.g.
``cifar10-jpeg/train/airplane/0000.jpg``. Images are ``.jpg``, ``.jpeg``, ``.png`` or ``.bmp``;
other files and hidden entries (``.DS_Store``, ``__MACOSX/``) are ignored. A zip is read in
place, never extracted.

Labels are the positions of the class folders in sorted order, which must be the same in every
split. Files are sorted by path, so the order of images is the same on every machine.

Decoding with Pillow is slow (CIFAR-10's 60,000 JPEGs take about 25 s on one core), so each
split is decoded once into ``cache_dir()/images-<name>-<split>-<hash>.npz`` (uint8 images
``(N, H, W, C)``, int64 targets and the class names) and read from there afterwards. The hash
covers the absolute path and the size and modification time of the zip (or, for a folder, of
every image in the split), so an edited data set is decoded again. Images become RGB, or
one-channel ``L`` when every image of the split is grayscale.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..core.atomic import atomic_file
from .arrays import IMAGENET_MEAN, IMAGENET_STD, ArrayDataset, DatasetInfo
from ..core.errors import UserInputError
from ..core.locations import cache_dir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}
CACHE_VERSION = 1  # bump when the cache file's content changes
LAYOUT_EXAMPLE = "split/class/image, e.g. train/cat/0001.jpg"


def one_line(error: object) -> str:
    """An exception's message on one line, for the one-sentence errors."""
    return " ".join(str(error).split()) or type(error).__name__


def _hidden(parts: tuple[str, ...]) -> bool:
    """Whether a path lies in, or is, a hidden entry or macOS zip metadata."""
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


class ImageFolderSource:
    """A folder or ``.zip`` of images in ``[top/]split/class/file`` layout.

    Creating one only lists the files (and checks the layout); :meth:`load` decodes a split.

    Args:
        path: The folder or ``.zip`` file.

    Raises:
        UserInputError: If the path is missing, is not a readable folder or zip, or its layout is wrong.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        if not self.path.exists():
            raise UserInputError(f"{path} does not exist; pass the path of an image folder or .zip file.")
        if self.path.is_file():
            if not zipfile.is_zipfile(self.path):
                raise UserInputError(
                    f"{self.path} is neither a folder nor a readable .zip file; "
                    f"pass an image folder or a zip of one (re-download the zip if it is damaged)."
                )
            self.name = self.path.stem
        else:
            self.name = self.path.name
        self._archive: zipfile.ZipFile | None = None  # the open zip, while reading
        # One pass over the source: list the files, then decode the first image for info().
        with self._reader() as read:
            images, dirs = self._list_entries()
            # split -> class -> sorted names of image files (zip member names or folder-relative paths)
            self.tree: dict[str, dict[str, list[str]]] = self._index(images, dirs)
            split = "train" if "train" in self.tree else self.splits[0]
            first = self._decode(read, self.tree[split][self.classes(split)[0]][0])
            self._first_shape = (1 if first.mode in GRAYSCALE_MODES else 3, first.height, first.width)

    # ----------------------------------------------------------------------------------------------
    # Listing

    def _list_entries(self) -> tuple[list[str], list[str]]:
        """All image file names and all directory names, as ``/``-separated paths relative to the source."""
        files, dirs = [], []
        if self._archive is not None:
            for entry in self._archive.infolist():
                (dirs if entry.is_dir() else files).append(entry.filename.rstrip("/"))
        else:
            for folder, subfolders, names in os.walk(self.path):
                subfolders[:] = sorted(name for name in subfolders if not _hidden((name,)))  # skip .git etc.
                relative = Path(folder).relative_to(self.path).as_posix()
                prefix = "" if relative == "." else relative + "/"
                dirs.extend(prefix + name for name in subfolders)
                files.extend(prefix + name for name in names)
        images = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS) and not _hidden(tuple(f.split("/")))]
        dirs = [d for d in dirs if not _hidden(tuple(d.split("/")))]
        return images, dirs

    def _index(self, images: list[str], dirs: list[str]) -> dict[str, dict[str, list[str]]]:
        if not images:
            raise UserInputError(
                f"{self.path} holds no {'/'.join(IMAGE_EXTENSIONS)} images; "
                f"pass a folder or zip laid out as {LAYOUT_EXAMPLE}."
            )
        image_parts = [tuple(name.split("/")) for name in images]
        dir_parts = [tuple(name.split("/")) for name in dirs]
        # An optional single top-level folder (cifar10-jpeg/train/...): drop it from every path.
        tops = {parts[0] for parts in image_parts}
        strip = 1 if len(tops) == 1 and all(len(parts) >= 4 for parts in image_parts) else 0
        if strip:
            top = tops.pop()
            dir_parts = [parts for parts in dir_parts if parts[0] == top]
        tree: dict[str, dict[str, list[str]]] = {}
        for name, parts in sorted(zip(images, image_parts)):
            parts = parts[strip:]
            if len(parts) != 3:
                raise UserInputError(
                    f"{self.path} has the image {name} outside the layout {LAYOUT_EXAMPLE}; "
                    f"move the images into split/class folders."
                )
            split, label, _ = parts
            tree.setdefault(split, {}).setdefault(label, []).append(name)
        self.empty_splits = sorted({p[strip] for p in dir_parts if len(p) == strip + 1} - tree.keys())
        for parts in dir_parts:
            parts = parts[strip:]
            if len(parts) == 2 and parts[0] in tree and parts[1] not in tree[parts[0]]:
                raise UserInputError(
                    f"the class folder {parts[0]}/{parts[1]} in {self.path} holds no images; "
                    f"add images to it or remove it."
                )
        self._check_same_classes(tree)
        return tree

    def _check_same_classes(self, tree: dict[str, dict[str, list[str]]]) -> None:
        """Every split must have the same class folders, or labels would mean different things."""
        reference = "train" if "train" in tree else sorted(tree)[0]
        expected = set(tree[reference])
        for split in sorted(tree):
            found = set(tree[split])
            if found != expected:
                missing, extra = sorted(expected - found), sorted(found - expected)
                difference = ", ".join(
                    part
                    for part in (
                        f"lacks {', '.join(missing)}" if missing else "",
                        f"has extra {', '.join(extra)}" if extra else "",
                    )
                    if part
                )
                raise UserInputError(
                    f"the class folders of split '{split}' differ from those of '{reference}' in {self.path} "
                    f"('{split}' {difference}); give every split the same class folders."
                )

    @property
    def splits(self) -> list[str]:
        """The names of the split folders that hold images, sorted."""
        return sorted(self.tree)

    def classes(self, split: str | None = None) -> list[str]:
        """Sorted class folder names (the same in every split)."""
        return sorted(self.tree[split or self.splits[0]])

    def require_split(self, split: str) -> None:
        """Raises a :class:`UserInputError` naming the splits found when ``split`` is not one of them."""
        if split in self.tree:
            return
        if split in self.empty_splits:
            raise UserInputError(
                f"the split folder '{split}' in {self.path} holds no images; add class folders of images to it."
            )
        raise UserInputError(
            f"{self.path} has no split folder named '{split}' (found: {', '.join(self.splits)}); "
            f"pass one of those splits or add a '{split}' folder laid out as {LAYOUT_EXAMPLE}."
        )

    # ----------------------------------------------------------------------------------------------
    # Reading

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Callable[[str], bytes]]:
        """A function from an image's name to its bytes, valid inside the ``with`` block.

        For a zip, the archive is opened once (parsing its directory of 60,000 entries takes a
        noticeable fraction of a second) and kept in ``self._archive`` for the block.
        """
        if not self.path.is_file():
            yield lambda name: (self.path / name).read_bytes()
            return
        try:
            with zipfile.ZipFile(self.path) as archive:
                self._archive = archive
                yield archive.read
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            raise UserInputError(
                f"{self.path} is a damaged zip file ({one_line(error)}); download or create it again."
            ) from error
        finally:
            self._archive = None

    def info(self) -> DatasetInfo:
        """Name, classes and image shape, from the listing and the first image alone (no decoding).

        The number of channels is that of the first image (1 if grayscale, else 3); :meth:`load`
        makes the split RGB if any image in it is in colour.
        """
        split = "train" if "train" in self.tree else self.splits[0]
        return DatasetInfo(self.name, self.classes(split), self._first_shape)

    def load(self, split: str) -> ArrayDataset:
        """Decodes ``split`` (or reads it from the cache) into an :class:`ArrayDataset`.

        The default normalisation is ImageNet's mean/std for RGB images, 0.5/0.5 for grayscale.
        """
        self.require_split(split)
        cache_path = self._cache_path(split)
        dataset = self._read_cache(cache_path)
        if dataset is None:
            dataset = self._decode_split(split)
            self._write_cache(cache_path, dataset)
        return dataset

    @staticmethod
    def _decode(read: Callable[[str], bytes], name: str) -> Image.Image:
        """Reads and fully decodes one image; names the file when Pillow cannot."""
        content = read(name)  # zip errors surface here, outside the decoding try
        try:
            image = Image.open(io.BytesIO(content))
            image.load()
        except Exception as error:  # Pillow raises many types for broken files
            reason = "not a known image format" if isinstance(error, UnidentifiedImageError) else one_line(error)
            raise UserInputError(
                f"the image {name} cannot be decoded ({reason}); replace or delete that file."
            ) from error
        return image

    def _decode_split(self, split: str) -> ArrayDataset:
        classes = self.classes(split)
        items = [(label, name) for label, cls in enumerate(classes) for name in self.tree[split][cls]]
        targets = np.array([label for label, _ in items], dtype=np.int64)
        images = None
        all_grayscale = True
        with self._reader() as read:
            for index, (_, name) in enumerate(tqdm(items, desc=f"decoding {self.name}/{split}", unit="img")):
                image = self._decode(read, name)
                if images is None:
                    first_name, first_size = name, image.size
                    images = np.empty((len(items), image.height, image.width, 3), dtype=np.uint8)
                elif image.size != first_size:
                    raise UserInputError(
                        f"the image {name} is {image.width}×{image.height} pixels but {first_name} is "
                        f"{first_size[0]}×{first_size[1]}; resize all images of the data set to one size."
                    )
                all_grayscale &= image.mode in GRAYSCALE_MODES
                images[index] = np.asarray(image.convert("RGB"))
        if all_grayscale:
            # Grayscale converted to RGB repeats the value in all channels: keep one.
            images = np.ascontiguousarray(images[..., :1])
        return self._dataset(images, targets, classes)

    def _dataset(self, images: np.ndarray, targets: np.ndarray, classes: list[str]) -> ArrayDataset:
        rgb = images.shape[3] == 3
        return ArrayDataset(
            images,
            targets,
            classes,
            mean=IMAGENET_MEAN if rgb else (0.5,),
            std=IMAGENET_STD if rgb else (0.5,),
            name=self.name,
        )

    # ----------------------------------------------------------------------------------------------
    # Cache

    def _cache_path(self, split: str) -> Path:
        """The cache file of ``split``, named from what identifies this version of the data."""
        key = [f"v{CACHE_VERSION}", str(self.path), split]
        if self.path.is_file():
            stat = self.path.stat()
            key += [str(stat.st_size), str(stat.st_mtime_ns)]
        else:
            for names in self.tree[split].values():
                for name in names:
                    stat = (self.path / name).stat()
                    key += [name, str(stat.st_size), str(stat.st_mtime_ns)]
        digest = hashlib.sha256("\n".join(key).encode("utf-8")).hexdigest()[:16]
        return cache_dir() / f"images-{self.name}-{split}-{digest}.npz"

    def _read_cache(self, cache_path: Path) -> ArrayDataset | None:
        """The cached split, or ``None`` when there is none (or it cannot be read)."""
        if not cache_path.is_file():
            return None
        try:
            with np.load(cache_path, allow_pickle=False) as cached:
                images, targets, classes = cached["images"], cached["targets"], cached["classes"].tolist()
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            warnings.warn(f"ignoring the unreadable cache file {cache_path} ({error}); decoding again", stacklevel=3)
            return None
        return self._dataset(images, targets, classes)

    @staticmethod
    def _write_cache(cache_path: Path, dataset: ArrayDataset) -> None:
        """Writes the cache atomically (temp file, then rename): a reader never sees half a file."""
        try:
            with atomic_file(cache_path) as out:
                np.savez(out, images=dataset.images, targets=dataset.targets, classes=np.array(dataset.classes))
        except OSError as error:  # a full or read-only cache only costs speed
            warnings.warn(f"could not write the cache file {cache_path} ({error})", stacklevel=3)
