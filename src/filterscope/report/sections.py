"""The report's sections, in the order the page shows them: the single list of what a report can hold.

Each section names the ``metrics.json`` keys and the figure files it shows and opens with a few plain
sentences saying what its figures show and how to read them. A section appears when a run (or a run
folder inside it) holds one of its keys or figures; whatever no section claims is shown under "Other
results", so an analysis added later is never dropped from the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch

__all__ = ["FIGURES", "SECTIONS", "Section", "figure_text", "section_of_figure", "section_of_key"]


@dataclass(frozen=True)
class Section:
    """One part of the report.

    Attributes:
        key: The HTML id of the section (``report.html#key``).
        title: Its heading.
        metrics: ``metrics.json`` keys it shows (``"paths_*"`` style patterns allowed).
        figures: Figure file-name patterns it shows (in ``figures/``), in display order.
        intro: The sentences that open it.
    """

    key: str
    title: str
    metrics: tuple[str, ...]
    figures: tuple[str, ...]
    intro: str


SECTIONS: tuple[Section, ...] = (
    Section("model", "Model and data", ("demo", "units"), (),
            "The network analysed, the data it was trained and measured on, and, for a demo, each step's result in one "
            "line. FLOPs count multiply-adds of the convolutions and linear layers for one image, as "
            "torch.utils.flop_counter does."),
    Section("training", "Training", ("train",), ("training_curves.png",),
            "How the dense network was trained: loss and accuracy per epoch on the training split, and accuracy on "
            "the evaluation split. A gap that widens between the two curves is overfitting; curves still rising at "
            "the end mean more epochs would help."),
    Section("decoupling", "Decoupling: gates, filter states and FLOPs per input",
            ("decouple", "paths_*"),
            ("decoupling_curves.png", "filter_states*.png", "activation_counts*.png", "flops_per_input*.png"),
            "Network decoupling puts a gate on each filter of the gated layers; per input, the open gates form its "
            "calculation path. A filter is energetic when every input opens it, silent when none does and dynamic "
            "otherwise: only dynamic filters make paths differ between inputs. FLOPs per input count only the "
            "filters the input's path runs, so the spread of that histogram is the per-input saving."),
    Section("paths", "Calculation paths: embedding and tree", ("path_embedding", "path_tree"),
            ("path_embedding*.png", "path_tree*.png", "class_parting*.png"),
            "Each input's path is a binary vector; these figures ask whether similar inputs take similar paths. The "
            "embedding places paths (beside the dense model's activations of the same filters) in 2-D with t-SNE, "
            "coloured by class; the k-NN accuracy in the table says how well the path alone predicts the class. The "
            "tree splits the inputs layer by layer where their gate vectors form clusters (Hopkins statistic)."),
    Section("concepts", "Concepts: occlusion and dissection", ("occlusion", "dissection"),
            ("occlusion*.png", "dissection*.png"),
            "Occlusion blanks a region of each image and records which filters its path loses; the IoU says how well "
            "the lost filters' receptive fields cover the region, for one filter and for their union. Dissection "
            "scores how well each filter's strongest responses coincide with a concept (here colours), decoupled "
            "beside dense; higher is a more concept-specific filter."),
    Section("adversarial", "Adversarial detection", ("adversarial",), ("adversarial*.png",),
            "Adversarial images (FGSM, PGD) change the prediction with a small perturbation; a small classifier on "
            "the calculation path tells real from adversarial inputs. The grid gives the detectors' AUC (0.5 is "
            "chance, 1 perfect) per classifier and training images per class, for each feature: the path, the dense "
            "model's binarised and real activations, and critical data routing paths. The pair figures show where the "
            "paths of a targeted attack lie between the source and the target class."),
    Section("semantic", "Semantic pruning", ("semantic_pruning",), ("semantic*.png",),
            "Semantic pruning removes, for one class, the filters with the lowest accumulated response on that class, "
            "with no retraining. The curves show, as the pruned share θ grows, the class's recall and AUC and the "
            "accuracy on all classes: a class kept well while the others fall is served by few filters. Direct "
            "pruning is what was removed; residual pruning is what the removal silenced downstream. The overlaps "
            "say how much two classes' kept filter sets coincide."),
    Section("influence", "Influential features", ("influence",), ("influence*.png",),
            "For each class, the few penultimate features that decide it (Algorithm 1 of Badola et al.). The final "
            "layer decomposed per class keeps only those features for each class's logit; r_A is its accuracy over "
            "the full layer's (1.0: nothing lost), and its grid over k1 × k2 shows how few features suffice. The maps show "
            "where on the image the influential features respond."),
    Section("engine", "Engine: latency and FLOPs", ("bench",), ("engine*.png",),
            "Wall-clock time of one image (batch 1, median of repeated runs) for the dense model, the decoupled model "
            "as trained (closed filters multiplied by zero) and the executor, which skips the closed filters. Speedup "
            "is against the faster dense form; a speedup below the FLOPs reduction is the cost of deciding the path "
            "and of small convolutions. Timings depend on this machine and its load at the time."),
)

#: Figure file-name pattern → alt text (what the figure shows, for a reader who cannot see it).
FIGURES: dict[str, str] = {
    "training_curves.png": "Training loss and accuracy per epoch, with the evaluation split's accuracy.",
    "decoupling_curves.png": "Per epoch of decoupling: cross-entropy, the gates' mean opening against the sparsity "
                             "target, and accuracy and FLOPs reduction under the evaluation gates.",
    "filter_states*.png": "Stacked bars per gated layer: shares of energetic, dynamic and silent filters.",
    "activation_counts*.png": "Per gated layer, a histogram of how many inputs open each filter.",
    "flops_per_input*.png": "Histogram of FLOPs per input under its gates, with the dense network's FLOPs marked.",
    "path_embedding*.png": "2-D t-SNE embeddings of calculation paths and of the dense activations, coloured by class.",
    "path_tree*.png": "The Hopkins tree: inputs split into groups layer by layer, each group's class mix drawn as bars.",
    "class_parting*.png": "Per layer, the share of class pairs whose inputs have been split into different groups.",
    "occlusion_examples*.png": "Example images with the occluded region and the receptive fields of the filters it "
                               "switched off outlined.",
    "occlusion_iou*.png": "Per layer, IoU of the occluded region with one switched-off filter's receptive field, "
                          "with the best one, and with their union.",
    "dissection*.png": "Per layer, the mean dissection score of the filters, decoupled beside dense.",
    "adversarial_auc*.png": "Detection AUC against training images per class, one panel per classifier and attack "
                            "pair, one line per feature (path, dense binarised, dense real-valued, critical routing paths).",
    "adversarial_pair_frequencies*.png": "Per gated filter, how often real source, real target and adversarial "
                                         "images open it.",
    "adversarial_pair_embedding*.png": "2-D embedding of the paths of real source, real target and adversarial images.",
    "semantic_curves*.png": "Per class, recall, AUC and overall accuracy against the pruned share θ.",
    "semantic_dp_rp*.png": "Per layer, the share of filters pruned directly and silenced residually.",
    "semantic_overlap*.png": "Heat maps of the Jaccard overlap between classes' kept and pruned filter sets.",
    "influence_counts*.png": "Per class, how often each penultimate feature is among an instance's top features.",
    "influence_jaccard*.png": "Heat map of the Jaccard overlap between classes' influential feature sets.",
    "influence_maps*.png": "Example images with the maps of their class's influential and non-influential features.",
    "influence_kgrid*.png": "Heat map of r_A, the decomposed layer's accuracy over the full layer's, for each features "
                            "counted per instance (k1) and kept per class (k2).",
    "engine_latency*.png": "Bars of batch-1 latency per model form, with its FLOPs reduction beside.",
}


def section_of_key(key: str) -> Section | None:
    """The section that shows ``metrics.json[key]``, or None."""
    return next((s for s in SECTIONS if any(fnmatch(key, pattern) for pattern in s.metrics)), None)


def section_of_figure(name: str) -> Section | None:
    """The section that shows ``figures/name``, or None."""
    return next((s for s in SECTIONS if any(fnmatch(name, pattern) for pattern in s.figures)), None)


def figure_text(name: str) -> str:
    """The alt text of a figure file: the registered sentence, else one made from its name."""
    for pattern, text in FIGURES.items():
        if fnmatch(name, pattern):
            return text
    return f"Figure {name.rsplit('.', 1)[0].replace('_', ' ')}."
