"""Evaluation-grade SegViT inference, following the official test protocol (mmseg 0.24's `EncoderDecoder`).

[`predict`] is the single entry point: whole-image or sliding-window inference, optionally with multi-scale and
horizontal-flip test-time augmentation, returning label maps (and scores) at each image's original size. The tensor
helpers [`whole_inference`] and [`slide_inference`] work on already processed `pixel_values`.

Scores follow the official code step by step:

- whole image: the ATM scores at the input size (`segmentation_scores`), bilinearly resized to the original size;
- sliding window: windows of the crop size every `stride` pixels (the last row and column aligned to the image's
  bottom/right edge; one window covering the image when it is smaller than the crop), each window's scores added at
  its place and divided by the number of windows covering each pixel, then resized to the original size;
- test-time augmentation: each augmentation's resized scores go through a softmax over classes, flipped ones are
  flipped back, and the results are averaged (without augmentation the scores stay the raw ATM scores; the softmax
  would not change the argmax).

Scores at the original size are never held whole unless `return_scores=True` asks for them: label maps are built band
by band of rows (`resized_label_map`, `resized_score_bands`), so a phone photo costs what its processed input costs.
What is held is each augmentation's scores at its processed input size (`num_labels x H x W` each, bounded by the
processor's `size`, whatever the photo's size).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_utils import SizeDict

from .configuration_segvit import positive_pair
from .image_processing_segvit import get_image_size, resized_label_map, resized_score_bands, segmentation_scores
from .presets import PRESETS

#: The paper's multi-scale test ratios ("ms" results), used with horizontal flip.
TTA_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

MODES = ("whole", "slide")


def sliding_window(
    config, crop_size: int | Sequence[int] | None = None, stride: int | Sequence[int] | None = None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """
    The `(height, width)` crop and stride of sliding-window inference for a model configuration.

    The crop defaults to the training crop, `config.encoder_config.image_size` (a model on a transformers backbone
    has none: pass `crop_size`). The stride defaults to the released models' (341 for 512, 608 for 640, 320 for 480,
    see `segvit_hf.PRESETS`); for other crops, two thirds of the crop.
    """
    if crop_size is None and config.encoder_config is None:
        raise ValueError("This model runs on a transformers backbone, which has no training crop: pass `crop_size`.")
    crop = positive_pair(crop_size if crop_size is not None else config.encoder_config.image_size, "crop_size")
    if stride is None:
        stride_by_crop = {preset.crop_size: preset.slide_stride for preset in PRESETS.values()}
        stride = tuple(stride_by_crop.get(side, side * 2 // 3) for side in crop)
    stride = positive_pair(stride, "stride")
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise ValueError(f"The stride {stride} must not exceed the crop {crop}: pixels between windows would be lost.")
    return crop, stride


def whole_inference(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """
    Scores of whole images: the ATM scores (`segmentation_scores`) of the model's outputs for `pixel_values`
    `(batch, 3, H, W)`, as fp32 `(batch, num_labels, H, W)`.
    """
    outputs = model(pixel_values=pixel_values)
    scores = segmentation_scores(
        outputs.class_queries_logits, outputs.masks_queries_logits, pixel_values.shape[-2:], model.config.output_stride
    )
    return scores.float()


def window_boxes(height: int, width: int, crop: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, ...]]:
    """
    `(top, bottom, left, right)` of each sliding window over a `height x width` image, row by row: windows start every
    `stride` pixels, the last ones are moved back to end at the image's edge, and a side shorter than the crop is
    covered by one window of that side's length.
    """
    rows = max(height - crop[0] + stride[0] - 1, 0) // stride[0] + 1
    cols = max(width - crop[1] + stride[1] - 1, 0) // stride[1] + 1
    boxes = []
    for row in range(rows):
        for col in range(cols):
            bottom = min(row * stride[0] + crop[0], height)
            right = min(col * stride[1] + crop[1], width)
            boxes.append((max(bottom - crop[0], 0), bottom, max(right - crop[1], 0), right))
    return boxes


def slide_inference(
    model,
    pixel_values: torch.Tensor,
    crop_size: int | Sequence[int],
    stride: int | Sequence[int],
    window_batch_size: int = 1,
) -> torch.Tensor:
    """
    Sliding-window scores of `pixel_values` `(batch, 3, H, W)`: each window's `logits` are added at its place and the
    sum is divided by the number of windows covering each pixel. Returns fp32 `(batch, num_labels, H, W)`.

    Args:
        crop_size, stride: window size and step, an int or `(height, width)`.
        window_batch_size: windows run through the model together (each holding the whole batch); a speed/memory
            trade-off that does not change the result beyond floating-point rounding.
    """
    crop, stride = positive_pair(crop_size, "crop_size"), positive_pair(stride, "stride")
    if window_batch_size < 1:
        raise ValueError(f"`window_batch_size` must be at least 1, got {window_batch_size}.")
    batch_size, _, height, width = pixel_values.shape
    boxes = window_boxes(height, width, crop, stride)
    scores = None
    coverage = pixel_values.new_zeros((1, 1, height, width), dtype=torch.float32)
    for start in range(0, len(boxes), window_batch_size):
        chunk = boxes[start : start + window_batch_size]
        windows = torch.cat([pixel_values[:, :, top:bottom, left:right] for top, bottom, left, right in chunk])
        window_scores = whole_inference(model, windows)
        if scores is None:
            scores = window_scores.new_zeros((batch_size, window_scores.shape[1], height, width))
        for index, (top, bottom, left, right) in enumerate(chunk):
            scores[:, :, top:bottom, left:right] += window_scores[index * batch_size : (index + 1) * batch_size]
            coverage[:, :, top:bottom, left:right] += 1
    return scores / coverage


def _scaled_size(size: SizeDict, scale: float) -> dict[str, int]:
    """The processor's `size` for one test scale: every bound multiplied and truncated, as mmseg's `img_ratios`."""
    if scale == 1:
        return dict(size)
    return {key: max(1, int(value * scale)) for key, value in dict(size).items()}


def predict(
    model,
    processor,
    images: Any,
    mode: str = "whole",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crop_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    window_batch_size: int = 1,
    return_scores: bool = False,
) -> Any:
    """
    Predicts label maps at each image's original size, the way the official evaluation does.

    Each image is processed on its own (as the official batch size 1 test): resized by `processor` (its `size`
    multiplied by each scale), run whole or in sliding windows, and its scores resized back to the original size.

    Args:
        model ([`SegViTForSemanticSegmentation`]):
            The model; run in eval mode (restored afterwards) without gradients, on its own device and dtype.
        processor ([`SegViTImageProcessor`]):
            Resizes and normalises the images; its `size` is the scale-1 size.
        images:
            One image or a list: PIL images, NumPy arrays or torch tensors, any sizes.
        mode (`str`, *optional*, defaults to `"whole"`):
            `"whole"` (one pass over the resized image) or `"slide"` (sliding windows, the paper's protocol).
        scales (`Sequence[float]`, *optional*, defaults to `(1.0,)`):
            Test scales; [`TTA_SCALES`] are the paper's multi-scale ones.
        flip (`bool`, *optional*, defaults to `False`):
            Also run every scale on the horizontally flipped image.
        crop_size, stride (*optional*):
            Sliding-window crop and stride; see [`sliding_window`] for the defaults.
        window_batch_size (`int`, *optional*, defaults to 1):
            Sliding windows per forward pass.
        return_scores (`bool`, *optional*, defaults to `False`):
            Also return the `(num_labels, height, width)` scores at the original size: the memory-hungry option
            (7.2 GB for a 4000x3000 photo and 150 labels).

    Returns:
        For one image, a `(height, width)` int64 label map on the CPU, or with `return_scores` a
        [`SemanticSegmentationPostProcessorOutput`] with `segmentation` and `segmentation_scores`; for a list, a list.
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
    scales = tuple(float(scale) for scale in scales)
    if not scales or min(scales) <= 0:
        raise ValueError(f"`scales` must be a non-empty sequence of positive ratios, got {scales}.")
    if scales != (1.0,) and not processor.do_resize:
        raise ValueError("Multi-scale inference resizes the images: the processor must have `do_resize=True`.")
    if mode == "slide":
        crop, stride = sliding_window(model.config, crop_size, stride)
    single = not isinstance(images, (list, tuple))
    image_list = [images] if single else list(images)
    parameter = next(model.parameters())
    flips = (False, True) if flip else (False,)

    results = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for image in image_list:
                original_size = get_image_size(image)
                augmented_scores = []
                for scale in scales:
                    inputs = processor(images=image, size=_scaled_size(processor.size, scale), return_tensors="pt")
                    pixel_values = inputs["pixel_values"].to(device=parameter.device, dtype=parameter.dtype)
                    for flipped in flips:
                        batch = pixel_values.flip(-1) if flipped else pixel_values
                        if mode == "slide":
                            scores = slide_inference(model, batch, crop, stride, window_batch_size)[0]
                        else:
                            scores = whole_inference(model, batch)[0]
                        # Flipping back before the resize equals the official flip after it: the bilinear resize
                        # is mirror-symmetric.
                        augmented_scores.append(scores.flip(-1) if flipped else scores)
                results.append(_combine_augmentations(augmented_scores, original_size, return_scores))
    finally:
        model.train(was_training)
    return results[0] if single else results


def _combine_augmentations(augmented_scores: list[torch.Tensor], size: tuple[int, int], return_scores: bool):
    """
    The label map (and with `return_scores` the scores) at `size` from each augmentation's `(labels, h, w)` scores:
    one set is resized as it is, several are resized, soft-maxed over labels and averaged, band by band.
    """
    if len(augmented_scores) == 1 and not return_scores:
        return resized_label_map(augmented_scores[0], size).cpu()
    num_labels = augmented_scores[0].shape[0]
    segmentation = torch.empty(size, dtype=torch.int64)
    full_scores = torch.empty((num_labels, *size)) if return_scores else None
    band_iterators = [resized_score_bands(scores, size) for scores in augmented_scores]
    for bands in zip(*band_iterators):
        top, bottom = bands[0][0], bands[0][1]
        if len(bands) == 1:
            band = bands[0][2]
        else:
            band = sum(band.softmax(dim=0) for _, _, band in bands) / len(bands)
        segmentation[top:bottom] = band.argmax(dim=0).cpu()
        if return_scores:
            full_scores[:, top:bottom] = band.cpu()
    if not return_scores:
        return segmentation
    return SemanticSegmentationPostProcessorOutput(
        data={"segmentation": segmentation, "segmentation_scores": full_scores}
    )


__all__ = [
    "MODES",
    "TTA_SCALES",
    "predict",
    "slide_inference",
    "sliding_window",
    "whole_inference",
    "window_boxes",
]
