"""Colour concepts for any image set: every pixel named by one of the 11 basic colour terms.

BRODEN's colour category names each pixel with van de Weijer et al.'s colour-naming model (learned from
web images; not available here). This is a documented stand-in, a nearest-prototype rule in CIE Lab:

1. sRGB → CIE L*a*b* (D65 white; :func:`srgb_to_lab`, the standard formulas, no extra dependency);
2. each pixel gets the term of the nearest prototype in Lab, by the distance
   sqrt((ΔL*/2)² + Δa*² + Δb*²): CIE76 ΔE with lightness differences counted half, as in the CMC l:c = 2:1
   weighting (without it, dark greens and navy fall to black and brown, because lightness dominates); the
   prototypes being :data:`COLOUR_PROTOTYPES`: one sRGB colour per term, chosen by hand as a typical,
   moderately saturated member of the category (not the sRGB primaries, which sit at the rim of the gamut
   far from the colours of photographs) so that, e.g., a clear sky (100, 150, 200) is named blue, dry
   earth (140, 110, 80) brown and dark green (30, 70, 30) green.

What it does not do: the model's context (a colour named differently by its surroundings), the
probabilities van de Weijer's model gives, or the uneven sizes of the categories in colour space (a
nearest-prototype rule splits Lab into Voronoi cells around the prototypes; grey takes many desaturated
colours that people would call by a hue). A grayscale image (one channel) is named from its grey levels:
black, grey or white only.
"""

from __future__ import annotations

import numpy as np

#: The 11 basic colour terms (Berlin and Kay), in the order of the concept masks.
COLOUR_TERMS = ("black", "blue", "brown", "grey", "green", "orange", "pink", "purple", "red", "white", "yellow")

#: One sRGB prototype per term (0-255); see the module docstring for how they were chosen.
COLOUR_PROTOTYPES: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "blue": (60, 110, 200),
    "brown": (125, 85, 50),
    "grey": (128, 128, 128),
    "green": (70, 150, 60),
    "orange": (240, 140, 30),
    "pink": (240, 150, 190),
    "purple": (125, 60, 160),
    "red": (200, 30, 35),
    "white": (255, 255, 255),
    "yellow": (240, 220, 50),
}

_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def srgb_to_lab(pixels: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of sRGB pixels: uint8 (or floats in 0-255) ``(..., 3)`` → float64 ``(..., 3)``.

    sRGB is linearised (IEC 61966-2-1), mapped to XYZ with the sRGB/D65 matrix, divided by the D65 white
    and passed through CIE's f(t) = t^(1/3) above (6/29)³, t/(3·(6/29)²) + 4/29 below.
    """
    channels = np.asarray(pixels, dtype=np.float64) / 255.0
    linear = np.where(channels <= 0.04045, channels / 12.92, ((channels + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    delta = 6.0 / 29.0
    f = np.where(xyz > delta ** 3, np.cbrt(xyz), xyz / (3 * delta ** 2) + 4.0 / 29.0)
    lightness = 116.0 * f[..., 1] - 16.0
    return np.stack([lightness, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], axis=-1)


_WEIGHTS = np.array([0.5, 1.0, 1.0])  # L*, a*, b*: lightness differences count half (CMC l:c = 2:1)
_PROTOTYPES_LAB = srgb_to_lab(np.array([COLOUR_PROTOTYPES[term] for term in COLOUR_TERMS]))


def name_colours(images: np.ndarray) -> np.ndarray:
    """The index into :data:`COLOUR_TERMS` of every pixel: uint8 ``(..., H, W, C)`` with C = 3 or 1 →
    int64 ``(..., H, W)``. One channel is read as grey (R = G = B)."""
    images = np.asarray(images)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if images.shape[-1] != 3:
        raise ValueError(f"colour naming needs RGB or grey pixels (last axis 3 or 1), got shape {images.shape}")
    lab = srgb_to_lab(images)
    distances = (((lab[..., None, :] - _PROTOTYPES_LAB) * _WEIGHTS) ** 2).sum(-1)
    return distances.argmin(-1)


def colour_masks(images: np.ndarray, min_fraction: float = 0.0) -> np.ndarray:
    """One mask per colour term: uint8 ``(B, H, W, C)`` → bool ``(B, 11, H, W)``.

    Args:
        min_fraction: a term covering less than this share of an image's pixels is left out of that
            image (its mask emptied), so that a few stray pixels (JPEG noise) do not make an image
            "contain" the colour; 0 keeps every named pixel.
    """
    names = name_colours(images)
    masks = names[:, None, :, :] == np.arange(len(COLOUR_TERMS))[None, :, None, None]
    if min_fraction > 0:
        coverage = masks.mean(axis=(2, 3))
        masks &= (coverage >= min_fraction)[:, :, None, None]
    return masks
