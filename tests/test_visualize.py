"""segvit_hf.visualize: label-map colours, overlays with a legend, ATM mask grids, saved as PNG."""

import numpy as np
import pytest
import torch
from PIL import Image

from segvit_hf import SegViTForSemanticSegmentation, SegViTImageProcessor
from segvit_hf.labels import ADE20K_PALETTE, default_palette
from segvit_hf.visualize import colorize, draw_mask_grid, draw_overlay, to_rgb_array
from segvit_testing import tiny_config


def test_colorize_uses_the_ade20k_palette_and_paints_ignored_pixels_black():
    label_map = torch.tensor([[0, 1], [149, 255]])
    colours = colorize(label_map, num_labels=150)
    assert colours.shape == (2, 2, 3) and colours.dtype == np.uint8
    assert tuple(colours[0, 0]) == tuple(ADE20K_PALETTE[0])
    assert tuple(colours[1, 0]) == tuple(ADE20K_PALETTE[149])
    assert tuple(colours[1, 1]) == (0, 0, 0)


def test_colorize_beyond_150_labels_is_deterministic():
    label_map = np.arange(171).reshape(9, 19)
    first, second = colorize(label_map), colorize(label_map)
    np.testing.assert_array_equal(first, second)
    assert tuple(first[-1, -1]) == tuple(default_palette(171)[170])
    custom = colorize(np.array([[0, 1]]), palette=[(1, 2, 3), (4, 5, 6)])
    np.testing.assert_array_equal(custom, [[[1, 2, 3], [4, 5, 6]]])
    with pytest.raises(ValueError, match="palette"):
        colorize(np.array([[0, 2]]), palette=[(1, 2, 3)])


def test_to_rgb_array_accepts_the_usual_layouts():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    for image in (Image.fromarray(rgb), rgb.transpose(2, 0, 1), torch.from_numpy(rgb), rgb / 255.0):
        np.testing.assert_array_equal(to_rgb_array(image), rgb)
    gray = to_rgb_array(rgb[..., 0])
    assert gray.shape == (6, 8, 3) and (gray[..., 2] == rgb[..., 0]).all()


def test_to_rgb_array_scales_sixteen_bit_images():
    gradient = np.linspace(0, 65535, 6 * 7).reshape(6, 7).astype(np.uint16)
    expected = np.repeat(np.round(gradient / 257).astype(np.uint8)[..., None], 3, axis=-1)
    np.testing.assert_array_equal(to_rgb_array(Image.fromarray(gradient)), expected)


def test_overlay_blends_colours_and_lists_present_classes_in_a_legend(tmp_path):
    image = np.full((60, 80, 3), 200, dtype=np.uint8)
    label_map = np.zeros((60, 80), dtype=np.int64)
    label_map[:, 40:] = 3
    id2label = {0: "wall", 1: "building", 2: "sky", 3: "floor"}

    overlay = draw_overlay(image, label_map, id2label=id2label, alpha=0.5)
    assert overlay.mode == "RGB" and overlay.height == 60 and overlay.width > 80
    pixels = np.array(overlay)
    expected_left = (200 * 0.5 + np.array(ADE20K_PALETTE[0]) * 0.5 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(pixels[10, 10], expected_left)
    legend = pixels[:, 80:]
    for label in (0, 3):  # a swatch of each present class
        assert (legend == np.array(ADE20K_PALETTE[label], dtype=np.uint8)).all(axis=-1).any()
    assert not (legend == np.array(ADE20K_PALETTE[2], dtype=np.uint8)).all(axis=-1).any()

    plain = draw_overlay(image, label_map, alpha=0.0, legend=False)
    assert plain.size == (80, 60)
    np.testing.assert_array_equal(np.array(plain), image)
    overlay.save(tmp_path / "overlay.png")
    assert Image.open(tmp_path / "overlay.png").size == overlay.size


def test_overlay_errors():
    with pytest.raises(ValueError, match="label map is"):
        draw_overlay(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 11), np.int64))
    with pytest.raises(ValueError, match="alpha"):
        draw_overlay(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.int64), alpha=2)
    with pytest.raises(ValueError, match="integer class ids"):
        draw_overlay(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.float32))


def test_mask_grid_shows_the_top_k_classes(tmp_path):
    torch.manual_seed(0)
    model = SegViTForSemanticSegmentation(tiny_config()).eval()
    processor = SegViTImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 72, 3), dtype=np.uint8))
    with torch.no_grad():
        outputs = model(**processor(image, return_tensors="pt"))

    grid = draw_mask_grid(image, outputs, processor, id2label=model.config.id2label, top_k=3, columns=2, tile_size=64)
    # 2 columns x 2 rows of 64 x 43 tiles, each under a caption.
    assert grid.mode == "RGB"
    assert grid.width == 2 * (64 + 4) + 4
    assert grid.height > 2 * 43
    grid.save(tmp_path / "masks.png")
    assert Image.open(tmp_path / "masks.png").size == grid.size

    all_classes = draw_mask_grid(image, outputs, processor, top_k=50, columns=5, tile_size=32)
    assert all_classes.width == 5 * (32 + 4) + 4  # 5 classes: one row
    with pytest.raises(ValueError, match="top_k"):
        draw_mask_grid(image, outputs, processor, top_k=0)


def test_overlay_of_a_ground_truth_map_draws_ignored_pixels_black():
    """A ground-truth map holds the ignore index 255: it is not a class, needs no 256-colour palette."""
    image = np.full((20, 20, 3), 100, dtype=np.uint8)
    truth = np.zeros((20, 20), dtype=np.int64)
    truth[:, 10:] = 255
    palette = [(255, 0, 0), (0, 255, 0)]
    overlay = np.array(draw_overlay(image, truth, id2label={0: "a", 1: "b"}, palette=palette, alpha=1.0, legend=False))
    np.testing.assert_array_equal(overlay[5, 5], [255, 0, 0])
    np.testing.assert_array_equal(overlay[5, 15], [0, 0, 0])
