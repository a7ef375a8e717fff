"""Pictures of SegViT predictions, drawn with Pillow only (no GUI, no plotting library).

- [`colorize`]: a label map as an RGB picture.
- [`draw_overlay`]: the label map blended over the image, with a legend of the classes present.
- [`draw_mask_grid`]: the ATM per-class mask maps (sigmoid of the mask logits) of the top-k classes, as in the paper's
  Fig. 1.

Colours come from the ADE20K palette for up to 150 labels and from a deterministic generated palette beyond
(`segvit_hf.labels.default_palette`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .configuration_segvit import IGNORE_INDEX
from .image_processing_segvit import get_image_size, infer_channel_layout, to_8bit_image
from .labels import default_palette
from .modeling_segvit import SegViTSemanticSegmenterOutput, upsample_mask_logits

# Anchor colours of a dark-to-bright heat map (black-purple-red-orange-pale yellow), interpolated linearly.
_HEAT_ANCHORS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)
_UNLABELLED_COLOUR = (0, 0, 0)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only its fixed-size bitmap font
        return ImageFont.load_default()


def to_rgb_array(image: Any) -> np.ndarray:
    """
    A `(H, W, 3)` uint8 copy of an image: PIL (any mode, transparency onto white, 16-bit and float images scaled by
    their range as the image processor does), or a NumPy array / torch tensor `(H, W)`, `(H, W, C)` or `(C, H, W)`
    with 1, 3 or 4 channels, uint8 or floats in [0, 1].
    """
    get_image_size(image)
    if isinstance(image, Image.Image):
        image = to_8bit_image(image)
        if "A" in image.getbands() or "transparency" in image.info:
            image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image.convert("RGBA"))
        return np.array(image.convert("RGB"))
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    elif infer_channel_layout(array, None) == "channels_first":
        array = np.moveaxis(array, 0, -1)
    if np.issubdtype(array.dtype, np.floating):
        array = np.clip(array * 255.0 + 0.5, 0, 255)
    array = array.astype(np.uint8)
    if array.shape[-1] == 4:
        alpha = array[..., 3:].astype(np.float32) / 255.0
        array = (array[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    elif array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array)


def _label_map_array(label_map: Any) -> np.ndarray:
    array = label_map.detach().cpu().numpy() if isinstance(label_map, torch.Tensor) else np.asarray(label_map)
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(
            f"A label map must be a (height, width) array of integer class ids, got shape {array.shape} and dtype "
            f"{array.dtype}."
        )
    return array.astype(np.int64)


def _palette_array(palette: Sequence[Sequence[int]] | None, num_colours: int) -> np.ndarray:
    colours = np.asarray(palette if palette is not None else default_palette(num_colours), dtype=np.uint8)
    if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) < num_colours:
        raise ValueError(
            f"`palette` must hold at least {num_colours} (R, G, B) colours for these labels, got shape {colours.shape}."
        )
    return colours


def colorize(
    label_map: Any, palette: Sequence[Sequence[int]] | None = None, num_labels: int | None = None
) -> np.ndarray:
    """
    Colours a `(H, W)` label map: `(H, W, 3)` uint8. Ids without a colour (the ignore index 255, negatives) are black.

    Args:
        palette: one `(R, G, B)` per label; defaults to `segvit_hf.labels.default_palette(num_labels)`.
        num_labels: number of labels; defaults to the largest id in the map plus one.
    """
    label_map = _label_map_array(label_map)
    if num_labels is None:
        num_labels = int(label_map.max(initial=-1)) + 1
    colours = _palette_array(palette, num_labels)[:num_labels]
    lookup = np.concatenate([colours, np.array([_UNLABELLED_COLOUR], dtype=np.uint8)])
    indices = np.where((label_map >= 0) & (label_map < num_labels), label_map, num_labels)
    return lookup[indices]


def _label_name(id2label: Mapping | None, label: int) -> str:
    if id2label is None:
        return f"class {label}"
    return str(id2label.get(label, id2label.get(str(label), f"class {label}")))


def draw_overlay(
    image: Any,
    label_map: Any,
    id2label: Mapping[int, str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    alpha: float = 0.5,
    legend: bool = True,
    max_legend_entries: int = 20,
    ignore_index: int = IGNORE_INDEX,
) -> Image.Image:
    """
    The label map's colours blended over the image, with a legend on the right listing the classes present (largest
    area first, with their share of the labelled pixels).

    Args:
        image: the image the map labels (PIL, NumPy or torch), same size as `label_map`.
        label_map: `(H, W)` class ids, e.g. from `post_process_semantic_segmentation` or `segvit_hf.inference.predict`.
        id2label: class names (a model's `config.id2label`); "class i" otherwise.
        palette: `(R, G, B)` per class; ADE20K's for up to 150 classes by default.
        alpha: weight of the colours (0 = image only, 1 = colours only).
        legend: draw the legend panel.
        max_legend_entries: classes listed at most; the rest are counted in a last line.
        ignore_index: the id of unlabelled pixels (ground-truth maps), drawn black and left out of the legend.
    Returns:
        An RGB PIL image, the image's size plus the legend panel.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1], got {alpha}.")
    rgb = to_rgb_array(image)
    labels = _label_map_array(label_map)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"The label map is {labels.shape} (height, width) but the image is {rgb.shape[:2]}.")
    labelled_ids = labels[labels != ignore_index]
    num_labels = max(len(id2label) if id2label else 0, int(labelled_ids.max(initial=-1)) + 1)
    colours = colorize(labels, palette, num_labels)
    blended = (rgb.astype(np.float32) * (1.0 - alpha) + colours.astype(np.float32) * alpha + 0.5).astype(np.uint8)
    picture = Image.fromarray(blended)
    if not legend:
        return picture

    present, counts = np.unique(labels[(labels >= 0) & (labels < num_labels)], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    total = max(int(counts.sum()), 1)
    font_size = max(11, min(18, rgb.shape[0] // 24))
    font = _font(font_size)
    row_height = font_size + 8
    swatch = font_size
    entries = [(int(present[i]), 100.0 * counts[i] / total) for i in order[:max_legend_entries]]
    lines = [f"{_label_name(id2label, label)} ({share:.1f}%)" for label, share in entries]
    if len(order) > max_legend_entries:
        lines.append(f"+ {len(order) - max_legend_entries} more classes")
    measure = ImageDraw.Draw(picture)
    text_width = max((measure.textlength(line, font=font) for line in lines), default=0)
    panel_width = int(swatch + text_width + 24)
    height = max(picture.height, len(lines) * row_height + 8)
    canvas = Image.new("RGB", (picture.width + panel_width, height), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    palette_colours = _palette_array(palette, num_labels)
    for row, line in enumerate(lines):
        top = 6 + row * row_height
        left = picture.width + 8
        if row < len(entries):
            colour = tuple(int(c) for c in palette_colours[entries[row][0]])
            draw.rectangle([left, top, left + swatch, top + swatch], fill=colour, outline=(0, 0, 0))
        draw.text((left + swatch + 8, top), line, fill=(0, 0, 0), font=font)
    return canvas


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text`, shortened with an ellipsis until it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _heat_colours(values: np.ndarray) -> np.ndarray:
    """Maps values in [0, 1] `(H, W)` to `(H, W, 3)` float colours of the heat map."""
    positions = np.clip(values, 0.0, 1.0) * (len(_HEAT_ANCHORS) - 1)
    lower = np.floor(positions).astype(np.int64).clip(max=len(_HEAT_ANCHORS) - 2)
    fraction = (positions - lower)[..., None]
    return _HEAT_ANCHORS[lower] * (1.0 - fraction) + _HEAT_ANCHORS[lower + 1] * fraction


def draw_mask_grid(
    image: Any,
    outputs,
    processor,
    id2label: Mapping[int, str] | None = None,
    top_k: int = 8,
    columns: int = 4,
    tile_size: int = 256,
    index: int = 0,
    pixel_mask: torch.Tensor | np.ndarray | None = None,
) -> Image.Image:
    """
    A grid of the ATM mask maps, `sigmoid(masks_queries_logits)`, of the `top_k` classes: the classes of the
    predicted label map by area, then the most confident remaining class queries. Each tile shows one class's map as
    a heat map over the dimmed grayscale image, captioned with the class name and its share of the predicted map.

    Args:
        image: the image the model saw (before processing), PIL, NumPy or torch.
        outputs: the model's [`SegViTSemanticSegmenterOutput`] for a batch holding the image.
        processor: the [`SegViTImageProcessor`] that prepared the batch (places the mask grid on the image).
        id2label: class names (a model's `config.id2label`).
        top_k: number of classes shown.
        columns: tiles per row.
        tile_size: longest side of a tile in pixels.
        index: the image's position in the batch.
        pixel_mask: the processor's `pixel_mask` when the batch was padded.
    Returns:
        An RGB PIL image.
    """
    if top_k < 1 or columns < 1 or tile_size < 8:
        raise ValueError(f"Need top_k >= 1, columns >= 1 and tile_size >= 8; got {top_k}, {columns}, {tile_size}.")
    image_size = get_image_size(image)
    single = SegViTSemanticSegmenterOutput(
        class_queries_logits=outputs.class_queries_logits[index : index + 1].detach().float().cpu(),
        masks_queries_logits=outputs.masks_queries_logits[index : index + 1].detach().float().cpu(),
    )
    single_mask = None if pixel_mask is None else torch.as_tensor(pixel_mask)[index : index + 1]
    label_map = processor.post_process_semantic_segmentation(
        single, target_sizes=[image_size], pixel_mask=single_mask
    )[0]
    (valid,), cell_size = processor.image_regions(
        single.masks_queries_logits.shape[-2:], 1, target_sizes=[image_size], pixel_mask=single_mask
    )
    class_logits, mask_logits = single.class_queries_logits[0], single.masks_queries_logits[0]
    num_labels = class_logits.shape[-1] - 1
    areas = torch.bincount(label_map.flatten(), minlength=num_labels).float() / label_map.numel()
    # Query i is class i: its confidence is the probability it gives its own class.
    confidence = class_logits.softmax(dim=-1)[torch.arange(num_labels), torch.arange(num_labels)]
    ranking = sorted(range(num_labels), key=lambda label: (-float(areas[label]), -float(confidence[label])))
    chosen = ranking[: min(top_k, num_labels)]

    rgb = to_rgb_array(image)
    scale = tile_size / max(rgb.shape[:2])
    tile_height, tile_width = max(1, round(rgb.shape[0] * scale)), max(1, round(rgb.shape[1] * scale))
    gray = np.asarray(Image.fromarray(rgb).convert("L").resize((tile_width, tile_height), Image.BILINEAR))
    gray = np.repeat(gray[..., None].astype(np.float32) * 0.5, 3, axis=-1)

    masks = upsample_mask_logits(mask_logits[chosen][None], valid, cell_size)
    probabilities = F.interpolate(masks, size=(tile_height, tile_width), mode="bilinear", align_corners=False)
    probabilities = probabilities[0].sigmoid().numpy()

    font_size = max(11, min(16, tile_size // 16))
    font = _font(font_size)
    caption_height = font_size + 8
    rows = -(-len(chosen) // columns)
    grid_columns = min(columns, len(chosen))
    gap = 4
    canvas = Image.new(
        "RGB",
        (grid_columns * (tile_width + gap) + gap, rows * (tile_height + caption_height + gap) + gap),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(canvas)
    for position, (label, probability) in enumerate(zip(chosen, probabilities)):
        tile = gray * 0.3 + _heat_colours(probability) * 0.7
        left = gap + (position % columns) * (tile_width + gap)
        top = gap + (position // columns) * (tile_height + caption_height + gap)
        caption = f"{_label_name(id2label, label)} ({100.0 * float(areas[label]):.1f}%)"
        caption = _fit_text(draw, caption, font, tile_width)
        draw.text((left, top + 2), caption, fill=(0, 0, 0), font=font)
        canvas.paste(Image.fromarray((tile + 0.5).astype(np.uint8)), (left, top + caption_height))
    return canvas


__all__ = ["colorize", "draw_mask_grid", "draw_overlay", "to_rgb_array"]
