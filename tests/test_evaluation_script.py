"""examples/evaluate_semantic_segmentation.py on a tiny checkpoint, and `make demo`'s script end to end (few steps)."""

import json
import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from segvit_hf import SegViTForSemanticSegmentation, SegViTImageProcessor
from segvit_hf.inference import predict
from segvit_hf.metrics import StreamingMeanIoU
from segvit_hf.toy import load_toy_dataset
from segvit_testing import tiny_toy_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_checkpoint")
    torch.manual_seed(0)
    config = tiny_toy_config()
    SegViTForSemanticSegmentation(config).save_pretrained(directory)
    processor = SegViTImageProcessor(
        image_mean=[0.5] * 3, image_std=[0.5] * 3, size={"shortest_edge": 32, "longest_edge": 128}, patch_size=8
    )
    processor.save_pretrained(directory)
    return directory


def run_script(*arguments):
    return runpy.run_path(str(EXAMPLES / "evaluate_semantic_segmentation.py"))["main"](list(arguments))


def toy_arguments(checkpoint, *extra):
    return ["--model", str(checkpoint), "--dataset", "toy", "--toy_num_train", "2", "--toy_num_validation", "3", *extra]


def test_whole_image_results_equal_the_definition(tiny_checkpoint, tmp_path):
    results = run_script(*toy_arguments(tiny_checkpoint, "--mode", "whole", "--output_dir", str(tmp_path)))

    model = SegViTForSemanticSegmentation.from_pretrained(tiny_checkpoint)
    processor = SegViTImageProcessor.from_pretrained(tiny_checkpoint)
    metric = StreamingMeanIoU(6)
    for example in load_toy_dataset(num_train=2, num_validation=3)["validation"]:
        label = torch.from_numpy(np.asarray(example["label"]).astype(np.int64))
        prediction = predict(model, processor, example["image"], mode="whole")
        assert prediction.shape == label.shape  # scored at the original size
        metric.update(prediction, label)
    expected = metric.compute()
    assert math.isclose(results["mean_iou"], expected["mean_iou"], rel_tol=1e-9)

    report = json.loads((tmp_path / "results.json").read_text())
    assert report["mode"] == "whole" and report["scales"] == [1.0] and report["flip"] is False
    assert set(report["per_category_iou"]) == {"sky", "grass", "water", "disc", "box", "triangle"}
    for name, value in zip(report["per_category_iou"], expected["per_category_iou"]):
        if np.isnan(value):
            assert report["per_category_iou"][name] is None  # JSON has no NaN: absent classes are null
        else:
            assert math.isclose(report["per_category_iou"][name], value)
    markdown = (tmp_path / "results.md").read_text()
    assert "| class | IoU | Acc |" in markdown and "| disc |" in markdown


def test_slide_and_multi_scale_flip(tiny_checkpoint, capsys):
    slide = run_script(*toy_arguments(tiny_checkpoint, "--mode", "slide", "--stride", "16"))
    assert 0.0 <= slide["mean_iou"] <= 1.0
    assert "mIoU" in capsys.readouterr().out
    tta = run_script(*toy_arguments(tiny_checkpoint, "--mode", "slide", "--tta", "--max_samples", "1"))
    assert tta["per_category_iou"].shape == (6,)


def test_missing_processor_asks_for_one(tiny_checkpoint, tmp_path):
    model_only = tmp_path / "model_only"
    SegViTForSemanticSegmentation.from_pretrained(tiny_checkpoint).save_pretrained(model_only)
    with pytest.raises(ValueError, match="--processor or --preset"):
        run_script(*toy_arguments(model_only, "--mode", "whole"))


def test_the_docstring_commands_are_those_of_the_docs():
    script = (EXAMPLES / "evaluate_semantic_segmentation.py").read_text()
    docstring = script.split('"""')[1]
    documented = " ".join((EXAMPLES.parent / "docs" / "evaluation.md").read_text().replace("\\\n", " ").split())
    commands = [" ".join(command.split()) for command in docstring.replace("\\\n", " ").splitlines()]
    commands = [command for command in commands if command.startswith("python examples/evaluate_semantic_segmentation")]
    assert len(commands) == 3
    for command in commands:
        assert command in documented


def test_demo_runs_end_to_end(tmp_path):
    output_dir = tmp_path / "demo"
    demo = runpy.run_path(str(EXAMPLES / "demo.py"))
    arguments = ["--max_steps", "2", "--num_train", "16", "--num_validation", "4", "--num_overlays", "2"]
    summary = demo["main"](["--output_dir", str(output_dir), "--results_file", str(tmp_path / "demo.json"), *arguments])
    assert set(summary["results"]) == {"slide", "whole"}
    model_dir = output_dir / "model"
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
        assert (model_dir / name).is_file(), name
    assert sorted(p.name for p in (output_dir / "overlays").iterdir()) == ["validation_00.png", "validation_01.png"]
    report = json.loads((output_dir / "eval_results.json").read_text())
    assert report["max_steps"] == 2 and "mean_iou" in report["slide"]
    recorded = json.loads((tmp_path / "demo.json").read_text())
    assert recorded == report and recorded["settings"]["num_train"] == 16
    assert demo["readme_table"](recorded).startswith("| sky | grass | water | disc | box | triangle | **mean** |")
    reloaded = SegViTForSemanticSegmentation.from_pretrained(model_dir)
    assert reloaded.config.id2label[5] == "triangle"
