"""PyTorch SegViT: plain ViT encoder + Attention-to-Mask (ATM) decoder (Zhang et al., NeurIPS 2022)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import load_backbone
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.vit.modeling_vit import ViTLayer, ViTPatchEmbeddings, eager_attention_forward
from transformers.utils import ModelOutput

from .configuration_segvit import SegViTConfig, as_pair


@dataclass
class SegViTModelOutput(ModelOutput):
    """
    Output of [`SegViTModel`]: the encoder features that feed the ATM decoder.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, grid_height * grid_width, hidden_size)`):
            Patch tokens after the last encoder layer (no final LayerNorm, no CLS token); with a transformers
            backbone, the tokens of the deepest feature map.
        feature_maps (`tuple(torch.FloatTensor)`):
            One map per `config.out_indices` entry, shallow to deep, each of shape
            `(batch_size, hidden_size, grid_height, grid_width)` where the grid is the input size divided by the patch
            size, rounded up (inputs are zero-padded at the bottom and right to a multiple of the patch size). Layers
            after query down-sampling (`config.shrink_index`) have the halved grid, `ceil(grid / 2)`. With a
            transformers backbone, its feature maps: each stage's channels, on the grid `ceil(size / stride)`
            (`config.feature_strides`).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            Embedding output and each layer's output, each `(batch_size, grid_height * grid_width, hidden_size)`;
            with a transformers backbone, as it returns them.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            Each encoder layer's softmax attention, `(batch_size, num_heads, sequence_length, sequence_length)`; with
            a transformers backbone, as it returns them.
    """

    last_hidden_state: torch.FloatTensor | None = None
    feature_maps: tuple[torch.FloatTensor, ...] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SegViTSemanticSegmenterOutput(ModelOutput):
    """
    Output of [`SegViTForSemanticSegmentation`]: what the ATM decoder computes, on the token grid. Nothing is computed
    at the image's resolution: [`SegViTImageProcessor.post_process_semantic_segmentation`] turns these logits into
    label maps at any size, and [`~image_processing_segvit.segmentation_scores`] gives the official model's
    full-resolution scores (its `pred`).

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            ATM loss summed over all decoder stages: `class_weight * CE + focal_weight * focal + dice_weight * dice`;
            with `config.segmentation_loss="cross_entropy"`, the per-pixel cross-entropy of the prediction.
        class_queries_logits (`torch.FloatTensor` of shape `(batch_size, num_labels, num_labels + 1)`):
            Class logits of each class query after the last stage; the last column is "no object". The SETR decoder
            has no queries: its query `c` is class `c` with certainty (see [`SegViTSETRHead`]).
        masks_queries_logits (`torch.FloatTensor` of shape `(batch_size, num_labels, grid_height, grid_width)`):
            Mask logits of each class query on the token grid (1/16 of the input; 1/32 when the last feature comes
            after query down-sampling without query up-sampling; `config.output_stride` for a transformers
            backbone), accumulated over the cascade's stages. The SETR decoder gives its per-pixel class
            log-probabilities.
        auxiliary_logits (`list[dict[str, torch.FloatTensor]]`):
            The other supervised outputs, first first, each with `class_queries_logits` and `masks_queries_logits`:
            the earlier cascade stages (masks accumulated up to that stage), or for the *Shrunk* model the first ATM
            layers after query up-sampling. The loss supervises them too.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            Encoder hidden states, see [`SegViTModelOutput`].
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            Encoder attentions, see [`SegViTModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    class_queries_logits: torch.FloatTensor | None = None
    masks_queries_logits: torch.FloatTensor | None = None
    auxiliary_logits: list[dict[str, torch.FloatTensor]] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def resize_position_embeddings(position_embeddings: torch.Tensor, source_grid, target_grid) -> torch.Tensor:
    """
    Bicubically resizes a `(1, source_h * source_w, dim)` position table to `(1, target_h * target_w, dim)`
    (align_corners=False, as the official model). Returned unchanged when the grids are equal.
    """
    source_grid, target_grid = tuple(source_grid), tuple(target_grid)
    # Under torch.compile / torch.export the target grid is symbolic: comparing it would specialise the graph on the
    # source grid, so the resize runs there at every size (at equal sizes it returns the table exactly).
    if not torch.compiler.is_compiling() and source_grid == target_grid:
        return position_embeddings
    dim = position_embeddings.shape[-1]
    table = position_embeddings.reshape(1, *source_grid, dim).permute(0, 3, 1, 2)
    # bicubic is not implemented for every low-precision dtype: resize in fp32.
    table = F.interpolate(table.float(), size=target_grid, mode="bicubic", align_corners=False)
    return table.to(position_embeddings.dtype).flatten(2).transpose(1, 2)


class SegViTEmbeddings(nn.Module):
    """
    Patch embeddings plus position embeddings, without the CLS token: the official encoder adds the CLS slot's
    position embedding to the CLS token and then drops that token, so neither affects the patch tokens.
    """

    def __init__(self, config: SegViTConfig):
        super().__init__()
        encoder_config = config.encoder_config
        self.patch_embeddings = ViTPatchEmbeddings(encoder_config)
        self.patch_size = as_pair(encoder_config.patch_size)
        image_size = as_pair(encoder_config.image_size)
        self.position_grid = (image_size[0] // self.patch_size[0], image_size[1] // self.patch_size[1])
        num_positions = self.position_grid[0] * self.position_grid[1]
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_positions, encoder_config.hidden_size))
        self.dropout = nn.Dropout(encoder_config.hidden_dropout_prob)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Returns the tokens `(batch, grid_h * grid_w, hidden_size)` and the grid `(grid_h, grid_w)`."""
        height, width = pixel_values.shape[-2:]
        # Ceiling division, not `-height % patch`: under torch.compile / torch.export the sizes are symbolic, and the
        # modulo of a negative size breaks inductor at the second input size and makes export guard on it.
        patch_height, patch_width = self.patch_size
        grid = ((height + patch_height - 1) // patch_height, (width + patch_width - 1) // patch_width)
        pad_bottom, pad_right = grid[0] * patch_height - height, grid[1] * patch_width - width
        # As the official patch embedding ("corner" adaptive padding): pad bottom/right, never crop. Padding by zero
        # pixels is a copy, not skipped: a branch on the symbolic sizes would specialise compiled graphs.
        pixel_values = F.pad(pixel_values, (0, pad_right, 0, pad_bottom))
        embeddings = self.patch_embeddings(pixel_values)
        embeddings = embeddings + resize_position_embeddings(self.position_embeddings, self.position_grid, grid)
        return self.dropout(embeddings), grid


class SegViTDropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample while training."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        keep = hidden_states.new_empty(shape).bernoulli_(keep_prob)
        return hidden_states * keep / keep_prob

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


def downsample_token_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """
    2x2 nearest down-sampling of `(batch, grid_h * grid_w, dim)` tokens: keeps even rows and columns (the top-left
    token of each 2x2 cell). Odd grids keep their last row/column, giving `(ceil(grid_h / 2), ceil(grid_w / 2))`.
    """
    # index_select rather than `[:, ::2, ::2]`: torch.export guards on the strides of such a view (on the grid's
    # parity), which would tie an exported program to even or odd grids.
    rows = torch.arange(0, grid[0], 2, device=tokens.device)
    columns = torch.arange(0, grid[1], 2, device=tokens.device)
    kept = tokens.unflatten(1, grid).index_select(1, rows).index_select(2, columns)
    return kept.flatten(1, 2), (kept.shape[1], kept.shape[2])


class SegViTLayer(ViTLayer):
    """
    transformers' pre-norm ViT layer (same weights and names) with stochastic depth on both residual branches.

    With `query_downsampling` set it is the *Shrunk* model's query-based down-sampling (QD) layer, whose output lives
    on the halved grid (the paper's Table 7 compares the three ways):

    - `"nearest"`: the attention's queries (and the residual) are the 2x2 nearest down-sampled tokens while keys and
      values are all tokens, so the pretrained weights are used unchanged (the *Shrunk* model);
    - `"nearest_qkv"`: queries, keys and values are all the down-sampled tokens: an ordinary layer on the halved grid;
    - `"conv"`: as `"nearest"`, but the queries come from a learnable 2x2 stride-2 convolution of the tokens.
    """

    def __init__(self, config, drop_path_rate: float = 0.0, query_downsampling: str | None = None):
        super().__init__(config)
        self.drop_path = SegViTDropPath(drop_path_rate)
        self.query_downsampling = query_downsampling
        self.query_downsampler = (
            nn.Conv2d(config.hidden_size, config.hidden_size, kernel_size=2, stride=2)
            if query_downsampling == "conv"
            else None
        )

    def _downsample(self, hidden_states: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.query_downsampler is None:
            return downsample_token_grid(hidden_states, grid)
        maps = hidden_states.transpose(1, 2).unflatten(-1, grid)
        # An odd grid gets a zero row/column so that the output is ceil(grid / 2), the grid nearest down-sampling gives.
        maps = self.query_downsampler(F.pad(maps, (0, grid[1] % 2, 0, grid[0] % 2)))
        return maps.flatten(2).transpose(1, 2), (maps.shape[-2], maps.shape[-1])

    def _attend_from_downsampled_queries(self, queries: torch.Tensor, tokens: torch.Tensor, **kwargs):
        attention = self.attention
        batch_size = queries.shape[0]
        query = attention.q_proj(queries).view(batch_size, queries.shape[1], -1, attention.head_dim).transpose(1, 2)
        key = attention.k_proj(tokens).view(batch_size, tokens.shape[1], -1, attention.head_dim).transpose(1, 2)
        value = attention.v_proj(tokens).view(batch_size, tokens.shape[1], -1, attention.head_dim).transpose(1, 2)
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            attention.config._attn_implementation, eager_attention_forward
        )
        attended, weights = attention_interface(
            attention,
            query,
            key,
            value,
            None,
            dropout=attention.attention_dropout if self.training else 0.0,
            scaling=attention.scaling,
            **kwargs,
        )
        return attention.o_proj(attended.reshape(batch_size, queries.shape[1], -1)), weights

    def forward(
        self, hidden_states: torch.Tensor, grid: tuple[int, int], **kwargs
    ) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        """
        Args:
            hidden_states: `(batch, grid_h * grid_w, hidden_size)` tokens.
            grid: their `(grid_h, grid_w)`.
        Returns:
            The new tokens, their grid (halved by a QD layer) and the attention weights (eager attention only).
        """
        if self.query_downsampling is None:
            residual, out_grid = hidden_states, grid
            attention_output, attention_weights = self.attention(self.layernorm_before(hidden_states), None, **kwargs)
        else:
            residual, out_grid = self._downsample(hidden_states, grid)
            queries = self.layernorm_before(residual)
            if self.query_downsampling == "nearest_qkv":
                attention_output, attention_weights = self.attention(queries, None, **kwargs)
            else:
                keys_values = self.layernorm_before(hidden_states)
                attention_output, attention_weights = self._attend_from_downsampled_queries(
                    queries, keys_values, **kwargs
                )
        hidden_states = residual + self.drop_path(self.dropout(attention_output))
        mlp_output = self.mlp(self.layernorm_after(hidden_states))
        hidden_states = hidden_states + self.drop_path(self.dropout(mlp_output))
        return hidden_states, out_grid, attention_weights


class SegViTATMCrossAttention(nn.Module):
    """
    Cross-attention from class queries to image tokens that also returns the ATM mask: the scaled query-key
    similarity *before* softmax, averaged over heads.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.o_proj = nn.Linear(hidden_size, hidden_size)
        self.attention_dropout = nn.Dropout(dropout)

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            queries: `(batch, num_queries, hidden_size)`.
            tokens: `(batch, num_tokens, hidden_size)`.
        Returns:
            The attended queries `(batch, num_queries, hidden_size)` and the head-averaged similarity
            `(batch, num_queries, num_tokens)`.
        """
        query = self._split_heads(self.q_proj(queries))
        key = self._split_heads(self.k_proj(tokens))
        value = self._split_heads(self.v_proj(tokens))
        similarity = torch.matmul(query, key.transpose(-1, -2)) * self.scale
        weights = self.attention_dropout(similarity.softmax(dim=-1))
        attended = torch.matmul(weights, value).transpose(1, 2).flatten(2)
        return self.o_proj(attended), similarity.mean(dim=1)


class SegViTATMLayer(nn.Module):
    """
    One post-norm ATM decoder layer: self-attention among the class queries, cross-attention to the image tokens
    (whose similarity map is this layer's mask), then a ReLU MLP; residual + LayerNorm after each.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
        self.self_attn_dropout = nn.Dropout(dropout)
        self.self_attn_norm = nn.LayerNorm(hidden_size)
        self.cross_attn = SegViTATMCrossAttention(hidden_size, num_heads, dropout)
        self.cross_attn_dropout = nn.Dropout(dropout)
        self.cross_attn_norm = nn.LayerNorm(hidden_size)
        self.fc1 = nn.Linear(hidden_size, 4 * hidden_size)
        self.fc2 = nn.Linear(4 * hidden_size, hidden_size)
        self.mlp_dropout = nn.Dropout(dropout)
        self.mlp_output_dropout = nn.Dropout(dropout)
        self.mlp_norm = nn.LayerNorm(hidden_size)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the updated queries `(batch, num_queries, d)` and mask logits `(batch, num_queries, num_tokens)`."""
        attended, _ = self.self_attn(queries, queries, queries, need_weights=False)
        queries = self.self_attn_norm(queries + self.self_attn_dropout(attended))
        attended, mask_logits = self.cross_attn(queries, tokens)
        queries = self.cross_attn_norm(queries + self.cross_attn_dropout(attended))
        mlp_output = self.fc2(self.mlp_dropout(F.relu(self.fc1(queries))))
        queries = self.mlp_norm(queries + self.mlp_output_dropout(mlp_output))
        return queries, mask_logits


class SegViTLateral(nn.Module):
    """An encoder feature map brought to the decoder width: Linear then LayerNorm on its tokens."""

    def __init__(self, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, hidden_size)
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        """`(batch, hidden_size, grid_h, grid_w)` -> tokens `(batch, grid_h * grid_w, decoder_hidden_size)`."""
        return self.norm(self.proj(feature_map.flatten(2).transpose(1, 2)))


class SegViTATMStage(nn.Module):
    """
    One ATM stage: the class queries go through the ATM layers over one feature map's tokens, each layer yielding
    mask logits. In the cascade the tokens are the lateral of an encoder feature with `in_channels` channels; after
    query up-sampling they are the QU output, already at the decoder width (`in_channels=None`).
    """

    def __init__(self, config: SegViTConfig, in_channels: int | None):
        super().__init__()
        width = config.decoder_hidden_size
        self.lateral = SegViTLateral(in_channels, width) if in_channels is not None else None
        self.layers = nn.ModuleList(
            SegViTATMLayer(width, config.decoder_num_attention_heads, config.decoder_dropout)
            for _ in range(config.decoder_layers_per_stage)
        )

    def forward(self, queries: torch.Tensor, feature_map: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            queries: class queries `(batch, num_labels, d)`.
            feature_map: `(batch, channels, grid_h, grid_w)`.
        Returns:
            For each layer: the updated queries and its mask logits `(batch, num_labels, grid_h, grid_w)`.
        """
        grid = feature_map.shape[-2:]
        if self.lateral is not None:
            tokens = self.lateral(feature_map)
        else:
            tokens = feature_map.flatten(2).transpose(1, 2)
        per_layer = []
        for layer in self.layers:
            queries, mask_logits = layer(queries, tokens)
            per_layer.append((queries, mask_logits.unflatten(-1, grid)))
        return per_layer


class SegViTQueryUpsampler(nn.Module):
    """
    Query-based up-sampling (QU) of the *Shrunk* model: learnable queries, one per 1/16 grid cell of the training
    crop, go through standard post-norm transformer decoder layers over the lateral of the shallow (1/16) feature,
    then over that of the deep (1/32) one. The output tokens form a 1/16 map at the decoder width. For other input
    sizes the query table is resized bicubically, as the position embeddings are.
    """

    def __init__(self, config: SegViTConfig):
        super().__init__()
        encoder_config = config.encoder_config
        image_size, patch_size = as_pair(encoder_config.image_size), as_pair(encoder_config.patch_size)
        self.query_grid = (image_size[0] // patch_size[0], image_size[1] // patch_size[1])
        width = config.decoder_hidden_size
        self.queries = nn.Embedding(self.query_grid[0] * self.query_grid[1], width)
        self.laterals = nn.ModuleList(SegViTLateral(encoder_config.hidden_size, width) for _ in config.out_indices)
        self.decoders = nn.ModuleList(
            nn.ModuleList(
                nn.TransformerDecoderLayer(
                    width, config.decoder_num_attention_heads, 4 * width, config.decoder_dropout, batch_first=True
                )
                for _ in range(config.decoder_layers_per_stage)
            )
            for _ in config.out_indices
        )

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """
        Args:
            feature_maps: the shallow (1/16) and deep (1/32) encoder features, `(batch, hidden_size, h, w)` each.
        Returns:
            The up-sampled tokens as a map `(batch, decoder_hidden_size, grid_h, grid_w)` on the shallow feature's grid.
        """
        grid = tuple(feature_maps[0].shape[-2:])
        queries = resize_position_embeddings(self.queries.weight.unsqueeze(0), self.query_grid, grid)
        queries = queries.expand(feature_maps[0].shape[0], -1, -1)
        for lateral, decoder, feature_map in zip(self.laterals, self.decoders, feature_maps):
            tokens = lateral(feature_map)
            for layer in decoder:
                queries = layer(queries, tokens)
        return queries.transpose(1, 2).unflatten(-1, grid)


class SegViTATMDecoder(nn.Module):
    """
    The ATM decoder. One learnable query per class and a shared linear head that turns queries into class logits
    (plus "no object").

    - Cascade (the SegViT model): one ATM stage per encoder feature, deepest first, each continuing from the previous
      stage's queries. A stage's mask is its last layer's; masks are accumulated over stages (resized to the last
      stage's grid). One output per stage.
    - After query up-sampling (the *Shrunk* model): a single ATM stage over the QU map. One output per layer, masks
      not accumulated. A one-stage cascade does the same with `config.per_layer_outputs`.

    Feature maps of different resolutions (a hierarchical backbone) need nothing more: each stage attends to its own
    feature's tokens, and the accumulation resizes every stage's masks to the last (finest) stage's grid.
    """

    def __init__(self, config: SegViTConfig, in_channels: list[int]):
        super().__init__()
        if config.query_upsampling:
            self.query_upsampler = SegViTQueryUpsampler(config)
            self.stages = nn.ModuleList([SegViTATMStage(config, in_channels=None)])
        else:
            self.query_upsampler = None
            # Stage k reads the k-th deepest feature.
            self.stages = nn.ModuleList(SegViTATMStage(config, channels) for channels in in_channels[::-1])
        self.per_layer_outputs = config.query_upsampling or config.per_layer_outputs
        self.class_queries = nn.Embedding(config.num_labels, config.decoder_hidden_size)
        self.class_head = nn.Linear(config.decoder_hidden_size, config.num_labels + 1)

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            feature_maps: encoder features, shallow to deep, each `(batch, hidden_size, grid_h, grid_w)`.
        Returns:
            The supervised outputs, the prediction last: class logits `(batch, num_labels, num_labels + 1)` and mask
            logits `(batch, num_labels, grid_h, grid_w)` on the final grid.
        """
        batch_size = feature_maps[0].shape[0]
        queries = self.class_queries.weight.unsqueeze(0).expand(batch_size, -1, -1)
        if self.per_layer_outputs:
            tokens = self.query_upsampler(feature_maps) if self.query_upsampler is not None else feature_maps[-1]
            per_layer = self.stages[0](queries, tokens)
            return [(self.class_head(layer_queries), mask_logits) for layer_queries, mask_logits in per_layer]

        stage_queries, stage_masks = [], []
        for stage, feature_map in zip(self.stages, feature_maps[::-1]):
            queries, mask_logits = stage(queries, feature_map)[-1]
            stage_queries.append(queries)
            stage_masks.append(mask_logits)

        final_grid = stage_masks[-1].shape[-2:]
        outputs, accumulated = [], None
        for queries, mask_logits in zip(stage_queries, stage_masks):
            mask_logits = F.interpolate(mask_logits, size=final_grid, mode="bilinear", align_corners=False)
            accumulated = mask_logits if accumulated is None else accumulated + mask_logits
            outputs.append((self.class_head(queries), accumulated))
        return outputs

    @staticmethod
    def segmentation_logits(
        class_logits: torch.Tensor, mask_logits: torch.Tensor, size: tuple[int, int], cell_size: tuple[int, int]
    ) -> torch.Tensor:
        """
        The ATM scores `(batch, num_labels, size[0], size[1])` of one output at the label size (the official `pred`):
        `sum_n softmax(class_logits)[n, c] * sigmoid(mask_n)`, "no object" dropped. The cross-entropy loss takes them
        as logits, as the official head with `CE_loss=True` does.
        """
        masks = upsample_mask_logits(mask_logits, size, cell_size).sigmoid()
        class_probabilities = class_logits.softmax(dim=-1)[..., :-1]
        return torch.einsum("bnc,bnhw->bchw", class_probabilities, masks)


class SegViTSETRHead(nn.Module):
    """
    The paper's baseline decoder (Table 4, SETR-naive): per-pixel classification of one feature map by two 1x1
    convolutions, the first with BatchNorm and ReLU, after a LayerNorm of its tokens (as mmseg's SETR head).

    It has no queries, but gives its prediction in the ATM decoder's output format, so that post-processing,
    inference and metrics serve both: query `c` is class `c` with certainty (class logits 0 for `c` and the dtype's
    minimum elsewhere, whose softmax is exactly one-hot) and its mask logits are the log-probabilities of class `c`
    on the token grid (log-softmax over classes). The ATM score `sigmoid(mask)` is then `p / (1 + p)`, increasing
    in the class probability `p` and never saturating at 1, so every argmax is the classifier's.
    """

    def __init__(self, config: SegViTConfig, in_channels: list[int]):
        super().__init__()
        channels = in_channels[-1]
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        # No bias: the BatchNorm that follows has one.
        self.conv = nn.Conv2d(channels, config.decoder_hidden_size, kernel_size=1, bias=False)
        self.batch_norm = nn.BatchNorm2d(config.decoder_hidden_size)
        self.classifier = nn.Conv2d(config.decoder_hidden_size, config.num_labels, kernel_size=1)

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            feature_maps: encoder features; the last (deepest) one is classified.
        Returns:
            One output: one-hot class logits `(batch, num_labels, num_labels + 1)` and the per-pixel
            log-probabilities `(batch, num_labels, grid_h, grid_w)`.
        """
        hidden_states = self.norm(feature_maps[-1].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        hidden_states = F.relu(self.batch_norm(self.conv(hidden_states)))
        log_probabilities = self.classifier(hidden_states).log_softmax(dim=1)
        batch_size, num_labels = log_probabilities.shape[:2]
        certain = torch.eye(num_labels, num_labels + 1, dtype=torch.bool, device=log_probabilities.device)
        class_logits = torch.zeros_like(certain, dtype=log_probabilities.dtype)
        class_logits = class_logits.masked_fill(~certain, torch.finfo(log_probabilities.dtype).min)
        return [(class_logits.expand(batch_size, -1, -1), log_probabilities)]

    @staticmethod
    def segmentation_logits(
        class_logits: torch.Tensor, mask_logits: torch.Tensor, size: tuple[int, int], cell_size: tuple[int, int]
    ) -> torch.Tensor:
        """The per-pixel log-probabilities bilinearly resized to the label size: the cross-entropy loss's logits."""
        return upsample_mask_logits(mask_logits, size, cell_size)


def upsample_mask_logits(mask_logits: torch.Tensor, size: tuple[int, int], cell_size: tuple[int, int]) -> torch.Tensor:
    """
    Bilinearly resizes grid mask logits `(batch, queries, grid_h, grid_w)` to the pixels they cover (`cell_size`
    pixels per cell), then crops the bottom/right padding the encoder added: `(batch, queries, size[0], size[1])`.
    """
    covered = (mask_logits.shape[-2] * cell_size[0], mask_logits.shape[-1] * cell_size[1])
    upsampled = F.interpolate(mask_logits, size=covered, mode="bilinear", align_corners=False)
    return upsampled[..., : size[0], : size[1]]


def mask_cell_size(mask_grid, image_size, patch_size) -> tuple[int, int]:
    """
    Pixels per mask cell for masks on `mask_grid` predicted from an `image_size` input: the patch size on the token
    grid (`ceil(image_size / patch_size)`), twice that on the grid halved by query down-sampling. A `ValueError` for a
    grid that is neither.
    """
    # int(): under torch.jit.trace (FLOP counting) sizes are 0-d tensors.
    patch = tuple(int(side) for side in patch_size)
    tokens = tuple(-(-int(pixels) // step) for pixels, step in zip(image_size, patch))
    grid = tuple(int(cells) for cells in mask_grid)
    if grid == tokens:
        return patch
    if grid == tuple(-(-count // 2) for count in tokens):
        return tuple(2 * step for step in patch)
    raise ValueError(
        f"Masks on a {grid} grid do not come from a {tuple(int(side) for side in image_size)} input with patch size "
        f"{patch}: its token grid is {tokens}."
    )


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Per-mask focal loss, averaged over pixels: `(num_masks, pixels)` -> `(num_masks,)`."""
    probabilities = logits.sigmoid()
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probabilities * targets + (1 - probabilities) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * cross_entropy * (1 - p_t) ** gamma).mean(dim=1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-mask dice loss with +1 smoothing: `(num_masks, pixels)` -> `(num_masks,)`."""
    probabilities = logits.sigmoid()
    numerator = 2 * (probabilities * targets).sum(-1)
    denominator = probabilities.sum(-1) + targets.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


class SegViTATMLoss(nn.Module):
    """
    The ATM loss. There is no Hungarian matching: query `i` is class `i`. For each stage, cross-entropy over all
    queries (absent classes target "no object", weighted `no_object_weight`) plus focal and dice losses on the masks
    of the classes present, normalised by the number of present masks in the (global) batch. Stages are summed.

    Ignored pixels count as negatives for every mask, as in the official implementation. Images whose pixels are
    all ignored carry no supervision and are left out of every term.
    """

    def __init__(self, config: SegViTConfig):
        super().__init__()
        self.num_labels = config.num_labels
        self.ignore_index = config.ignore_index
        self.class_weight = config.class_weight
        self.focal_weight = config.focal_weight
        self.dice_weight = config.dice_weight
        self.focal_alpha = config.focal_alpha
        self.focal_gamma = config.focal_gamma
        self.no_object_weight = config.no_object_weight

    def _num_masks(self, present: torch.Tensor) -> float:
        """Present masks per process, averaged over processes under distributed training, at least 1."""
        num_masks = present.sum().float().reshape(1)
        world_size = 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(num_masks)
            world_size = torch.distributed.get_world_size()
        return max(num_masks.item() / world_size, 1.0)

    def forward(
        self,
        stage_outputs: list[tuple[torch.Tensor, torch.Tensor]],
        labels: torch.Tensor,
        cell_size: tuple[int, int],
    ) -> torch.Tensor:
        """
        Args:
            stage_outputs: per stage, class logits `(batch, num_labels, num_labels + 1)` and mask logits
                `(batch, num_labels, grid_h, grid_w)`.
            labels: `(batch, height, width)` class ids, `ignore_index` for unlabelled pixels.
            cell_size: pixels per mask cell, to place the mask grid on the label map.
        Returns:
            The total loss, a scalar in fp32.
        """
        batch_size = labels.shape[0]
        valid = labels != self.ignore_index
        labelled_images = valid.flatten(1).any(dim=1)
        classes_or_overflow = torch.where(valid, labels, self.num_labels).flatten(1)
        present = torch.zeros(batch_size, self.num_labels + 1, dtype=torch.bool, device=labels.device)
        present.scatter_(1, classes_or_overflow, True)
        present = present[:, : self.num_labels]
        num_masks = self._num_masks(present)

        query_ids = torch.arange(self.num_labels, device=labels.device)
        target_classes = torch.where(present, query_ids, self.num_labels)
        image_ids, class_ids = present.nonzero(as_tuple=True)
        target_masks = (labels[image_ids] == class_ids[:, None, None]).flatten(1)

        # Half-precision logits (autocast) are promoted to fp32; fp64 stays fp64.
        loss_dtype = torch.promote_types(stage_outputs[-1][0].dtype, torch.float32)
        target_masks = target_masks.to(loss_dtype)
        class_weights = torch.ones(self.num_labels + 1, device=labels.device, dtype=loss_dtype)
        class_weights[-1] = self.no_object_weight
        total = labels.new_zeros((), dtype=loss_dtype)
        for class_logits, mask_logits in stage_outputs:
            class_logits, mask_logits = class_logits.to(loss_dtype), mask_logits.to(loss_dtype)
            if labelled_images.any():
                cross_entropy = F.cross_entropy(
                    class_logits[labelled_images].transpose(1, 2),
                    target_classes[labelled_images],
                    weight=class_weights,
                )
            else:
                # Nothing to learn from, but every parameter stays in the graph (DDP expects gradients).
                cross_entropy = class_logits.sum() * 0.0
            if image_ids.numel():
                selected = mask_logits[image_ids, class_ids][:, None]
                selected = upsample_mask_logits(selected, labels.shape[-2:], cell_size).flatten(1)
                focal = sigmoid_focal_loss(selected, target_masks, self.focal_alpha, self.focal_gamma).sum()
                focal = focal / num_masks
                dice = dice_loss(selected, target_masks).sum() / num_masks
            else:
                focal = dice = mask_logits.sum() * 0.0
            total = total + self.class_weight * cross_entropy + self.focal_weight * focal + self.dice_weight * dice
        return total


class SegViTCrossEntropyLoss(nn.Module):
    """
    Per-pixel cross-entropy of the prediction's class logits at the label size (`segmentation_loss="cross_entropy"`).
    Averaged over all label pixels, ignored ones contributing zero, as mmseg 0.24's default that the official code
    used (`avg_non_ignore=False`); an all-ignored batch thus gives a zero that keeps every parameter in the graph.
    """

    def __init__(self, config: SegViTConfig):
        super().__init__()
        self.ignore_index = config.ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`(batch, num_labels, height, width)` logits and `(batch, height, width)` labels -> scalar loss."""
        losses = F.cross_entropy(logits, labels, ignore_index=self.ignore_index, reduction="none")
        return losses.sum() / labels.numel()


class SegViTPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the `from_pretrained` plumbing shared by the SegViT models."""

    config_class = SegViTConfig
    config: SegViTConfig
    base_model_prefix = "segvit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["SegViTEmbeddings", "SegViTLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = True

    def __init__(self, config: SegViTConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        # transformers resolves the attention implementation on the top-level config only at construction; the
        # reused ViT layers read it from the encoder sub-config.
        if config.encoder_config is not None:
            config.encoder_config._attn_implementation_internal = config._attn_implementation

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.MultiheadAttention):
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, SegViTEmbeddings):
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            # Class and QU queries start as standard-normal tables (nn.Embedding's own default, as the official head).
            init.normal_(module.weight, mean=0.0, std=1.0)


def _image_channels(config: SegViTConfig) -> int:
    return (config.backbone_config or config.encoder_config).num_channels


def _check_pixel_values(pixel_values: torch.Tensor, num_channels: int) -> None:
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"`pixel_values` must be a torch.Tensor, got {type(pixel_values).__name__}.")
    if pixel_values.ndim != 4:
        raise ValueError(
            f"`pixel_values` must have shape (batch_size, {num_channels}, height, width), got {tuple(pixel_values.shape)}."
        )
    if pixel_values.shape[1] != num_channels:
        raise ValueError(
            f"`pixel_values` must have {num_channels} channels in dimension 1 (batch_size, channels, height, width), "
            f"got shape {tuple(pixel_values.shape)}."
        )
    if not pixel_values.is_floating_point():
        raise TypeError(f"`pixel_values` must be a floating-point tensor, got {pixel_values.dtype}.")
    if pixel_values.shape[0] == 0 or pixel_values.shape[-1] == 0 or pixel_values.shape[-2] == 0:
        raise ValueError(f"`pixel_values` has an empty dimension: shape {tuple(pixel_values.shape)}.")


class SegViTModel(SegViTPreTrainedModel):
    """
    The SegViT encoder: a plain ViT run the official way (no CLS token in the sequence, no final LayerNorm,
    position embeddings resized bicubically to any input grid) that returns the features of `config.out_indices`.
    With `config.shrink_index` set, that layer down-samples its queries (QD) and the later layers run at 1/32.

    With `config.backbone_config`, a transformers backbone (`AutoBackbone`) replaces the ViT. Its input is zero-padded
    at the bottom and right to a multiple of its coarsest stride (so that every backbone, whatever its own padding or
    rounding, sees a size it divides), and each feature map is cropped back to the cells that cover the image,
    `ceil(size / stride)`: the grids of the built-in encoder's convention, on which post-processing places the masks.
    """

    def __init__(self, config: SegViTConfig):
        super().__init__(config)
        if config.backbone_config is not None:
            self.backbone = load_backbone(config)
        else:
            encoder_config = config.encoder_config
            self.embeddings = SegViTEmbeddings(config)
            depth = encoder_config.num_hidden_layers
            rates = [config.drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
            self.layers = nn.ModuleList(
                SegViTLayer(
                    encoder_config,
                    rate,
                    query_downsampling=config.query_downsampling if index == config.shrink_index else None,
                )
                for index, rate in enumerate(rates)
            )
        self.gradient_checkpointing = False
        self.post_init()
        if config.use_pretrained_backbone:
            self._load_pretrained_backbone()

    def _load_pretrained_backbone(self) -> None:
        """Copies the weights of the `config.backbone` checkpoint into the backbone."""
        # `from_pretrained` builds the model on the meta device, then fills it from its own checkpoint, which holds
        # the backbone weights: nothing to read then.
        if any(parameter.is_meta for parameter in self.backbone.parameters()):
            return
        # The backbone's own class: `AutoBackbone.from_pretrained` asks the Hub first (for timm), which fails offline
        # and for local directories.
        backbone_config = copy.deepcopy(self.config.backbone_config)
        pretrained = type(self.backbone).from_pretrained(self.config.backbone, config=backbone_config)
        self.backbone.load_state_dict(pretrained.state_dict())

    @property
    def feature_channels(self) -> list[int]:
        """Channels of each feature map the model returns, shallow to deep."""
        if self.config.backbone_config is not None:
            return list(self.backbone.channels)
        return [self.config.encoder_config.hidden_size] * len(self.config.out_indices)

    def _backbone_forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool, output_attentions: bool
    ) -> SegViTModelOutput:
        height, width = pixel_values.shape[-2:]
        strides = self.config.feature_strides
        multiple = max(strides)
        pixel_values = F.pad(pixel_values, (0, -width % multiple, 0, -height % multiple))
        outputs = self.backbone(
            pixel_values,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        feature_maps = []
        for feature_map, stride, name in zip(outputs.feature_maps, strides, self.backbone.out_features):
            expected = (pixel_values.shape[-2] // stride, pixel_values.shape[-1] // stride)
            if tuple(feature_map.shape[-2:]) != expected:
                raise ValueError(
                    f"The {self.config.backbone_config.model_type!r} backbone's {name} feature map is "
                    f"{tuple(feature_map.shape[-2:])} for a {tuple(pixel_values.shape[-2:])} input, not the "
                    f"{expected} of the stride {stride} SegViT assumes (see `backbone_stage_strides`)."
                )
            feature_maps.append(feature_map[..., : -(-height // stride), : -(-width // stride)])
        return SegViTModelOutput(
            last_hidden_state=feature_maps[-1].flatten(2).transpose(1, 2),
            feature_maps=tuple(feature_maps),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SegViTModelOutput | tuple:
        """
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised images, any size (non-square and not a multiple of the patch size included).
            output_hidden_states (`bool`, *optional*): also return every layer's tokens.
            output_attentions (`bool`, *optional*): also return every layer's attention (needs eager attention).
            return_dict (`bool`, *optional*): return a [`SegViTModelOutput`] rather than a tuple.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        _check_pixel_values(pixel_values, _image_channels(self.config))
        if self.config.backbone_config is not None:
            pixel_values = pixel_values.to(self.backbone.dtype)
            output = self._backbone_forward(pixel_values, output_hidden_states, output_attentions)
            return output if return_dict else output.to_tuple()
        encoder_config = self.config.encoder_config
        if output_attentions and encoder_config._attn_implementation not in (None, "eager"):
            raise ValueError(
                "`output_attentions=True` needs the eager attention implementation; load the model with "
                f"`attn_implementation=\"eager\"` (it uses {encoder_config._attn_implementation!r})."
            )
        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)

        hidden_states, grid = self.embeddings(pixel_values)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        feature_maps = []
        for index, layer in enumerate(self.layers):
            hidden_states, grid, attention_weights = layer(hidden_states, grid, **kwargs)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attention_weights,)
            if index in self.config.out_indices:
                feature_maps.append(hidden_states.transpose(1, 2).unflatten(-1, grid))

        output = SegViTModelOutput(
            last_hidden_state=hidden_states,
            feature_maps=tuple(feature_maps),
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )
        return output if return_dict else output.to_tuple()


class SegViTForSemanticSegmentation(SegViTPreTrainedModel):
    """
    SegViT for semantic segmentation: the [`SegViTModel`] encoder, the cascaded ATM decoder and the ATM loss (or, as
    configured, the SETR baseline decoder and the per-pixel cross-entropy).

    Example:

    ```python
    >>> import torch
    >>> from segvit_hf import SegViTForSemanticSegmentation, get_preset

    >>> model = SegViTForSemanticSegmentation(get_preset("ade20k-vit-b").config()).eval()
    >>> outputs = model(torch.randn(1, 3, 512, 512))
    >>> outputs.masks_queries_logits.shape
    torch.Size([1, 150, 32, 32])
    ```
    """

    def __init__(self, config: SegViTConfig):
        super().__init__(config)
        self.segvit = SegViTModel(config)
        decoder_class = SegViTSETRHead if config.decoder_type == "setr" else SegViTATMDecoder
        self.decode_head = decoder_class(config, in_channels=self.segvit.feature_channels)
        if config.segmentation_loss == "cross_entropy":
            self.criterion = SegViTCrossEntropyLoss(config)
        else:
            self.criterion = SegViTATMLoss(config)
        self.post_init()

    def _check_labels(self, labels: torch.Tensor, pixel_values: torch.Tensor) -> None:
        expected = (pixel_values.shape[0], *pixel_values.shape[-2:])
        if labels.ndim != 3 or tuple(labels.shape) != expected:
            raise ValueError(
                f"`labels` must have shape (batch_size, height, width) = {expected} to match `pixel_values` "
                f"{tuple(pixel_values.shape)}, got {tuple(labels.shape)}."
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"`labels` must hold integer class ids, got dtype {labels.dtype}.")
        out_of_range = ((labels < 0) | (labels >= self.config.num_labels)) & (labels != self.config.ignore_index)
        if out_of_range.any():
            bad = torch.unique(labels[out_of_range])[:10].tolist()
            raise ValueError(
                f"`labels` hold values {bad} outside [0, {self.config.num_labels}) that are not the ignore index "
                f"{self.config.ignore_index}. Map them to a class or to {self.config.ignore_index} (for ADE20K's raw "
                "annotations, reduce the labels: 0 -> 255, k -> k - 1)."
            )

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        pixel_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> SegViTSemanticSegmenterOutput | tuple:
        """
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised images.
            labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
                Class ids in `[0, num_labels)`, or `config.ignore_index` for unlabelled pixels, at the input size.
                When given, the ATM loss is computed. mmseg's `(batch_size, 1, height, width)` layout is accepted too.
            output_hidden_states, output_attentions, return_dict: see [`SegViTModel.forward`].
            pixel_mask (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
                What `SegViTImageProcessor` returns beside `pixel_values` (1 on image pixels, 0 on batch padding), so
                that `model(**image_processor(images))` works. The network does not use it: like the official model it
                sees padded pixels. Pass it to `post_process_semantic_segmentation` to crop each prediction.

        Returns:
            [`SegViTSemanticSegmenterOutput`]: class and mask logits on the token grid (and the loss). Label maps come
            from [`SegViTImageProcessor.post_process_semantic_segmentation`].
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if labels is not None:
            _check_pixel_values(pixel_values, _image_channels(self.config))
            if labels.ndim == 4 and labels.shape[1] == 1:
                labels = labels[:, 0]
            self._check_labels(labels, pixel_values)

        encoder_outputs = self.segvit(
            pixel_values,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            **kwargs,
        )
        stage_outputs = self.decode_head(encoder_outputs.feature_maps)
        class_logits, mask_logits = stage_outputs[-1]

        loss = None
        if labels is not None:
            if self.config.backbone_config is None:
                patch_size = self.segvit.embeddings.patch_size
            else:
                patch_size = as_pair(self.config.output_stride)
            cell_size = mask_cell_size(mask_logits.shape[-2:], labels.shape[-2:], patch_size)
            with torch.autocast(device_type=mask_logits.device.type, enabled=False):
                if self.config.segmentation_loss == "cross_entropy":
                    # Only the prediction is supervised, as in the official head with `CE_loss=True`.
                    dtype = torch.promote_types(mask_logits.dtype, torch.float32)
                    logits = self.decode_head.segmentation_logits(
                        class_logits.to(dtype), mask_logits.to(dtype), labels.shape[-2:], cell_size
                    )
                    loss = self.criterion(logits, labels)
                else:
                    loss = self.criterion(stage_outputs, labels, cell_size)

        output = SegViTSemanticSegmenterOutput(
            loss=loss,
            class_queries_logits=class_logits,
            masks_queries_logits=mask_logits,
            auxiliary_logits=[
                {"class_queries_logits": stage_class, "masks_queries_logits": stage_masks}
                for stage_class, stage_masks in stage_outputs[:-1]
            ],
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "SegViTModel",
    "SegViTForSemanticSegmentation",
    "SegViTPreTrainedModel",
    "SegViTModelOutput",
    "SegViTSemanticSegmenterOutput",
]
