"""Re-evaluate a finished decoupled ResNet-20 run with BatchNorm statistics re-estimated the current way.

Runs finished before BatchNorm re-estimation went through the training transform (augmented
images, see filterscope.methods.decoupling.batchnorm) were evaluated with statistics from un-augmented
images. This loads the run's last checkpoint, re-estimates the statistics as run_decoupling now
does (10,000 training images, seed = the run's seed + its epoch count), measures accuracy, FLOPs
and filter states on the test split with evaluation gates, and stores them under "reevaluated" in
the run's results JSON, next to the numbers the run itself measured.

    python benchmarks/decoupling/decouple_reevaluate.py --name ls_mi_conv1_r045_ramp_bnbias
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py, shared by every study
from common import CHECKPOINTS, COMMIT_AT_START, results_dir
from torch.utils.data import DataLoader

from filterscope.methods.decoupling.paths import collect_paths
from filterscope.methods.decoupling import load_decoupled
from filterscope.methods.decoupling.batchnorm import recalibrate_batchnorm
from filterscope.models import model_spec
from filterscope.training.train import TrainConfig, load_data

RESULTS = results_dir("decoupling")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="run name (results/decouple_resnet20_<name>.json)")
    parser.add_argument("--recalibrate-bn-images", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    target = RESULTS / f"decouple_resnet20_{args.name}.json"
    result = json.loads(target.read_text())
    train_config = TrainConfig(**result["train_config"])
    spec = model_spec(train_config.model)
    train_set, eval_set = load_data(train_config, spec.mean, spec.std, spec.input_shape, train_config.num_classes)
    model = load_decoupled(Path(CHECKPOINTS / f"decouple_resnet20_{args.name}" / "checkpoints" / "last.pt"))
    recalibrate_batchnorm(model, train_set, args.recalibrate_bn_images, seed=train_config.seed + train_config.epochs)
    summary = collect_paths(model, DataLoader(eval_set, batch_size=256), progress=False, keep_paths=False).summary()
    summary.pop("per_layer", None)
    summary["batchnorm_images"] = args.recalibrate_bn_images
    summary["batchnorm_transform"] = "training (augmented)"
    summary["git_commit"] = COMMIT_AT_START
    result["reevaluated"] = summary
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.name}: top-1 {result['accuracy']:.4f} → {summary['accuracy']:.4f}, "
          f"FLOPs reduction {summary['flops_reduction']:.2f}×, dynamic {summary['dynamic_fraction']:.3f}")


if __name__ == "__main__":
    main()
