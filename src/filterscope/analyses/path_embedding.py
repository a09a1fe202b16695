"""Path embedding (Li et al., ECCV 2020, Sec. 4.2 and Fig. 3): do inputs of one class take similar paths?

Each input's calculation path (its binary gate vectors over every gated layer, concatenated) is
reduced by PCA to min(300, dimensions, n − 1) components and then by t-SNE to two (scikit-learn,
seeded). The scatter of the two, coloured by class, is the paper's figure; beside it, numbers that
need no eyes (:mod:`.embedding_scores`):

* k-NN accuracy: the recorded inputs are split, stratified and seeded, into a part whose labels a
  k-nearest-neighbour classifier (k = ``neighbours``, 5 by default) learns and a held-out part it is
  scored on, in the PCA space (Euclidean; for binary vectors with all components kept this is the
  order of the Hamming distance);
* the silhouette of the classes in the 2-D t-SNE embedding and in the PCA space;
* per gated layer, the mutual information between the class and the layer's vector, hashed to one
  discrete label per input (plug-in and adjusted; see :mod:`.embedding_scores` for the bias).

The same numbers for two baselines read from the *dense* network on the same units, so that what the
gates add can be told from what the network already holds:

* ``dense_binary``: the binarised activation pattern, 1 where the filter's pooled response (spatial
  mean at ``where``, ``"response"`` by default: after the unit's activation) is > 0 — the path's bit
  budget, one bit per filter;
* ``dense_real``: the real-valued pooled responses, standardised per filter before PCA. Hashing real
  vectors would give every input its own label, so their per-layer mutual information is that of the
  vector binarised at each filter's median over the inputs (again one bit per filter).

PCA and the standardisation are fitted on all recorded inputs without their labels; only the k-NN
classifier sees labels, those of its training part.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..core.capture import run_capture
from ..core.errors import UserInputError
from ..core.unit_hooks import DEFAULT_WHERE, WHERE
from ..core.units import find_units
from ..data.splits import stratified_split
from ..methods.decoupling.model import DecoupledModel
from ..methods.decoupling.paths import collect_paths
from .embedding_scores import class_silhouette, knn_accuracy, layer_mutual_information

REPRESENTATIONS = {
    "decoupled_paths": "the decoupled model's calculation paths (binary gate vectors of every gated layer)",
    "dense_binary": "the dense model's binarised activation pattern (pooled response > 0, per filter of the gated units)",
    "dense_real": "the dense model's real-valued pooled responses of the same units (standardised per filter)",
}
MIN_INPUTS = 20  # below this, the held-out part and t-SNE's neighbourhoods are too small to mean anything
MIN_DISTINCT = 3  # distinct inputs t-SNE needs; with fewer (every input on one path) the embedding is left out


@dataclass
class PathEmbeddingConfig:
    """Settings of :func:`path_embedding`.

    Attributes:
        pca_dims: PCA components kept before t-SNE, at most (the paper's 300).
        perplexity: t-SNE perplexity (lowered to (n − 1) / 3 for few inputs).
        neighbours: k of the k-NN classifier.
        test_fraction: share of each class held out from the k-NN classifier's training.
        seed: seeds the split, PCA's solver and t-SNE.
        where: where the dense baselines read each unit's output (see :mod:`filterscope.core.unit_hooks`).
    """

    pca_dims: int = 300
    perplexity: float = 30.0
    neighbours: int = 5
    test_fraction: float = 0.3
    seed: int = 0
    where: str = DEFAULT_WHERE

    def validate(self) -> "PathEmbeddingConfig":
        if self.pca_dims < 2:
            raise UserInputError(f"pca_dims must be at least 2, got {self.pca_dims}.")
        if self.perplexity <= 0:
            raise UserInputError(f"perplexity must be positive, got {self.perplexity}; the usual value is 30.")
        if self.neighbours < 1:
            raise UserInputError(f"neighbours (k of the k-NN classifier) must be at least 1, got {self.neighbours}.")
        if not 0.0 < self.test_fraction < 1.0:
            raise UserInputError(f"test_fraction must be in (0, 1), got {self.test_fraction}; pass e.g. 0.3.")
        if self.where not in WHERE:
            raise UserInputError(f"where must be one of {', '.join(WHERE)}, got {self.where!r}.")
        return self


@dataclass
class RepresentationEmbedding:
    """One representation of the inputs, embedded and scored.

    Attributes:
        name, description: which representation (a key of :data:`REPRESENTATIONS`).
        dims: its dimensions (filters); ``pca_dims``: PCA components kept.
        knn_accuracy: accuracy of the k-NN classifier on the held-out inputs.
        silhouette_embedding, silhouette_pca: of the class labels, in the 2-D embedding and in the PCA space.
        mutual_information: per gated layer, :func:`.embedding_scores.layer_mutual_information`.
        on_fraction: share of ones, for a binary representation.
        distinct_inputs: inputs with different vectors (a binary representation often has far fewer than n).
        embedding: (n, 2) t-SNE coordinates; all 0 (and ``silhouette_embedding`` None) when fewer than
            :data:`MIN_DISTINCT` inputs differ.
    """

    name: str
    description: str
    dims: int
    pca_dims: int
    knn_accuracy: float
    silhouette_embedding: float | None
    silhouette_pca: float | None
    mutual_information: dict[str, dict]
    on_fraction: float | None
    distinct_inputs: int
    embedding: np.ndarray = field(repr=False)

    def summary(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "embedding"}


@dataclass
class PathEmbeddingResult:
    """What :func:`path_embedding` measured: each representation's embedding and scores.

    Attributes:
        representations: ``decoupled_paths`` and, when a dense network was given, ``dense_binary`` and ``dense_real``.
        labels: (n,) class of each recorded input; ``train`` / ``test`` the k-NN split (indices).
        layer_names, layer_widths: the gated units and their filters.
        classes: class names, when known.
    """

    config: PathEmbeddingConfig
    layer_names: list[str]
    layer_widths: list[int]
    labels: np.ndarray
    train: np.ndarray
    test: np.ndarray
    representations: dict[str, RepresentationEmbedding]
    classes: list[str] | None = None

    def summary(self) -> dict:
        """The numbers, JSON-ready (the embeddings are in :meth:`arrays`)."""
        counts = np.bincount(self.labels)
        return {
            "config": asdict(self.config),
            "num_inputs": int(len(self.labels)),
            "knn_train_inputs": int(len(self.train)),
            "knn_test_inputs": int(len(self.test)),
            "knn_neighbours": self.config.neighbours,
            "knn_chance": float(counts.max() / counts.sum()),
            "layer_names": list(self.layer_names),
            "layer_widths": list(self.layer_widths),
            "classes": self.classes,
            "representations": {name: r.summary() for name, r in self.representations.items()},
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """What the figure is drawn from: labels, the k-NN test indices and each embedding."""
        arrays = {"labels": self.labels, "test_indices": self.test}
        arrays.update({f"embedding_{name}": r.embedding for name, r in self.representations.items()})
        return arrays


def _pca(features: np.ndarray, config: PathEmbeddingConfig) -> np.ndarray:
    from sklearn.decomposition import PCA

    components = min(config.pca_dims, features.shape[1], len(features) - 1)
    with np.errstate(divide="ignore", invalid="ignore"):  # explained-variance ratios of constant features: 0 / 0
        return PCA(n_components=components, random_state=config.seed).fit_transform(features.astype(np.float64))


def _tsne(reduced: np.ndarray, config: PathEmbeddingConfig) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = min(config.perplexity, (len(reduced) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=config.seed).fit_transform(reduced).astype(np.float32)


def _layer_slices(layer_names: list[str], layer_widths: list[int]) -> dict[str, slice]:
    bounds = np.cumsum([0, *layer_widths])
    return {name: slice(int(bounds[i]), int(bounds[i + 1])) for i, name in enumerate(layer_names)}


def embed_representation(name: str, features: np.ndarray, labels: np.ndarray, layer_names: list[str],
                         layer_widths: list[int], train: np.ndarray, test: np.ndarray,
                         config: PathEmbeddingConfig) -> RepresentationEmbedding:
    """Embed and score one representation ((n, Σ widths), binary for ``decoupled_paths`` and ``dense_binary``)."""
    features = np.asarray(features, dtype=np.float64)
    binary = name != "dense_real"
    if binary:
        bits = features > 0.5
        scaled = features
    else:  # one bit per filter for the mutual information: above the filter's median or not
        bits = features > np.median(features, axis=0)
        spread = features.std(axis=0)
        scaled = (features - features.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    reduced = _pca(scaled, config)
    distinct = len(np.unique(features, axis=0))
    # Nothing to lay out when (nearly) every input has the same vector; scikit-learn's Barnes-Hut t-SNE crashes on it.
    embedding = _tsne(reduced, config) if distinct >= MIN_DISTINCT else None
    information = {layer: layer_mutual_information(bits[:, columns], labels)
                   for layer, columns in _layer_slices(layer_names, layer_widths).items()}
    return RepresentationEmbedding(
        name=name, description=REPRESENTATIONS.get(name, name), dims=int(features.shape[1]), pca_dims=int(reduced.shape[1]),
        knn_accuracy=knn_accuracy(reduced, labels, train, test, config.neighbours),
        silhouette_embedding=class_silhouette(embedding, labels) if embedding is not None else None,
        silhouette_pca=class_silhouette(reduced, labels), mutual_information=information,
        on_fraction=float(bits.mean()) if binary else None, distinct_inputs=distinct,
        embedding=embedding if embedding is not None else np.zeros((len(labels), 2), dtype=np.float32),
    )


def check_inputs(labels: np.ndarray, config: PathEmbeddingConfig) -> tuple[np.ndarray, np.ndarray]:
    """The k-NN split of ``labels``, after checking there are enough inputs and classes for the analysis."""
    if len(labels) < MIN_INPUTS:
        raise UserInputError(f"the path embedding needs at least {MIN_INPUTS} inputs, got {len(labels)}; "
                             "record more images (a larger split or --samples).")
    if len(np.unique(labels)) < 2:
        raise UserInputError("the recorded inputs all have one class; the path embedding compares classes, "
                             "so record images of at least two classes.")
    train, test = stratified_split(labels, config.test_fraction, config.seed)
    if len(train) < config.neighbours or len(test) == 0:
        raise UserInputError(f"{len(train)} training inputs are too few for a {config.neighbours}-NN classifier; "
                             "record more images or lower the number of neighbours.")
    return train, test


def embed_features(features: dict[str, np.ndarray], labels: np.ndarray, layer_names: list[str],
                   layer_widths: list[int], config: PathEmbeddingConfig | None = None,
                   classes: list[str] | None = None) -> PathEmbeddingResult:
    """Embed and score representations already recorded: ``features[name]`` is (n, Σ widths), rows in the
    order of ``labels``, columns the gated layers' filters in order."""
    config = (config or PathEmbeddingConfig()).validate()
    labels = np.asarray(labels, dtype=np.int64)
    for name, values in features.items():
        if values.shape != (len(labels), sum(layer_widths)):
            raise UserInputError(f"{name} has shape {values.shape}; it needs one row per input and one column per "
                                 f"filter of the gated layers, ({len(labels)}, {sum(layer_widths)}).")
    train, test = check_inputs(labels, config)
    embedded = {name: embed_representation(name, values, labels, layer_names, layer_widths, train, test, config)
                for name, values in features.items()}
    return PathEmbeddingResult(config=config, layer_names=list(layer_names), layer_widths=list(layer_widths),
                               labels=labels, train=train, test=test, representations=embedded, classes=classes)


@torch.no_grad()
def dense_responses(network: nn.Module, layer_names: list[str], loader, input_shape: tuple[int, int, int], *,
                    where: str = DEFAULT_WHERE, device="cpu", progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Pooled responses (spatial mean at ``where``) of ``network``'s units ``layer_names`` over ``loader``:
    ((n, Σ filters) float32, labels). The network runs in evaluation mode; its flag is restored after."""
    units = {unit.name: unit for unit in find_units(network, input_shape)}
    missing = [name for name in layer_names if name not in units]
    if missing:
        raise UserInputError(f"the dense network has no conv unit named {missing[0]!r}; pass the network the decoupled "
                             "model was built from (same architecture).")
    was_training = network.training
    network.eval()
    try:
        captured = run_capture(network, [units[name] for name in layer_names], loader, ("mean",), where=where,
                               device=device, progress=progress)
    finally:
        network.train(was_training)
    return np.concatenate([captured.arrays["mean"][name] for name in layer_names], axis=1), captured.labels


def path_embedding(model: DecoupledModel, loader, config: PathEmbeddingConfig | None = None, *,
                   dense_network: nn.Module | None = None, classes: list[str] | None = None, device="cpu",
                   progress: bool = True) -> PathEmbeddingResult:
    """Record the paths of ``model`` over ``loader`` and embed them, beside the dense baselines.

    Args:
        model: the decoupled model (not changed; its training flag is restored).
        loader: yields (images, labels) in a fixed order; it is read twice when ``dense_network`` is given.
        dense_network: the network without gates whose units carry the gated units' names —
            ``filterscope.engine.base_network(model)``, or the dense checkpoint it was decoupled from;
            None: the decoupled paths only.
        classes: class names, for the summary and the figure.

    Raises:
        UserInputError: fewer than :data:`MIN_INPUTS` inputs or one class, or a dense network without the units.
    """
    config = (config or PathEmbeddingConfig()).validate()
    record = collect_paths(model, loader, device=device, progress=progress)
    features = {"decoupled_paths": record.paths()}
    check_inputs(record.labels, config)
    if dense_network is not None:
        responses, labels = dense_responses(dense_network, record.layer_names, loader, tuple(model.input_shape),
                                            where=config.where, device=device, progress=progress)
        if not np.array_equal(labels, record.labels):
            raise UserInputError("the loader gave the inputs in another order the second time; pass one with shuffle=False.")
        features.update(dense_binary=(responses > 0).astype(np.uint8), dense_real=responses)
    return embed_features(features, record.labels, record.layer_names, record.layer_widths, config, classes)
