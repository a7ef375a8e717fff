"""Invariants of the training augmentation: labels stay in range, image and label stay aligned, padding is ignored."""

import numpy as np
import pytest

from segvit_hf.transforms import (
    Compose,
    Normalize,
    Pad,
    PhotometricDistortion,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResize,
    ResizeToFit,
    build_eval_transforms,
    build_train_transforms,
    rescale_size,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def coded_pair(height=40, width=60, num_labels=5):
    """An image whose red channel encodes the class of each pixel (class * 50), so alignment can be read back."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, num_labels, (height // 10 + 1, width // 10 + 1))
    label = np.kron(coarse, np.ones((10, 10), dtype=np.int64))[:height, :width]
    label[:3] = 255
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = np.where(label == 255, 255, label * 50)
    image[..., 1] = np.arange(width, dtype=np.uint8)[None] * 4  # a horizontal ramp shows flips
    return image, label


def assert_aligned(image, label):
    """Pixels inside a region (same class within 3 pixels: beyond bilinear blur) carry that class's colour code."""
    interior = np.ones_like(label, dtype=bool)
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            interior &= np.roll(label, (dy, dx), axis=(0, 1)) == label
    interior[:3] = interior[-3:] = False
    interior[:, :3] = interior[:, -3:] = False
    classes = label[interior & (label != 255)]
    assert classes.size > 0
    np.testing.assert_allclose(image[..., 0][interior & (label != 255)], classes * 50, atol=2)


def test_rescale_size_fits_box():
    assert rescale_size(100, 200, (2048, 512)) == (512, 1024)
    assert rescale_size(2000, 1000, (2048, 512)) == (1024, 512)
    # The long side limits when the aspect ratio is extreme.
    assert rescale_size(100, 1000, (2048, 512)) == (205, 2048)


def test_random_resize_keeps_alignment_and_label_values():
    image, label = coded_pair()
    transform = RandomResize((256, 64), ratio_range=(0.5, 2.0))
    for seed in range(5):
        out_image, out_label = transform(image, label, np.random.default_rng(seed))
        assert out_image.shape[:2] == out_label.shape
        assert set(np.unique(out_label)) <= set(np.unique(label))
        assert_aligned(out_image, out_label)
    # The ratio is drawn in range: the short side is between 0.5 and 2 times 64.
    shorts = [min(transform(image, label, np.random.default_rng(s))[1].shape) for s in range(20)]
    assert 32 <= min(shorts) and max(shorts) <= 128 and len(set(shorts)) > 3


def test_random_crop_size_alignment_and_cat_max_ratio():
    image, label = coded_pair(80, 80)
    crop = RandomCrop((32, 48), cat_max_ratio=0.75)
    for seed in range(10):
        out_image, out_label = crop(image, label, np.random.default_rng(seed))
        assert out_label.shape == (32, 48) and out_image.shape == (32, 48, 3)
        assert_aligned(out_image, out_label)

    # A big single-class region: with cat_max_ratio the crop avoids being dominated by it when it can.
    label = np.zeros((100, 100), dtype=np.int64)
    label[:, 80:] = 1
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    ratios_checked, ratios_free = [], []
    for seed in range(20):
        _, checked = RandomCrop(30, cat_max_ratio=0.75)(image, label, np.random.default_rng(seed))
        _, free = RandomCrop(30, cat_max_ratio=1.0)(image, label, np.random.default_rng(seed))
        ratios_checked.append(np.bincount(checked.ravel(), minlength=2).max() / checked.size)
        ratios_free.append(np.bincount(free.ravel(), minlength=2).max() / free.size)
    assert np.mean(ratios_checked) < np.mean(ratios_free)


def test_random_crop_keeps_small_images_whole():
    image, label = coded_pair(20, 30)
    out_image, out_label = RandomCrop(64)(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(out_label, label)
    np.testing.assert_array_equal(out_image, image)


def test_horizontal_flip_moves_image_and_label_together():
    image, label = coded_pair()
    flipped_image, flipped_label = RandomHorizontalFlip(prob=1.0)(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(flipped_label, label[:, ::-1])
    np.testing.assert_array_equal(flipped_image, image[:, ::-1])
    _, same_label = RandomHorizontalFlip(prob=0.0)(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(same_label, label)


def test_photometric_distortion_changes_only_the_image():
    image, label = coded_pair()
    changed = False
    for seed in range(6):
        out_image, out_label = PhotometricDistortion()(image, label, np.random.default_rng(seed))
        assert out_image.dtype == np.uint8 and out_image.shape == image.shape
        assert out_label is label
        changed |= not np.array_equal(out_image, image)
    assert changed
    with pytest.raises(TypeError, match="uint8"):
        PhotometricDistortion()(image.astype(np.float32), label, np.random.default_rng(0))


def test_pad_uses_zero_and_ignore_index():
    image, label = coded_pair(20, 30)
    normalized, _ = Normalize(MEAN, STD)(image, label, None)
    padded_image, padded_label = Pad((32, 40))(normalized, label)
    assert padded_image.shape == (32, 40, 3) and padded_label.shape == (32, 40)
    np.testing.assert_array_equal(padded_image[:20, :30], normalized)
    assert (padded_image[20:] == 0).all() and (padded_image[:, 30:] == 0).all()
    assert (padded_label[20:] == 255).all() and (padded_label[:, 30:] == 255).all()
    np.testing.assert_array_equal(padded_label[:20, :30], label)


def test_train_pipeline_outputs_crop_with_labels_in_range():
    image, label = coded_pair(50, 90)
    pipeline = build_train_transforms(64, MEAN, STD, scale=(256, 64))
    assert isinstance(pipeline, Compose)
    for seed in range(8):
        out_image, out_label = pipeline(image, label, np.random.default_rng(seed))
        assert out_image.shape == (64, 64, 3) and out_image.dtype == np.float32
        assert out_label.shape == (64, 64)
        values = set(np.unique(out_label).tolist())
        assert values <= {0, 1, 2, 3, 4, 255}


def test_pipeline_is_reproducible_from_the_generator():
    image, label = coded_pair(50, 90)
    pipeline = build_train_transforms(48, MEAN, STD, scale=(256, 64))
    first = pipeline(image, label, np.random.default_rng(7))
    second = pipeline(image, label, np.random.default_rng(7))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_eval_transforms_fit_and_pad_to_crop():
    image, label = coded_pair(40, 100)
    out_image, out_label = build_eval_transforms(64, MEAN, STD)(image, label, None)
    assert out_image.shape == (64, 64, 3)
    # 40x100 fits 64x64 as 26x64: the rows below are padding.
    assert ResizeToFit((64, 64))(image, label)[1].shape == (26, 64)
    assert (out_label[26:] == 255).all()


def test_bad_inputs_raise():
    image, label = coded_pair()
    with pytest.raises(ValueError, match="same height and width"):
        RandomHorizontalFlip()(image, label[:-1], np.random.default_rng(0))
    with pytest.raises(ValueError, match="height, width, 3"):
        RandomHorizontalFlip()(image[..., 0], label, np.random.default_rng(0))
    with pytest.raises(ValueError, match="cat_max_ratio"):
        RandomCrop(32, cat_max_ratio=0)
    with pytest.raises(ValueError, match="ratio_range"):
        RandomResize((256, 64), ratio_range=(2.0, 0.5))
    with pytest.raises(TypeError, match="callable"):
        Compose([RandomHorizontalFlip(), "not a transform"])
