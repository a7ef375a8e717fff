"""The `segvit predict` command on a tiny checkpoint."""

import time
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch
from PIL import Image

from segvit_hf import SegViTForSemanticSegmentation, SegViTImageProcessor
from segvit_hf.cli import main
from segvit_hf.console import CommandError
from segvit_hf.inference import predict
from segvit_testing import tiny_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("segvit-tiny")
    torch.manual_seed(0)
    SegViTForSemanticSegmentation(tiny_config()).save_pretrained(directory)
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
        (["{tmp}/not-an-image.txt"], "cannot read {tmp}/not-an-image.txt"),
        (["{tmp}/truncated.jpg"], "cannot read {tmp}/truncated.jpg as an image: image file is truncated"),
        (["{tmp}/huge-range.tif"], "cannot read {tmp}/huge-range.tif as an image: A mode 'I' image"),
        (["--top-k", "0"], "--top-k"),
        (["--alpha", "1.5"], "--alpha"),
        (["--scales", "0"], "--scales must be positive ratios, got 0.0"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--device", "tpu9"], "--device tpu9: "),
        (["--out", "{tmp}/a-file"], "--out {tmp}/a-file is a file, not a directory"),
        (["--out", "{tmp}/a-file/sub"], "--out {tmp}/a-file/sub cannot be created: {tmp}/a-file is a file"),
    ],
)
def test_bad_arguments_exit_with_one_line_before_writing_anything(
    checkpoint, images, tmp_path, capsys, extra, message
):
    (tmp_path / "not-an-image.txt").write_text("hello")
    (tmp_path / "a-file").write_text("mine")
    jpeg = images[0].read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])  # the header reads, the pixels do not
    Image.fromarray(np.full((20, 30), 70000, np.int32)).save(tmp_path / "huge-range.tif")
    # The good image comes first: its outputs must not be written either.
    extra = [argument.format(tmp=tmp_path) for argument in extra]
    out = [] if "--out" in extra else ["--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(images[0]), *extra, "--model", str(checkpoint), *out])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("segvit predict: error: ")
    assert message.format(tmp=tmp_path) in error
    assert not (tmp_path / "o").exists()
    assert (tmp_path / "a-file").read_text() == "mine"


def test_an_input_is_never_overwritten(checkpoint, images, capsys):
    # The case: the user's own a_labels.png would be replaced by the label map of a.jpg.
    directory = images[0].parent
    own = directory / "street_labels.png"
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(own)
    before = own.read_bytes()
    for extra in ([], ["--overwrite"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", str(images[0]), str(own), "--model", str(checkpoint), "--out", str(directory), *extra])
        assert exit_info.value.code == 2
        assert "would replace that input image" in capsys.readouterr().err
        assert own.read_bytes() == before
        assert not (directory / "street_overlay.png").exists()


def test_existing_files_are_replaced_only_with_overwrite(checkpoint, images, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "room_overlay.png").write_text("not written by segvit")
    argv = ["predict", *map(str, images), "--model", str(checkpoint), "--out", str(out)]
    with pytest.raises(SystemExit):
        main(argv)
    assert f"{out}/room_overlay.png already exist(s): pass --overwrite" in capsys.readouterr().err
    assert sorted(path.name for path in out.iterdir()) == ["room_overlay.png"]
    assert main(argv + ["--overwrite"]) == 0
    with Image.open(out / "room_overlay.png") as overlay:
        assert overlay.height == 50
    assert main(argv + ["--overwrite", "--threads", "1"]) == 0  # a re-run replaces its own outputs


def test_sixteen_bit_images_are_read_by_their_bit_depth(checkpoint, tmp_path):
    gradient = np.linspace(0, 65535, 40 * 60).reshape(40, 60).astype(np.uint16)
    Image.fromarray(gradient).save(tmp_path / "depth.png")  # opens as mode "I;16"
    eight_bit = Image.fromarray(np.round(gradient / 257).astype(np.uint8))
    assert main(["predict", str(tmp_path / "depth.png"), "--model", str(checkpoint), "--out", str(tmp_path / "o")]) == 0
    model = SegViTForSemanticSegmentation.from_pretrained(checkpoint)
    expected = predict(model, SegViTImageProcessor.from_pretrained(checkpoint), eight_bit)
    with Image.open(tmp_path / "o" / "depth_labels.png") as labels:
        np.testing.assert_array_equal(np.array(labels), expected.numpy())


def test_an_uncached_hub_model_offline_is_one_line_and_prompt(images, tmp_path, capsys):
    started = time.perf_counter()
    argv = ["predict", str(images[0]), "--model", "segvit-tests/never-cached", "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    assert time.perf_counter() - started < 5
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "config.json of 'segvit-tests/never-cached' is not in the local Hugging Face cache and offline mode" in error
    assert not (tmp_path / "o").exists()


def test_debug_shows_the_traceback(checkpoint, images, tmp_path):
    (tmp_path / "empty").mkdir()
    argv = ["predict", str(images[0]), "--model", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    with pytest.raises(CommandError, match="no config.json"):
        main(argv + ["--debug"])


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
    assert main(["predict", str(images[0]), "--model", str(model_only), "--out", str(tmp_path / "o")]) == 1
    assert "no image processor" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
