"""ONNX export and the ONNX Runtime segmenter: the same logits and label maps as PyTorch, plain and Shrunk."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_compile_export import CONFIGS, plain_config

from segvit_hf import SegViTForSemanticSegmentation, SegViTImageProcessor

REASON = 'the ONNX tests need the onnx extra: pip install -e ".[onnx]"'
onnx = pytest.importorskip("onnx", reason=REASON)
pytest.importorskip("onnxscript", reason=REASON)
pytest.importorskip("onnxruntime", reason=REASON)

from segvit_hf.cli import main  # noqa: E402
from segvit_hf.export import INT8_FILE_NAME, ONNX_FILE_NAME, SegViTOnnxSegmenter, export_onnx  # noqa: E402


def tiny_processor():
    return SegViTImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})


@pytest.fixture(scope="module", params=list(CONFIGS))
def exported(request, tmp_path_factory):
    """A tiny model and the folder `export_onnx` wrote for it."""
    torch.manual_seed(0)
    model = SegViTForSemanticSegmentation(CONFIGS[request.param]()).eval()
    directory = tmp_path_factory.mktemp(f"onnx-{request.param}")
    export_onnx(model, tiny_processor(), directory)
    return model, directory


def test_onnx_logits_match_pytorch_at_any_batch_and_size(exported):
    model, directory = exported
    segmenter = SegViTOnnxSegmenter(directory)
    for batch_size, height, width in [(1, 64, 64), (2, 48, 80), (1, 70, 50)]:
        pixel_values = torch.randn(batch_size, 3, height, width)
        with torch.no_grad():
            expected = model(pixel_values)
        outputs = segmenter(pixel_values)
        torch.testing.assert_close(outputs.class_queries_logits, expected.class_queries_logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(outputs.masks_queries_logits, expected.masks_queries_logits, atol=1e-4, rtol=0)


def test_onnx_label_maps_equal_the_pytorch_ones(exported):
    model, directory = exported
    segmenter = SegViTOnnxSegmenter(directory)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)) for size in [(40, 60, 3), (90, 50, 3)]]

    processor = tiny_processor()
    inputs = processor(images=images, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    expected = processor.post_process_semantic_segmentation(
        outputs, target_sizes=[(40, 60), (90, 50)], pixel_mask=inputs["pixel_mask"]
    )
    label_maps = segmenter.segment(images)
    assert [tuple(label_map.shape) for label_map in label_maps] == [(40, 60), (90, 50)]
    for label_map, expected_map in zip(label_maps, expected):
        assert torch.equal(label_map, expected_map)

    single = processor(images=images[1], return_tensors="pt")
    with torch.no_grad():
        expected = processor.post_process_semantic_segmentation(model(**single), target_sizes=[(90, 50)])[0]
    assert torch.equal(segmenter.segment(images[1]), expected)


def test_export_writes_dynamic_axes_configuration_and_processor(exported):
    model, directory = exported
    graph = onnx.load(directory / ONNX_FILE_NAME, load_external_data=False).graph
    (pixel_values,) = graph.input
    dims = pixel_values.type.tensor_type.shape.dim
    assert [dim.dim_param or dim.dim_value for dim in dims] == ["batch", 3, "height", "width"]
    assert [output.name for output in graph.output] == ["class_queries_logits", "masks_queries_logits"]
    segmenter = SegViTOnnxSegmenter(directory)
    assert segmenter.config.to_dict() == model.config.to_dict()
    assert segmenter.image_processor.to_dict() == tiny_processor().to_dict()


def test_export_command_with_int8_copy(tmp_path):
    model = SegViTForSemanticSegmentation(plain_config()).eval()
    model.save_pretrained(tmp_path / "model")
    tiny_processor().save_pretrained(tmp_path / "model")
    assert main(["export", str(tmp_path / "model"), str(tmp_path / "onnx"), "--opset", "18", "--int8"]) == 0
    assert onnx.load(tmp_path / "onnx" / ONNX_FILE_NAME, load_external_data=False).opset_import[0].version == 18
    pixel_values = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        expected = model(pixel_values).masks_queries_logits
    outputs = SegViTOnnxSegmenter(tmp_path / "onnx")(pixel_values).masks_queries_logits
    torch.testing.assert_close(outputs, expected, atol=1e-4, rtol=0)
    quantized = SegViTOnnxSegmenter(tmp_path / "onnx", file_name=INT8_FILE_NAME)(pixel_values).masks_queries_logits
    assert quantized.shape == expected.shape
    assert not torch.equal(quantized, expected)  # int8 arithmetic, close to the fp32 result
    torch.testing.assert_close(quantized, expected, atol=0.05 * expected.abs().max().item(), rtol=0)


def test_export_command_needs_a_processor_beside_the_model(tmp_path, capsys):
    SegViTForSemanticSegmentation(plain_config()).save_pretrained(tmp_path / "model")
    assert main(["export", str(tmp_path / "model"), str(tmp_path / "onnx")]) == 1
    error = capsys.readouterr().err
    assert "no image processor" in error and len(error.strip().splitlines()) == 1  # one line, no traceback
    assert not (tmp_path / "onnx").exists()


def test_export_refuses_a_half_precision_model(tmp_path):
    model = SegViTForSemanticSegmentation(plain_config()).to(torch.bfloat16)
    with pytest.raises(ValueError, match="fp32"):
        export_onnx(model, tiny_processor(), tmp_path)
