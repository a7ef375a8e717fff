"""Deploying SegViT outside PyTorch's eager mode: the dynamic shapes that `torch.export` needs, the export to an ONNX
file with a dynamic batch, height and width, and [`SegViTOnnxSegmenter`], which runs that file with ONNX Runtime and
gives the label maps of the PyTorch path.

The exported graph is the model's forward, `pixel_values` to `class_queries_logits` and `masks_queries_logits`; the
label maps come from the image processor's post-processing, saved beside the ONNX file. `onnx`, `onnxscript` and
`onnxruntime` are an optional extra: `pip install "segvit-hf[onnx]"`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .configuration_segvit import SegViTConfig, as_pair
from .image_processing_segvit import SegViTImageProcessor, get_image_size
from .modeling_segvit import SegViTForSemanticSegmentation, SegViTSemanticSegmenterOutput

ONNX_FILE_NAME = "model.onnx"
INT8_FILE_NAME = "model_int8.onnx"
INPUT_NAMES = ("pixel_values",)
OUTPUT_NAMES = ("class_queries_logits", "masks_queries_logits")


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


class SegViTLogits(nn.Module):
    """The exported graph: a SegViT's forward as `pixel_values -> (class_queries_logits, masks_queries_logits)`."""

    def __init__(self, model: SegViTForSemanticSegmentation):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model(pixel_values=pixel_values)
        return outputs.class_queries_logits, outputs.masks_queries_logits


def export_onnx(
    model: SegViTForSemanticSegmentation,
    image_processor: SegViTImageProcessor,
    output_dir: str | os.PathLike,
    opset_version: int | None = None,
) -> Path:
    """
    Writes `output_dir/model.onnx`: the model's forward in eval mode, fp32, input `pixel_values`
    `(batch, 3, height, width)` with dynamic batch, height and width (at least [`minimum_input_side`]), outputs
    `class_queries_logits` `(batch, num_labels, num_labels + 1)` and `masks_queries_logits`
    `(batch, num_labels, grid_height, grid_width)`. The model's configuration and the image processor
    (`save_pretrained`) are written beside it, so that [`SegViTOnnxSegmenter`] needs only the folder.

    Args:
        model: the fp32 model to export; it is traced in eval mode and left in the mode it was in.
        image_processor: the processor the model is used with, saved beside it.
        output_dir: the folder to write (created if missing).
        opset_version: the ONNX opset; defaults to `torch.onnx.export`'s.
    Returns:
        The path of the ONNX file. Weights may be stored beside it in `model.onnx.data`.
    """
    if importlib.util.find_spec("onnxscript") is None:
        raise ImportError('Exporting to ONNX needs `onnx` and `onnxscript`: pip install "segvit-hf[onnx]".')
    if model.dtype != torch.float32:
        raise ValueError(f"Export an fp32 model, got {model.dtype}: call `model.float()` first.")
    encoder_config = model.config.encoder_config
    crop_height, crop_width = as_pair(encoder_config.image_size)
    patch = max(as_pair(encoder_config.patch_size))
    # A batch of 2 and a non-square size: tracing at a size of 1, or at equal height and width, would tie the graph to
    # them. The values do not matter (zeros leave the caller's random state alone).
    example = torch.zeros(2, encoder_config.num_channels, crop_height, crop_width + patch)
    was_training = model.training
    model.eval()
    try:
        program = torch.onnx.export(
            SegViTLogits(model).eval(),
            (example.to(model.device),),
            dynamic_shapes=export_dynamic_shapes(model.config),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            opset_version=opset_version,
            dynamo=True,
            verbose=False,
        )
    finally:
        model.train(was_training)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / ONNX_FILE_NAME
    program.save(str(path))
    model.config.save_pretrained(output_dir)
    image_processor.save_pretrained(output_dir)
    return path


def quantize_onnx(model_dir: str | os.PathLike, file_name: str = ONNX_FILE_NAME) -> Path:
    """
    Dynamic int8 quantisation of an exported SegViT with ONNX Runtime's `quantize_dynamic`: the weights of the matrix
    products with a constant operand (the linear layers exported as `MatMul`: all of the encoder's, most of the
    decoder's, most of the FLOPs) are stored in int8 and their inputs quantised on the fly at each call; attention
    products, normalisations and the patch embedding stay fp32. Writes `model_dir/model_int8.onnx`; run it with
    `SegViTOnnxSegmenter(model_dir, file_name="model_int8.onnx")`.

    Returns:
        The path of the quantised file.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model_dir = Path(model_dir)
    path = model_dir / INT8_FILE_NAME
    quantize_dynamic(model_dir / file_name, path, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
    return path


class SegViTOnnxSegmenter:
    """
    A SegViT exported by [`export_onnx`], run by ONNX Runtime, with the image processor saved beside it: the same
    preprocessing and post-processing as the PyTorch model, so the same label maps.

    Args:
        model_dir: the folder [`export_onnx`] wrote.
        file_name: the ONNX file in it (e.g. a quantised copy of `model.onnx`).
        providers: ONNX Runtime execution providers; defaults to the CPU.
        session_options: an `onnxruntime.SessionOptions` (threads, graph optimisations).

    Example:

    ```python
    >>> from segvit_hf.export import SegViTOnnxSegmenter
    >>> segmenter = SegViTOnnxSegmenter("segvit-onnx")
    >>> label_map = segmenter.segment(image)  # (height, width) class ids at the image's size
    ```
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        file_name: str = ONNX_FILE_NAME,
        providers: list[str] | None = None,
        session_options: Any = None,
    ):
        import onnxruntime

        model_dir = Path(model_dir)
        self.config = SegViTConfig.from_pretrained(model_dir)
        self.image_processor = SegViTImageProcessor.from_pretrained(model_dir)
        self.session = onnxruntime.InferenceSession(
            str(model_dir / file_name), sess_options=session_options, providers=providers or ["CPUExecutionProvider"]
        )

    def __call__(self, pixel_values: torch.Tensor) -> SegViTSemanticSegmenterOutput:
        """Runs the ONNX model on `pixel_values` `(batch, 3, height, width)`; the outputs as the PyTorch model's."""
        class_queries_logits, masks_queries_logits = self.session.run(
            list(OUTPUT_NAMES), {INPUT_NAMES[0]: pixel_values.detach().cpu().float().numpy()}
        )
        return SegViTSemanticSegmenterOutput(
            class_queries_logits=torch.from_numpy(class_queries_logits),
            masks_queries_logits=torch.from_numpy(masks_queries_logits),
        )

    def segment(self, images: Any) -> torch.Tensor | list[torch.Tensor]:
        """
        Label maps at each image's original size: the processor's preprocessing, the ONNX model and the processor's
        `post_process_semantic_segmentation`, as `processor.post_process_semantic_segmentation(model(**inputs),
        target_sizes, pixel_mask)` with the PyTorch model.

        Args:
            images: one image or a list (PIL images, NumPy arrays or torch tensors, any sizes).
        Returns:
            For one image a `(height, width)` int64 label map, for a list a list.
        """
        single = not isinstance(images, (list, tuple))
        image_list = [images] if single else list(images)
        inputs = self.image_processor(images=image_list, return_tensors="pt")
        label_maps = self.image_processor.post_process_semantic_segmentation(
            self(inputs["pixel_values"]),
            target_sizes=[get_image_size(image) for image in image_list],
            pixel_mask=inputs["pixel_mask"],
        )
        return label_maps[0] if single else label_maps


__all__ = [
    "INT8_FILE_NAME",
    "ONNX_FILE_NAME",
    "SegViTLogits",
    "SegViTOnnxSegmenter",
    "export_dynamic_shapes",
    "export_onnx",
    "minimum_input_side",
    "quantize_onnx",
]
