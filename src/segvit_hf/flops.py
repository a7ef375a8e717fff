"""Counting a model's compute the way the SegViT paper reports it (fvcore, one multiply-add = one FLOP).

The paper's GFLOPs come from fvcore's `FlopCountAnalysis` run on the whole segmentor at the training crop size,
single scale, with the official code's PyTorch of the time, in which every attention was a chain of `linear` and
`bmm` calls that fvcore counts. Current PyTorch (and transformers' default attention) fuse attention into operators
fvcore does not know and would silently count as zero, so [`flop_count_analysis`] adds handles for them:

- `aten::scaled_dot_product_attention`: `Q K^T` and `softmax(.) V`, i.e. `batch * heads * L * S * (E + Ev)`
  (counted dense, even for causal or masked attention, as the unfused matmuls were).
- `aten::_native_multi_head_attention` (the fused `nn.MultiheadAttention` fast path taken in inference): its input
  and output projections plus both attention products.
- `aten::baddbmm` (`nn.MultiheadAttention` with an attention mask and `need_weights=True`): the batched product, the
  addition ignored.

Everything fvcore itself counts is kept as fvcore counts it (`linear`, `matmul`, `bmm`, `einsum`, convolutions,
norms as 5 FLOPs per element, bilinear up-sampling as 4 per output element, ...). As in the paper's figures, these
are not counted: element-wise operations (additions, scaling, activations, softmax, sigmoid, the head average of the
ATM similarity, dropout), reductions, indexing and reshapes, and the bicubic resize of the position embeddings (which
does not run at the training crop size). `FlopCountAnalysis.unsupported_ops()` lists the ones a model executed.

fvcore is an optional dependency: `pip install fvcore` (or the `benchmark` extra of this package).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .configuration_segvit import as_pair
from .modeling_segvit import mask_cell_size, upsample_mask_logits

if TYPE_CHECKING:
    from fvcore.nn import FlopCountAnalysis

__all__ = ["count_flops", "flop_count_analysis"]


def _shape(value: Any) -> list[int]:
    """The concrete shape of a traced tensor value (`torch._C.Value`)."""
    return list(value.type().sizes())


def _scaled_dot_product_attention_flops(inputs: list[Any], outputs: list[Any]) -> int:
    # inputs: query (..., L, E), key (..., S, E), value (..., S, Ev), then mask, dropout, causal, scale, gqa.
    query, key, value = (_shape(inputs[i]) for i in range(3))
    batch_and_heads = math.prod(query[:-2])
    query_length, key_length = query[-2], key[-2]
    return batch_and_heads * query_length * key_length * (query[-1] + value[-1])


def _native_multi_head_attention_flops(inputs: list[Any], outputs: list[Any]) -> int:
    # inputs: query (B, L, E), key (B, S, Ek), value (B, S, Ev), embed_dim, num_heads, qkv weight/bias, out weight/...
    query, key, value = (_shape(inputs[i]) for i in range(3))
    batch = math.prod(query[:-2])
    query_length, embed_dim = query[-2], query[-1]
    key_length = key[-2]
    projections = (query_length * embed_dim + key_length * key[-1] + key_length * value[-1]) * embed_dim
    attention = 2 * query_length * key_length * embed_dim
    output_projection = query_length * embed_dim * embed_dim
    return batch * (projections + attention + output_projection)


def _baddbmm_flops(inputs: list[Any], outputs: list[Any]) -> int:
    # inputs: self (added), batch1 (b, n, m), batch2 (b, m, p), beta, alpha.
    batch, rows, inner = _shape(inputs[1])
    columns = _shape(inputs[2])[-1]
    return batch * rows * inner * columns


_EXTRA_HANDLES = {
    "aten::scaled_dot_product_attention": _scaled_dot_product_attention_flops,
    "aten::_native_multi_head_attention": _native_multi_head_attention_flops,
    "aten::baddbmm": _baddbmm_flops,
}


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be a positive int, got {type(value).__name__} {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value}.")
    return value


def _input_channels(model: nn.Module) -> int:
    """Image channels the model expects, read from its (SegViT or other transformers vision) config."""
    config = getattr(model, "config", None)
    for candidate in (getattr(config, "encoder_config", None), getattr(config, "backbone_config", None), config):
        channels = getattr(candidate, "num_channels", None)
        if isinstance(channels, int):
            return channels
    raise ValueError(
        f"Cannot tell how many input channels {type(model).__name__} expects: it has no `config.num_channels` "
        "(nor `config.encoder_config.num_channels`, `config.backbone_config.num_channels`). Pass `num_channels`."
    )


class _WithOfficialPrediction(nn.Module):
    """
    A SegViT model followed by its official test output at the input size, which the paper's counts include (the
    official heads compute it in their forward pass; ours leaves it to the post-processing): the mask logits resized
    to the input in one go, their sigmoid mixed over the classes by the class probabilities (the ATM head's `pred`),
    or for the SETR baseline its class logits resized to the input.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        outputs = self.model(pixel_values)
        size = pixel_values.shape[-2:]
        mask_logits = outputs.masks_queries_logits
        cell_size = mask_cell_size(mask_logits.shape[-2:], size, as_pair(self.model.config.output_stride))
        masks = upsample_mask_logits(mask_logits, size, cell_size)
        if self.model.config.decoder_type == "setr":
            return masks
        class_probabilities = outputs.class_queries_logits.softmax(dim=-1)[..., :-1]
        return torch.einsum("bqc,bqhw->bchw", class_probabilities, masks.sigmoid())


def _is_segvit_segmenter(model: nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == "segvit" and hasattr(model, "decode_head")


def flop_count_analysis(
    model: nn.Module,
    height: int,
    width: int,
    *,
    batch_size: int = 1,
    num_channels: int | None = None,
) -> "FlopCountAnalysis":
    """
    Traces one inference of `model` on random `(batch_size, num_channels, height, width)` pixel values and returns
    the fvcore `FlopCountAnalysis`, with the attention handles described in this module's docstring, already run.

    The model is traced in eval mode (every submodule's training flag is restored afterwards) without gradients, on
    its own device and dtype. Use `.total()` (FLOPs, one multiply-add = 1), `.by_operator()`, `.by_module()` or
    `.unsupported_ops()` (operators executed but not counted) on the result.

    Args:
        model (`nn.Module`):
            Any module whose forward takes the pixel values as its first argument. A
            [`SegViTForSemanticSegmentation`] is counted with the official full-resolution prediction
            (`segmentation_scores`) after its forward pass, as the paper counts it: encoder, decoder and prediction.
        height (`int`), width (`int`):
            Input size in pixels. The paper counts at the training crop (`config.encoder_config.image_size`).
        batch_size (`int`, *optional*, defaults to 1):
            Images per forward pass.
        num_channels (`int`, *optional*):
            Image channels; read from the model's config when not given.
    """
    try:
        with warnings.catch_warnings():
            # fvcore scripts a few helpers at import time, which current PyTorch reports as deprecated.
            warnings.simplefilter("ignore", category=DeprecationWarning)
            from fvcore.nn import FlopCountAnalysis
    except ImportError as error:
        raise ImportError(
            "Counting FLOPs needs fvcore: `pip install fvcore` (or `pip install segvit-hf[benchmark]`)."
        ) from error
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
    height, width = _positive_int("height", height), _positive_int("width", width)
    batch_size = _positive_int("batch_size", batch_size)
    num_channels = _input_channels(model) if num_channels is None else _positive_int("num_channels", num_channels)

    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    pixel_values = torch.randn(batch_size, num_channels, height, width, device=device, dtype=dtype)

    counted = _WithOfficialPrediction(model) if _is_segvit_segmenter(model) else model
    analysis = FlopCountAnalysis(counted, (pixel_values,)).set_op_handle(**_EXTRA_HANDLES)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    training_flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        # The trace runs lazily on first use; run it here, where the model is in eval mode without gradients.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            analysis.total()
    finally:
        for module, training in training_flags.items():
            module.training = training
    return analysis


def count_flops(
    model: nn.Module,
    height: int,
    width: int,
    *,
    batch_size: int = 1,
    num_channels: int | None = None,
) -> float:
    """
    GFLOPs (1e9, one multiply-add = 1) of one forward pass of `model` at `height` x `width`, counted as the SegViT
    paper counts them: fvcore, attention products included whichever attention kernel runs. See
    [`flop_count_analysis`] for the arguments and for what is and is not counted.

    Example:

    ```python
    >>> from segvit_hf import SegViTForSemanticSegmentation, get_preset
    >>> from segvit_hf.flops import count_flops

    >>> model = SegViTForSemanticSegmentation(get_preset("ade20k-vit-b").config())
    >>> round(count_flops(model, 512, 512), 1)  # the paper: 120.9
    120.7
    ```
    """
    analysis = flop_count_analysis(model, height, width, batch_size=batch_size, num_channels=num_channels)
    return analysis.total() / 1e9
