"""Deploying SegViT outside PyTorch's eager mode: the dynamic shapes that `torch.export` needs."""

from __future__ import annotations

from typing import Any

import torch

from .configuration_segvit import SegViTConfig, as_pair


def minimum_input_side(config: SegViTConfig) -> int:
    """
    The smallest height and width an exported SegViT serves: every token grid needs at least 2 cells per side
    (`torch.export` specialises sizes of 1), so one patch and a pixel, or two patches and a pixel when query
    down-sampling halves the grid. The image processor's resizing gives far larger inputs.
    """
    patch = max(as_pair(config.encoder_config.patch_size))
    return (2 if config.shrink_index is not None else 1) * patch + 1


def export_dynamic_shapes(config: SegViTConfig, dynamic_batch: bool = True) -> dict[str, dict[int, Any]]:
    """
    The `dynamic_shapes` of `torch.export.export` (and `torch.onnx.export`) for `pixel_values`: any height and width
    from [`minimum_input_side`] up and, with `dynamic_batch`, any batch size.

    With a dynamic batch, `torch.export` adds a check that the batch is not 1 to *Shrunk* models (a reshape inside
    `nn.MultiheadAttention` of the query up-sampler that it cannot prove general); the computation is the same for
    every batch size, and the ONNX file, which does not keep such checks, serves batches of 1.
    """
    minimum = minimum_input_side(config)
    shapes: dict[int, Any] = {
        2: torch.export.Dim("height", min=minimum),
        3: torch.export.Dim("width", min=minimum),
    }
    if dynamic_batch:
        shapes[0] = torch.export.Dim("batch")
    return {"pixel_values": shapes}


__all__ = [
    "export_dynamic_shapes",
    "minimum_input_side",
]
