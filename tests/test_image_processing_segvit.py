"""SegViTImageProcessor: options of the paper's protocol, input formats, mixed-size batches, labels, post-processing."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoImageProcessor

from segvit_hf import (
    SegViTForSemanticSegmentation,
    SegViTImageProcessor,
    SegViTImageProcessorPil,
    get_preset,
    image_processing_segvit,
)
from segvit_hf.image_processing_segvit import (
    get_resize_output_size,
    resized_label_map,
    resized_score_bands,
    segmentation_label_maps,
    segmentation_scores,
)
from segvit_hf.modeling_segvit import upsample_mask_logits
from segvit_testing import tiny_config


def random_rgb(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def processor():
    # The tiny model's crop is 64: short side to 64, long side at most 128.
    return SegViTImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 128})


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return SegViTForSemanticSegmentation(tiny_config()).eval()


def test_default_processor_is_the_pil_backend_without_torchvision():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        assert SegViTImageProcessor is SegViTImageProcessorPil
    processor = SegViTImageProcessor()
    assert dict(processor.size) == {"shortest_edge": 512, "longest_edge": 2048}
    assert processor.model_input_names == ["pixel_values", "pixel_mask"]


def test_save_and_load_round_trip(tmp_path, processor):
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "SegViTImageProcessor"
    assert saved["size"] == {"shortest_edge": 64, "longest_edge": 128}

    # AutoImageProcessor picks the torchvision backend when torchvision is installed, as for transformers' models.
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is SegViTImageProcessor
    reloaded = SegViTImageProcessorPil.from_pretrained(tmp_path)
    assert reloaded.to_dict() == processor.to_dict()
    image = random_rgb(40, 70)
    np.testing.assert_array_equal(processor(image)["pixel_values"][0], reloaded(image)["pixel_values"][0])


@pytest.mark.parametrize(
    "preset, size, mean, reduce",
    [
        ("ade20k-vit-b", {"shortest_edge": 512, "longest_edge": 2048}, (0.485, 0.456, 0.406), True),
        ("ade20k-vit-l", {"shortest_edge": 640, "longest_edge": 2048}, (0.5, 0.5, 0.5), True),
        ("cocostuff10k-vit-l-shrunk", {"shortest_edge": 512, "longest_edge": 2048}, (0.5, 0.5, 0.5), True),
        ("pascal-context-vit-l", {"shortest_edge": 520}, (0.5, 0.5, 0.5), True),
    ],
)
def test_preset_image_processor_uses_the_official_test_protocol(preset, size, mean, reduce):
    processor = get_preset(preset).image_processor()
    assert dict(processor.size) == size
    assert tuple(processor.image_mean) == mean
    assert processor.do_reduce_labels is reduce


def test_preset_image_processor_options():
    assert get_preset("pascal-context-vit-l").image_processor(with_background=True).do_reduce_labels is False
    assert dict(get_preset("ade20k-vit-b").image_processor(size={"height": 512, "width": 512}).size) == {
        "height": 512,
        "width": 512,
    }
    with pytest.raises(ValueError, match="Unknown SegViT preset"):
        get_preset("ade20k-vit-h").image_processor()


@pytest.mark.parametrize(
    "image_size, size, expected",
    [
        ((480, 640), {"shortest_edge": 512, "longest_edge": 2048}, (512, 683)),  # short side to the crop
        ((640, 480), {"shortest_edge": 512, "longest_edge": 2048}, (683, 512)),
        ((100, 1000), {"shortest_edge": 512, "longest_edge": 2048}, (205, 2048)),  # long side capped
        ((256, 300), {"shortest_edge": 512, "longest_edge": 2048}, (512, 600)),  # small images scaled up
        ((375, 500), {"shortest_edge": 520}, (520, 693)),  # PASCAL-Context: short side to 520
        ((375, 500), {"shortest_edge": 64}, (64, 85)),
        ((375, 500), {"height": 64, "width": 48}, (64, 48)),
    ],
)
def test_resize_output_size(image_size, size, expected):
    assert get_resize_output_size(*image_size, size) == expected


def test_resize_output_size_rejects_other_size_dicts():
    with pytest.raises(ValueError, match="shortest_edge"):
        get_resize_output_size(10, 10, {"max_height": 5, "max_width": 5})


@pytest.mark.parametrize(
    "size, message",
    [
        ({"shortest_edge": -64}, "positive"),
        ({"shortest_edge": 0}, "positive"),
        ({"shortest_edge": 64, "longest_edge": -1}, "positive"),
        ({"height": 64, "width": 0}, "positive"),
        ({"longest_edge": 64}, "shortest_edge"),
    ],
)
def test_invalid_sizes_are_refused_at_construction_and_at_call(processor, size, message):
    with pytest.raises(ValueError, match=message):
        SegViTImageProcessor(size=size)
    with pytest.raises(ValueError, match=message):
        processor(random_rgb(10, 10), size=size)


def test_resize_rescale_normalize():
    image = np.full((30, 60, 3), 255, dtype=np.uint8)
    jax = SegViTImageProcessor(
        size={"shortest_edge": 64, "longest_edge": 256}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    pixel_values = jax(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 64, 128)
    assert pixel_values.dtype == torch.float32
    torch.testing.assert_close(pixel_values, torch.ones_like(pixel_values))  # [0, 255] -> [-1, 1]

    imagenet = SegViTImageProcessor(do_resize=False)
    pixel_values = imagenet(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 30, 60)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(pixel_values[0, :, 0, 0], expected)


def test_input_formats_give_the_same_pixels(processor):
    rgb = random_rgb(40, 50)
    reference = processor(rgb, return_tensors="pt")["pixel_values"]
    for image in (
        Image.fromarray(rgb),
        rgb.transpose(2, 0, 1),  # (C, H, W)
        torch.from_numpy(rgb.transpose(2, 0, 1).copy()),
        Image.fromarray(np.dstack([rgb, np.full((40, 50), 255, np.uint8)])),  # opaque RGBA
    ):
        torch.testing.assert_close(processor(image, return_tensors="pt")["pixel_values"], reference)


def test_grayscale_and_transparent_images_become_rgb(processor):
    gray = random_rgb(40, 50)[..., 0]
    as_rgb = processor(np.repeat(gray[..., None], 3, axis=-1), return_tensors="pt")["pixel_values"]
    for image in (gray, Image.fromarray(gray), gray[..., None], torch.from_numpy(gray)):
        torch.testing.assert_close(processor(image, return_tensors="pt")["pixel_values"], as_rgb)

    transparent = Image.fromarray(np.zeros((40, 50, 4), np.uint8), mode="RGBA")
    white = processor(np.full((40, 50, 3), 255, np.uint8), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(processor(transparent, return_tensors="pt")["pixel_values"], white)


def _gradient(dtype, high):
    return np.linspace(0, high, 40 * 50).reshape(40, 50).astype(dtype)


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(_gradient(np.uint16, 65535)),  # a 16-bit PNG opens as "I;16"
        Image.fromarray(_gradient(np.int32, 65535)),  # "I", as some Pillow versions read 16-bit PNGs
        Image.fromarray(_gradient(np.float32, 1.0)),  # "F" in [0, 1]
        Image.fromarray(_gradient(np.float32, 255.0)),  # "F" in [0, 255]
        _gradient(np.uint16, 65535),  # a NumPy array read from a 16-bit file
        _gradient(np.int64, 255),  # integers of a wide type, in the 8-bit range
    ],
    ids=["I;16", "I", "F-unit", "F-255", "uint16-array", "int64-array"],
)
def test_high_bit_depth_images_are_scaled_by_their_range(processor, image):
    # The same gradient as 8 bits: every mode must give (nearly) the pixels of the 8-bit image, not two values.
    expected = processor(Image.fromarray(np.round(_gradient(np.float64, 255.0)).astype(np.uint8)), return_tensors="pt")
    pixel_values = processor(image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixel_values, expected["pixel_values"], atol=0.02, rtol=0)


@pytest.mark.parametrize(
    "array, message",
    [
        (_gradient(np.int32, 70000), r"\[0, 65535\]"),
        (_gradient(np.float32, 300.0), r"\[0, 1\] or \[0, 255\]"),
        (np.full((4, 4), np.nan, np.float32), "outside"),
    ],
)
def test_high_bit_depth_images_of_unknown_range_are_refused(processor, array, message):
    with pytest.raises(ValueError, match=message):
        processor(Image.fromarray(array))


def test_integer_arrays_beyond_8_bits_of_unknown_depth_are_refused(processor):
    with pytest.raises(ValueError, match=r"int32 holds values in \[0, 4095\].*bit depth is unknown"):
        processor(_gradient(np.int32, 4095))


@pytest.mark.parametrize("shape", [(1, 500, 3), (4, 5, 3), (1, 5, 4)])
def test_ambiguous_arrays_are_read_channels_last(processor, shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    expected = processor(Image.fromarray(image), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(processor(image, return_tensors="pt")["pixel_values"], expected)
    assert image_processing_segvit.get_image_size(image) == shape[:2]


def test_channels_first_rgb_with_few_columns_stays_channels_first():
    assert image_processing_segvit.get_image_size(np.zeros((3, 5, 4))) == (5, 4)
    assert image_processing_segvit.get_image_size(np.zeros((3, 5, 4)), input_data_format="channels_last") == (3, 5)


def test_mixed_size_batch_is_padded_and_the_valid_region_recorded(processor):
    images = [random_rgb(32, 32, seed=1), random_rgb(60, 30, seed=2), random_rgb(20, 50, seed=3)]
    batch = processor(images, return_tensors="pt")
    # (32, 32) -> (64, 64); (60, 30) -> (128, 64); (20, 50) -> (64, 160) capped -> (51, 128)
    assert batch["pixel_values"].shape == (3, 3, 128, 128)
    assert batch["pixel_mask"].shape == (3, 128, 128) and batch["pixel_mask"].dtype == torch.int64
    for index, (height, width) in enumerate([(64, 64), (128, 64), (51, 128)]):
        alone = processor(images[index], return_tensors="pt")["pixel_values"][0]
        assert alone.shape[-2:] == (height, width)
        torch.testing.assert_close(batch["pixel_values"][index, :, :height, :width], alone)
        assert batch["pixel_mask"][index, :height, :width].all()
        assert batch["pixel_mask"][index].sum() == height * width
        assert (batch["pixel_values"][index][:, batch["pixel_mask"][index] == 0] == 0).all()


def test_equal_sizes_get_an_all_ones_mask(processor):
    batch = processor([random_rgb(32, 32), random_rgb(32, 32, seed=1)], return_tensors="pt")
    assert batch["pixel_values"].shape == (2, 3, 64, 64)
    assert batch["pixel_mask"].all()


def test_pad_size_and_do_pad_false(processor):
    batch = processor(random_rgb(32, 32), pad_size={"height": 96, "width": 80}, return_tensors="pt")
    assert batch["pixel_values"].shape == (1, 3, 96, 80)
    assert batch["pixel_mask"].sum() == 64 * 64
    with pytest.raises(ValueError, match="different sizes"):
        processor([random_rgb(32, 32), random_rgb(40, 32)], do_pad=False, return_tensors="pt")


def test_segmentation_maps_resized_nearest_padded_with_ignore_index(processor):
    images = [random_rgb(32, 32), random_rgb(60, 30)]
    maps = [np.zeros((32, 32), np.uint8), np.zeros((60, 30), np.uint8)]
    maps[0][:, 16:] = 7
    maps[0][:8] = 255
    maps[1][30:] = 3
    batch = processor(images, segmentation_maps=maps, return_tensors="pt")
    labels = batch["labels"]
    assert labels.shape == (2, 128, 64) and labels.dtype == torch.int64
    assert set(labels[0, :64].unique().tolist()) == {0, 7, 255}  # nearest: no blended ids
    assert (labels[0, :16] == 255).all() and (labels[0, 16:64, 32:] == 7).all() and (labels[0, 16:64, :32] == 0).all()
    assert (labels[0, 64:] == 255).all()  # the padding is ignored
    assert (labels[1, :64] == 0).all() and (labels[1, 64:] == 3).all()


def test_reduce_labels(processor):
    label_map = np.array([[0, 1, 2], [150, 255, 3]], dtype=np.uint8)
    image = random_rgb(2, 3)
    labels = processor(image, segmentation_maps=label_map, do_resize=False, do_reduce_labels=True)["labels"][0]
    np.testing.assert_array_equal(labels, [[255, 0, 1], [149, 255, 2]])
    kept = processor(image, segmentation_maps=Image.fromarray(label_map), do_resize=False)["labels"][0]
    np.testing.assert_array_equal(kept, label_map)


@pytest.mark.parametrize(
    "image, message",
    [
        (Image.new("RGB", (0, 10)), "empty image"),
        (np.zeros((10, 0, 3), np.uint8), "empty image"),
        (np.zeros((10, 12, 2), np.uint8), "1 \\(grayscale\\), 3 \\(RGB\\) or 4 \\(RGBA\\) channels"),
        (np.zeros((5, 10, 12), np.uint8), "channels"),
        (np.zeros((2, 3, 10, 12, 3), np.uint8), "channels"),
    ],
)
def test_bad_images_raise_value_errors(processor, image, message):
    with pytest.raises(ValueError, match=message):
        processor(image)


def test_bad_segmentation_maps_raise_value_errors(processor):
    image = random_rgb(20, 30)
    with pytest.raises(ValueError, match=r"has size \(20, 31\).*its image has \(20, 30\)"):
        processor(image, segmentation_maps=np.zeros((20, 31), np.uint8))
    with pytest.raises(ValueError, match="2 segmentation maps for 1 images"):
        processor([image], segmentation_maps=[np.zeros((20, 30), np.uint8)] * 2)
    with pytest.raises(ValueError, match="single-channel"):
        processor([image], segmentation_maps=[np.zeros((20, 30, 3), np.uint8)])
    with pytest.raises(ValueError, match=r"shape \(20, 30, 3\).*colour label map"):
        processor(image, segmentation_maps=np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(ValueError, match="class ids"):
        processor(image, segmentation_maps=np.full((20, 30), 0.5))


def smooth_scores(num_labels, height, width, seed=0):
    """Score maps with regions several pixels wide, like real predictions (so most pixels are inside a region)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, num_labels, height // 5 + 2, width // 5 + 2, generator=generator)
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]


def assert_label_maps_equal_ties_aside(label_map, scores):
    """`label_map` is `scores.argmax(0)` wherever the best class leads the second by more than rounding."""
    best_two = scores.topk(2, dim=0).values
    decided = best_two[0] - best_two[1] > 1e-5
    assert decided.float().mean() > 0.95
    assert torch.equal(label_map[decided], scores.argmax(0)[decided])


@pytest.mark.parametrize(
    "size, grid, cell", [((64, 64), (4, 4), (16, 16)), ((50, 70), (4, 5), (16, 16)), ((75, 100), (3, 4), (32, 32))]
)
def test_segmentation_scores_are_resize_sigmoid_and_class_mix(size, grid, cell, monkeypatch):
    """The scores are computed band by band: exactly the resize -> sigmoid -> class mix of the definition."""
    class_logits, mask_logits = torch.randn(2, 7, 8), 3 * torch.randn(2, 7, *grid)
    masks = upsample_mask_logits(mask_logits, size, cell).sigmoid()
    expected = torch.einsum("bnc,bnhw->bchw", class_logits.softmax(-1)[..., :-1], masks)
    patch = 16
    monkeypatch.setattr(image_processing_segvit, "MAX_BAND_ELEMENTS", 7 * 16 * 16 * grid[1])  # one grid row a band
    torch.testing.assert_close(segmentation_scores(class_logits, mask_logits, size, patch), expected, atol=1e-6, rtol=0)
    label_maps = segmentation_label_maps(class_logits, mask_logits, size, patch)
    assert torch.equal(label_maps, segmentation_scores(class_logits, mask_logits, size, patch).argmax(1))


@pytest.mark.parametrize(
    "queries, grid, size, patch, spread",
    [
        (7, (4, 6), (64, 90), 16, 3.0),  # confident masks: blocks decide early
        (20, (3, 4), (75, 100), 32, 3.0),  # masks on the grid halved by QD: 32-pixel cells
        (9, (5, 5), (80, 80), 16, 0.3),
        (12, (6, 9), (41, 67), 8, 1.0),  # small patches, a size not a multiple of them
        (5, (1, 1), (7, 9), 16, 1.0),  # a single cell
        (150, (8, 8), (128, 128), 16, 0.05),  # near-uniform: the bounds rarely decide, the pixels are scored
    ],
)
def test_label_maps_equal_the_argmax_of_the_scores(queries, grid, size, patch, spread):
    """Label maps decided on blocks of pixels by score bounds are the argmax of the scores at every pixel."""
    generator = torch.Generator().manual_seed(queries)
    class_logits = torch.randn(2, queries, queries + 1, generator=generator)
    mask_logits = spread * torch.randn(2, queries, *grid, generator=generator)
    scores = segmentation_scores(class_logits, mask_logits, size, patch)
    label_maps = segmentation_label_maps(class_logits, mask_logits, size, patch)
    for label_map, image_scores in zip(label_maps, scores):
        assert_label_maps_equal_ties_aside(label_map, image_scores)


def test_confident_predictions_are_not_scored_at_every_pixel(monkeypatch):
    """As a trained model's: each class query owns regions of the grid. The bounds decide almost every block."""
    scored_pixels = []
    mask_logits_at = image_processing_segvit._MaskBounds.mask_logits_at

    def counting(self, y, x):
        scored_pixels.append(y.numel())
        return mask_logits_at(self, y, x)

    monkeypatch.setattr(image_processing_segvit._MaskBounds, "mask_logits_at", counting)
    monkeypatch.setattr(image_processing_segvit, "_dense_label_maps", None)  # must not be needed
    generator = torch.Generator().manual_seed(0)
    owners = torch.randint(0, 10, (1, 1, 8, 8), generator=generator).float()
    owners = F.interpolate(owners, size=(32, 32), mode="nearest")[0, 0].long()  # regions of 4 x 4 cells
    mask_logits = torch.where(F.one_hot(owners, 10).permute(2, 0, 1).bool(), 6.0, -6.0)[None]
    class_logits = 8 * torch.eye(10, 11)[None]
    label_map = segmentation_label_maps(class_logits, mask_logits, (512, 512), 16)[0]
    scores = segmentation_scores(class_logits, mask_logits, (512, 512), 16)[0]
    assert_label_maps_equal_ties_aside(label_map, scores)
    assert sum(scored_pixels) < 0.2 * 512 * 512  # corners of blocks and the pixels of a few undecided ones


@pytest.mark.parametrize(
    "source, target", [((37, 53), (100, 70)), ((64, 90), (30, 200)), ((20, 31), (301, 451)), ((40, 40), (40, 40))]
)
@pytest.mark.parametrize("candidates", [8, 2])
def test_resized_label_map_equals_the_full_computation(source, target, candidates, monkeypatch):
    """The banded label map is the argmax of the whole resized score map, for up- and down-sampling, any aspect."""
    monkeypatch.setattr(image_processing_segvit, "_CANDIDATES_PER_CELL", candidates)
    monkeypatch.setattr(image_processing_segvit, "MAX_BAND_ELEMENTS", 7 * target[1] * 16)  # several bands
    scores = smooth_scores(7, *source)
    full = F.interpolate(scores[None], size=target, mode="bilinear", align_corners=False)[0]
    assert_label_maps_equal_ties_aside(resized_label_map(scores, target), full)
    banded = torch.cat([band for _, _, band in resized_score_bands(scores, target, max_band_elements=7 * target[1] * 5)], 1)
    torch.testing.assert_close(banded, full, atol=1e-5, rtol=0)


def test_post_process_follows_the_official_test_path(processor, tiny_model):
    """Scores at the processed input size, bilinearly resized to the original size, then the argmax."""
    image = random_rgb(45, 70, seed=1)  # processed to 64 x 100: not a multiple of the patch
    inputs = processor(image, return_tensors="pt")
    with torch.no_grad():
        outputs = tiny_model(**inputs)
    scores = segmentation_scores(outputs.class_queries_logits, outputs.masks_queries_logits, (64, 100), 16)
    result = processor.post_process_semantic_segmentation(outputs, [(45, 70)], return_segmentation_scores=True)[0]
    expected = F.interpolate(scores, size=(45, 70), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(result.segmentation_scores, expected)
    label_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[(45, 70)])[0]
    assert label_map.dtype == torch.int64 and label_map.shape == (45, 70)
    assert_label_maps_equal_ties_aside(label_map, expected)
    at_input = processor.post_process_semantic_segmentation(outputs, pixel_mask=inputs["pixel_mask"])[0]
    assert torch.equal(at_input, scores[0].argmax(0))


def test_post_process_a_padded_batch_with_or_without_pixel_mask(processor, tiny_model):
    images = [random_rgb(30, 30, seed=1), random_rgb(50, 25, seed=2)]
    batch = processor(images, return_tensors="pt")  # (64, 64) and (128, 64) in a (128, 64) batch
    with torch.no_grad():
        outputs = tiny_model(**batch)
        alone = [tiny_model(**processor(image, return_tensors="pt")) for image in images]
    cropped = processor.post_process_semantic_segmentation(
        outputs, pixel_mask=batch["pixel_mask"], return_segmentation_scores=True
    )
    assert cropped[0].segmentation.shape == (64, 64) and cropped[1].segmentation.shape == (128, 64)
    original_sizes = [(30, 30), (50, 25)]
    with_mask = processor.post_process_semantic_segmentation(outputs, original_sizes, pixel_mask=batch["pixel_mask"])
    # Without the mask, the original sizes say where each image lies in the padded input.
    without_mask = processor.post_process_semantic_segmentation(outputs, target_sizes=original_sizes)
    for index, (image_alone, size) in enumerate(zip(alone, original_sizes)):
        expected = processor.post_process_semantic_segmentation(image_alone, target_sizes=[size])[0]
        assert with_mask[index].shape == size
        assert (with_mask[index] == expected).float().mean() > 0.99  # batching moves the logits by rounding only
        assert torch.equal(without_mask[index], with_mask[index])


def test_post_process_errors(processor, tiny_model):
    batch = processor(random_rgb(32, 32), return_tensors="pt")
    with torch.no_grad():
        outputs = tiny_model(**batch)
    with pytest.raises(ValueError, match="2 target sizes for a batch of 1"):
        processor.post_process_semantic_segmentation(outputs, target_sizes=[(32, 32), (32, 32)])
    with pytest.raises(ValueError, match="positive"):
        processor.post_process_semantic_segmentation(outputs, target_sizes=[(0, 32)])
    with pytest.raises(ValueError, match="`target_sizes`.*or the `pixel_mask`"):
        processor.post_process_semantic_segmentation(outputs)
    with pytest.raises(ValueError, match=r"`pixel_mask` give an input of \(32, 32\) pixels, which does not fit"):
        processor.post_process_semantic_segmentation(outputs, pixel_mask=torch.ones(1, 32, 32))
    with pytest.raises(ValueError, match="`target_sizes`.*does not fit the model.s outputs"):
        processor.post_process_semantic_segmentation(outputs, target_sizes=[(64, 200)])
    with pytest.raises(TypeError, match="class_queries_logits"):
        processor.post_process_semantic_segmentation(outputs.masks_queries_logits)


def test_torchvision_backend_matches_pil():
    pytest.importorskip("torchvision")
    from segvit_hf.image_processing_segvit import SegViTImageProcessor as TorchvisionProcessor

    assert TorchvisionProcessor is not SegViTImageProcessorPil
    options = {"size": {"shortest_edge": 64, "longest_edge": 128}}
    images = [random_rgb(32, 32), random_rgb(60, 30, seed=1)]
    maps = [np.full((32, 32), 3, np.uint8), np.full((60, 30), 0, np.uint8)]
    pil = SegViTImageProcessorPil(**options)(images, segmentation_maps=maps, return_tensors="pt")
    tv = TorchvisionProcessor(**options)(images, segmentation_maps=maps, return_tensors="pt")
    assert tv["pixel_values"].shape == pil["pixel_values"].shape
    torch.testing.assert_close(tv["pixel_values"], pil["pixel_values"], atol=0.1, rtol=0)
    assert torch.equal(tv["pixel_mask"], pil["pixel_mask"]) and torch.equal(tv["labels"], pil["labels"])
