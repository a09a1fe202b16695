"""The decision tree of a decoupled network (Li et al., ECCV 2020, Sec. 4.2 and Fig. 9).

Where in the network do the inputs of different classes take different roads? Walk the gated layers
in order, starting with one group that holds every input. At each layer, for each group:

1. compute the Hopkins statistic H (:mod:`.hopkins`) of the group's gate vectors at this layer;
2. if H > ``threshold`` (0.75 by default), the gate vectors cluster: split the group in two with
   k-means (scikit-learn, k = 2, seeded) on those vectors, and let each part go on, separately, through
   the later layers; otherwise the group goes on whole to the next layer.

A group smaller than ``min_size`` is not examined (H of a handful of points says little) and ends the
branch. The paper gives no threshold; ``benchmarks/path_interpretation/`` measures H on the shipped
ResNet-20 against the same gates with each filter's column shuffled across inputs (the structure gone,
the on-rates kept) and explains the default.

The tree is kept compact: a node is a group of inputs; it records the layer it was formed at
(``start_layer``), H at each layer it walked through, and, if it split, the layer of the split and its two
children. Which classes part where is read off the tree: two classes *part* at the first split where
the majority of one goes to one child and the majority of the other to the other child, following each
class's majority from the root (:meth:`HopkinsTreeResult.class_parting`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..core.errors import UserInputError
from ..methods.decoupling.model import DecoupledModel
from ..methods.decoupling.paths import collect_paths
from .hopkins import hopkins_statistic


@dataclass
class HopkinsTreeConfig:
    """Settings of :func:`hopkins_tree`.

    Attributes:
        threshold: split a group where the Hopkins statistic of its gate vectors exceeds this.
        min_size: groups with fewer inputs are not examined or split.
        seed: seeds the Hopkins statistic's samples and k-means.
    """

    threshold: float = 0.75
    min_size: int = 40
    seed: int = 0

    def validate(self) -> "HopkinsTreeConfig":
        if not 0.0 < self.threshold < 1.0:
            raise UserInputError(f"the Hopkins threshold must be in (0, 1), got {self.threshold}; 0.5 is uniform data, "
                                 "1 tight clusters (default 0.75).")
        if self.min_size < 4:
            raise UserInputError(f"min_size must be at least 4 inputs, got {self.min_size}.")
        return self


@dataclass
class TreeNode:
    """A group of inputs walked through the gated layers from ``start_layer``.

    Attributes:
        indices: the group's inputs (indices into the recorded inputs).
        start_layer: index of the gated layer the group was formed before.
        hopkins: H at each layer walked (layer index → H; NaN where undefined).
        split_layer: index of the layer where the group split, or None.
        children: the two parts after a split.
    """

    indices: np.ndarray
    start_layer: int
    hopkins: dict[int, float] = field(default_factory=dict)
    split_layer: int | None = None
    children: list["TreeNode"] = field(default_factory=list)

    def walk(self):
        """This node and every node below it, parents before children."""
        yield self
        for child in self.children:
            yield from child.walk()


def _split_in_two(vectors: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(vectors.astype(np.float64))


def _grow(node: TreeNode, gates: list[np.ndarray], config: HopkinsTreeConfig) -> None:
    """Walk ``node`` through the layers from its start until it splits; grow its children likewise."""
    if len(node.indices) < config.min_size:
        return
    for layer in range(node.start_layer, len(gates)):
        vectors = gates[layer][node.indices]
        value = hopkins_statistic(vectors, seed=config.seed, binary=True)
        node.hopkins[layer] = value
        if np.isfinite(value) and value > config.threshold:
            parts = _split_in_two(vectors, config.seed)
            if parts.min() == parts.max():  # k-means found one group only: nothing to split
                continue
            node.split_layer = layer
            node.children = [TreeNode(np.sort(node.indices[parts == part]), layer + 1) for part in (0, 1)]
            node.children.sort(key=lambda child: -len(child.indices))  # larger part first
            for child in node.children:
                _grow(child, gates, config)
            return


@dataclass
class HopkinsTreeResult:
    """The tree of :func:`hopkins_tree` with what it needs to be read: labels, layer and class names."""

    config: HopkinsTreeConfig
    root: TreeNode
    labels: np.ndarray
    layer_names: list[str]
    num_classes: int
    classes: list[str] | None = None

    def _class_name(self, label: int) -> str:
        return self.classes[label] if self.classes else str(label)

    def node_dict(self, node: TreeNode) -> dict:
        """One node and its subtree as JSON-ready values (``layer``: where it split, None for a leaf)."""
        histogram = np.bincount(self.labels[node.indices], minlength=self.num_classes)
        value = node.hopkins.get(node.split_layer) if node.split_layer is not None else None
        return {
            "layer": self.layer_names[node.split_layer] if node.split_layer is not None else None,
            "start_layer": self.layer_names[node.start_layer] if node.start_layer < len(self.layer_names) else None,
            "size": int(len(node.indices)),
            "class_histogram": {self._class_name(k): int(c) for k, c in enumerate(histogram)},
            "hopkins": None if value is None or not np.isfinite(value) else float(value),
            "hopkins_by_layer": {self.layer_names[k]: (float(v) if np.isfinite(v) else None) for k, v in node.hopkins.items()},
            "children": [self.node_dict(child) for child in node.children],
        }

    def to_dict(self) -> dict:
        """The whole tree (from the root) as a JSON-ready dict."""
        return self.node_dict(self.root)

    def majority_path(self, label: int) -> list[TreeNode]:
        """The nodes that hold the most inputs of class ``label``, from the root down."""
        path, node = [self.root], self.root
        while node.children:
            node = max(node.children, key=lambda child: int((self.labels[child.indices] == label).sum()))
            path.append(node)
        return path

    def class_parting(self) -> dict:
        """Where the classes part, following each class's majority from the root.

        Returns:
            ``pairwise``: K × K layer indices where classes a and b part (−1: never, and on the diagonal);
            ``per_class``: per class, ``first_parts_at`` (the gated layer of its first parting, None if
            never), ``parts_from`` (the classes it parts from there) and ``path``: per node of its majority
            path, the node's split layer, its size, the share of the class it keeps and the class's share of it.
        """
        paths = [self.majority_path(label) for label in range(self.num_classes)]
        pairwise = np.full((self.num_classes, self.num_classes), -1, dtype=np.int64)
        for a in range(self.num_classes):
            for b in range(a + 1, self.num_classes):
                for node_a, node_b in zip(paths[a][1:], paths[b][1:]):
                    if node_a is not node_b:  # parents were shared; the split before these nodes parted a and b
                        pairwise[a, b] = pairwise[b, a] = node_a.start_layer - 1
                        break
        per_class = {}
        for a in range(self.num_classes):
            parted = [int(v) for v in pairwise[a] if v >= 0]
            first = min(parted) if parted else None
            class_size = max(int((self.labels == a).sum()), 1)
            per_class[self._class_name(a)] = {
                "first_parts_at": self.layer_names[first] if first is not None else None,
                "parts_from": [self._class_name(b) for b in range(self.num_classes) if first is not None and pairwise[a, b] == first],
                "path": [{"split_layer": self.layer_names[n.split_layer] if n.split_layer is not None else None,
                          "size": int(len(n.indices)),
                          "share_of_class": float((self.labels[n.indices] == a).sum() / class_size),
                          "share_of_group": float((self.labels[n.indices] == a).mean())} for n in paths[a]],
            }
        return {"pairwise": pairwise, "per_class": per_class}

    def summary(self) -> dict:
        """The tree, where the classes part, and counts, JSON-ready."""
        nodes = list(self.root.walk())
        parting = self.class_parting()
        return {
            "config": asdict(self.config),
            "num_inputs": int(len(self.labels)),
            "layer_names": list(self.layer_names),
            "classes": self.classes,
            "splits": sum(1 for node in nodes if node.children),
            "leaves": sum(1 for node in nodes if not node.children),
            "splits_per_layer": {name: sum(1 for node in nodes if node.split_layer == k) for k, name in enumerate(self.layer_names)},
            "class_parting": {"per_class": parting["per_class"],
                              "pairwise_layer_index": parting["pairwise"].tolist()},
            "tree": self.to_dict(),
        }


def build_hopkins_tree(gates: list[np.ndarray], labels: np.ndarray, layer_names: list[str],
                       config: HopkinsTreeConfig | None = None, classes: list[str] | None = None,
                       num_classes: int | None = None) -> HopkinsTreeResult:
    """The tree of binary gate vectors already recorded: ``gates[l]`` is (n, N_l) for gated layer l, rows in
    the order of ``labels``.

    Raises:
        UserInputError: fewer inputs than ``min_size``, or gate arrays that do not fit the labels and layers.
    """
    config = (config or HopkinsTreeConfig()).validate()
    labels = np.asarray(labels, dtype=np.int64)
    if len(gates) != len(layer_names) or not gates:
        raise UserInputError(f"give one gate array per gated layer ({len(layer_names)}), got {len(gates)}.")
    if any(len(g) != len(labels) for g in gates):
        raise UserInputError("every gate array needs one row per input, in the order of the labels.")
    if len(labels) < config.min_size:
        raise UserInputError(f"the tree needs at least min_size = {config.min_size} inputs, got {len(labels)}; "
                             "record more images or lower the minimum group size.")
    root = TreeNode(np.arange(len(labels)), 0)
    _grow(root, [np.asarray(g, dtype=np.float64) for g in gates], config)
    num_classes = num_classes or (len(classes) if classes else int(labels.max()) + 1)
    return HopkinsTreeResult(config=config, root=root, labels=labels, layer_names=list(layer_names),
                             num_classes=num_classes, classes=classes)


def hopkins_tree(model: DecoupledModel, loader, config: HopkinsTreeConfig | None = None, *,
                 classes: list[str] | None = None, device="cpu", progress: bool = True) -> HopkinsTreeResult:
    """Record the paths of ``model`` (not changed) over ``loader`` and grow the tree of its gate vectors."""
    config = (config or HopkinsTreeConfig()).validate()
    record = collect_paths(model, loader, device=device, progress=progress)
    paths = record.paths()
    bounds = np.cumsum([0, *record.layer_widths])
    gates = [paths[:, bounds[k]:bounds[k + 1]] for k in range(len(record.layer_widths))]
    return build_hopkins_tree(gates, record.labels, record.layer_names, config, classes, num_classes=model.num_classes)
