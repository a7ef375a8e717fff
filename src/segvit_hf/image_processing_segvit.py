"""Image processor for SegViT: the paper's test-time resizing, normalisation and label handling, and the post-processing
that turns [`SegViTForSemanticSegmentation`] outputs into label maps at any size.

Two backends follow transformers' convention: `SegViTImageProcessorPil` (PIL / NumPy, always available) and, when
torchvision is installed, `SegViTImageProcessor` on torchvision. Without torchvision, `SegViTImageProcessor` is the PIL
class, so `SegViTImageProcessor()` always works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    ImageInput,
    PILImageResampling,
    SizeDict,
    is_pil_image,
)
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType, is_torchvision_available, logging

from .configuration_segvit import IGNORE_INDEX, as_pair
from .modeling_segvit import mask_cell_size

logger = logging.get_logger(__name__)

# Upper bound on the elements of one band of full-resolution masks or scores: post-processing works band by band of
# rows so that no `(labels, height, width)` tensor at a photo's size ever exists.
MAX_BAND_ELEMENTS = 2**22

_VALID_CHANNEL_COUNTS = (1, 3, 4)

# Pillow modes of more than 8 bits per pixel: 16-bit, 32-bit integer and 32-bit float grayscale.
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


class SegViTImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    do_reduce_labels (`bool`, *optional*, defaults to `self.do_reduce_labels`):
        Whether to shift the labels of segmentation maps down by one, with 0 becoming `ignore_index` (ADE20K's raw
        annotations, where 0 is "other").
    ignore_index (`int`, *optional*, defaults to `self.ignore_index`):
        Label of unlabelled pixels: the value reduced zeros become and the value label maps are padded with.
    patch_size (`int`, *optional*, defaults to `self.patch_size`):
        Patch size of the model's ViT encoder; post-processing needs it to place the mask grid on the pixels.
    """

    do_reduce_labels: bool
    ignore_index: int
    patch_size: int


def get_resize_output_size(height: int, width: int, size: SizeDict | dict) -> tuple[int, int]:
    """
    The `(height, width)` an image of `height x width` pixels is resized to.

    - `{"height": h, "width": w}`: exactly that size.
    - `{"shortest_edge": s, "longest_edge": l}`: keep the aspect ratio with the largest scale that brings the short
      side to at most `s` and the long side to at most `l` (mmcv's `imrescale`, rounding half up, as the official
      evaluation). Images are scaled up as well as down.
    - `{"shortest_edge": s}`: the short side becomes `s`, aspect kept.
    """
    size = validate_size(size)
    if size.height:
        return int(size.height), int(size.width)
    return keep_ratio_size(height, width, size.shortest_edge, size.longest_edge)


def keep_ratio_size(
    height: int, width: int, shortest_edge: float, longest_edge: float | None = None
) -> tuple[int, int]:
    """
    mmcv's keep-ratio rescale (`imrescale`): the `(height, width)` with the input's aspect ratio at the largest scale
    that brings the short side to at most `shortest_edge` and the long side to at most `longest_edge` (no bound when
    `None`), rounding half up, at least one pixel. The official training augmentation and test resize both use it.
    """
    scale = shortest_edge / min(height, width)
    if longest_edge:
        scale = min(scale, longest_edge / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def validate_size(size: SizeDict | dict) -> SizeDict:
    """
    `size` as a `SizeDict`, checked: `{"height", "width"}`, `{"shortest_edge"}` or `{"shortest_edge",
    "longest_edge"}`, every value a positive number. Raises a `ValueError` naming the size otherwise.
    """
    size = SizeDict(**dict(size)) if not isinstance(size, SizeDict) else size
    given = {key: value for key, value in dict(size).items() if value is not None}
    if set(given) not in ({"height", "width"}, {"shortest_edge"}, {"shortest_edge", "longest_edge"}):
        raise ValueError(
            "`size` must be {'height': h, 'width': w}, {'shortest_edge': s} or {'shortest_edge': s, 'longest_edge': "
            f"l}}, got {given}."
        )
    if any(isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1 for value in given.values()):
        raise ValueError(f"Every value of `size` must be a positive number of pixels, got {given}.")
    return size


def infer_channel_layout(image: np.ndarray | torch.Tensor, input_data_format: ChannelDimension | str | None) -> str:
    """
    'channels_first' or 'channels_last' for a 3-D array, checking that the channel axis holds 1, 3 or 4 channels.
    When both ends could be channels (`(1, 500, 3)`, `(4, 5, 3)`), channels-last wins unless only the first axis holds
    3: an RGB last axis is far likelier than an image 1 to 4 pixels high, and NumPy and PIL arrays are channels-last.

    transformers' `infer_channel_dimension_format` picks channels-first in that case, does not check the channel
    count of a given `input_data_format`, and its errors do not say which shapes are expected: hence this function.
    """
    if input_data_format is not None:
        layout = ChannelDimension(input_data_format)
        channels = image.shape[0] if layout == ChannelDimension.FIRST else image.shape[-1]
        if channels not in _VALID_CHANNEL_COUNTS:
            raise ValueError(
                f"Expected 1 (grayscale), 3 (RGB) or 4 (RGBA) channels in the {layout.value} dimension of an image "
                f"of shape {tuple(image.shape)}, got {channels}."
            )
        return layout.value
    first, last = image.shape[0] in _VALID_CHANNEL_COUNTS, image.shape[-1] in _VALID_CHANNEL_COUNTS
    if first and last:
        layout = ChannelDimension.FIRST if image.shape[0] == 3 and image.shape[-1] != 3 else ChannelDimension.LAST
        logger.warning_once(
            f"An image of shape {tuple(image.shape)} could be channels-first or channels-last; it is read as "
            f"{layout.value}. Pass `input_data_format` to choose."
        )
        return layout.value
    if first:
        return ChannelDimension.FIRST.value
    if last:
        return ChannelDimension.LAST.value
    raise ValueError(
        "Expected an image with 1 (grayscale), 3 (RGB) or 4 (RGBA) channels, as (height, width), (channels, height, "
        f"width) or (height, width, channels); got shape {tuple(image.shape)}."
    )


def to_8bit_image(image: PIL.Image.Image) -> PIL.Image.Image:
    """
    A grayscale PIL image of more than 8 bits per pixel as an 8-bit one (mode "L"), scaled by its range, where
    `Image.convert("RGB")` would clip every value above 255. 16-bit images (modes "I;16*") and 32-bit integer ones
    (mode "I", as Pillow reads some 16-bit files) with values in [0, 65535] are divided by 257; 32-bit float ones
    (mode "F") are multiplied by 255 when their values lie in [0, 1], and kept when they lie in [0, 255]. Other
    ranges raise a `ValueError`; images of other modes are returned unchanged.
    """
    if image.mode not in _HIGH_BIT_DEPTH_MODES:
        return image
    values = np.asarray(image, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if np.isfinite(values).all() else (np.nan, np.nan)
    if image.mode == "F":
        scale = 255.0 if 0 <= low and high <= 1 else 1.0 if 0 <= low and high <= 255 else None
    else:
        scale = 1 / 257 if 0 <= low and high <= 65535 else None
    if scale is None:
        expected = "[0, 1] or [0, 255]" if image.mode == "F" else "[0, 65535] (16 bits)"
        raise ValueError(
            f"A mode {image.mode!r} image holds values in [{low}, {high}], outside {expected}: its brightness scale is "
            "unknown. Convert it to an 8-bit image (or a uint8 array) first."
        )
    return PIL.Image.fromarray(np.round(values * scale).astype(np.uint8), mode="L")


def array_to_8bit(image: np.ndarray) -> np.ndarray:
    """
    A NumPy image of integers as 8-bit values, as [`to_8bit_image`] does for PIL images: `uint16` arrays are divided
    by 257; other integer arrays must already hold values in [0, 255] (a `ValueError` otherwise, since their bit depth
    is unknown). Float and `uint8` arrays are returned unchanged.
    """
    if image.dtype == np.uint16:
        return np.round(image / 257).astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer) and image.dtype != np.uint8 and image.size:
        low, high = int(image.min()), int(image.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"An integer image of dtype {image.dtype} holds values in [{low}, {high}], outside [0, 255]: its bit "
                "depth is unknown. Pass uint8 values, a uint16 array (16 bits), or floats in [0, 1] with "
                "do_rescale=False."
            )
    return image


def get_image_size(image: ImageInput, input_data_format: ChannelDimension | str | None = None) -> tuple[int, int]:
    """
    `(height, width)` of a PIL image, or of a NumPy array / torch tensor laid out as `(H, W)`, `(C, H, W)` or
    `(H, W, C)` with 1, 3 or 4 channels. Raises a `ValueError` for other shapes and for empty images, a `TypeError` for
    other types.

    transformers' `get_image_size` reads any array without these checks (and cannot read `(H, W)` grayscale arrays);
    the image processor validates every input image with this one, so users get an error naming the image and the
    expected layouts instead of a failure deep inside resizing.
    """
    if is_pil_image(image):
        width, height = image.size
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        if image.ndim == 2:
            height, width = image.shape
        elif image.ndim == 3:
            layout = infer_channel_layout(image, input_data_format)
            height, width = image.shape[1:] if layout == ChannelDimension.FIRST.value else image.shape[:2]
        else:
            raise ValueError(
                "Expected an image as (height, width), (channels, height, width) or (height, width, channels), got an "
                f"array of shape {tuple(image.shape)}."
            )
    else:
        raise TypeError(
            f"Expected a PIL image, a NumPy array or a torch tensor, got {type(image).__name__}. Load files with "
            "PIL.Image.open first."
        )
    if height == 0 or width == 0:
        raise ValueError(f"Got an empty image: height {height}, width {width}.")
    return int(height), int(width)


def _nearest_source_indices(source_length: int, target_length: int) -> np.ndarray:
    """Source index of each target pixel under nearest-neighbour resizing that samples pixel centres (as PIL)."""
    positions = (np.arange(target_length) + 0.5) * (source_length / target_length)
    return np.minimum(positions.astype(np.int64), source_length - 1)


def resize_label_map(label_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a `(H, W)` label map to `(height, width)`: ids kept exactly, any integer range."""
    if label_map.shape == (height, width):
        return label_map
    rows = _nearest_source_indices(label_map.shape[0], height)
    cols = _nearest_source_indices(label_map.shape[1], width)
    return label_map[np.ix_(rows, cols)]


def reduce_labels(label_map: np.ndarray | torch.Tensor, ignore_index: int = IGNORE_INDEX) -> np.ndarray | torch.Tensor:
    """
    ADE20K's label reduction on a signed integer map (NumPy array or torch tensor, returned as a new one of the same
    kind): 0 ("other" / unlabelled) -> `ignore_index`, k -> k - 1, `ignore_index` kept.
    """
    reduced = label_map - 1
    reduced[(label_map == 0) | (label_map == ignore_index)] = ignore_index
    return reduced


def _label_map_to_numpy(label_map: Any, index: int) -> np.ndarray:
    """A `(H, W)` int64 NumPy copy of a segmentation map given as PIL image, array or tensor (`(1, H, W)` too)."""
    if is_pil_image(label_map):
        array = np.array(label_map)
    elif isinstance(label_map, torch.Tensor):
        array = label_map.detach().cpu().numpy()
    elif isinstance(label_map, np.ndarray):
        array = label_map
    else:
        raise TypeError(
            f"Segmentation map {index} must be a PIL image, a NumPy array or a torch tensor, got "
            f"{type(label_map).__name__}."
        )
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:2])
    if array.ndim != 2:
        raise ValueError(
            f"Segmentation map {index} must be a single-channel (height, width) map of class ids, got shape "
            f"{tuple(array.shape)}."
        )
    if np.issubdtype(array.dtype, np.floating):
        if not np.array_equal(array, np.round(array)):
            raise ValueError(f"Segmentation map {index} holds non-integer values; it must hold class ids.")
    elif not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        raise TypeError(f"Segmentation map {index} must hold integer class ids, got dtype {array.dtype}.")
    return array.astype(np.int64)


def _is_colour_array(array: Any) -> bool:
    """Whether `array` is shaped like one `(H, W, 3)` RGB or `(H, W, 4)` RGBA image."""
    return isinstance(array, (np.ndarray, torch.Tensor)) and array.ndim == 3 and array.shape[-1] in (3, 4)


def _flatten_images(images: Any, expected_ndims: int) -> list:
    """
    One level of nesting removed; a single image or a stacked batch (one more dimension) becomes a list.

    transformers' `make_flat_list_of_images` rejects `(H, W)` grayscale arrays, lists mixing images and lists of
    images, and anything that is not an image with one message for the whole input; this keeps every item so that
    [`get_image_size`] can name the one at fault.
    """
    if isinstance(images, (list, tuple)):
        flat = []
        for item in images:
            flat.extend(item if isinstance(item, (list, tuple)) else [item])
    elif isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == expected_ndims + 1:
        flat = list(images)
    else:
        flat = [images]
    if not flat:
        raise ValueError("Got an empty list of images.")
    return flat


def _valid_sizes_from_pixel_mask(
    pixel_mask: torch.Tensor | np.ndarray, batch_size: int, input_size: tuple[int, int]
) -> list[tuple[int, int]]:
    """`(height, width)` of each image's top-left valid region in a `(batch, H, W)` pixel mask."""
    pixel_mask = torch.as_tensor(pixel_mask)
    if tuple(pixel_mask.shape) != (batch_size, *input_size):
        raise ValueError(
            f"`pixel_mask` must have shape (batch_size, height, width) = {(batch_size, *input_size)}, one mask per "
            f"image of the batch, got {tuple(pixel_mask.shape)}."
        )
    pixel_mask = pixel_mask.bool()
    sizes = []
    for index, mask in enumerate(pixel_mask):
        height, width = int(mask.any(dim=1).sum()), int(mask.any(dim=0).sum())
        if height == 0 or not mask[:height, :width].all() or int(mask.sum()) != height * width:
            raise ValueError(
                f"`pixel_mask[{index}]` must mark a non-empty top-left rectangle (1 = image, 0 = padding), as "
                "SegViTImageProcessor returns it."
            )
        sizes.append((height, width))
    return sizes


def _as_target_sizes(target_sizes: Any, batch_size: int) -> list[tuple[int, int]]:
    if isinstance(target_sizes, torch.Tensor):
        target_sizes = target_sizes.tolist()
    if len(target_sizes) != batch_size:
        raise ValueError(
            f"Got {len(target_sizes)} target sizes for a batch of {batch_size} predictions; pass one (height, width) "
            "per image."
        )
    sizes = []
    for size in target_sizes:
        if len(size) != 2 or any(int(side) < 1 for side in size):
            raise ValueError(f"Each target size must be a positive (height, width) pair, got {tuple(size)}.")
        sizes.append((int(size[0]), int(size[1])))
    return sizes


def _mask_bands(masks_queries_logits: torch.Tensor, size: tuple[int, int], cell_size: tuple[int, int]):
    """
    Yields `(top, bottom, masks)` for consecutive bands of rows of the sigmoid masks at `size`, `masks` being
    `(batch, queries, bottom - top, size[1])`. Each band of grid rows is resized together with one neighbouring grid row
    on either side, which gives its pixels exactly the bilinear weights of the whole-map resize.
    """
    _, num_queries, grid_h, grid_w = masks_queries_logits.shape
    cell_h, cell_w = cell_size
    masks_queries_logits = masks_queries_logits.to(torch.promote_types(masks_queries_logits.dtype, torch.float32))
    cells_per_band = max(1, MAX_BAND_ELEMENTS // (num_queries * cell_h * grid_w * cell_w))
    for first in range(0, grid_h, cells_per_band):
        top = first * cell_h
        if top >= size[0]:
            break
        last = min(first + cells_per_band, grid_h)
        context_first, context_last = max(first - 1, 0), min(last + 1, grid_h)
        band = F.interpolate(
            masks_queries_logits[:, :, context_first:context_last],
            size=((context_last - context_first) * cell_h, grid_w * cell_w),
            mode="bilinear",
            align_corners=False,
        )
        bottom = min(last * cell_h, size[0])
        offset = (first - context_first) * cell_h
        yield top, bottom, band[:, :, offset : offset + bottom - top, : size[1]].sigmoid()


def _class_probabilities(class_queries_logits: torch.Tensor) -> torch.Tensor:
    """`(batch, queries, labels)`: each query's softmax over the labels and "no object", the latter dropped."""
    dtype = torch.promote_types(class_queries_logits.dtype, torch.float32)
    return class_queries_logits.to(dtype).softmax(dim=-1)[..., :-1]


def segmentation_scores(
    class_queries_logits: torch.Tensor,
    masks_queries_logits: torch.Tensor,
    input_size: tuple[int, int],
    patch_size: int | tuple[int, int] = 16,
) -> torch.Tensor:
    """
    The official SegViT prediction at the model input's resolution (the official model's `pred`): the grid mask
    logits are bilinearly resized to the pixels they cover, cropped to `input_size`, passed through the sigmoid and
    combined with the class probabilities, `scores[c] = sum_n softmax(class_queries_logits)[n, c] * sigmoid(mask_n)`
    ("no object" dropped). The scores are non-negative but not probabilities: a score can exceed 1.

    This holds `(batch, labels, height, width)` floats: 157 MB per 512x512 image with 150 labels. For label maps,
    [`SegViTImageProcessor.post_process_semantic_segmentation`] gives the same argmax without it.

    Args:
        class_queries_logits: `(batch, num_queries, num_labels + 1)`, as the model returns it.
        masks_queries_logits: `(batch, num_queries, grid_h, grid_w)`, as the model returns it.
        input_size: `(height, width)` of the `pixel_values` the model saw.
        patch_size: the encoder's patch size.
    Returns:
        `(batch, num_labels, height, width)` scores, in fp32 at least.
    """
    input_size, cell_size = _input_cells(masks_queries_logits, input_size, patch_size)
    return _scores_in_region(class_queries_logits, masks_queries_logits, input_size, cell_size)


def _input_cells(masks_queries_logits, input_size, patch_size) -> tuple[tuple[int, int], tuple[int, int]]:
    """The input's `(height, width)` and the pixels each cell of the mask grid covers there."""
    patch = as_pair(patch_size)
    input_size = (int(input_size[0]), int(input_size[1]))
    return input_size, mask_cell_size(masks_queries_logits.shape[-2:], input_size, patch)


def _scores_in_region(class_queries_logits, masks_queries_logits, size, cell_size) -> torch.Tensor:
    """The ATM scores of the top-left `size` pixels of the input, the mask grid placed with `cell_size`."""
    class_probabilities = _class_probabilities(class_queries_logits).transpose(1, 2)
    batch_size, num_labels = class_probabilities.shape[:2]
    scores = masks_queries_logits.new_empty((batch_size, num_labels, *size), dtype=class_probabilities.dtype)
    for top, bottom, masks in _mask_bands(masks_queries_logits, size, cell_size):
        scores[:, :, top:bottom] = torch.matmul(class_probabilities, masks.flatten(2)).unflatten(-1, masks.shape[-2:])
    return scores


def segmentation_label_maps(
    class_queries_logits: torch.Tensor,
    masks_queries_logits: torch.Tensor,
    input_size: tuple[int, int],
    patch_size: int | tuple[int, int] = 16,
) -> torch.Tensor:
    """
    `segmentation_scores(...).argmax(1)`, the `(batch, height, width)` int64 label maps at the model input's size,
    computed band by band without the full-resolution scores.
    """
    input_size, cell_size = _input_cells(masks_queries_logits, input_size, patch_size)
    return _label_maps_in_region(class_queries_logits, masks_queries_logits, input_size, cell_size)


def _label_maps_in_region(class_queries_logits, masks_queries_logits, size, cell_size) -> torch.Tensor:
    class_probabilities = _class_probabilities(class_queries_logits)
    label_maps = masks_queries_logits.new_empty((masks_queries_logits.shape[0], *size), dtype=torch.int64)
    for index in range(label_maps.shape[0]):
        label_maps[index] = _MaskBounds(masks_queries_logits[index], size, cell_size).label_map(
            class_probabilities[index],
            dense=lambda: _dense_label_maps(
                class_probabilities[index : index + 1], masks_queries_logits[index : index + 1], size, cell_size
            )[0],
        )
    return label_maps


def _dense_label_maps(class_probabilities, masks_queries_logits, size, cell_size) -> torch.Tensor:
    """The label maps scored at every pixel, band by band of rows."""
    label_maps = masks_queries_logits.new_empty((masks_queries_logits.shape[0], *size), dtype=torch.int64)
    for top, bottom, masks in _mask_bands(masks_queries_logits, size, cell_size):
        # Pixels first: the argmax then runs along contiguous memory, several times faster than across labels.
        scores = torch.matmul(masks.flatten(2).transpose(1, 2), class_probabilities)
        label_maps[:, top:bottom] = scores.argmax(dim=-1).unflatten(-1, masks.shape[-2:])
    return label_maps


def _bilinear_sources(source_length: int, target_length: int, device: torch.device):
    """
    For each target index of a bilinear resize (align_corners=False, as `F.interpolate`): the two source indices and
    their weights, computed in fp32 as PyTorch does.
    """
    scale = torch.tensor(source_length / target_length, dtype=torch.float32)
    position = ((torch.arange(target_length, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    low = position.floor().long().clamp(max=source_length - 1)
    high = torch.where(low < source_length - 1, low + 1, low)
    high_weight = position - low
    return low.to(device), high.to(device), (1 - high_weight).to(device), high_weight.to(device)


# A block of pixels takes a class when that class's lowest possible score there beats every other class's highest
# by more than rounding; a block no larger than this many pixels (on average) is scored pixel by pixel.
_DECISION_MARGIN = 1e-6
_SMALLEST_BLOCK = 24


class _AxisPlacement:
    """One axis of the mask grid placed on `length` pixels by the bilinear resize: per pixel, two cells and weights."""

    def __init__(self, cells: int, cell_size: int, length: int, device: torch.device):
        low, high, low_weight, high_weight = _bilinear_sources(cells, cells * cell_size, device)
        self.low, self.high = low[:length], high[:length]
        self.low_weight, self.high_weight = low_weight[:length], high_weight[:length]
        # Between two neighbouring cell centres a mask logit is linear in the pixel's weight: such a run of pixels is
        # a piece.
        starts = torch.ones(length, dtype=torch.bool, device=device)
        starts[1:] = self.low[1:] != self.low[:-1]
        self.piece_starts = starts.nonzero().squeeze(1)
        self.piece_stops = torch.cat([self.piece_starts[1:], self.piece_starts.new_tensor([length])])


class _MaskBounds:
    """
    The ATM label map without scoring every pixel. On a block of pixels inside one piece of both axes, each mask
    logit is bilinear in the pixel's weights, so its smallest and largest values lie at the block's corners; the
    sigmoid keeps that order and the class probabilities are non-negative, so every class's score on the block lies
    between the class mix of the corner minima and that of the corner maxima. A block where one class's lowest score
    beats every other class's highest takes that class. The others are cut in four and tried again, down to blocks of
    a few pixels, which are scored exactly; when most of the image is still undecided there (near-uniform classes),
    `dense` scores it all.
    """

    def __init__(self, masks_queries_logits: torch.Tensor, size: tuple[int, int], cell_size: tuple[int, int]):
        num_queries, grid_h, self.grid_w = masks_queries_logits.shape
        device = masks_queries_logits.device
        self.size = size
        self.rows = _AxisPlacement(grid_h, cell_size[0], size[0], device)
        self.cols = _AxisPlacement(self.grid_w, cell_size[1], size[1], device)
        # (cells, queries): one gather reads all the queries of a cell.
        dtype = torch.promote_types(masks_queries_logits.dtype, torch.float32)
        self.cell_masks = masks_queries_logits.to(dtype).flatten(1).T.contiguous()

    def mask_logits_at(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """`(pixels, queries)` mask logits at pixels `(y, x)`, in `F.interpolate`'s order of operations."""
        rows, cols = self.rows, self.cols
        row_low, row_high = rows.low[y] * self.grid_w, rows.high[y] * self.grid_w
        col_low, col_high = cols.low[x], cols.high[x]
        col_low_weight, col_high_weight = cols.low_weight[x, None], cols.high_weight[x, None]
        masks = self.cell_masks
        upper = col_low_weight * masks[row_low + col_low] + col_high_weight * masks[row_low + col_high]
        lower = col_low_weight * masks[row_high + col_low] + col_high_weight * masks[row_high + col_high]
        return rows.low_weight[y, None] * upper + rows.high_weight[y, None] * lower

    def label_map(self, class_probabilities: torch.Tensor, dense) -> torch.Tensor:
        """`class_probabilities` `(queries, labels)`; `dense()` gives the same label map scored at every pixel."""
        label_map = torch.empty(self.size, dtype=torch.int64, device=self.cell_masks.device)
        row_pieces, col_pieces = len(self.rows.piece_starts), len(self.cols.piece_starts)
        blocks = (
            self.rows.piece_starts.repeat_interleave(col_pieces),
            self.rows.piece_stops.repeat_interleave(col_pieces),
            self.cols.piece_starts.repeat(row_pieces),
            self.cols.piece_stops.repeat(row_pieces),
        )
        while True:
            top, bottom, left, right = blocks
            corners = [self.mask_logits_at(y, x) for y in (top, bottom - 1) for x in (left, right - 1)]
            lowest = torch.stack(corners).amin(dim=0).sigmoid() @ class_probabilities  # (blocks, labels)
            highest = torch.stack(corners).amax(dim=0).sigmoid() @ class_probabilities
            best_lowest, best = lowest.max(dim=1)
            highest.scatter_(1, best[:, None], float("-inf"))
            decided = highest.max(dim=1).values < best_lowest - _DECISION_MARGIN
            y, x, block = _block_pixels(*(side[decided] for side in blocks))
            label_map[y, x] = best[decided][block]
            blocks = tuple(side[~decided] for side in blocks)
            areas = (blocks[1] - blocks[0]) * (blocks[3] - blocks[2])
            if not areas.numel():
                return label_map
            if float(areas.float().mean()) <= _SMALLEST_BLOCK:
                break
            blocks = _quarter_blocks(*blocks)
        if int(areas.sum()) > self.size[0] * self.size[1] // 4:
            return dense()
        y, x, _ = _block_pixels(*blocks)
        label_map[y, x] = (self.mask_logits_at(y, x).sigmoid() @ class_probabilities).argmax(dim=1)
        return label_map


def _block_pixels(top, bottom, left, right):
    """Every pixel `(y, x)` of the blocks `[top, bottom) x [left, right)`, with the index of its block."""
    widths = right - left
    areas = (bottom - top) * widths
    block = torch.repeat_interleave(torch.arange(top.numel(), device=top.device), areas)
    offset = torch.arange(int(areas.sum()), device=top.device) - torch.repeat_interleave(areas.cumsum(0) - areas, areas)
    return top[block] + offset // widths[block], left[block] + offset % widths[block], block


def _quarter_blocks(top, bottom, left, right):
    """Each block cut in up to four: each side longer than one pixel is halved."""
    middle_y, middle_x = (top + bottom + 1) // 2, (left + right + 1) // 2
    tall, wide = bottom - top > 1, right - left > 1
    upper_bottom, left_right = torch.where(tall, middle_y, bottom), torch.where(wide, middle_x, right)
    quarters = [
        (top, upper_bottom, left, left_right, torch.ones_like(tall)),
        (top, upper_bottom, middle_x, right, wide),
        (middle_y, bottom, left, left_right, tall),
        (middle_y, bottom, middle_x, right, tall & wide),
    ]
    return tuple(torch.cat([quarter[side][quarter[4]] for quarter in quarters]) for side in range(4))


def resized_score_bands(scores: torch.Tensor, size: tuple[int, int], max_band_elements: int = MAX_BAND_ELEMENTS):
    """
    Yields `(top, bottom, band)`: `scores` `(labels, h, w)` bilinearly resized to `size` (align_corners=False, as
    `F.interpolate`), one band of rows at a time, `band` being `(labels, bottom - top, size[1])`. The whole resized
    map never exists.
    """
    num_labels, height, width = scores.shape
    rows_low, rows_high, rows_low_weight, rows_high_weight = _bilinear_sources(height, size[0], scores.device)
    rows_per_band = max(1, max_band_elements // (num_labels * size[1]))
    for top in range(0, size[0], rows_per_band):
        bottom = min(top + rows_per_band, size[0])
        first, last = int(rows_low[top]), int(rows_high[bottom - 1]) + 1
        # Resizing only the width keeps every source row exactly; the rows are then mixed with the weights above.
        source = scores[None, :, first:last]
        if width != size[1]:
            source = F.interpolate(source, size=(last - first, size[1]), mode="bilinear", align_corners=False)
        source = source[0]
        low_weight = rows_low_weight[top:bottom, None]
        high_weight = rows_high_weight[top:bottom, None]
        band = low_weight * source[:, rows_low[top:bottom] - first]
        band = band + high_weight * source[:, rows_high[top:bottom] - first]
        yield top, bottom, band


# Classes kept per source cell where neighbouring pixels disagree (see `resized_label_map`).
_CANDIDATES_PER_CELL = 8


class _BoundaryCells:
    """
    The source cells (a pixel and its right, lower and lower-right neighbours) whose four pixels disagree on their
    class, with the few classes that can win anywhere inside each. Inside a cell, a resized score is a convex
    combination of the four corner scores, so it lies between their minimum and maximum: a class whose maximum is
    below the largest minimum of any class cannot be the argmax. The candidates are the `_CANDIDATES_PER_CELL`
    classes of largest maximum; a cell where more classes could still win is marked and interpolated over all.
    """

    def __init__(self, scores: torch.Tensor, labels: torch.Tensor):
        num_labels, height, width = scores.shape
        below = torch.cat([labels[1:], labels[-1:]])
        right = torch.cat([labels[:, 1:], labels[:, -1:]], dim=1)
        below_right = torch.cat([below[:, 1:], below[:, -1:]], dim=1)
        disagree = (labels != below) | (labels != right) | (labels != below_right)
        cells = disagree.flatten().nonzero().squeeze(1)
        rows, cols = cells // width, cells % width
        rows_below, cols_right = (rows + 1).clamp(max=height - 1), (cols + 1).clamp(max=width - 1)
        corners = _corner_scores(scores.reshape(num_labels, -1), width, (rows, rows_below), (cols, cols_right))
        lowest_possible = corners.amin(dim=0).amax(dim=0)
        kept = min(_CANDIDATES_PER_CELL, num_labels)
        highest, candidates = corners.amax(dim=0).topk(min(kept + 1, num_labels), dim=0)
        if kept < num_labels:
            self.complete = highest[kept] < lowest_possible
        else:
            self.complete = torch.ones_like(lowest_possible, dtype=torch.bool)
        self.candidates = candidates[:kept].T  # (cells, kept)
        self.corner_scores = corners.gather(1, candidates[:kept].expand(4, -1, -1)).permute(2, 0, 1)  # (cells, 4, kept)
        self.slot = torch.full((height * width,), -1, dtype=torch.int64, device=scores.device)
        self.slot[cells] = torch.arange(cells.numel(), device=scores.device)


def _corner_scores(flat_scores, width, rows, cols) -> torch.Tensor:
    """
    `(4, labels, n)` scores of `(labels, h * w)` `flat_scores` at n 2x2 corners: top-left, top-right, bottom-left,
    bottom-right, from the `(top, bottom)` rows and `(left, right)` columns.
    """
    return torch.stack([flat_scores[:, row * width + col] for row in rows for col in cols])


def _bilinear_mix(corners, row_weights, col_weights) -> torch.Tensor:
    """`(pixels, 4, k)` corner values (top-left, top-right, bottom-left, bottom-right) mixed as `F.interpolate` does."""
    row_low, row_high = row_weights[0][:, None], row_weights[1][:, None]
    col_low, col_high = col_weights[0][:, None], col_weights[1][:, None]
    return row_low * (col_low * corners[:, 0] + col_high * corners[:, 1]) + row_high * (
        col_low * corners[:, 2] + col_high * corners[:, 3]
    )


def resized_label_map(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """
    `F.interpolate(scores[None], size, mode="bilinear").argmax(1)[0]` for `(labels, h, w)` scores, at any `size`
    without the `(labels, *size)` resized scores (ties between classes aside). A target pixel whose four source pixels
    share their argmax takes it (a convex combination of score vectors that agree on their largest entry keeps it);
    the others, near boundaries between classes, are interpolated over the few classes that can win there.

    Returns:
        `(size[0], size[1])` int64 class ids.
    """
    num_labels, height, width = scores.shape
    source_labels = scores.argmax(dim=0)
    if (height, width) == tuple(size):
        return source_labels
    boundary = _BoundaryCells(scores, source_labels)
    rows_low, rows_high, rows_low_weight, rows_high_weight = _bilinear_sources(height, size[0], scores.device)
    cols_low, cols_high, cols_low_weight, cols_high_weight = _bilinear_sources(width, size[1], scores.device)
    label_map = torch.empty(size, dtype=torch.int64, device=scores.device)
    flat_scores = scores.reshape(num_labels, -1)
    rows_per_band = max(1, MAX_BAND_ELEMENTS // size[1])
    for top in range(0, size[0], rows_per_band):
        bottom = min(top + rows_per_band, size[0])
        band_rows_low = rows_low[top:bottom]
        band = source_labels[band_rows_low][:, cols_low]
        slots = boundary.slot[(band_rows_low[:, None] * width + cols_low).flatten()].view(band.shape)
        rows, cols = (slots >= 0).nonzero(as_tuple=True)
        if not rows.numel():
            label_map[top:bottom] = band
            continue
        slots = slots[rows, cols]
        row_weights = (rows_low_weight[top + rows], rows_high_weight[top + rows])
        col_weights = (cols_low_weight[cols], cols_high_weight[cols])
        winners = _bilinear_mix(boundary.corner_scores[slots], row_weights, col_weights).argmax(dim=1, keepdim=True)
        band[rows, cols] = boundary.candidates[slots].gather(1, winners).squeeze(1)
        incomplete = (~boundary.complete[slots]).nonzero().squeeze(1)
        chunk = max(1, MAX_BAND_ELEMENTS // num_labels)
        for start in range(0, incomplete.numel(), chunk):
            chosen = incomplete[start : start + chunk]
            source_rows = (rows_low[top + rows[chosen]], rows_high[top + rows[chosen]])
            source_cols = (cols_low[cols[chosen]], cols_high[cols[chosen]])
            corners = _corner_scores(flat_scores, width, source_rows, source_cols)
            mixed = _bilinear_mix(
                corners.permute(2, 0, 1),
                (row_weights[0][chosen], row_weights[1][chosen]),
                (col_weights[0][chosen], col_weights[1][chosen]),
            )
            band[rows[chosen], cols[chosen]] = mixed.argmax(dim=1)
        label_map[top:bottom] = band
    return label_map


class _SegViTImageProcessingMixin:
    """Everything SegViT-specific, shared by the PIL and torchvision backends (which supply resize, rescale, normalize
    and pad for their array type)."""

    valid_kwargs = SegViTImageProcessorKwargs
    model_input_names = ["pixel_values", "pixel_mask"]
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 512, "longest_edge": 2048}
    default_to_square = False
    do_resize = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    do_pad = True
    do_reduce_labels = False
    ignore_index = IGNORE_INDEX
    patch_size = 16

    def preprocess(
        self,
        images: ImageInput,
        segmentation_maps: ImageInput | None = None,
        **kwargs: Unpack[SegViTImageProcessorKwargs],
    ) -> BatchFeature:
        r"""
        Prepares images (and optionally their segmentation maps) for [`SegViTForSemanticSegmentation`].

        Args:
            images (`ImageInput`):
                One image or a list: PIL images, NumPy arrays or torch tensors, `(H, W)`, `(H, W, C)` or `(C, H, W)`
                (channels-last when both could be channels), grayscale, RGB or RGBA (converted to RGB), of any sizes.
                16-bit and float PIL images are scaled to 8 bits by their range ([`to_8bit_image`]).
            segmentation_maps (`ImageInput`, *optional*):
                One `(H, W)` map of class ids per image, at its image's size. Resized with nearest neighbour, padded
                with `ignore_index`, returned as int64 `labels`.

        Returns:
            [`BatchFeature`] with `pixel_values` `(batch, 3, H, W)`, `pixel_mask` `(batch, H, W)` (1 on image pixels,
            0 on the bottom/right padding that brings images of different sizes to a common size) and, with
            segmentation maps, `labels` `(batch, H, W)`.
        """
        return super().preprocess(images, segmentation_maps, **kwargs)

    def _prepare_images_structure(self, images: ImageInput, expected_ndims: int = 3) -> list:
        """The images as a flat list, each checked for type, shape, channel count and emptiness."""
        images = _flatten_images(self.fetch_images(images), expected_ndims)
        for index, image in enumerate(images):
            try:
                get_image_size(image)
            except (TypeError, ValueError) as error:
                raise type(error)(f"Image {index}: {error}") from None
        return images

    def _standardize_kwargs(self, **kwargs) -> dict:
        kwargs = super()._standardize_kwargs(**kwargs)
        # Checked here, at construction and at every call: a negative edge would otherwise give a 1x1 input.
        if kwargs.get("size") is not None:
            validate_size(kwargs["size"])
        return kwargs

    def process_image(self, image: ImageInput, *args, input_data_format=None, **kwargs):
        """
        Converts one image to the backend's `(C, H, W)` format; `(H, W)` arrays are grayscale, PIL images and NumPy
        arrays of more than 8 bits per pixel are scaled to 8 bits first ([`to_8bit_image`], [`array_to_8bit`]).
        """
        if isinstance(image, torch.Tensor) and self.backend == "pil":
            image = image.detach().cpu().numpy()
        if is_pil_image(image):
            image = to_8bit_image(image)
        else:
            if isinstance(image, np.ndarray):
                image = array_to_8bit(image)
            if image.ndim == 2:
                image = image[:, :, None]
                input_data_format = ChannelDimension.LAST
            else:
                input_data_format = ChannelDimension(infer_channel_layout(image, input_data_format))
        return super().process_image(image, *args, input_data_format=input_data_format, **kwargs)

    def _preprocess_image_like_inputs(
        self,
        images: ImageInput,
        segmentation_maps: ImageInput | None = None,
        *,
        do_convert_rgb: bool,
        input_data_format: ChannelDimension | str | None,
        return_tensors: str | TensorType | None,
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | int | None,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | tuple[float, ...],
        image_std: float | tuple[float, ...],
        do_pad: bool,
        pad_size: SizeDict | None,
        do_reduce_labels: bool,
        ignore_index: int,
        device: str | torch.device | None = None,
        **kwargs,
    ) -> BatchFeature:
        images = self._prepare_image_like_inputs(
            images, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format, device=device
        )
        for index, image in enumerate(images):
            if image.shape[0] != 3:
                raise ValueError(
                    f"Image {index} has {image.shape[0]} channels after conversion; SegViT expects RGB. Leave "
                    "`do_convert_rgb=True` to convert grayscale and RGBA images."
                )
            if do_rescale and _looks_rescaled(image):
                logger.warning_once(
                    "An input image is floating point with values in [0, 1] and `do_rescale=True` divides it by 255 "
                    "again; pass `do_rescale=False` for images already in [0, 1]."
                )

        label_maps = None
        if segmentation_maps is not None:
            maps = _flatten_images(segmentation_maps, expected_ndims=2)
            if len(maps) != len(images) and _is_colour_array(segmentation_maps):
                raise ValueError(
                    f"Got one array of shape {tuple(segmentation_maps.shape)} as segmentation maps, which reads as a "
                    f"batch of {len(maps)} maps for {len(images)} images: a colour label map? Turn its colours into "
                    "class ids first; SegViT needs one single-channel (height, width) map per image."
                )
            if len(maps) != len(images):
                raise ValueError(
                    f"Got {len(maps)} segmentation maps for {len(images)} images; pass one (height, width) map per "
                    "image (a 3-D array is read as a batch of maps)."
                )
            label_maps = []
            for index, (label_map, image) in enumerate(zip(maps, images)):
                label_map = _label_map_to_numpy(label_map, index)
                if label_map.shape != tuple(image.shape[-2:]):
                    raise ValueError(
                        f"Segmentation map {index} has size {label_map.shape} (height, width) but its image has "
                        f"{tuple(image.shape[-2:])}; each map must label its own image pixel for pixel."
                    )
                label_maps.append(reduce_labels(label_map, ignore_index) if do_reduce_labels else label_map)

        processed = []
        for index, image in enumerate(images):
            height, width = image.shape[-2:]
            new_height, new_width = get_resize_output_size(height, width, size) if do_resize else (height, width)
            if isinstance(image, torch.Tensor) and not image.is_floating_point():
                # torchvision's normalize needs floats; NumPy's rescale/normalize convert by themselves.
                image = image.float()
            if (new_height, new_width) != (height, width):
                image = self.resize(image, SizeDict(height=new_height, width=new_width), resample=resample)
                if label_maps is not None:
                    label_maps[index] = resize_label_map(label_maps[index], new_height, new_width)
            if do_rescale:
                image = self.rescale(image, rescale_factor)
            if do_normalize:
                image = self.normalize(image, image_mean, image_std)
            processed.append(image)

        sizes = {tuple(image.shape[-2:]) for image in processed}
        if not do_pad and len(sizes) > 1:
            raise ValueError(
                f"Images of different sizes {sorted(sizes)} cannot form one batch without padding: leave "
                "`do_pad=True` (the padding is recorded in `pixel_mask`) or process them one at a time."
            )
        # Padding to the batch's largest size is a no-op for equal sizes but still yields the all-ones pixel mask.
        pixel_values, pixel_mask = self.pad(processed, pad_size=pad_size if do_pad else None, return_mask=True)
        data = {"pixel_values": pixel_values, "pixel_mask": pixel_mask}
        if label_maps is not None:
            padded_height, padded_width = pixel_values[0].shape[-2:]
            data["labels"] = [
                np.pad(
                    label_map,
                    ((0, padded_height - label_map.shape[0]), (0, padded_width - label_map.shape[1])),
                    constant_values=ignore_index,
                )
                for label_map in label_maps
            ]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def post_process_semantic_segmentation(
        self,
        outputs,
        target_sizes: list[tuple[int, int]] | torch.Tensor | None = None,
        pixel_mask: torch.Tensor | np.ndarray | None = None,
        return_segmentation_scores: bool = False,
    ) -> list[torch.Tensor] | list[SemanticSegmentationPostProcessorOutput]:
        """
        Label maps (and optionally per-class scores) from the output of [`SegViTForSemanticSegmentation`], as the
        official test does: the ATM scores at the model input's resolution ([`segmentation_scores`]) are bilinearly
        resized to the target size and arg-maxed.

        The label maps are computed band by band, and the resized scores only where neighbouring input pixels disagree
        on their class, so a label map at a photo's size costs about what one at the input size does and never holds
        `(num_labels, height, width)` floats at that size. `return_segmentation_scores=True` does hold them: at
        4000x3000 with 150 labels that is 7.2 GB.

        Each image's region inside the model input comes from `pixel_mask` when given (exact for any target size);
        otherwise from `target_sizes`, taken as the images' original sizes and passed through this processor's
        resizing. One of the two is needed: the token grid alone does not say where an image ends.

        Args:
            outputs ([`SegViTSemanticSegmenterOutput`]):
                Raw outputs of the model for a batch processed by this image processor.
            target_sizes (`list[tuple[int, int]]` or `torch.Tensor` of shape `(batch_size, 2)`, *optional*):
                `(height, width)` of each result, usually each image's original size. Defaults to each image's size
                inside the model input (needs `pixel_mask`).
            pixel_mask (`torch.Tensor` of shape `(batch_size, height, width)`, *optional*):
                The `pixel_mask` this processor returned with the batch: each prediction is cropped to its image
                before resizing. Taken from `outputs["pixel_mask"]` when the outputs carry it (as the pipeline's do).
            return_segmentation_scores (`bool`, *optional*, defaults to `False`):
                Return [`SemanticSegmentationPostProcessorOutput`]s with the `(num_labels, height, width)` scores too.

        Returns:
            One entry per image: a `(height, width)` int64 label map, or a
            [`SemanticSegmentationPostProcessorOutput`] with `segmentation` and `segmentation_scores`.
        """
        for name in ("class_queries_logits", "masks_queries_logits"):
            if not isinstance(getattr(outputs, name, None), torch.Tensor):
                raise TypeError(
                    "`outputs` must be a SegViTSemanticSegmenterOutput (with `class_queries_logits` and "
                    f"`masks_queries_logits`); `{name}` is missing from {type(outputs).__name__}."
                )
        masks_queries_logits = outputs.masks_queries_logits
        batch_size = masks_queries_logits.shape[0]
        if pixel_mask is None and isinstance(outputs, Mapping):
            pixel_mask = outputs.get("pixel_mask")
        if target_sizes is not None:
            target_sizes = _as_target_sizes(target_sizes, batch_size)
        grid = masks_queries_logits.shape[-2:]
        valid_sizes, cell_size = self.image_regions(grid, batch_size, target_sizes, pixel_mask)
        target_sizes = target_sizes or valid_sizes

        results = []
        for index, (valid_size, target_size) in enumerate(zip(valid_sizes, target_sizes)):
            if target_size == valid_size and not return_segmentation_scores:
                results.append(
                    _label_maps_in_region(
                        outputs.class_queries_logits[index : index + 1],
                        masks_queries_logits[index : index + 1],
                        valid_size,
                        cell_size,
                    )[0]
                )
                continue
            scores = _scores_in_region(
                outputs.class_queries_logits[index : index + 1],
                masks_queries_logits[index : index + 1],
                valid_size,
                cell_size,
            )[0]
            if return_segmentation_scores:
                if target_size != valid_size:
                    scores = F.interpolate(scores[None], size=target_size, mode="bilinear", align_corners=False)[0]
                results.append(
                    SemanticSegmentationPostProcessorOutput(
                        data={"segmentation": scores.argmax(dim=0), "segmentation_scores": scores}
                    )
                )
            else:
                results.append(resized_label_map(scores, target_size))
        return results

    def image_regions(
        self,
        grid: tuple[int, int],
        batch_size: int,
        target_sizes: list[tuple[int, int]] | None = None,
        pixel_mask: torch.Tensor | np.ndarray | None = None,
    ) -> tuple[list[tuple[int, int]], tuple[int, int]]:
        """
        Where the images of a batch lie in the model input: each image's `(height, width)` there (from `pixel_mask`,
        else from the original sizes `target_sizes` through this processor's resizing), and the `(height, width)`
        pixels each cell of the `grid`-sized mask logits covers.
        """
        if pixel_mask is not None:
            input_size = tuple(pixel_mask.shape[-2:])
            sizes = _valid_sizes_from_pixel_mask(pixel_mask, batch_size, input_size)
            source = "`pixel_mask`"
        elif target_sizes is not None:
            target_sizes = _as_target_sizes(target_sizes, batch_size)
            sizes = [get_resize_output_size(*size, self.size) if self.do_resize else size for size in target_sizes]
            # A batch is padded to its largest image.
            input_size = tuple(max(size[axis] for size in sizes) for axis in (0, 1))
            source = "`target_sizes` (taken as the original image sizes)"
        else:
            raise ValueError(
                "Pass `target_sizes` (each image's original (height, width)) or the `pixel_mask` the processor "
                "returned: the token grid alone does not say where each image ends."
            )
        try:
            cell_size = mask_cell_size(grid, input_size, (self.patch_size, self.patch_size))
        except ValueError as error:
            raise ValueError(
                f"{source} give an input of {input_size} pixels, which does not fit the model's outputs: {error} "
                "Pass the `pixel_mask` this processor returned with the batch, or check `patch_size`."
            ) from None
        return sizes, cell_size


def _looks_rescaled(image: np.ndarray | torch.Tensor) -> bool:
    if isinstance(image, np.ndarray):
        return np.issubdtype(image.dtype, np.floating) and image.min() >= 0 and image.max() <= 1
    return image.is_floating_point() and bool(image.min() >= 0) and bool(image.max() <= 1)


class SegViTImageProcessorPil(_SegViTImageProcessingMixin, PilBackend):
    r"""
    SegViT image processor on PIL / NumPy.

    Resizes each image (by default the paper's test protocol: short side to 512, long side at most 2048, aspect kept;
    `segvit_hf.get_preset(name).image_processor()` gives a released model's values), rescales to [0, 1], normalises,
    and pads images of different sizes at the bottom/right into one batch, recording the valid region in `pixel_mask`.
    Segmentation maps are resized with nearest neighbour, optionally reduced (`do_reduce_labels`), padded with
    `ignore_index`, and returned as int64 `labels`.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`): whether to resize.
        size (`dict[str, int]`, *optional*, defaults to `{"shortest_edge": 512, "longest_edge": 2048}`):
            `{"shortest_edge", "longest_edge"}` (aspect kept, both bounds respected, as the official test pipeline),
            `{"shortest_edge"}` or a fixed `{"height", "width"}`.
        resample (`PILImageResampling`, *optional*, defaults to `BILINEAR`): image resampling filter.
        do_rescale (`bool`, *optional*, defaults to `True`), rescale_factor (`float`, *optional*, defaults to 1/255).
        do_normalize (`bool`, *optional*, defaults to `True`), image_mean / image_std (*optional*, default ImageNet):
            `(0.5, 0.5, 0.5)` for both maps to [-1, 1], as the ViT-L "jax" models expect.
        do_convert_rgb (`bool`, *optional*, defaults to `True`): convert grayscale and RGBA (onto white) to RGB.
        do_pad (`bool`, *optional*, defaults to `True`), pad_size (*optional*): pad to the batch's largest size, or to
            `pad_size`.
        do_reduce_labels (`bool`, *optional*, defaults to `False`), ignore_index (`int`, *optional*, defaults to 255),
        patch_size (`int`, *optional*, defaults to 16): see [`SegViTImageProcessorKwargs`].

    Example:

    ```python
    >>> from PIL import Image
    >>> from segvit_hf import get_preset

    >>> processor = get_preset("ade20k-vit-b").image_processor()
    >>> inputs = processor(images=Image.new("RGB", (640, 480)), return_tensors="pt")
    >>> inputs["pixel_values"].shape
    torch.Size([1, 3, 512, 683])
    ```
    """

    def __init__(self, **kwargs: Unpack[SegViTImageProcessorKwargs]):
        super().__init__(**kwargs)


IMAGE_PROCESSOR_CLASSES: dict[str, type] = {"pil": SegViTImageProcessorPil}

if is_torchvision_available():
    from transformers.image_processing_backends import TorchvisionBackend

    class SegViTImageProcessor(_SegViTImageProcessingMixin, TorchvisionBackend):
        r"""
        SegViT image processor on torchvision (tensors, optionally on GPU via `device=`); same options and results
        layout as [`SegViTImageProcessorPil`].
        """

        def __init__(self, **kwargs: Unpack[SegViTImageProcessorKwargs]):
            super().__init__(**kwargs)

    IMAGE_PROCESSOR_CLASSES["torchvision"] = SegViTImageProcessor
else:
    # transformers' convention: without torchvision the plain name resolves to the PIL class.
    SegViTImageProcessor = SegViTImageProcessorPil


__all__ = [
    "IMAGE_PROCESSOR_CLASSES",
    "SegViTImageProcessor",
    "SegViTImageProcessorKwargs",
    "SegViTImageProcessorPil",
    "get_image_size",
    "get_resize_output_size",
    "infer_channel_layout",
    "keep_ratio_size",
    "reduce_labels",
    "resize_label_map",
    "resized_label_map",
    "resized_score_bands",
    "segmentation_label_maps",
    "segmentation_scores",
    "array_to_8bit",
    "to_8bit_image",
    "validate_size",
]
