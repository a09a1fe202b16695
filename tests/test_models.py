import pytest
import torch

from filterscope.core.errors import UserInputError
from filterscope.models import MODELS, create_model, load_weights, save_atomically

from conftest import RESNET20, RESNET56, require_shared


@pytest.mark.parametrize(
    "name, parameters",
    [("resnet20", 269_722), ("resnet32", 464_154), ("resnet44", 658_586), ("resnet56", 853_018), ("resnet110", 1_727_962)],
)
def test_cifar_resnet_parameter_counts_match_he_et_al(name, parameters):
    model = create_model(name, 10)
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_every_registered_model_builds_and_runs_on_its_input_shape():
    for name, spec in MODELS.items():
        if name == "resnet110":
            continue
        model = create_model(name, 7)
        assert not model.training
        out = model(torch.zeros(2, *spec.input_shape))
        assert out.shape == (2, 7), name


def test_vgg16_slim_has_13_conv_layers_and_one_linear():
    model = create_model("vgg16_slim")
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 13
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 1


def test_googlenet_cifar_has_nine_inception_blocks():
    from filterscope.models.cifar_googlenet import Inception

    model = create_model("googlenet_cifar")
    assert sum(isinstance(m, Inception) for m in model.modules()) == 9
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 1 + 9 * 7


def test_unknown_model_names_the_choices():
    with pytest.raises(UserInputError, match="choose one of: .*resnet20"):
        create_model("resnet21")


def test_shared_checkpoints_load_directly():
    require_shared(RESNET20, RESNET56)
    for name, path in (("resnet20", RESNET20), ("resnet56", RESNET56)):
        model = create_model(name, 10, str(path))
        raw = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        assert torch.equal(model.layer1[0].conv1.weight, raw["module.layer1.0.conv1.weight"])
        assert torch.equal(model.linear.bias, raw["module.linear.bias"])


def test_checkpoint_of_another_architecture_is_one_clear_error():
    require_shared(RESNET20)
    with pytest.raises(UserInputError, match=r"does not fit this model \(missing keys layer1\.3"):
        create_model("resnet56", 10, str(RESNET20))


def test_shape_mismatch_is_named(tmp_path):
    path = tmp_path / "ten.pt"
    save_atomically({"state_dict": create_model("digits_cnn", 10).state_dict()}, path)
    with pytest.raises(UserInputError, match=r"shape mismatches classifier\.weight \(10, 32\) vs model \(5, 32\)"):
        create_model("digits_cnn", 5, str(path))


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_weights(create_model("digits_cnn"), tmp_path / "nope.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserInputError, match="corrupt or not a PyTorch checkpoint"):
        load_weights(create_model("digits_cnn"), corrupt)


def test_a_run_directory_given_as_a_checkpoint_names_its_checkpoint_file(tmp_path):
    with pytest.raises(UserInputError, match="is a directory, not a file; pass a checkpoint file"):
        load_weights(create_model("digits_cnn"), tmp_path)
    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": create_model("digits_cnn").state_dict()}, tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(UserInputError, match=r"is a directory, not a file; pass '.*checkpoints/last.pt', the run's"):
        load_weights(create_model("digits_cnn"), tmp_path)


def test_save_atomically_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "x.pt"
    save_atomically({"a": torch.ones(3)}, target)
    assert [p.name for p in target.parent.iterdir()] == ["x.pt"]
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(3))
