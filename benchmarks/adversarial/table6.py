"""Table 6 and Fig. 10 of Li et al. (2020) on a shipped decoupled checkpoint (ResNet-20 by default) and CIFAR-10 JPEG.

Attacks the decoupled model (captum FGSM and PGD, untargeted, ε = 8/255 in pixels), then trains random forest,
AdaBoost and gradient boosting detectors on n ∈ {1, 5, 10} training images per class and their adversarials,
over 5 seeds, with five features of the same gated filters: the binary calculation path, the real-valued gate
logits, the dense network's binarised and real-valued pooled activations, and critical data routing paths (CDRP,
Wang et al. 2018); also FGSM-trained → PGD-tested; and the dog → truck paths of Fig. 10 (targeted PGD).

    python benchmarks/adversarial/table6.py --threads 1 [--checkpoint checkpoints/<decoupled>.pt --name <name>]

The run directory goes to benchmarks/checkpoints/adversarial_<name>; results/adversarial_<name>.{json,md} and the
figures to results/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py, shared by every study
from common import CHECKPOINTS, results_dir, write_results

import torch

from filterscope.analyses.adversarial import AdversarialConfig
from filterscope.analyses.detection import DetectionConfig
from filterscope.analyses.routing_paths import CriticalPathConfig
from filterscope.core.locations import shared_dir
from filterscope.analyses.attacks import AttackConfig, attack
from filterscope.data import load_dataset
from filterscope.pipelines.adversarial import AdversarialOptions, first_per_class, load_decoupled_checkpoint, run_adversarial

REPOSITORY = Path(__file__).resolve().parents[2]
RESULTS = results_dir("adversarial")


def captum_threshold_check(checkpoint: str, data: str, per_class: int, eps: float) -> dict:
    """FGSM on the test images with captum's default zero-gradient threshold (1e-6) and with 0 (standard FGSM):
    success rates and the share of pixels each leaves unchanged."""
    decoupled = load_decoupled_checkpoint(checkpoint)
    mean, std = decoupled.input_mean, decoupled.input_std
    test = first_per_class(load_dataset(data, "test", mean=mean, std=std), per_class, decoupled.num_classes, "test", [])
    check = {}
    for threshold in (1e-6, 0.0):
        result = attack(decoupled, test.images, test.labels, mean=mean, std=std,
                        config=AttackConfig("fgsm", eps=eps, zero_gradient_threshold=threshold))
        std_tensor = torch.tensor(std)[None, :, None, None]
        moved = ((result.adversarial - test.images) * std_tensor).abs() > 1e-6
        check[f"threshold_{threshold:g}"] = {**result.summary(), "pixels_unchanged": float(1 - moved.float().mean())}
    return check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=str(REPOSITORY / "checkpoints" / "resnet20-cifar10-2x-seed1.pt"))
    parser.add_argument("--data", default=str(shared_dir() / "data" / "cifar10-jpeg.zip"))
    parser.add_argument("--name", default="resnet20")
    parser.add_argument("--pool-per-class", type=int, default=20)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--n", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--eps", type=float, default=8 / 255)
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--cdrp-steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run_dir = CHECKPOINTS / f"adversarial_{args.name}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    config = AdversarialConfig(eps=args.eps, pgd_steps=args.pgd_steps,
                               detection=DetectionConfig(n_per_class=tuple(args.n), runs=args.runs),
                               critical=CriticalPathConfig(steps=args.cdrp_steps))
    options = AdversarialOptions(checkpoint=args.checkpoint, data=args.data, config=config,
                                 pool_per_class=args.pool_per_class, test_per_class=args.test_per_class,
                                 run_dir=str(run_dir))
    started = time.time()
    summary = run_adversarial(options)
    summary["wall_seconds"] = time.time() - started
    summary["threads"] = args.threads
    started = time.time()
    summary["captum_zero_gradient_threshold"] = captum_threshold_check(args.checkpoint, args.data, args.test_per_class, args.eps)
    summary["captum_check_seconds"] = time.time() - started
    table = (run_dir / "adversarial.md").read_text()
    write_results(f"adversarial_{args.name}", summary, table, directory=RESULTS)
    for figure in sorted((run_dir / "figures").glob("*.png")):
        shutil.copy(figure, RESULTS / f"{args.name}_{figure.name}")
    print(table)


if __name__ == "__main__":
    main()
