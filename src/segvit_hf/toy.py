"""The embedded toy data set: small synthetic scene-parsing images generated deterministically in code (nothing is
downloaded), used by the demo, the examples' defaults and the tests, and the small SegViT configuration that suits it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .configuration_segvit import IGNORE_INDEX, SegViTConfig

TOY_CLASSES = ("sky", "grass", "water", "disc", "box", "triangle")
TOY_ID2LABEL = dict(enumerate(TOY_CLASSES))
TOY_PALETTE = ((135, 206, 235), (34, 139, 34), (0, 128, 128), (220, 20, 60), (255, 215, 0), (148, 0, 211))
# The toy set's preprocessing: 64-pixel training crops cut from images resized to a short side of 32 to 128.
TOY_CROP_SIZE = 64
TOY_TRAIN_SCALE = (256, 64)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid bilinearly enlarged to `(height, width)`."""
    coarse = rng.uniform(-1, 1, (max(height // cell, 1) + 2, max(width // cell, 1) + 2)).astype(np.float32)
    enlarged = Image.fromarray(coarse, mode="F").resize((width + 2 * cell, height + 2 * cell), Image.BILINEAR)
    return np.asarray(enlarged)[cell : cell + height, cell : cell + width]


def _hsv_colour(hue: float, saturation: float, value: float) -> np.ndarray:
    """An RGB colour (float32, 0-255) from hue in degrees and saturation / value in [0, 1]."""
    pixel = np.array([[[hue % 360 / 360 * 255, saturation * 255, value * 255]]], dtype=np.uint8)
    return np.asarray(Image.fromarray(pixel, mode="HSV").convert("RGB"), dtype=np.float32)[0, 0]


def _toy_texture(class_id: int, rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The `(H, W, 3)` float texture of one class over the whole canvas (the shape mask selects where it shows)."""
    height, width = ys.shape
    jitter = rng.uniform(-1, 1, 3)
    if class_id == 0:  # sky: light blue, brighter towards the top, soft clouds
        base = _hsv_colour(210 + 10 * jitter[0], 0.45 + 0.1 * jitter[1], 0.9)
        texture = base * (1.05 - 0.3 * ys / height)[..., None]
        texture = texture + 35 * np.clip(_smooth_noise(rng, height, width, 12), 0, 1)[..., None]
    elif class_id == 1:  # grass: green with fine speckle
        base = _hsv_colour(105 + 12 * jitter[0], 0.65 + 0.1 * jitter[1], 0.55 + 0.1 * jitter[2])
        texture = base * (1 + 0.25 * rng.standard_normal((height, width)))[..., None]
    elif class_id == 2:  # water: teal with horizontal ripples
        base = _hsv_colour(180 + 10 * jitter[0], 0.7, 0.6 + 0.1 * jitter[1])
        period = rng.uniform(4, 7)
        ripples = np.sin(2 * np.pi * ys / period + 0.6 * np.sin(xs / 9 + rng.uniform(0, 6)))
        texture = base * (1 + 0.22 * ripples)[..., None]
    elif class_id == 3:  # disc: red-orange with radial shading (added by the caller's mask geometry)
        texture = np.broadcast_to(_hsv_colour(8 + 10 * jitter[0], 0.8, 0.85 + 0.1 * jitter[1]), (height, width, 3))
    elif class_id == 4:  # box: yellow with diagonal stripes
        base = _hsv_colour(50 + 8 * jitter[0], 0.75, 0.9)
        period = rng.uniform(5, 9)
        stripes = (np.floor((xs + ys) / period) % 2)[..., None]
        texture = base * (0.7 + 0.3 * stripes)
    else:  # triangle: purple checkerboard
        base = _hsv_colour(285 + 12 * jitter[0], 0.6, 0.75)
        cell = int(rng.integers(3, 6))
        checker = ((ys // cell + xs // cell) % 2)[..., None]
        texture = base * (0.65 + 0.35 * checker)
    return np.asarray(texture, dtype=np.float32)


def make_toy_sample(index: int, seed: int = 0) -> tuple[Image.Image, Image.Image]:
    """
    One toy scene, a pure function of `(seed, index)`: an RGB image of 48-112 x 56-144 pixels and its label map
    (`TOY_CLASSES` ids). Sky above a wavy horizon, grass below, often a water band, then 1-4 discs, boxes and
    triangles that may occlude each other. Each disc has a 1-pixel unlabelled (255) rim. Colours and textures vary
    per image, and the image carries Gaussian noise.
    """
    rng = np.random.default_rng([seed, index])
    height, width = int(rng.integers(48, 113)), int(rng.integers(56, 145))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = height * rng.uniform(0.3, 0.6) + 4 * np.sin(xs / rng.uniform(6, 14) + rng.uniform(0, 6))
    label = np.where(ys < horizon, 0, 1).astype(np.uint8)
    if rng.random() < 0.6:
        water_top = horizon + height * rng.uniform(0.1, 0.25)
        water_bottom = water_top + height * rng.uniform(0.12, 0.3)
        label[(ys >= water_top) & (ys < water_bottom)] = 2
    image = np.zeros((height, width, 3), dtype=np.float32)
    for class_id in (0, 1, 2):
        image[label == class_id] = _toy_texture(class_id, rng, ys, xs)[label == class_id]

    scale = min(height, width)
    for _ in range(int(rng.integers(1, 5))):
        class_id = int(rng.integers(3, 6))
        cy, cx = rng.uniform(0.15, 0.85) * height, rng.uniform(0.1, 0.9) * width
        size = scale * rng.uniform(0.14, 0.3)
        texture = _toy_texture(class_id, rng, ys, xs)
        if class_id == 3:
            distance = np.hypot(ys - cy, xs - cx)
            inside = distance <= size
            rim = inside & (distance > size - 1)
            texture = texture * (1.1 - 0.35 * np.clip(distance / size, 0, 1))[..., None]
        elif class_id == 4:
            half_h, half_w = size * rng.uniform(0.6, 1.2), size * rng.uniform(0.6, 1.2)
            inside = (np.abs(ys - cy) <= half_h) & (np.abs(xs - cx) <= half_w)
            rim = None
        else:
            # An upward triangle: below the apex and within the two sloped edges.
            apex_y, base_y = cy - size, cy + 0.8 * size
            half_width = (ys - apex_y) / (base_y - apex_y) * size * rng.uniform(0.8, 1.2)
            inside = (ys >= apex_y) & (ys <= base_y) & (np.abs(xs - cx) <= half_width)
            rim = None
        image[inside] = texture[inside]
        label[inside] = class_id
        if rim is not None:
            label[rim] = IGNORE_INDEX

    image = image + rng.normal(0, rng.uniform(4, 12), image.shape)
    image = np.clip(image, 0, 255).round().astype(np.uint8)
    return Image.fromarray(image, mode="RGB"), Image.fromarray(label, mode="L")


def load_toy_dataset(num_train: int = 384, num_validation: int = 64, seed: int = 0):
    """
    The embedded toy data set as a `datasets.DatasetDict` with splits `"train"` and `"validation"` and columns
    `"image"` / `"label"`. Fully determined by `(num_train, num_validation, seed)`; labels are [`TOY_ID2LABEL`] ids
    (no reduction needed) and 255 on disc rims.
    """
    import datasets

    if num_train < 1 or num_validation < 1:
        raise ValueError(f"The toy data set needs at least one image per split, got {num_train} / {num_validation}.")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    splits = {}
    # Validation images come from indices past the training ones, so the splits never share a scene.
    for name, start, count in (("train", 0, num_train), ("validation", num_train, num_validation)):
        samples = [make_toy_sample(index, seed) for index in range(start, start + count)]
        splits[name] = datasets.Dataset.from_dict(
            {"image": [image for image, _ in samples], "label": [label for _, label in samples]}, features=features
        )
    return datasets.DatasetDict(splits)


def toy_model_config(**overrides):
    """
    A small SegViT for the toy data set (about 1.3M parameters): ViT with patch 8 and 64-pixel crops (an 8 x 8 token
    grid), width 96, 6 layers, features of layers [1, 3, 5]; ATM decoder of width 64. It trains on 2 CPU cores in a
    few minutes. `overrides` replace any configuration attribute.
    """
    values = {
        "encoder_config": {
            "hidden_size": 96,
            "num_hidden_layers": 6,
            "num_attention_heads": 4,
            "intermediate_size": 384,
            "image_size": TOY_CROP_SIZE,
            "patch_size": 8,
        },
        "out_indices": [1, 3, 5],
        "decoder_hidden_size": 64,
        "decoder_num_attention_heads": 4,
        "drop_path_rate": 0.0,
        "id2label": dict(TOY_ID2LABEL),
        "label2id": {name: i for i, name in TOY_ID2LABEL.items()},
    }
    values.update(overrides)
    return SegViTConfig(**values)


__all__ = [
    "TOY_CLASSES",
    "TOY_CROP_SIZE",
    "TOY_ID2LABEL",
    "TOY_PALETTE",
    "TOY_TRAIN_SCALE",
    "load_toy_dataset",
    "make_toy_sample",
    "toy_model_config",
]
