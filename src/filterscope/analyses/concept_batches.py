"""What dissection reads: batches of normalised images with one boolean mask per concept.

Three sources give the same :class:`ConceptBatch`:

- :func:`batches_from_samples`, the plain interface: any iterable of ``(image, {concept: mask})``;
- :func:`batches_from_colours`: the 11 colour terms of every pixel of an :class:`ArrayDataset`
  (:mod:`.colour_names`), so any image set can be dissected for colour;
- :func:`batches_from_broden`: a BRODEN-format folder (:class:`filterscope.data.broden.BrodenFolder`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import UserInputError
from ..data.arrays import ArrayDataset
from ..data.broden import BrodenFolder
from .colour_names import colour_masks


@dataclass
class ConceptBatch:
    """Images ``(B, C, H, W)`` (normalised as the model expects), ``masks`` bool ``(B, T, H, W)`` (one per
    concept of the set's list), and ``annotated`` bool ``(B, T)``: whether image b is labelled for concept t
    at all (None: every image for every concept). An annotated image without the concept has an empty mask."""

    images: torch.Tensor
    masks: np.ndarray
    annotated: np.ndarray | None = None


def _normalise(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(B, H, W, C)`` → ``(pixels / 255 − mean) / std``, float ``(B, C, H, W)`` (as :class:`ArrayDataset`)."""
    images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float().div_(255.0)
    mean_tensor = torch.tensor(tuple(mean), dtype=torch.float32).view(1, -1, 1, 1)
    std_tensor = torch.tensor(tuple(std), dtype=torch.float32).view(1, -1, 1, 1)
    return (images - mean_tensor) / std_tensor


def batches_from_samples(samples: Iterable[tuple[torch.Tensor, dict[str, np.ndarray]]], concepts: Sequence[str],
                         batch_size: int = 64) -> Iterator[ConceptBatch]:
    """The plain interface: ``(image (C, H, W) normalised, {concept: bool mask (H, W)})`` pairs, batched.

    A concept missing from an image's dict is absent from it (every image counts as annotated for every
    concept).

    Raises:
        UserInputError: a mask of another size than its image, or a concept not in ``concepts``.
    """
    index = {name: t for t, name in enumerate(concepts)}
    images, masks = [], []
    for image, image_masks in samples:
        image = torch.as_tensor(image)
        stack = np.zeros((len(concepts), *image.shape[-2:]), dtype=bool)
        for name, mask in image_masks.items():
            if name not in index:
                raise UserInputError(f"concept {name!r} is not in the concept list; add it to concepts.")
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != tuple(image.shape[-2:]):
                raise UserInputError(f"the mask of {name!r} is {mask.shape} but its image is {tuple(image.shape[-2:])}; "
                                     "give masks of the image's height and width.")
            stack[index[name]] = mask
        images.append(image)
        masks.append(stack)
        if len(images) == batch_size:
            yield ConceptBatch(torch.stack(images), np.stack(masks))
            images, masks = [], []
    if images:
        yield ConceptBatch(torch.stack(images), np.stack(masks))


def batches_from_colours(dataset: ArrayDataset, num_images: int, batch_size: int = 100,
                         min_fraction: float = 0.0) -> Iterator[ConceptBatch]:
    """The first ``num_images`` images of ``dataset`` with their colour-term masks (:data:`.colour_names.COLOUR_TERMS`),
    normalised with the data set's own mean and std."""
    for start in range(0, num_images, batch_size):
        pixels = dataset.images[start:min(start + batch_size, num_images)]
        yield ConceptBatch(_normalise(pixels, dataset.mean, dataset.std), colour_masks(pixels, min_fraction))


def batches_from_broden(folder: BrodenFolder, num_images: int, image_size: tuple[int, int], mean: Sequence[float],
                        std: Sequence[float], batch_size: int = 32) -> Iterator[ConceptBatch]:
    """The first ``num_images`` images of a BRODEN folder, resized to ``image_size`` and normalised with
    ``mean``/``std``, with a mask for every concept of ``folder.concept_names()``."""
    concepts = folder.concept_names()
    index = {name: t for t, name in enumerate(concepts)}
    if len(mean) != 3:
        raise UserInputError("BRODEN images are RGB but the model reads one channel; dissect a model with RGB inputs.")
    for start in range(0, num_images, batch_size):
        loaded = [folder.load(position, image_size) for position in range(start, min(start + batch_size, num_images))]
        masks = np.zeros((len(loaded), len(concepts), *image_size), dtype=bool)
        annotated = np.zeros((len(loaded), len(concepts)), dtype=bool)
        for b, image in enumerate(loaded):
            for name, mask in image.masks.items():
                masks[b, index[name]] = mask
            annotated[b, [index[name] for name in image.annotated | set(image.masks)]] = True
        yield ConceptBatch(_normalise(np.stack([image.pixels for image in loaded]), mean, std), masks, annotated)
