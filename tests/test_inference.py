"""segvit_hf.inference: whole / sliding-window inference and multi-scale + flip test-time augmentation."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from segvit_hf import SegViTConfig, SegViTForSemanticSegmentation, SegViTImageProcessor, get_preset, inference
from segvit_hf.image_processing_segvit import segmentation_scores
from segvit_hf.inference import TTA_SCALES, predict, slide_inference, sliding_window, whole_inference, window_boxes
from segvit_testing import tiny_config


class PositionModel(torch.nn.Module):
    """
    Stands in for a SegViT model whose scores are known (see the `known_scores` fixture): class 0 is the number of the
    forward pass (one window per pass), class 1 the first input channel, class 2 its negative.
    """

    def __init__(self, image_size=64):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.config = SimpleNamespace(encoder_config=SimpleNamespace(image_size=image_size))
        self.calls = 0

    def forward(self, pixel_values):
        batch, _, height, width = pixel_values.shape
        call_number = torch.full((batch, 1, height, width), float(self.calls))
        self.calls += 1
        channel = pixel_values[:, :1]
        return torch.cat([call_number, channel, -channel], dim=1)


@pytest.fixture
def known_scores(monkeypatch):
    """Whole-image scores of a `PositionModel` are its output, as the ATM scores are a SegViT's."""
    monkeypatch.setattr(inference, "whole_inference", lambda model, pixel_values: model(pixel_values))


def random_image(height, width, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return SegViTForSemanticSegmentation(tiny_config()).eval()


@pytest.fixture
def processor():
    return SegViTImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})


def test_window_boxes_cover_the_image_with_crop_sized_windows():
    boxes = window_boxes(100, 150, crop=(64, 64), stride=(40, 40))
    assert len(boxes) == 2 * 4
    coverage = torch.zeros(100, 150)
    for top, bottom, left, right in boxes:
        assert (bottom - top, right - left) == (64, 64)
        assert 0 <= top and bottom <= 100 and 0 <= left and right <= 150
        coverage[top:bottom, left:right] += 1
    assert coverage.min() >= 1
    # The last row and column end at the image's bottom/right edge.
    assert boxes[-1] == (36, 100, 86, 150)
    assert window_boxes(30, 50, crop=(64, 64), stride=(42, 42)) == [(0, 30, 0, 50)]


def test_slide_inference_averages_overlapping_windows(known_scores):
    model = PositionModel()
    pixel_values = torch.randn(2, 3, 100, 150)
    scores = slide_inference(model, pixel_values, crop_size=64, stride=40)
    boxes = window_boxes(100, 150, (64, 64), (40, 40))
    total, count = torch.zeros(100, 150), torch.zeros(100, 150)
    for number, (top, bottom, left, right) in enumerate(boxes):
        total[top:bottom, left:right] += number
        count[top:bottom, left:right] += 1
    assert model.calls == len(boxes)
    torch.testing.assert_close(scores[:, 0], (total / count).expand(2, -1, -1))
    # Every window puts each pixel's own score back in its place.
    torch.testing.assert_close(scores[:, 1], pixel_values[:, 0])


def test_window_batch_size_does_not_change_the_scores(tiny_model):
    pixel_values = torch.randn(1, 3, 70, 100)
    with torch.no_grad():
        one_by_one = slide_inference(tiny_model, pixel_values, 64, 42)
        batched = slide_inference(tiny_model, pixel_values, 64, 42, window_batch_size=4)
    torch.testing.assert_close(batched, one_by_one)


def test_slide_equals_whole_on_an_image_of_one_crop(tiny_model, processor):
    image = random_image(64, 64)
    whole = predict(tiny_model, processor, image, mode="whole", return_scores=True)
    slide = predict(tiny_model, processor, image, mode="slide", return_scores=True)
    assert torch.equal(slide.segmentation_scores, whole.segmentation_scores)
    assert torch.equal(slide.segmentation, whole.segmentation)


def test_slide_equals_whole_on_an_image_smaller_than_the_crop(tiny_model):
    pixel_values = torch.randn(1, 3, 40, 52)
    with torch.no_grad():
        torch.testing.assert_close(
            slide_inference(tiny_model, pixel_values, 64, 42), whole_inference(tiny_model, pixel_values), rtol=0, atol=0
        )


def test_predict_returns_label_maps_at_the_original_size(tiny_model, processor):
    images = [random_image(45, 70), random_image(90, 30, seed=1)]
    label_maps = predict(tiny_model, processor, images, mode="slide")
    assert [tuple(label_map.shape) for label_map in label_maps] == [(45, 70), (90, 30)]
    assert all(label_map.dtype == torch.int64 and label_map.device.type == "cpu" for label_map in label_maps)
    single = predict(tiny_model, processor, images[0], mode="slide")
    assert torch.equal(single, label_maps[0])


def test_whole_inference_resizes_the_model_scores_to_the_original_size(tiny_model, processor):
    image = random_image(45, 70)
    result = predict(tiny_model, processor, image, return_scores=True)
    inputs = processor(image, return_tensors="pt")
    with torch.no_grad():
        outputs = tiny_model(**inputs)
    scores = segmentation_scores(outputs.class_queries_logits, outputs.masks_queries_logits, (64, 100), 16)
    expected = torch.nn.functional.interpolate(scores, size=(45, 70), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(result.segmentation_scores, expected)
    # Without the scores, the label map is computed band by band, and is the same.
    label_map = predict(tiny_model, processor, image)
    best_two = expected.topk(2, dim=0).values
    decided = best_two[0] - best_two[1] > 1e-5
    assert torch.equal(label_map[decided], expected.argmax(0)[decided])
    # The processor's post-processing follows the same official path.
    assert torch.equal(processor.post_process_semantic_segmentation(outputs, [(45, 70)])[0], label_map)


def test_multi_scale_flip_averages_softmax_scores(tiny_model, processor):
    result = predict(tiny_model, processor, random_image(45, 70), scales=TTA_SCALES, flip=True, return_scores=True)
    assert result.segmentation_scores.shape == (5, 45, 70)
    torch.testing.assert_close(result.segmentation_scores.sum(dim=0), torch.ones(45, 70))
    assert torch.equal(result.segmentation, result.segmentation_scores.argmax(dim=0))
    slide = predict(tiny_model, processor, random_image(45, 70), mode="slide", scales=(0.5, 1.5), flip=True)
    assert slide.shape == (45, 70)
    # Label maps alone (no scores kept) are the same.
    assert torch.equal(predict(tiny_model, processor, random_image(45, 70), scales=TTA_SCALES, flip=True), result.segmentation)


def test_flipped_scores_are_flipped_back(processor, known_scores):
    # The stand-in's classes 1 and 2 follow the pixels, so undoing the flip must give the unflipped scores.
    model = PositionModel()
    image = random_image(40, 60)
    plain = predict(model, processor, image, return_scores=True).segmentation_scores
    flipped = predict(model, processor, image, flip=True, return_scores=True).segmentation_scores
    expected = torch.stack([plain[1], plain[2]]).softmax(dim=0)
    renormalised = flipped[1:] / flipped[1:].sum(dim=0)
    torch.testing.assert_close(renormalised, expected)


def test_predict_runs_in_eval_mode_and_restores_training(tiny_model, processor):
    image = random_image(40, 40)
    expected = predict(tiny_model, processor, image, return_scores=True).segmentation_scores
    tiny_model.train()
    try:
        scores = predict(tiny_model, processor, image, return_scores=True).segmentation_scores
        assert tiny_model.training
    finally:
        tiny_model.eval()
    assert torch.equal(scores, expected)


@pytest.mark.parametrize("crop, stride", [(512, 341), (640, 608), (480, 320), (64, 42)])
def test_sliding_window_defaults(crop, stride):
    config = SegViTConfig(encoder_config={"image_size": crop, "num_hidden_layers": 1}, out_indices=[0])
    assert sliding_window(config) == ((crop, crop), (stride, stride))


def test_sliding_window_of_a_preset_and_overrides():
    config = get_preset("ade20k-vit-l").config()
    assert sliding_window(config) == ((640, 640), (608, 608))
    assert sliding_window(config, crop_size=(320, 480), stride=100) == ((320, 480), (100, 100))
    with pytest.raises(ValueError, match="must not exceed the crop"):
        sliding_window(config, stride=700)
    with pytest.raises(ValueError, match="positive"):
        sliding_window(config, crop_size=0)


def test_predict_errors(tiny_model, processor):
    image = random_image(40, 40)
    with pytest.raises(ValueError, match="`mode`"):
        predict(tiny_model, processor, image, mode="tiles")
    with pytest.raises(ValueError, match="`scales`"):
        predict(tiny_model, processor, image, scales=())
    with pytest.raises(ValueError, match="`scales`"):
        predict(tiny_model, processor, image, scales=(1.0, -0.5))
    with pytest.raises(ValueError, match="do_resize"):
        predict(tiny_model, SegViTImageProcessor(do_resize=False), image, scales=(0.5, 1.0))
    with pytest.raises(TypeError, match="PIL image"):
        predict(tiny_model, processor, "image.png")
