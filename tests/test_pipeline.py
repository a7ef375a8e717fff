"""transformers' image-segmentation pipeline and Auto classes on a saved SegViT checkpoint directory."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from segvit_hf import SegViTForSemanticSegmentation, SegViTImageProcessor
from segvit_testing import tiny_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("segvit-tiny")
    torch.manual_seed(0)
    model = SegViTForSemanticSegmentation(tiny_config())
    model.save_pretrained(directory)
    SegViTImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(directory)
    return directory


def photo(height=50, width=70):
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_auto_classes_load_the_checkpoint(checkpoint):
    assert type(AutoImageProcessor.from_pretrained(checkpoint)) is SegViTImageProcessor
    assert type(AutoModelForSemanticSegmentation.from_pretrained(checkpoint)) is SegViTForSemanticSegmentation


def test_pipeline_returns_one_mask_per_present_class_without_logging_errors(checkpoint):
    logger = logging.get_logger("transformers")
    with CaptureLogger(logger) as captured:
        segmenter = pipeline("image-segmentation", model=str(checkpoint))
        segments = segmenter(photo())
    assert "not supported" not in captured.out
    assert isinstance(segmenter.model, SegViTForSemanticSegmentation)

    labels = [segment["label"] for segment in segments]
    assert len(labels) == len(set(labels)) >= 1
    assert set(labels) <= set(segmenter.model.config.id2label.values())
    coverage = np.zeros((50, 70), dtype=np.int64)
    for segment in segments:
        assert segment["mask"].mode == "L" and segment["mask"].size == (70, 50)
        coverage += np.array(segment["mask"]) == 255
    np.testing.assert_array_equal(coverage, 1)  # the masks partition the image


def test_pipeline_agrees_with_the_three_line_inference(checkpoint):
    image = photo()
    segments = pipeline("image-segmentation", model=str(checkpoint), subtask="semantic")(image)

    processor = AutoImageProcessor.from_pretrained(checkpoint)
    model = AutoModelForSemanticSegmentation.from_pretrained(checkpoint)
    with torch.no_grad():
        outputs = model(**processor(images=image, return_tensors="pt"))
    label_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[(image.height, image.width)])[0]

    assert sorted(segment["label"] for segment in segments) == sorted(
        model.config.id2label[int(label)] for label in label_map.unique()
    )
    label2id = {name: label for label, name in model.config.id2label.items()}
    for segment in segments:
        label = label2id[segment["label"]]
        np.testing.assert_array_equal(np.array(segment["mask"]) == 255, (label_map == label).numpy())


def test_batched_pipeline_on_images_of_different_sizes(checkpoint):
    """Batches are padded as the image processor pads them; each image's masks cover that image only."""
    segmenter = pipeline("image-segmentation", model=str(checkpoint), batch_size=3)
    images = [photo(50, 70), photo(90, 40), photo(64, 64), photo(33, 101)]
    batched = segmenter(images)
    processor = SegViTImageProcessor.from_pretrained(checkpoint)
    model = SegViTForSemanticSegmentation.from_pretrained(checkpoint).eval()
    for image, segments in zip(images, batched):
        assert all(segment["mask"].size == image.size for segment in segments)
        label_ids = {name: int(index) for index, name in model.config.id2label.items()}
        label_map = np.full((image.height, image.width), -1)
        for segment in segments:
            label_map[np.array(segment["mask"]) > 0] = label_ids[segment["label"]]
        with torch.no_grad():
            outputs = model(**processor(images=image, return_tensors="pt"))
        expected = processor.post_process_semantic_segmentation(outputs, target_sizes=[(image.height, image.width)])[0]
        # Padding moves the logits by rounding only.
        assert (label_map == expected.numpy()).mean() > 0.99


def test_the_pipeline_is_transformers_own_for_other_models():
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    config = SegformerConfig(num_encoder_blocks=1, depths=[1], sr_ratios=[1], hidden_sizes=[8], num_attention_heads=[1],
                             decoder_hidden_size=8, num_labels=3)
    segmenter = pipeline(
        "image-segmentation",
        model=SegformerForSemanticSegmentation(config).eval(),
        image_processor=SegformerImageProcessor(size={"height": 32, "width": 32}),
        batch_size=2,
    )
    assert [len(result) >= 1 for result in segmenter([photo(50, 70), photo(90, 40)])] == [True, True]
