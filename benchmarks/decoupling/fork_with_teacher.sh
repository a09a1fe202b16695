#!/usr/bin/env bash
# Start a decoupling run before its distillation teacher has finished training, and give it the teacher from
# path fine-tuning on, without a gap in its history.
#
#   bash decoupling/fork_with_teacher.sh NAME FORK_EPOCH TEACHER_DONE TEACHER_CKPT -- <decouple_resnet20.py arguments>
#
# The teacher is used only while the gates are frozen (--distill-phase path_finetune), so the gate phase runs
# without it. This script starts the run (arguments as given, plus --resume), keeps its checkpoint after
# FORK_EPOCH (an epoch of the gate phase), waits for TEACHER_DONE (a file the teacher's run writes when it has
# finished, e.g. its results JSON), stops the run, puts the kept checkpoint back as the run's last.pt and resumes
# from there with --distill-weight 1 --teacher TEACHER_CKPT. The epochs after FORK_EPOCH are trained again with the
# teacher loaded; each process is on record in the results JSON. Paths (TEACHER_DONE, TEACHER_CKPT, checkpoints/)
# are relative to benchmarks/, where it runs whatever folder it is started from; run_list.py calls it for the
# entries of runs.yaml that name it.
set -euo pipefail
cd "$(dirname "$0")/.."  # benchmarks/
NAME=$1 FORK_EPOCH=$2 TEACHER_DONE=$3 TEACHER_CKPT=$4
shift 4
[ "${1:-}" = "--" ] && shift
RUN=checkpoints/decouple_resnet20_$NAME/checkpoints
KEPT=checkpoints/fork_$NAME/last_epoch$FORK_EPOCH.pt
if [ ! -f "$KEPT" ]; then
  python decoupling/decouple_resnet20.py --name "$NAME" "$@" --resume &
  RUN_PID=$!
  trap 'kill $RUN_PID 2>/dev/null || true' EXIT
  python decoupling/keep_epoch_checkpoint.py "$RUN/last.pt" "$FORK_EPOCH" "$KEPT"
  until [ -f "$TEACHER_DONE" ]; do sleep 20; done
  kill "$RUN_PID" 2>/dev/null || true
  wait "$RUN_PID" 2>/dev/null || true
  trap - EXIT
  cp "$KEPT" "$RUN/last.pt.partial" && mv "$RUN/last.pt.partial" "$RUN/last.pt"  # atomic, as the run writes it
  echo "$NAME: resumed from epoch $FORK_EPOCH with the teacher $TEACHER_CKPT"
fi
exec python decoupling/decouple_resnet20.py --name "$NAME" "$@" --distill-weight 1 --teacher "$TEACHER_CKPT" --resume
