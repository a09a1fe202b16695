"""Numbers that say how well a per-input representation separates the classes, without looking at a plot.

* :func:`knn_accuracy`: a k-nearest-neighbour classifier (scikit-learn, Euclidean) fitted on one part
  of the inputs, scored on the rest: how often an input's nearest neighbours share its class.
* :func:`class_silhouette`: the silhouette of the class labels (scikit-learn, Euclidean), in [-1, 1]:
  about 0 when the classes overlap, towards 1 when each is a tight group far from the others.
* :func:`layer_mutual_information`: the mutual information between the class and a layer's binary
  vector, each distinct vector hashed to one discrete label (:func:`hash_rows`), and the mean over the
  layer's filters of the mutual information between the class and the filter's single bit.

Mutual information, estimated by plug-in: I(C; Z) = Σ p(c, z) log(p(c, z) / (p(c) p(z))) with the
empirical frequencies of N inputs (``sklearn.metrics.mutual_info_score``, in nats). It is biased
upwards: for a class independent of Z, with K classes and M distinct vectors, its expectation is about
(M − 1)(K − 1) / (2N) nats (Miller, 1955), and when nearly every input has its own vector (M ≈ N) the
estimate reaches H(C) whatever Z carries. Beside it: the number of distinct vectors, that bias term,
and the adjusted mutual information (``adjusted_mutual_info_score``: the estimate minus its expectation
under random labelings with the same group sizes, divided by its room to grow; 0 for independence,
1 for Z naming the class), which stays honest when M is close to N. The per-filter mean has little bias
(two values per filter: about (K − 1) / (2N) nats) but misses what filters say only together.
"""

from __future__ import annotations

import numpy as np


def knn_accuracy(features: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, neighbours: int) -> float:
    """Accuracy on ``test`` of a ``neighbours``-NN classifier fitted on ``train`` (Euclidean, uniform weights)."""
    from sklearn.neighbors import KNeighborsClassifier

    classifier = KNeighborsClassifier(n_neighbors=neighbours).fit(features[train], labels[train])
    return float((classifier.predict(features[test]) == labels[test]).mean())


def class_silhouette(features: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean silhouette of the class labels (Euclidean); None when it is undefined (one class, or one input
    per class)."""
    from sklearn.metrics import silhouette_score

    present = len(np.unique(labels))
    if not 2 <= present <= len(labels) - 1:
        return None
    return float(silhouette_score(features, labels, metric="euclidean"))


def hash_rows(binary: np.ndarray) -> np.ndarray:
    """One integer per row, equal for equal rows: the index of the row among the distinct rows."""
    if binary.shape[1] == 0:
        return np.zeros(len(binary), dtype=np.int64)
    packed = np.packbits(np.asarray(binary, dtype=np.uint8), axis=1)
    return np.unique(packed, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def class_entropy(labels: np.ndarray) -> float:
    """H(C) in nats, from the label frequencies."""
    frequencies = np.bincount(labels) / len(labels)
    frequencies = frequencies[frequencies > 0]
    return float(-(frequencies * np.log(frequencies)).sum())


def per_filter_mutual_information(binary: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Plug-in I(C; z_f) in nats for every column f of ``binary`` at once (what ``mutual_info_score`` gives
    column by column): Σ_{c, b} p(c, b) log(p(c, b) / (p(c) p(b))) over the classes c and the bit b."""
    binary = np.asarray(binary, dtype=np.float64)
    one_hot = (labels[:, None] == np.unique(labels)[None, :]).astype(np.float64)  # (n, K)
    ones = one_hot.T @ binary  # (K, F): inputs of class c with the bit on
    joint = np.stack([one_hot.sum(0)[:, None] - ones, ones]) / len(labels)  # (2, K, F): p(c, b)
    class_share = joint.sum(axis=0, keepdims=True)
    bit_share = joint.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = joint * np.log(joint / (class_share * bit_share))
    return np.nan_to_num(terms).sum(axis=(0, 1))


def layer_mutual_information(binary: np.ndarray, labels: np.ndarray) -> dict:
    """Plug-in and adjusted mutual information between the class and one layer's binary vector.

    Returns:
        ``mi_nats`` (plug-in), ``mi_fraction`` (of H(C)), ``mi_adjusted``, ``distinct_vectors``,
        ``plug_in_bias_nats`` ((M − 1)(K − 1) / 2N), ``per_filter_mi_nats`` (the mean over the filters of
        I(C; one filter's bit), plug-in) and ``class_entropy_nats``.
    """
    from sklearn.metrics import adjusted_mutual_info_score, mutual_info_score

    hashed = hash_rows(binary)
    entropy = class_entropy(labels)
    information = float(mutual_info_score(labels, hashed))
    distinct = int(hashed.max()) + 1 if len(hashed) else 0
    classes = len(np.unique(labels))
    return {
        "mi_nats": information,
        "mi_fraction": information / entropy if entropy > 0 else None,
        "mi_adjusted": float(adjusted_mutual_info_score(labels, hashed)),
        "distinct_vectors": distinct,
        "plug_in_bias_nats": (distinct - 1) * (classes - 1) / (2 * len(labels)),
        "per_filter_mi_nats": float(per_filter_mutual_information(binary, labels).mean()) if binary.shape[1] else 0.0,
        "class_entropy_nats": entropy,
    }
