"""The `segvit predict` command on a tiny checkpoint."""

from importlib.metadata import entry_points

import numpy as np
import pytest
import torch
from PIL import Image
from test_modeling_segvit import SegViTModelTester

from segvit_hf import SegViTForSemanticSegmentation, SegViTImageProcessor
from segvit_hf.cli import main
from segvit_hf.inference import predict


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("segvit-tiny")
    torch.manual_seed(0)
    SegViTForSemanticSegmentation(SegViTModelTester().get_config()).save_pretrained(directory)
    SegViTImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(directory)
    return directory


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = [tmp_path / "street.jpg", tmp_path / "room.png"]
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 256, (50, 30, 4), dtype=np.uint8), mode="RGBA").save(paths[1])
    return paths


def test_console_script_is_declared():
    scripts = {entry.name: entry.value for entry in entry_points(group="console_scripts")}
    assert scripts.get("segvit") == "segvit_hf.cli:main"


def test_predict_writes_label_maps_overlays_and_mask_grids(checkpoint, images, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", *map(str, images), "--model", str(checkpoint), "--out", str(out), "--masks"]) == 0

    model = SegViTForSemanticSegmentation.from_pretrained(checkpoint)
    processor = SegViTImageProcessor.from_pretrained(checkpoint)
    for path, (width, height) in zip(images, [(60, 40), (30, 50)]):
        with Image.open(out / f"{path.stem}_labels.png") as labels:
            assert labels.mode == "L" and labels.size == (width, height)
            label_map = np.array(labels)
        with Image.open(path) as image:
            expected = predict(model, processor, image)
        np.testing.assert_array_equal(label_map, expected.numpy())
        with Image.open(out / f"{path.stem}_overlay.png") as overlay:
            assert overlay.height == height and overlay.width > width
        with Image.open(out / f"{path.stem}_masks.png") as grid:
            assert grid.mode == "RGB" and grid.width > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{path.stem}_{kind}.png" for path in images for kind in ("labels", "overlay", "masks")
    )


def test_predict_with_sliding_window_and_test_time_augmentation(checkpoint, images, tmp_path):
    out = tmp_path / "out"
    argv = ["predict", str(images[0]), "--model", str(checkpoint), "--out", str(out), "--slide", "--tta"]
    assert main(argv + ["--scales", "0.75", "1.25"]) == 0
    with Image.open(out / "street_labels.png") as labels:
        assert labels.size == (60, 40)
        assert np.array(labels).max() < 5
    assert not (out / "street_masks.png").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["{tmp}/missing.jpg"], "no such image file"),
        (["{tmp}/not-an-image.txt"], "cannot read"),
        (["--top-k", "0"], "--top-k"),
        (["--alpha", "1.5"], "--alpha"),
    ],
)
def test_bad_arguments_exit_with_a_message(checkpoint, images, tmp_path, capsys, extra, message):
    (tmp_path / "not-an-image.txt").write_text("hello")
    extra = [argument.format(tmp=tmp_path) for argument in extra]
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(images[0]), *extra, "--model", str(checkpoint), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_duplicate_names_and_missing_processor_are_reported(checkpoint, images, tmp_path, capsys):
    other = tmp_path / "second"
    other.mkdir()
    twin = other / images[0].name
    twin.write_bytes(images[0].read_bytes())
    with pytest.raises(SystemExit):
        main(["predict", str(images[0]), str(twin), "--model", str(checkpoint), "--out", str(tmp_path / "o")])
    assert "would overwrite each other" in capsys.readouterr().err

    model_only = tmp_path / "model-only"
    SegViTForSemanticSegmentation.from_pretrained(checkpoint).save_pretrained(model_only)
    with pytest.raises(SystemExit):
        main(["predict", str(images[0]), "--model", str(model_only), "--out", str(tmp_path / "o")])
    assert "no image processor" in capsys.readouterr().err
