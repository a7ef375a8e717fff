"""The paper's training augmentation (mmseg 0.24 pipeline semantics) as composable (image, label) transforms.

Every transform is a callable `transform(image, label, rng) -> (image, label)` where

* `image` is a `numpy.ndarray` of shape `(height, width, 3)`: `uint8` RGB before [`Normalize`], `float32` after;
* `label` is a `numpy.ndarray` of shape `(height, width)` holding class ids and the ignore index (255);
* `rng` is a `numpy.random.Generator`, so that a sample's augmentation is reproducible from a seed (see
  `segvit_hf.data.SegmentationDataset`, which derives one generator per sample and epoch).

Geometric transforms move the image and the label together (labels with nearest-neighbour resampling, so no new
class ids appear); photometric ones only touch the image. Only numpy and PIL are used.

The training pipeline of the paper, for a crop of `c` pixels ([`build_train_transforms`]):

    RandomResize(scale=(2048, c), ratio_range=(0.5, 2.0))  ->  RandomCrop((c, c), cat_max_ratio=0.75)
    ->  RandomHorizontalFlip(0.5)  ->  PhotometricDistortion()  ->  Normalize(mean, std)  ->  Pad((c, c), 0, 255)

As in the official pipeline the image is padded *after* normalisation, so padded pixels are 0 in the normalised
space, and padded label pixels are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from .configuration_segvit import IGNORE_INDEX, positive_pair
from .image_processing_segvit import keep_ratio_size, resize_label_map


def check_pair(image: np.ndarray, label: np.ndarray) -> None:
    """Checks that `image` is a `(H, W, 3)` array and `label` a `(H, W)` array of the same height and width."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"`image` must be a numpy array of shape (height, width, 3), got {shape}.")
    if not isinstance(label, np.ndarray) or label.ndim != 2:
        shape = getattr(label, "shape", type(label).__name__)
        raise ValueError(f"`label` must be a numpy array of shape (height, width), got {shape}.")
    if image.shape[:2] != label.shape:
        raise ValueError(f"`image` {image.shape[:2]} and `label` {label.shape} must have the same height and width.")


def resize_pair(image: np.ndarray, label: np.ndarray | None, size: tuple[int, int]):
    """Resizes an `(H, W, 3)` uint8 image bilinearly and an `(H, W)` label map with nearest to `size` (h, w)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image, label
    resized_image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    resized_label = None if label is None else resize_label_map(label, height, width)
    return resized_image, resized_label


def rescale_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """
    mmcv's keep-ratio rescale: the largest size with the input's aspect ratio whose long side is at most
    `max(scale)` and short side at most `min(scale)`. Returns `(new_height, new_width)`.
    """
    return keep_ratio_size(height, width, shortest_edge=min(scale), longest_edge=max(scale))


class Compose:
    """Applies transforms one after the other, passing the same random generator to each."""

    def __init__(self, transforms: Sequence):
        for transform in transforms:
            if not callable(transform):
                raise TypeError(f"Every transform must be callable, got {type(transform).__name__}.")
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        for transform in self.transforms:
            image, label = transform(image, label, rng)
        return image, label

    def __repr__(self) -> str:
        inner = ",\n    ".join(repr(t) for t in self.transforms)
        return f"{type(self).__name__}([\n    {inner}\n])"


class RandomResize:
    """
    Keep-ratio resize to `scale * ratio` with `ratio` drawn uniformly from `ratio_range` (mmseg `Resize` with
    `img_scale=(2048, crop)`, `ratio_range=(0.5, 2.0)`): the image fits in a `(long, short)` box of that size.

    Args:
        scale (`tuple[int, int]`): the `(long side, short side)` box at ratio 1, e.g. `(2048, 512)`.
        ratio_range (`tuple[float, float]`): bounds of the uniform random ratio. `(1.0, 1.0)` resizes
            deterministically.
    """

    def __init__(self, scale: tuple[int, int], ratio_range: tuple[float, float] = (0.5, 2.0)):
        self.scale = positive_pair(scale, "scale")
        low, high = ratio_range
        if not 0 < low <= high:
            raise ValueError(f"`ratio_range` must satisfy 0 < low <= high, got {ratio_range}.")
        self.ratio_range = (float(low), float(high))

    def __call__(self, image, label, rng):
        check_pair(image, label)
        ratio = rng.uniform(*self.ratio_range) if self.ratio_range[0] < self.ratio_range[1] else self.ratio_range[0]
        target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        return resize_pair(image, label, rescale_size(*image.shape[:2], target))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale}, ratio_range={self.ratio_range})"


class RandomCrop:
    """
    Random crop of at most `crop_size` (smaller images are kept whole, to be padded later). With `cat_max_ratio < 1`
    the crop is redrawn, up to 10 times, while a single class covers more than `cat_max_ratio` of its labelled
    pixels (ignored pixels excluded; crops with a single class are always redrawn), as mmseg's `RandomCrop`.

    Args:
        crop_size (`int` or `tuple[int, int]`): `(height, width)` of the crop.
        cat_max_ratio (`float`): largest share of one class in an accepted crop; 1.0 disables the check.
        ignore_index (`int`): label value excluded from the class counts.
    """

    def __init__(self, crop_size, cat_max_ratio: float = 0.75, ignore_index: int = IGNORE_INDEX):
        self.crop_size = positive_pair(crop_size, "crop_size")
        if not 0 < cat_max_ratio <= 1:
            raise ValueError(f"`cat_max_ratio` must be in (0, 1], got {cat_max_ratio}.")
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = ignore_index

    def _draw_box(self, height, width, rng):
        crop_height, crop_width = min(self.crop_size[0], height), min(self.crop_size[1], width)
        top = int(rng.integers(0, height - crop_height + 1))
        left = int(rng.integers(0, width - crop_width + 1))
        return top, left, crop_height, crop_width

    def __call__(self, image, label, rng):
        check_pair(image, label)
        height, width = label.shape
        top, left, crop_height, crop_width = self._draw_box(height, width, rng)
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                crop = label[top : top + crop_height, left : left + crop_width]
                _, counts = np.unique(crop[crop != self.ignore_index], return_counts=True)
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                top, left, crop_height, crop_width = self._draw_box(height, width, rng)
        window = (slice(top, top + crop_height), slice(left, left + crop_width))
        return image[window], label[window]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(crop_size={self.crop_size}, cat_max_ratio={self.cat_max_ratio})"


class RandomHorizontalFlip:
    """Mirrors image and label left-right with probability `prob`."""

    def __init__(self, prob: float = 0.5):
        if not 0 <= prob <= 1:
            raise ValueError(f"`prob` must be in [0, 1], got {prob}.")
        self.prob = float(prob)

    def __call__(self, image, label, rng):
        check_pair(image, label)
        if rng.random() < self.prob:
            return image[:, ::-1], label[:, ::-1]
        return image, label

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prob={self.prob})"


class PhotometricDistortion:
    """
    mmseg's `PhotoMetricDistortion` on a uint8 RGB image; each step happens with probability 1/2: brightness shift
    in `[-brightness_delta, brightness_delta]`, contrast factor in `contrast_range` (before or after the colour
    steps, at random), saturation factor in `saturation_range`, hue shift of up to `hue_delta` (OpenCV's 0-180
    hue scale, i.e. 2 degrees per unit). The label is returned unchanged.
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ):
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    @staticmethod
    def _clip(image: np.ndarray) -> np.ndarray:
        return np.clip(image, 0, 255)

    def __call__(self, image, label, rng):
        check_pair(image, label)
        if image.dtype != np.uint8:
            raise TypeError(f"PhotometricDistortion expects a uint8 image (before Normalize), got {image.dtype}.")
        pixels = image.astype(np.float32)
        if rng.integers(2):
            pixels = self._clip(pixels + rng.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = bool(rng.integers(2))
        if contrast_first and rng.integers(2):
            pixels = self._clip(pixels * rng.uniform(*self.contrast_range))
        change_saturation, change_hue = bool(rng.integers(2)), bool(rng.integers(2))
        if change_saturation or change_hue:
            # PIL's HSV has all channels on 0-255; hue wraps around.
            hsv = np.asarray(Image.fromarray(pixels.round().astype(np.uint8)).convert("HSV")).astype(np.float32)
            if change_saturation:
                hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*self.saturation_range), 0, 255)
            if change_hue:
                shift = rng.integers(-self.hue_delta, self.hue_delta + 1) * 256.0 / 180.0
                hsv[..., 0] = np.mod(hsv[..., 0] + shift, 256.0)
            hsv_image = Image.fromarray(hsv.round().clip(0, 255).astype(np.uint8), mode="HSV")
            pixels = np.asarray(hsv_image.convert("RGB")).astype(np.float32)
        if not contrast_first and rng.integers(2):
            pixels = self._clip(pixels * rng.uniform(*self.contrast_range))
        return pixels.round().astype(np.uint8), label

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(brightness_delta={self.brightness_delta}, contrast_range={self.contrast_range}, "
            f"saturation_range={self.saturation_range}, hue_delta={self.hue_delta})"
        )


class Normalize:
    """uint8 RGB -> float32 `(pixel / 255 - mean) / std` per channel (mean and std on the 0-1 scale)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(f"`mean` and `std` must be 3 values each, std positive; got {mean} and {std}.")
        self.mean = np.asarray(mean, dtype=np.float32) * 255.0
        self.std = np.asarray(std, dtype=np.float32) * 255.0

    def __call__(self, image, label, rng):
        check_pair(image, label)
        return (image.astype(np.float32) - self.mean) / self.std, label

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={(self.mean / 255).tolist()}, std={(self.std / 255).tolist()})"


class Pad:
    """
    Pads at the bottom and right up to `size` (never crops): image with `image_value`, label with `label_value`
    (the ignore index), so padded pixels take no part in the loss or the metric.
    """

    def __init__(self, size, image_value: float = 0, label_value: int = IGNORE_INDEX):
        self.size = positive_pair(size, "size")
        self.image_value = image_value
        self.label_value = label_value

    def __call__(self, image, label, rng=None):
        check_pair(image, label)
        pad_bottom = max(self.size[0] - label.shape[0], 0)
        pad_right = max(self.size[1] - label.shape[1], 0)
        if not pad_bottom and not pad_right:
            return image, label
        image = np.pad(image, ((0, pad_bottom), (0, pad_right), (0, 0)), constant_values=self.image_value)
        label = np.pad(label, ((0, pad_bottom), (0, pad_right)), constant_values=self.label_value)
        return image, label

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, image_value={self.image_value}, label_value={self.label_value})"
        )


class ResizeToFit:
    """Deterministic keep-ratio resize into a `(long side, short side)` box (mmseg's test-time `Resize`)."""

    def __init__(self, scale: tuple[int, int]):
        self.scale = positive_pair(scale, "scale")

    def __call__(self, image, label, rng=None):
        check_pair(image, label)
        return resize_pair(image, label, rescale_size(*image.shape[:2], self.scale))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale})"


def build_train_transforms(
    crop_size: int | tuple[int, int],
    image_mean: Sequence[float],
    image_std: Sequence[float],
    scale: tuple[int, int] | None = None,
    ratio_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    flip_prob: float = 0.5,
    photometric: bool = True,
    ignore_index: int = IGNORE_INDEX,
) -> Compose:
    """
    The paper's training augmentation for a `crop_size` crop. `scale` defaults to `(2048, crop height)` as in the
    ADE20K / COCO-Stuff configurations (PASCAL-Context uses `(520, 520)`). The result maps a uint8 `(H, W, 3)`
    image and its label map to a float32 `(crop_h, crop_w, 3)` normalised image and a `(crop_h, crop_w)` label map.
    """
    crop = positive_pair(crop_size, "crop_size")
    steps = [
        RandomResize(scale or (2048, crop[0]), ratio_range),
        RandomCrop(crop, cat_max_ratio, ignore_index),
        RandomHorizontalFlip(flip_prob),
    ]
    if photometric:
        steps.append(PhotometricDistortion())
    steps += [Normalize(image_mean, image_std), Pad(crop, 0, ignore_index)]
    return Compose(steps)


def build_eval_transforms(
    crop_size: int | tuple[int, int],
    image_mean: Sequence[float],
    image_std: Sequence[float],
    ignore_index: int = IGNORE_INDEX,
) -> Compose:
    """
    Fixed-shape evaluation inputs for the metric computed *during* training: keep-ratio resize so the image fits the
    crop, normalise, pad to the crop (label 255). Every batch then has the crop's shape, which distributed gathering
    needs. This is a training-time monitor; the paper's protocol (short side to the crop, sliding window, labels at
    full resolution) is `examples/evaluate_semantic_segmentation.py`.
    """
    crop = positive_pair(crop_size, "crop_size")
    return Compose([ResizeToFit(crop), Normalize(image_mean, image_std), Pad(crop, 0, ignore_index)])


__all__ = [
    "Compose",
    "Normalize",
    "Pad",
    "PhotometricDistortion",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResize",
    "ResizeToFit",
    "build_eval_transforms",
    "build_train_transforms",
    "check_pair",
    "rescale_size",
    "resize_pair",
]
