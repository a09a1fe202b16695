"""Fig. 10 of Li et al. (2020): the paths of real class-a images, real class-b images and a → b adversarials.

An adversarial image that the network now calls b still takes a path unlike real b images (and, having moved,
unlike real a images too). This gathers the three groups' binary paths, per gated filter the share of each
group that opens it (the per-layer activation frequencies of the figure), a 2-D embedding of all paths
(t-SNE, PCA for fewer than 20 paths) and, as numbers, the mean Hamming distance between and within groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GROUPS = ("real a", "real b", "adversarial a→b")


@dataclass
class PairPaths:
    """The paths of the three groups of a class pair.

    Attributes:
        source, target: the class indices a and b; ``source_name``, ``target_name`` their names.
        paths: (K, D) bool, every path of the three groups.
        groups: (K,) 0 real a, 1 real b, 2 adversarial a → b.
        layer_names, widths: the gated layers and their filter counts (the blocks of ``paths``).
        embedding: (K, 2) coordinates of the paths; ``embedding_method`` says which.
        attack: the targeted attack's summary (success rate, dropped images).
    """

    source: int
    target: int
    source_name: str
    target_name: str
    paths: np.ndarray
    groups: np.ndarray
    layer_names: list[str]
    widths: list[int]
    embedding: np.ndarray
    embedding_method: str
    attack: dict

    def frequencies(self) -> np.ndarray:
        """(3, D): per group, the share of its paths that open each filter (NaN for an empty group)."""
        return np.stack([self.paths[self.groups == g].mean(axis=0) if (self.groups == g).any()
                         else np.full(self.paths.shape[1], np.nan) for g in range(len(GROUPS))])

    def mean_distances(self) -> dict[str, float]:
        """Mean Hamming distance (filters that differ) between and within the groups."""
        members = [self.paths[self.groups == g].astype(np.float32) for g in range(len(GROUPS))]

        def mean_distance(first: np.ndarray, second: np.ndarray) -> float:
            if len(first) == 0 or len(second) == 0:
                return float("nan")
            differ = first @ (1 - second).T + (1 - first) @ second.T
            return float(differ.mean())

        a, b, adversarial = members
        return {"real_a_to_real_b": mean_distance(a, b), "adversarial_to_real_a": mean_distance(adversarial, a),
                "adversarial_to_real_b": mean_distance(adversarial, b), "within_real_a": mean_distance(a, a),
                "within_real_b": mean_distance(b, b), "within_adversarial": mean_distance(adversarial, adversarial)}

    def summary(self) -> dict:
        return {"source": self.source_name, "target": self.target_name, "source_index": self.source,
                "target_index": self.target, "counts": {name: int((self.groups == g).sum()) for g, name in enumerate(GROUPS)},
                "attack": self.attack, "embedding": self.embedding_method, "mean_hamming": self.mean_distances()}


def embed_paths(paths: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of binary paths: t-SNE (Hamming metric) for 20 or more, PCA below; (coordinates, method)."""
    values = paths.astype(np.float32)
    if len(values) < 3:
        return np.zeros((len(values), 2), dtype=np.float32), "none"
    if len(values) < 20:
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(values).astype(np.float32), "pca"
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, (len(values) - 1) / 3))
    coordinates = TSNE(n_components=2, perplexity=perplexity, metric="hamming", init="random",
                       random_state=seed).fit_transform(values)
    return coordinates.astype(np.float32), "tsne"


def pair_paths(real_a: np.ndarray, real_b: np.ndarray, adversarial: np.ndarray, *, source: int, target: int,
               source_name: str, target_name: str, layer_names: list[str], widths: list[int], attack: dict,
               seed: int = 0) -> PairPaths:
    """Gather the three groups' paths (each (·, D) bool) and embed them."""
    paths = np.concatenate([real_a, real_b, adversarial]).astype(bool)
    groups = np.concatenate([np.full(len(real_a), 0), np.full(len(real_b), 1), np.full(len(adversarial), 2)])
    embedding, method = embed_paths(paths, seed)
    return PairPaths(source, target, source_name, target_name, paths, groups, list(layer_names), list(widths),
                     embedding, method, attack)
