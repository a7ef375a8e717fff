"""SegViT model configuration."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig, ViTConfig

# Label of pixels without a class (mmseg's convention): padding of label maps, what ADE20K-style label reduction maps
# 0 to, and what the loss and the metrics skip.
IGNORE_INDEX = 255

# The official models are mmseg ViTs: LayerNorm eps 1e-6 (transformers' ViT default is 1e-12), exact GELU.
_ENCODER_DEFAULTS = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "layer_norm_eps": 1e-6,
    "image_size": 512,
    "patch_size": 16,
    "num_channels": 3,
    "qkv_bias": True,
}

_POSITIVE_ENCODER_SIZES = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "image_size",
    "patch_size",
    "num_channels",
)
_POSITIVE_DECODER_SIZES = ("decoder_hidden_size", "decoder_num_attention_heads", "decoder_layers_per_stage")


class SegViTConfig(PreTrainedConfig):
    r"""
    Configuration of a [`SegViTModel`] / [`SegViTForSemanticSegmentation`]: a plain ViT encoder whose selected
    layers feed a cascade of Attention-to-Mask (ATM) decoder stages.

    The defaults describe the paper's ADE20K ViT-B/16 model at 512x512. `segvit_hf.get_preset(name).config()` gives
    any of the seven released models.

    Args:
        encoder_config (`ViTConfig` or `dict`, *optional*):
            The ViT encoder. Missing entries take the official SegViT values (patch 16, LayerNorm eps 1e-6, exact
            GELU, qkv bias). `image_size` is the training crop: it sets the stored position-embedding grid.
        out_indices (`list[int]`, *optional*, defaults to `[5, 7, 11]`):
            0-based indices of the encoder layers whose outputs feed the decoder, shallow to deep. The ATM stages
            run deepest first.
        decoder_hidden_size (`int`, *optional*, defaults to 384):
            Width `d` of the ATM decoder (class queries, laterals).
        decoder_num_attention_heads (`int`, *optional*, defaults to 12):
            Attention heads in the ATM decoder layers.
        decoder_layers_per_stage (`int`, *optional*, defaults to 3):
            ATM decoder layers in each stage.
        decoder_dropout (`float`, *optional*, defaults to 0.1):
            Dropout on the decoder's residual branches, MLP and attention weights (training only).
        drop_path_rate (`float`, *optional*, defaults to 0.1):
            Stochastic-depth rate of the last encoder layer; layer `i` uses `drop_path_rate * i / (depth - 1)`.
        class_weight (`float`, *optional*, defaults to 1.0):
            Weight of the classification (cross-entropy) loss.
        focal_weight (`float`, *optional*, defaults to 20.0):
            Weight of the sigmoid focal loss on the masks.
        dice_weight (`float`, *optional*, defaults to 1.0):
            Weight of the dice loss on the masks.
        no_object_weight (`float`, *optional*, defaults to 0.1):
            Cross-entropy weight of the "no object" target (queries whose class is absent from the image).
        focal_alpha (`float`, *optional*, defaults to 0.25):
            Focal loss alpha.
        focal_gamma (`float`, *optional*, defaults to 2.0):
            Focal loss gamma.
        ignore_index (`int`, *optional*, defaults to 255):
            Label value of pixels without a class; it must not be a class id (outside `[0, num_labels)`).
        shrink_index (`int`, *optional*):
            Encoder layer at which query-based down-sampling (QD) halves the token grid: that layer's queries are the
            2x2 nearest down-sampled tokens, its keys and values all tokens, and later layers run at 1/32. `None` for
            the plain model.
        query_upsampling (`bool`, *optional*, defaults to `False`):
            The *Shrunk* decoder: learnable queries on the 1/16 grid (QU) attend first to the shallow, then to the
            deep one of the two `out_indices` features through standard transformer decoder layers, and a single
            ATM stage over their output predicts, each of its layers giving class and mask logits. `False`: the
            cascade of ATM stages, one per `out_indices` entry.
        per_layer_outputs (`bool`, *optional*, defaults to `False`):
            With a single ATM stage: every ATM layer's class and mask logits form a supervised output (masks not
            accumulated), the last one being the prediction, as the official single-stage head (`ATMSingleHead`)
            does; the paper's single-layer ATM and naive-shrunk ablations use it. Query up-sampling always does this.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated-normal initialisation of linear layers.

    Example:

    ```python
    >>> from segvit_hf import SegViTForSemanticSegmentation, get_preset

    >>> config = get_preset("ade20k-vit-b").config()
    >>> model = SegViTForSemanticSegmentation(config)
    ```
    """

    model_type = "segvit"
    sub_configs = {"encoder_config": ViTConfig}

    def __init__(
        self,
        encoder_config: ViTConfig | dict | None = None,
        out_indices: list[int] | tuple[int, ...] = (5, 7, 11),
        decoder_hidden_size: int = 384,
        decoder_num_attention_heads: int = 12,
        decoder_layers_per_stage: int = 3,
        decoder_dropout: float = 0.1,
        drop_path_rate: float = 0.1,
        class_weight: float = 1.0,
        focal_weight: float = 20.0,
        dice_weight: float = 1.0,
        no_object_weight: float = 0.1,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        ignore_index: int = IGNORE_INDEX,
        shrink_index: int | None = None,
        query_upsampling: bool = False,
        per_layer_outputs: bool = False,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ):
        if encoder_config is None:
            encoder_config = ViTConfig(**_ENCODER_DEFAULTS)
        elif isinstance(encoder_config, dict):
            encoder_config = ViTConfig(**{**_ENCODER_DEFAULTS, **encoder_config})
        elif not isinstance(encoder_config, ViTConfig):
            raise TypeError(f"`encoder_config` must be a ViTConfig or a dict, got {type(encoder_config).__name__}.")
        self.encoder_config = encoder_config
        self.out_indices = [int(i) for i in out_indices]
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_num_attention_heads = decoder_num_attention_heads
        self.decoder_layers_per_stage = decoder_layers_per_stage
        self.decoder_dropout = decoder_dropout
        self.drop_path_rate = drop_path_rate
        self.class_weight = class_weight
        self.focal_weight = focal_weight
        self.dice_weight = dice_weight
        self.no_object_weight = no_object_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.ignore_index = ignore_index
        self.shrink_index = shrink_index
        self.query_upsampling = query_upsampling
        self.per_layer_outputs = per_layer_outputs
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        encoder = self.encoder_config
        self._validate_sizes()
        if self.num_labels < 1:
            raise ValueError(f"A SegViT needs at least one class, got num_labels={self.num_labels}.")
        if 0 <= self.ignore_index < self.num_labels:
            raise ValueError(
                f"`ignore_index` {self.ignore_index} is the id of the class {self.id2label[self.ignore_index]!r}: that "
                f"class would never be supervised. Use a value outside [0, {self.num_labels}), e.g. 255 or -100."
            )
        depth = encoder.num_hidden_layers
        if not self.out_indices:
            raise ValueError("`out_indices` must name at least one encoder layer.")
        if any(not 0 <= i < depth for i in self.out_indices):
            raise ValueError(
                f"`out_indices` {self.out_indices} must be 0-based layer indices in [0, {depth}) for an encoder "
                f"with {depth} layers."
            )
        if list(self.out_indices) != sorted(set(self.out_indices)):
            raise ValueError(f"`out_indices` {self.out_indices} must be strictly increasing (shallow to deep).")
        if encoder.hidden_size % encoder.num_attention_heads:
            raise ValueError(
                f"Encoder hidden_size {encoder.hidden_size} is not divisible by its num_attention_heads "
                f"{encoder.num_attention_heads}."
            )
        if self.decoder_hidden_size % self.decoder_num_attention_heads:
            raise ValueError(
                f"`decoder_hidden_size` {self.decoder_hidden_size} is not divisible by "
                f"`decoder_num_attention_heads` {self.decoder_num_attention_heads}."
            )
        if self.shrink_index is not None and not 0 < self.shrink_index < depth:
            raise ValueError(f"`shrink_index` must be in (0, {depth}) or None, got {self.shrink_index}.")
        if self.query_upsampling and len(self.out_indices) != 2:
            raise ValueError(
                "`query_upsampling` needs exactly two `out_indices` (a shallow 1/16 feature and the deep one), got "
                f"{self.out_indices}."
            )
        if self.query_upsampling and self.shrink_index is not None and self.out_indices[0] >= self.shrink_index:
            raise ValueError(
                f"With query up-sampling the first out_index ({self.out_indices[0]}) must precede `shrink_index` "
                f"({self.shrink_index}): the queries live on the 1/16 grid of the early feature."
            )
        if self.per_layer_outputs and self.num_stages != 1:
            raise ValueError(
                f"`per_layer_outputs` needs a single ATM stage (one out_index, or query up-sampling); got out_indices "
                f"{self.out_indices}."
            )
        for size in as_pair(encoder.image_size):
            if size % as_pair(encoder.patch_size)[0]:
                raise ValueError(
                    f"Encoder image_size {encoder.image_size} must be a multiple of the patch size {encoder.patch_size}."
                )

    def _validate_sizes(self) -> None:
        # Checked first: a zero or negative size would otherwise fail much later, inside torch, without its name.
        encoder = self.encoder_config
        sizes = {f"encoder_config.{name}": getattr(encoder, name) for name in _POSITIVE_ENCODER_SIZES}
        sizes.update({name: getattr(self, name) for name in _POSITIVE_DECODER_SIZES})
        for name, value in sizes.items():
            positive_pair(value, name)

    @property
    def num_stages(self) -> int:
        """Number of ATM stages: one per selected encoder layer, or a single one after query up-sampling."""
        return 1 if self.query_upsampling else len(self.out_indices)


def as_pair(value: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    """`(height, width)` from a single size or a pair (ViTConfig allows both for image and patch sizes)."""
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def positive_pair(value: int | list[int] | tuple[int, int], name: str) -> tuple[int, int]:
    """[`as_pair`], checked: a `ValueError` naming `name` unless it is one size or a `(height, width)` pair, all positive."""
    if isinstance(value, (list, tuple)) and len(value) != 2:
        raise ValueError(f"`{name}` must be a size or a (height, width) pair, got {value}.")
    pair = as_pair(value)
    if min(pair) < 1:
        raise ValueError(f"`{name}` must be positive, got {value}.")
    return pair


__all__ = ["IGNORE_INDEX", "SegViTConfig", "as_pair", "positive_pair"]
