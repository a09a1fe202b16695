"""The Hopkins statistic: does a set of points cluster, or is it spread like uniform noise?

Definition (Hopkins & Skellam, 1954; in the form of Lawson & Jurs, 1990, J. Chem. Inf. Comput. Sci.
30:36-41, used by Banerjee & Davé, 2004)::

    H = Σ_i u_i / (Σ_i u_i + Σ_i w_i),   i = 1..m

* u_i: the distance from the i-th of m points drawn uniformly in the data's bounding box to its
  nearest data point;
* w_i: the distance from the i-th of m data points drawn without replacement to its nearest *other*
  data point.

Uniformly spread data give u and w of the same size, H ≈ 0.5; clustered data leave the uniform
points far from any data point while the data points have close neighbours, H → 1; data on a
regular grid give H < 0.5. Distances are Euclidean.

Sample size: m = min(max(⌈n / 10⌉, min(10, n − 1)), 1000) for n points — the customary tenth of the
data (so that the sampled points are nearly independent of each other), at least 10 where the data
allow it (fewer makes H noisy) and at most 1000 (enough for a stable value, and the cost stays
O(m · n · d)).

Binary data (gate vectors): "uniform in the bounding box" means uniform over the *vertices* of the
box: a coordinate on which every data point agrees keeps that value, every other coordinate is a
fair coin flip between 0 and 1. Binary data can only sit on vertices, so this is the uniform
distribution the data could have had; points in the box's interior would be farther from every
vertex than data points are from each other and would push H up for any binary data. With
duplicates (many inputs on the same gate vector) w can be 0, and H is then near 1 — identical paths
are a cluster. When every u and w is 0 (the points are all identical, or fill every vertex of a
tiny box), H is undefined: :func:`hopkins_statistic` returns NaN.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.errors import UserInputError

MAX_SAMPLE = 1000
STREAM = 0x686F70  # the second word of the generator's seed, see hopkins_statistic


def hopkins_sample_size(num_points: int) -> int:
    """m for ``num_points`` data points (see the module docstring)."""
    return max(1, min(max(math.ceil(num_points / 10), min(10, num_points - 1)), MAX_SAMPLE, num_points - 1))


def _nearest_distances(queries: np.ndarray, points: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distance from each query to its nearest point; ``exclude[i]``: the index in ``points``
    that query i must not match (itself), or None."""
    squared = (queries ** 2).sum(1)[:, None] + (points ** 2).sum(1)[None, :] - 2.0 * queries @ points.T
    if exclude is not None:
        squared[np.arange(len(queries)), exclude] = np.inf
    return np.sqrt(np.maximum(squared.min(axis=1), 0.0))


def hopkins_statistic(points: np.ndarray, *, seed: int = 0, binary: bool | None = None,
                      sample_size: int | None = None) -> float:
    """H of ``points`` (n × d): about 0.5 for uniform data, towards 1 for clustered data.

    Args:
        points: the data, one row per point.
        seed: seeds the uniform points and the sampled data points (``numpy.random.default_rng([seed, STREAM])``).
        binary: draw the uniform points on the vertices of the bounding box (see the module
            docstring); default: whether every value is 0 or 1.
        sample_size: m; default :func:`hopkins_sample_size`.

    Returns:
        H in [0, 1], or NaN when every distance is 0.

    Raises:
        UserInputError: fewer than 3 points, or a sample size outside [1, n − 1].
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2:
        raise UserInputError(f"hopkins_statistic needs a 2-D array (points × dimensions), got shape {points.shape}.")
    n = len(points)
    if n < 3:
        raise UserInputError(f"the Hopkins statistic needs at least 3 points, got {n}; pass more inputs.")
    m = hopkins_sample_size(n) if sample_size is None else int(sample_size)
    if not 1 <= m <= n - 1:
        raise UserInputError(f"sample_size must be in [1, {n - 1}] for {n} points, got {m}.")
    if binary is None:
        binary = bool(np.isin(points, (0.0, 1.0)).all())
    # A stream of its own: data drawn with default_rng(seed) must not come back as the "uniform" points.
    rng = np.random.default_rng([seed, STREAM])
    low, high = points.min(axis=0), points.max(axis=0)
    if binary:
        uniform = np.where(rng.random((m, points.shape[1])) < 0.5, low, high)
    else:
        uniform = low + (high - low) * rng.random((m, points.shape[1]))
    sampled = rng.choice(n, size=m, replace=False)
    u = _nearest_distances(uniform, points).sum()
    w = _nearest_distances(points[sampled], points, exclude=sampled).sum()
    return float(u / (u + w)) if u + w > 0 else float("nan")
