#!/usr/bin/env bash
# Train the BN-free VGG dense on CIFAR-10 JPEG, decouple it, evaluate both on the test split.
# Usage: bash benchmarks/bn_free_vgg/run.sh [DATA_ZIP] [OUT_DIR]   (from the repository root)
set -euo pipefail
data=${1:-../shared/data/cifar10-jpeg.zip}
out=${2:-runs/bn_free_vgg}
plugin=benchmarks/bn_free_vgg/plain_vgg.py
fs() { filterscope --plugin "$plugin" "$@"; }
resume() { [ -f "$1/checkpoints/last.pt" ] && echo --resume || true; }  # go on where an interrupted run stopped
fs train --model plain_vgg_cifar --data "$data" --epochs 15 --lr 0.02 --weight-decay 5e-4 --schedule cosine \
    --seed 0 --threads 1 --compile --no-progress --run-dir "$out/dense" $(resume "$out/dense")
fs decouple --config default --config benchmarks/bn_free_vgg/decouple.yaml --model plain_vgg_cifar \
    --weights "$out/dense/checkpoints/last.pt" --data "$data" --threads 1 --run-dir "$out/decoupled" $(resume "$out/decoupled") --quiet
# the control: the dense network trained on for the decoupling run's 10 epochs (same lr, schedule, augmentation), no gates
fs train --model plain_vgg_cifar --data "$data" --weights "$out/dense/checkpoints/last.pt" --epochs 10 --lr 0.01 \
    --weight-decay 5e-4 --schedule cosine --seed 0 --threads 1 --compile --no-progress --run-dir "$out/dense_more" $(resume "$out/dense_more")
fs eval --model plain_vgg_cifar --weights "$out/dense_more/checkpoints/last.pt" --data "$data" --threads 1 --json > "$out/eval_dense_more.json"
fs eval --model plain_vgg_cifar --weights "$out/dense/checkpoints/last.pt" --data "$data" --threads 1 --json > "$out/eval_dense.json"
fs eval --model plain_vgg_cifar --weights "$out/decoupled/checkpoints/last.pt" --data "$data" --threads 1 --json > "$out/eval_decoupled.json"
python benchmarks/bn_free_vgg/collect.py "$out"
python benchmarks/tables.py bn_free_vgg
