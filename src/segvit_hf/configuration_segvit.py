"""SegViT model configuration."""

from __future__ import annotations

import copy
from typing import Any

from transformers import AutoConfig, PreTrainedConfig, ViTConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

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

DECODER_TYPES = ("atm", "setr")
SEGMENTATION_LOSSES = ("mask", "cross_entropy")
QUERY_DOWNSAMPLING_MODES = ("nearest", "nearest_qkv", "conv")
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
    Configuration of a [`SegViTModel`] / [`SegViTForSemanticSegmentation`]: a plain ViT encoder (or any transformers
    backbone) whose selected layers feed a cascade of Attention-to-Mask (ATM) decoder stages.

    The defaults describe the paper's ADE20K ViT-B/16 model at 512x512. `segvit_hf.get_preset(name).config()` gives
    any of the seven released models. The paper's ablations (Tables 4, 5, 7 and 8) and its Swin-T model (Table 6) are
    configurations of the same classes: see `docs/architecture.md`.

    Args:
        encoder_config (`ViTConfig` or `dict`, *optional*):
            The built-in ViT encoder. Missing entries take the official SegViT values (patch 16, LayerNorm eps 1e-6,
            exact GELU, qkv bias). `image_size` is the training crop: it sets the stored position-embedding grid.
            `None` with a `backbone_config` or `backbone`.
        out_indices (`list[int]`, *optional*):
            Which features feed the decoder, shallow to deep; the ATM stages run deepest first. For the built-in
            encoder, 0-based layer indices (default `[5, 7, 11]`). With a transformers backbone, its own
            `out_indices` (indices into its `stage_names`, where 0 is the stem: layer `i` of a plain backbone such as
            DINOv2 counted from 1, stage `k` of Swin); they are written into `backbone_config`, and default to the
            ones it has.
        backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            A transformers backbone (any `AutoBackbone` configuration: DINOv2, Swin, ConvNeXt, ...) to use instead of
            the built-in ViT encoder. Plain backbones (one token grid) feed the cascade as the ViT does; for
            hierarchical ones each stage attends to its own resolution and the masks are accumulated on the finest
            grid used (see `docs/architecture.md`).
        backbone (`str`, *optional*):
            A backbone checkpoint (Hub id or local directory): its configuration is read when `backbone_config` is
            not given, and its weights are loaded with `use_pretrained_backbone=True`.
        use_pretrained_backbone (`bool`, *optional*, defaults to `False`):
            Whether a newly built model starts from the weights of `backbone`. Loading a saved SegViT never reads
            them: its checkpoint holds the backbone weights.
        backbone_kwargs (`dict`, *optional*):
            Overrides of the configuration read from `backbone` (e.g. `{"drop_path_rate": 0.1}`); not with
            `backbone_config`.
        decoder_type (`str`, *optional*, defaults to `"atm"`):
            `"atm"`: the ATM decoder. `"setr"`: the paper's baseline (Table 4, SETR-naive): a LayerNorm and two 1x1
            convolutions (the first to `decoder_hidden_size` channels with BatchNorm and ReLU, the second to the
            classes) on the single feature of `out_indices`, predicting per-pixel class logits on the token grid.
        segmentation_loss (`str`, *optional*):
            `"mask"` (default for the ATM decoder): the ATM loss, classification plus focal and dice mask terms for
            every supervised output. `"cross_entropy"`: per-pixel cross-entropy on the prediction at the label size
            (ignored pixels excluded); the only loss of the SETR decoder, and the ATM "CE loss" row of Table 4, where
            the ATM scores (the official `pred`) are the logits, as in the official `CE_loss=True` head.
        decoder_hidden_size (`int`, *optional*, defaults to 384):
            Width `d` of the ATM decoder (class queries, laterals); for the SETR decoder, the channels of its first
            1x1 convolution.
        decoder_num_attention_heads (`int`, *optional*, defaults to 12):
            Attention heads in the ATM decoder layers.
        decoder_layers_per_stage (`int`, *optional*, defaults to 3):
            ATM decoder layers in each stage.
        decoder_dropout (`float`, *optional*, defaults to 0.1):
            Dropout on the decoder's residual branches, MLP and attention weights (training only).
        drop_path_rate (`float`, *optional*, defaults to 0.1):
            Stochastic-depth rate of the last encoder layer; layer `i` uses `drop_path_rate * i / (depth - 1)`.
            Built-in encoder only: a backbone takes its own configuration's.
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
            2x2 down-sampled tokens, its keys and values all tokens (see `query_downsampling`), and later layers run
            at 1/32. `None` for the plain model. Built-in ViT encoder only.
        query_downsampling (`str`, *optional*, defaults to `"nearest"`):
            How the QD layer down-samples (the paper's Table 7). `"nearest"`: the queries (and the residual) are the
            2x2 nearest down-sampled tokens, keys and values all tokens: the *Shrunk* model. `"nearest_qkv"`: queries,
            keys and values are all the down-sampled tokens. `"conv"`: the queries (and the residual) come from a
            learnable 2x2 stride-2 convolution (new parameters, freshly initialised), keys and values all tokens.
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
    sub_configs = {"encoder_config": ViTConfig, "backbone_config": AutoConfig}

    def __init__(
        self,
        encoder_config: ViTConfig | dict | None = None,
        out_indices: list[int] | tuple[int, ...] | None = None,
        backbone_config: PreTrainedConfig | dict | None = None,
        backbone: str | None = None,
        use_pretrained_backbone: bool = False,
        backbone_kwargs: dict | None = None,
        decoder_type: str = "atm",
        segmentation_loss: str | None = None,
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
        query_downsampling: str = "nearest",
        query_upsampling: bool = False,
        per_layer_outputs: bool = False,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ):
        backbone_config = _resolve_backbone_config(backbone_config, backbone, backbone_kwargs)
        if backbone_config is not None:
            if encoder_config is not None:
                raise ValueError("Give either `encoder_config` (the built-in ViT) or a backbone, not both.")
            if out_indices is None:
                out_indices = backbone_config.out_indices
            else:
                # The backbone returns exactly the features the decoder reads.
                backbone_config = copy.deepcopy(backbone_config)
                backbone_config.out_indices = [int(i) for i in out_indices]
        elif encoder_config is None:
            encoder_config = ViTConfig(**_ENCODER_DEFAULTS)
        elif isinstance(encoder_config, dict):
            encoder_config = ViTConfig(**{**_ENCODER_DEFAULTS, **encoder_config})
        elif not isinstance(encoder_config, ViTConfig):
            raise TypeError(f"`encoder_config` must be a ViTConfig or a dict, got {type(encoder_config).__name__}.")
        if use_pretrained_backbone and backbone is None:
            raise ValueError(
                "`use_pretrained_backbone=True` needs `backbone`: the checkpoint to read the weights from."
            )
        self.encoder_config = encoder_config
        self.backbone_config = backbone_config
        self.backbone = backbone
        self.use_pretrained_backbone = use_pretrained_backbone
        # Folded into `backbone_config` above: saved as None, so that the saved configuration reloads as is.
        self.backbone_kwargs = None
        self.out_indices = [int(i) for i in (out_indices if out_indices is not None else (5, 7, 11))]
        self.decoder_type = decoder_type
        if segmentation_loss is None:
            segmentation_loss = "cross_entropy" if decoder_type == "setr" else "mask"
        self.segmentation_loss = segmentation_loss
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
        self.query_downsampling = query_downsampling
        self.query_upsampling = query_upsampling
        self.per_layer_outputs = per_layer_outputs
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        self._validate_sizes()
        if self.num_labels < 1:
            raise ValueError(f"A SegViT needs at least one class, got num_labels={self.num_labels}.")
        if 0 <= self.ignore_index < self.num_labels:
            raise ValueError(
                f"`ignore_index` {self.ignore_index} is the id of the class {self.id2label[self.ignore_index]!r}: that "
                f"class would never be supervised. Use a value outside [0, {self.num_labels}), e.g. 255 or -100."
            )
        if not self.out_indices:
            raise ValueError("`out_indices` must name at least one encoder layer.")
        if self.backbone_config is None:
            self._validate_encoder()
        else:
            self._validate_backbone()
        # The SETR decoder has no attention: its width is only a number of channels.
        if self.decoder_type == "atm" and self.decoder_hidden_size % self.decoder_num_attention_heads:
            raise ValueError(
                f"`decoder_hidden_size` {self.decoder_hidden_size} is not divisible by "
                f"`decoder_num_attention_heads` {self.decoder_num_attention_heads}."
            )
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
        self._validate_decoder_and_loss()

    def _validate_encoder(self) -> None:
        encoder = self.encoder_config
        depth = encoder.num_hidden_layers
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
        if self.shrink_index is not None and not 0 < self.shrink_index < depth:
            raise ValueError(f"`shrink_index` must be in (0, {depth}) or None, got {self.shrink_index}.")
        if self.query_downsampling not in QUERY_DOWNSAMPLING_MODES:
            raise ValueError(
                f"`query_downsampling` must be one of {QUERY_DOWNSAMPLING_MODES}, got {self.query_downsampling!r}."
            )
        if self.query_downsampling != "nearest" and self.shrink_index is None:
            raise ValueError(
                f"`query_downsampling={self.query_downsampling!r}` needs `shrink_index`: the layer that down-samples."
            )
        for size in as_pair(encoder.image_size):
            if size % as_pair(encoder.patch_size)[0]:
                raise ValueError(
                    f"Encoder image_size {encoder.image_size} must be a multiple of the patch size {encoder.patch_size}."
                )

    def _validate_backbone(self) -> None:
        if self.shrink_index is not None or self.query_upsampling or self.query_downsampling != "nearest":
            raise ValueError(
                "The Shrunk structure (`shrink_index`, `query_downsampling`, `query_upsampling`) changes the built-in "
                f"ViT encoder's layers; it cannot be applied to a {self.backbone_config.model_type!r} backbone."
            )
        if list(self.out_indices) != sorted(set(self.out_indices)):
            raise ValueError(f"`out_indices` {self.out_indices} must be strictly increasing (shallow to deep).")
        # Raises for a backbone whose stride this package cannot tell.
        backbone_stage_strides(self.backbone_config)

    def _validate_decoder_and_loss(self) -> None:
        if self.decoder_type not in DECODER_TYPES:
            raise ValueError(f"`decoder_type` must be one of {DECODER_TYPES}, got {self.decoder_type!r}.")
        if self.segmentation_loss not in SEGMENTATION_LOSSES:
            raise ValueError(
                f"`segmentation_loss` must be one of {SEGMENTATION_LOSSES}, got {self.segmentation_loss!r}."
            )
        if self.decoder_type != "setr":
            return
        if len(self.out_indices) != 1 or self.query_upsampling or self.per_layer_outputs:
            raise ValueError(
                "The SETR decoder reads one feature map: give a single out_index (the paper's baseline uses the last "
                f"layer) and no `query_upsampling` / `per_layer_outputs`; got out_indices {self.out_indices}."
            )
        if self.segmentation_loss != "cross_entropy":
            raise ValueError(
                "The SETR decoder predicts per-pixel class logits and is trained with `segmentation_loss="
                "\"cross_entropy\"`: it has no class queries for the mask loss."
            )

    @property
    def feature_strides(self) -> list[int]:
        """
        Input pixels per cell of each decoder input feature map (one per `out_indices` entry): the patch size of the
        built-in encoder (twice that after query down-sampling), or the stride of each backbone stage. Square
        cells: for a non-square patch, its height.
        """
        if self.backbone_config is not None:
            strides = backbone_stage_strides(self.backbone_config)
            return [strides[index] for index in self.out_indices]
        patch = as_pair(self.encoder_config.patch_size)[0]
        shrunk = self.shrink_index is not None
        return [2 * patch if shrunk and index >= self.shrink_index else patch for index in self.out_indices]

    @property
    def output_stride(self) -> int:
        """
        Input pixels per cell of the grid the masks are predicted on (the first, shallowest feature's): what
        [`SegViTImageProcessor`] and `segmentation_scores` take as `patch_size`.
        """
        return self.feature_strides[0]

    def _validate_sizes(self) -> None:
        # Checked first: a zero or negative size would otherwise fail much later, inside torch, without its name.
        encoder = self.encoder_config
        sizes = {name: getattr(self, name) for name in _POSITIVE_DECODER_SIZES}
        if encoder is not None:
            sizes.update({f"encoder_config.{name}": getattr(encoder, name) for name in _POSITIVE_ENCODER_SIZES})
        for name, value in sizes.items():
            positive_pair(value, name)

    @property
    def num_stages(self) -> int:
        """Number of ATM stages: one per selected encoder layer, or a single one after query up-sampling."""
        return 1 if self.query_upsampling else len(self.out_indices)


def _resolve_backbone_config(
    backbone_config: PreTrainedConfig | dict | None, backbone: str | None, backbone_kwargs: dict | None
) -> PreTrainedConfig | None:
    """The backbone's configuration: given, rebuilt from its dict, or read from the `backbone` checkpoint."""
    if backbone_config is not None and backbone_kwargs:
        raise ValueError(
            "`backbone_kwargs` override the configuration read from `backbone`; not with `backbone_config`."
        )
    if isinstance(backbone_config, dict):
        values = dict(backbone_config)
        model_type = values.pop("model_type", None)
        if model_type not in CONFIG_MAPPING:
            raise ValueError(
                f"`backbone_config` needs the `model_type` of a transformers backbone, got {model_type!r}."
            )
        backbone_config = CONFIG_MAPPING[model_type](**values)
    elif backbone_config is None and backbone is not None:
        backbone_config = AutoConfig.from_pretrained(backbone, **(backbone_kwargs or {}))
    if backbone_config is not None and not hasattr(backbone_config, "stage_names"):
        raise ValueError(
            f"`backbone_config` must be the configuration of a transformers backbone (an `AutoBackbone` model, "
            f"with `stage_names` and `out_indices`), got {type(backbone_config).__name__}."
        )
    return backbone_config


def backbone_stage_strides(backbone_config: PreTrainedConfig) -> list[int]:
    """
    Input pixels per cell of each stage of a transformers backbone (its `stage_names`, stem first). Hierarchical
    backbones (a configuration with `depths`: Swin, ConvNeXt, ...) start at the stem's stride, `patch_size` (4 when the
    configuration has none, as ResNet-style stems), keep it in the first stage and halve the resolution at each later
    one; plain ones (DINOv2, ViTDet, ...) keep `patch_size` throughout. The model checks its feature maps against
    these strides, so a backbone that breaks the rule fails with its name rather than misplacing the masks.
    """
    stages = len(backbone_config.stage_names)
    patch_size = getattr(backbone_config, "patch_size", None)
    if hasattr(backbone_config, "depths"):
        stem = as_pair(patch_size)[0] if patch_size is not None else 4
        return [stem] + [stem * 2**stage for stage in range(stages - 1)]
    if patch_size is None:
        raise ValueError(
            f"Cannot tell the feature strides of a {backbone_config.model_type!r} backbone: its configuration has "
            "neither `depths` (hierarchical) nor `patch_size` (plain)."
        )
    return [as_pair(patch_size)[0]] * stages


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


__all__ = ["IGNORE_INDEX", "SegViTConfig", "as_pair", "backbone_stage_strides", "positive_pair"]
