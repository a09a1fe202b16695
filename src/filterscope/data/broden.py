"""A reader for the BRODEN layout of Network Dissection (Bau et al., 2017): images with concept masks.

A BRODEN folder holds

    index.csv    one row per image: ``image,split,ih,iw,sh,sw,<category>,...`` where ``image`` is a path
                 under ``images/``, ``ih × iw`` the image size, ``sh × sw`` the size of its masks, and each
                 category cell (``color``, ``object``, ``part``, ``material``, ``scene``, ``texture``, ...) a
                 ``;``-separated list of either mask files (PNG under ``images/``, each pixel's label
                 R + 256·G, 0 for none) or label numbers that hold for the whole image (scene, texture);
    label.csv    ``number,name,category,...``: each label's name and its categories as ``color(12);object(3)``;
    images/      the images and mask files.

:class:`BrodenFolder` reads one image at a time, resized to the model's input size (the image
bilinearly, the masks by nearest neighbour), as uint8 pixels, the masks of the labels it shows, and the
labels it is *annotated* for: every label of each category whose cell is not empty (Network Dissection
counts an image in a concept's IoU only where the concept's category is annotated).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import UserInputError

_FIXED_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")


@dataclass
class BrodenImage:
    """One image of a BRODEN folder, resized: uint8 ``pixels`` (H, W, 3), bool ``masks`` by concept name, and
    the concept names its annotated categories cover (``annotated``; a subset of the concepts)."""

    pixels: np.ndarray
    masks: dict[str, np.ndarray]
    annotated: set[str]


class BrodenFolder:
    """The images and concept masks of a BRODEN-format folder.

    Args:
        folder: the folder holding ``index.csv``, ``label.csv`` and ``images/``.
        split: keep only the rows of this ``split`` (``train`` or ``val`` in BRODEN); None keeps all.

    Attributes:
        concepts: label names by number (index 0, no label, is ``""``).
        categories: the category columns of ``index.csv``.
    """

    def __init__(self, folder: str | Path, split: str | None = None):
        self.folder = Path(folder)
        index, labels = self.folder / "index.csv", self.folder / "label.csv"
        if not index.is_file() or not labels.is_file():
            raise UserInputError(f"{str(self.folder)!r} is no BRODEN folder (it needs index.csv and label.csv beside "
                                 "images/); pass the folder that holds them, or --concepts colour.")
        with index.open(newline="") as stream:
            reader = csv.DictReader(stream)
            self.categories = [c for c in reader.fieldnames or [] if c not in _FIXED_COLUMNS]
            self.rows = [row for row in reader if split is None or row.get("split") == split]
        if "image" not in (reader.fieldnames or []) or not self.categories:
            raise UserInputError(f"{index} has no 'image' column or no category columns; write it as "
                                 "image,split,ih,iw,sh,sw,<category>,... (the BRODEN layout).")
        if not self.rows:
            raise UserInputError(f"{index} lists no image{f' of split {split!r}' if split else ''}; check the folder "
                                 "or the split.")
        self.concepts, self.labels_of_category = _read_labels(labels, self.categories)

    def __len__(self) -> int:
        return len(self.rows)

    def concept_names(self) -> list[str]:
        """Every named label, in label-number order."""
        return [name for name in self.concepts if name]

    def load(self, position: int, size: tuple[int, int]) -> BrodenImage:
        """Image ``position`` of the listing, resized to ``size`` (H, W), with its masks."""
        from PIL import Image

        row = self.rows[position]
        with Image.open(self._file(row["image"])) as image:
            pixels = np.asarray(image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR), dtype=np.uint8)
        masks: dict[str, np.ndarray] = {}
        annotated: set[str] = set()
        for category in self.categories:
            entries = [entry for entry in (row.get(category) or "").split(";") if entry]
            if not entries:
                continue
            annotated.update(self.labels_of_category.get(category, ()))
            for entry in entries:
                if re.fullmatch(r"\d+", entry):  # a label of the whole image
                    self._add(masks, int(entry), np.ones(size, dtype=bool))
                else:
                    self._add_mask_file(masks, entry, size)
        return BrodenImage(pixels, masks, annotated)

    def _file(self, name: str) -> Path:
        path = self.folder / "images" / name
        if not path.is_file():
            raise UserInputError(f"{path} is listed in index.csv but missing; restore it or remove its row.")
        return path

    def _add_mask_file(self, masks: dict[str, np.ndarray], name: str, size: tuple[int, int]) -> None:
        from PIL import Image

        with Image.open(self._file(name)) as image:
            encoded = np.asarray(image.convert("RGB"), dtype=np.int64)
        labels = encoded[..., 0] + 256 * encoded[..., 1]
        rows = (np.arange(size[0]) * labels.shape[0] // size[0])
        columns = (np.arange(size[1]) * labels.shape[1] // size[1])
        labels = labels[rows][:, columns]  # nearest neighbour
        for number in np.unique(labels):
            if number:
                self._add(masks, int(number), labels == number)

    def _add(self, masks: dict[str, np.ndarray], number: int, mask: np.ndarray) -> None:
        if number >= len(self.concepts) or not self.concepts[number]:
            raise UserInputError(f"label {number} is used in index.csv or a mask but not named in label.csv; add it "
                                 "to label.csv.")
        name = self.concepts[number]
        masks[name] = masks[name] | mask if name in masks else mask


def _read_labels(path: Path, categories: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Label names by number, and the names in each category, from ``label.csv``."""
    with path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    if not rows or "number" not in rows[0] or "name" not in rows[0]:
        raise UserInputError(f"{path} needs the columns number,name,category; write it in the BRODEN layout.")
    numbers = [int(row["number"]) for row in rows]
    concepts = [""] * (max(numbers) + 1)
    by_category: dict[str, list[str]] = {category: [] for category in categories}
    for number, row in zip(numbers, rows):
        concepts[number] = row["name"]
        for item in (row.get("category") or "").split(";"):
            category = item.split("(")[0]
            if category in by_category and number:
                by_category[category].append(row["name"])
    return concepts, by_category
