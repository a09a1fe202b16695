import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from filterscope.core.errors import UserInputError
from filterscope.models import create_model
from filterscope.training.train import TrainConfig, learning_rate_factor, train
from conftest import run_torchrun

SRC = str(Path(__file__).resolve().parents[1] / "src")


def digits_config(run_dir, **overrides) -> TrainConfig:
    values = dict(model="digits_cnn", data="digits", epochs=4, batch_size=64, lr=0.05, seed=3,
                  run_dir=str(run_dir), progress=False, threads=1)
    values.update(overrides)
    return TrainConfig(**values)


def test_digits_training_learns_and_writes_a_run_directory(tmp_path):
    result = train(digits_config(tmp_path / "run", epochs=8))
    assert result.final["accuracy"] > 0.9
    assert len(result.history) == 8
    assert result.history[-1]["test_accuracy"] == pytest.approx(result.final["accuracy"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train"]["complete"] is True
    assert metrics["train"]["final"]["num_samples"] == 359  # 20 % of 1,797, stratified
    assert (tmp_path / "run" / "config.yaml").read_text().count("model: digits_cnn") == 1
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_same_seed_same_weights(tmp_path):
    first = train(digits_config(tmp_path / "a", epochs=2)).model.state_dict()
    second = train(digits_config(tmp_path / "b", epochs=2)).model.state_dict()
    other = train(digits_config(tmp_path / "c", epochs=2, seed=4)).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_learning_rate_schedules():
    cosine = TrainConfig(epochs=2, schedule="cosine")
    assert learning_rate_factor(cosine, 0, 10) == pytest.approx(1.0)
    assert learning_rate_factor(cosine, 10, 10) == pytest.approx(0.5)
    step = TrainConfig(epochs=3, schedule="step", milestones=[1, 2], gamma=0.1)
    assert [round(learning_rate_factor(step, s, 10), 6) for s in (0, 10, 25)] == [1.0, 0.1, 0.01]
    warm = TrainConfig(epochs=2, schedule="constant", warmup_epochs=1)
    assert learning_rate_factor(warm, 4, 10) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"schedule": "linear"}, "unknown schedule"),
        ({"eval_split": "val"}, "pass --val-fraction"),
        ({"device": "cuda"}, "no CUDA GPU"),
        ({"batch_size": 5000}, "fewer than one batch"),
    ],
)
def test_bad_training_options_are_one_clear_error(tmp_path, overrides, message):
    if overrides.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserInputError, match=message):
        train(digits_config(tmp_path / "run", **overrides))


def test_non_finite_loss_names_epoch_step_and_term_and_keeps_last_checkpoint(tmp_path):
    calls = {"n": 0}

    def exploding(model, images, labels, step):
        calls["n"] += 1
        logits = model(images)
        ce = torch.nn.functional.cross_entropy(logits, labels)
        extra = ce * (float("inf") if calls["n"] > 30 else 0.0)
        return ce + extra, logits, {"ce": ce, "extra": extra}

    with pytest.raises(FloatingPointError, match=r"epoch 2, step 9 \(non-finite terms: extra\).*last\.pt"):
        train(digits_config(tmp_path / "run"), objective=exploding)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from filterscope.training.train import TrainConfig, train, cross_entropy_objective
    run_dir, kill_at = sys.argv[1], int(sys.argv[2])
    calls = {"n": 0}
    def objective(model, images, labels, step):
        calls["n"] += 1
        if calls["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of an epoch
        return cross_entropy_objective(model, images, labels, step)
    train(TrainConfig(model="digits_cnn", data="digits", epochs=4, batch_size=64, lr=0.05, seed=3,
                      run_dir=run_dir, progress=False, threads=1, resume=True), objective=objective)
    """
)


def test_kill_minus_nine_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path):
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run_dir = tmp_path / "killed"
    # 22 steps per epoch: the 55th step is in the middle of epoch 3.
    killed = subprocess.run([sys.executable, str(script), str(run_dir), "55"], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name != "last.pt"]
    resumed = subprocess.run([sys.executable, str(script), str(run_dir), "-1"], env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    reference = train(digits_config(tmp_path / "straight"))
    resumed_state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert resumed_state["epoch"] == 4
    expected = reference.model.state_dict()
    assert all(torch.equal(resumed_state["state_dict"][k], expected[k]) for k in expected)


def test_resuming_with_changed_settings_warns_naming_each_change(tmp_path):
    train(digits_config(tmp_path / "run", epochs=1, max_steps_per_epoch=3))
    with pytest.warns(UserWarning, match="settings changed") as caught:
        train(digits_config(tmp_path / "run", epochs=2, max_steps_per_epoch=3, lr=0.01, threads=2, resume=True))
    message = str(next(w.message for w in caught if "settings changed" in str(w.message)))
    assert "epochs: 1 -> 2" in message and "lr: 0.05 -> 0.01" in message
    assert "threads" not in message and "resume" not in message  # how a run executes, not what it computes
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        train(digits_config(tmp_path / "run", epochs=2, max_steps_per_epoch=3, lr=0.01, resume=True))
    assert not [w for w in again if "settings changed" in str(w.message)]


DDP_RUN = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from filterscope.training.train import TrainConfig, train
    out = sys.argv[1]
    result = train(TrainConfig(model="digits_cnn", data="digits", epochs=20, batch_size=64, lr=0.05, seed=3,
                               run_dir=out + "/run", progress=False))
    torch.save({"state": result.model.state_dict(), "accuracy": result.final["accuracy"],
                "world": result.final["world_size"]}, f"{out}/rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
    """
)


def test_torchrun_two_cpu_processes_hold_identical_weights_and_match_single_process_accuracy(tmp_path):
    completed = run_torchrun(DDP_RUN, tmp_path)
    assert completed.returncode == 0, completed.stderr.decode()[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0["world"] == 2
    # Parameters are kept in sync by DDP; BatchNorm running statistics are per process.
    parameter_names = [n for n, _ in create_model("digits_cnn").named_parameters()]
    assert all(torch.equal(rank0["state"][n], rank1["state"][n]) for n in parameter_names)
    assert rank0["accuracy"] == rank1["accuracy"]  # the test shards are summed over processes
    single = train(digits_config(tmp_path / "single", epochs=20))
    assert abs(rank0["accuracy"] - single.final["accuracy"]) <= 0.01, (rank0["accuracy"], single.final["accuracy"])


def test_distillation_objective_adds_the_teacher_term_from_a_frozen_copy_of_the_teacher():
    import copy

    import torch.nn.functional as F

    from filterscope.methods.distillation import DistillationObjective, Teacher

    torch.manual_seed(0)
    student, teacher_net = create_model("digits_cnn", 10), create_model("digits_cnn", 10)
    teacher_net.train()
    before = {name: value.clone() for name, value in teacher_net.state_dict().items()}
    teacher = Teacher(teacher_net, weight=0.5, temperature=2.0)
    objective = DistillationObjective(teacher)
    images, labels = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    loss, logits, terms = objective(student, images, labels)
    with torch.no_grad():
        expected = F.kl_div(F.log_softmax(logits / 2, 1), F.softmax(copy.deepcopy(teacher_net).eval()(images) / 2, 1), reduction="batchmean") * 4
    assert terms["distill"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(terms["ce"].item() + 0.5 * expected.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.network.parameters()) and not teacher.network.training
    # the caller's module is left as it was: trainable, in training mode, the same weights
    assert teacher_net.training and all(p.requires_grad and p.grad is None for p in teacher_net.parameters())
    assert all(torch.equal(before[name], value) for name, value in teacher_net.state_dict().items())
    with pytest.raises(ValueError, match="> 0"):
        Teacher(teacher_net, weight=0.0)


def test_compiled_teacher_gives_the_eager_teachers_distillation_term():
    from filterscope.methods.decoupling import DecoupleConfig, DecouplingObjective, decouple
    from filterscope.methods.distillation import Teacher
    from filterscope.training.train import cxx_compiler_available

    if not cxx_compiler_available():
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    torch.manual_seed(0)
    student, teacher_net = create_model("digits_cnn", 10), create_model("digits_cnn", 10)
    images = torch.randn(8, 1, 8, 8)
    logits = student(images)
    eager, compiled = Teacher(teacher_net, temperature=2.0), Teacher(teacher_net, temperature=2.0, compile=True)
    assert compiled.forward is not compiled.network and eager.forward is eager.network
    assert compiled.loss(images, logits).item() == pytest.approx(eager.loss(images, logits).item(), rel=1e-5)
    # the decoupling objective compiles its teacher when asked (run_decoupling asks when training is compiled)
    decoupled = decouple(student, DecoupleConfig(preset="auto"), num_classes=10, input_shape=(1, 8, 8), model_name="digits_cnn")
    objective = DecouplingObjective(decoupled, steps_per_epoch=10, teacher=teacher_net, distill_weight=1.0, compile_teacher=True)
    assert objective.teacher.forward is not objective.teacher.network
