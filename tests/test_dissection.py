"""Dissection scores, colour naming and the BRODEN reader: IoU and P_{f,t} against hand-computed values, a
hand-built filter whose field is a known concept, prototype colours, and ``filterscope dissect`` end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from filterscope.analyses.colour_names import COLOUR_PROTOTYPES, COLOUR_TERMS, colour_masks, name_colours, srgb_to_lab
from filterscope.analyses.concept_batches import batches_from_broden, batches_from_samples
from filterscope.analyses.dissection import DissectionResult, batch_counts, dissect
from filterscope.analyses.receptive_fields import field_thresholds, read_units
from filterscope.core.errors import UserInputError
from filterscope.core.hooks import hook_count
from filterscope.data.broden import BrodenFolder
from filterscope.methods.decoupling import load_decoupled
from filterscope.methods.decoupling.unwrap import base_network

from test_cli import assert_one_clear_error, run_cli
from test_occlusion import FIXTURE, REGION, lit_images, region_gated_model

torch.set_num_threads(1)
RESNET20_DECOUPLED = Path(__file__).resolve().parents[1] / "checkpoints" / "resnet20-cifar10-2x-seed1.pt"


def _square(rows, columns, size=4):
    mask = np.zeros((size, size), dtype=bool)
    mask[rows, columns] = True
    return mask


def test_iou_and_probabilities_equal_hand_computed_values():
    # image 1: filter 0's field is the top-left 2×2, filter 1's the bottom row; concept 0 the top two rows.
    # image 2: filter 0 has no field, filter 1's is the left column; concept 0 the pixel (0, 0), concept 1 the
    # top two pixels of the left column.
    fields = torch.tensor(np.stack([
        [_square(slice(0, 2), slice(0, 2)), _square(3, slice(None))],
        [_square(slice(0, 0), slice(0, 0)), _square(slice(None), 0)],
    ]))
    masks = torch.tensor(np.stack([
        [_square(slice(0, 2), slice(None)), _square(slice(0, 0), slice(0, 0))],
        [_square(0, 0), _square(slice(0, 2), 0)],
    ]))
    counts = batch_counts(fields, masks, torch.ones(2, 2, dtype=torch.bool))
    assert counts.contains.tolist() == [2, 1]
    # per image IoU: f0,t0: 4/8 then 0; f1,t0: 0/12 then 1/4; f1,t1: 2/4 (image 2); f0,t1: 0.
    assert counts.hits.tolist() == [[1, 0], [1, 1]]
    np.testing.assert_allclose(counts.probabilities(), [[0.5, 0.0], [0.5, 1.0]])
    # data-set IoU: Σ intersections / Σ unions over both images
    np.testing.assert_allclose(counts.dataset_iou(), [[4 / 9, 0.0], [1 / 16, 2 / 8]])
    assert counts.field_pixels.tolist() == [4, 8]
    result = DissectionResult(["unit"], ["top", "left"], {"unit": counts}, 2, {})
    layer = result.summary()["per_layer"]["unit"]
    assert layer["score"] == pytest.approx(0.75) and layer["filter_score"] == [0.5, 1.0]
    assert layer["filter_concept"] == ["top", "left"] and layer["detectors"] == 2
    assert layer["filter_iou_concept"] == ["top", "left"] and layer["detected_concepts"] == ["left", "top"]


def test_unannotated_images_count_in_neither_p_nor_iou():
    fields = torch.ones(2, 1, 2, 2, dtype=torch.bool)
    masks = torch.zeros(2, 1, 2, 2, dtype=torch.bool)
    masks[0, 0, 0, 0] = True
    annotated = torch.tensor([[True], [False]])
    counts = batch_counts(fields, masks, annotated)
    assert counts.contains.tolist() == [1] and counts.union.tolist() == [[4.0]]  # image 2's field adds nothing


def test_a_filter_whose_field_is_the_concept_scores_one():
    model = region_gated_model()
    units = read_units(model)
    images = lit_images(5)
    thresholds = field_thresholds(model, units, [images], 5, quantile=0.5)
    square = np.zeros((8, 8), dtype=bool)
    x0, y0, x1, y1 = REGION
    square[y0:y1, x0:x1] = True
    elsewhere = np.zeros((8, 8), dtype=bool)
    elsewhere[7, :] = True
    samples = [(image, {"square": square, "bottom": elsewhere}) for image in images]
    result = dissect(model, units, thresholds, batches_from_samples(samples, ["square", "bottom"], batch_size=2),
                     ["square", "bottom"])
    layer = result.summary()["per_layer"]["conv1"]
    assert layer["filter_score"] == [0.0, 1.0, 0.0]  # filters 0 and 2 have no field
    assert layer["score"] == pytest.approx(1 / 3) and layer["filters_with_field"] == 1
    assert layer["score_over_filters_with_field"] == pytest.approx(1.0)
    assert layer["filter_best_iou"][1] == pytest.approx(1.0) and layer["detected_concepts"] == ["square"]
    assert hook_count(model) == 0


def test_prototype_colours_are_named_by_their_own_terms():
    pixels = np.array([[COLOUR_PROTOTYPES[term] for term in COLOUR_TERMS]], dtype=np.uint8)
    assert [COLOUR_TERMS[i] for i in name_colours(pixels)[0]] == list(COLOUR_TERMS)
    np.testing.assert_allclose(srgb_to_lab(np.array([255, 255, 255])), [100, 0, 0], atol=1e-3)
    np.testing.assert_allclose(srgb_to_lab(np.array([255, 0, 0])), [53.24, 80.09, 67.20], atol=0.01)
    everyday = {(100, 150, 200): "blue", (30, 70, 30): "green", (140, 110, 80): "brown", (230, 40, 20): "red",
                (20, 20, 20): "black", (240, 240, 240): "white", (110, 110, 105): "grey", (250, 120, 50): "orange"}
    names = name_colours(np.array([list(everyday)], dtype=np.uint8))[0]
    assert [COLOUR_TERMS[i] for i in names] == list(everyday.values())
    grey_levels = np.array([[[0], [128], [255]]], dtype=np.uint8)  # one channel: named from grey levels
    assert [COLOUR_TERMS[i] for i in name_colours(grey_levels)[0]] == ["black", "grey", "white"]


def test_colour_masks_partition_the_pixels_and_drop_rare_colours():
    image = np.zeros((1, 10, 10, 3), dtype=np.uint8)
    image[0, 0, 0] = (200, 30, 35)  # one red pixel in a black image
    masks = colour_masks(image)
    assert masks.shape == (1, 11, 10, 10) and (masks.sum(1) == 1).all()
    assert masks[0, COLOUR_TERMS.index("red")].sum() == 1
    assert not colour_masks(image, min_fraction=0.05)[0, COLOUR_TERMS.index("red")].any()


def write_broden(folder: Path, size: int = 8) -> Path:
    """A BRODEN-format folder of three images: a colour mask file, an object mask file and a scene label."""
    (folder / "images").mkdir(parents=True)
    (folder / "label.csv").write_text("number,name,category,frequency,coverage,syns\n1,red-c,color(1),1,1,\n"
                                      "2,sky,object(1),1,1,\n3,street-s,scene(1),1,1,\n257,blue-c,color(1),1,1,\n")
    for name in ("a", "b", "c"):
        Image.fromarray(np.full((size, size, 3), 100, dtype=np.uint8)).save(folder / "images" / f"{name}.png")
    colour = np.zeros((4, 4, 3), dtype=np.uint8)
    colour[:2, :, 0] = 1  # label 1 (red-c), the top half
    colour[2:, :2, :2] = 1  # label 1 + 256 = 257 (blue-c), bottom-left quarter
    Image.fromarray(colour).save(folder / "images" / "a_color.png")
    sky = np.zeros((size, size, 3), dtype=np.uint8)
    sky[:, :3, 0] = 2
    Image.fromarray(sky).save(folder / "images" / "b_object.png")
    (folder / "index.csv").write_text(f"image,split,ih,iw,sh,sw,color,object,scene\na.png,train,{size},{size},4,4,a_color.png,,3\n"
                                      f"b.png,train,{size},{size},{size},{size},,b_object.png,\nc.png,val,{size},{size},{size},{size},,,3\n")
    return folder


def test_broden_reader_decodes_masks_and_annotations(tmp_path):
    folder = BrodenFolder(write_broden(tmp_path / "broden"))
    assert len(folder) == 3 and folder.concept_names() == ["red-c", "sky", "street-s", "blue-c"]
    first = folder.load(0, (8, 8))
    assert first.pixels.shape == (8, 8, 3) and first.pixels.dtype == np.uint8
    assert first.masks["red-c"][:4].all() and not first.masks["red-c"][4:].any()  # 4×4 mask resized to 8×8
    assert first.masks["blue-c"][4:, :4].all() and first.masks["blue-c"].sum() == 16
    assert first.masks["street-s"].all() and first.annotated == {"red-c", "blue-c", "street-s"}
    second = folder.load(1, (8, 8))
    assert second.annotated == {"sky"} and second.masks["sky"][:, :3].all() and second.masks["sky"].sum() == 24
    assert len(BrodenFolder(tmp_path / "broden", split="val")) == 1
    batch = next(batches_from_broden(folder, 3, (8, 8), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), batch_size=3))
    assert batch.masks.shape == (3, 4, 8, 8) and batch.annotated[1].tolist() == [False, True, False, False]
    assert torch.allclose(batch.images[0, :, 0, 0], torch.full((3,), (100 / 255 - 0.5) / 0.5))
    with pytest.raises(UserInputError, match="no BRODEN folder"):
        BrodenFolder(tmp_path)


# --------------------------------------------------------------------------------------------------
# filterscope dissect
# --------------------------------------------------------------------------------------------------


def test_dissect_cli_on_digits_puts_decoupled_beside_dense(tmp_path, capsys):
    run = tmp_path / "run"
    started = time.process_time()
    code, out, err = run_cli("dissect", "--weights", FIXTURE, "--data", "digits", "--threads", 1, "--run-dir", run,
                             "--json", "--quiet", capsys=capsys)
    assert code == 0, err
    assert time.process_time() - started < 20
    summary = json.loads(out)
    assert summary["num_images"] == 359 and set(summary["variants"]) == {"decoupled", "dense"}
    assert [row["layer"] for row in summary["per_layer"]] == ["features.3", "features.7"]
    metrics = json.loads((run / "metrics.json").read_text())["dissection"]
    for variant in ("decoupled", "dense"):
        layer = metrics[variant]["per_layer"]["features.3"]
        assert layer["score"] == pytest.approx(np.mean(layer["filter_score"]))
        assert summary["per_layer"][0][f"{variant}_score"] == pytest.approx(layer["score"])
        assert (run / "arrays" / f"dissection_{variant}.npz").is_file()
    # digits are grey: only black, grey and white occur
    assert {c for c, n in metrics["decoupled"]["images_containing"].items() if n} <= {"black", "grey", "white"}
    assert (run / "figures" / "dissection_per_layer.png").is_file() and (run / "report.html").is_file()


def test_dissect_falls_back_to_the_dense_network_of_a_checkpoint_without_gates(tmp_path, capsys):
    plain = tmp_path / "plain.pt"
    torch.save(base_network(load_decoupled(FIXTURE)).state_dict(), plain)
    code, out, err = run_cli("dissect", "--weights", plain, "--model", "digits_cnn", "--data", "digits", "--images", 50,
                             "--threads", 1, "--quiet", capsys=capsys)
    assert code == 0, err
    assert "has no gates: only the dense network is dissected" in out
    assert "decoupled" not in out.splitlines()[2]
    code, _, err = run_cli("dissect", "--weights", plain, "--data", "digits", "--threads", 1, "--quiet", capsys=capsys)
    assert_one_clear_error(code, err, "has no gates; pass --model")


def test_dissect_cli_reads_a_broden_folder(tmp_path, capsys):
    folder = write_broden(tmp_path / "broden", size=32)
    code, out, err = run_cli("dissect", "--weights", RESNET20_DECOUPLED, "--concepts", folder, "--threads", 1,
                             "--json", "--quiet", capsys=capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["num_images"] == 3 and len(summary["per_layer"]) == 9


def test_dissect_cli_bad_input(tmp_path, capsys):
    common = ("--weights", FIXTURE, "--threads", 1, "--quiet")
    cases = [
        (("--data", "digits", "--images", 400), "pass --images 359 or fewer"),
        (("--data", "digits", "--images", 0), "--images must be at least 1"),
        (("--concepts", "colour"), "pass --data"),
        (("--concepts", tmp_path), "no BRODEN folder"),
        (("--data", "digits", "--quantile", 0), "quantile must lie in (0, 1)"),
        (("--data", "digits", "--min-concept-fraction", 2), "--min-concept-fraction must lie in [0, 1)"),
        (("--concepts", write_broden(tmp_path / "broden")), "one channel"),
    ]
    for arguments, fragment in cases:
        code, _, err = run_cli("dissect", *common, *arguments, capsys=capsys)
        assert_one_clear_error(code, err, fragment)
