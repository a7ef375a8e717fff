"""Convert checkpoints of the official SegViT code (mmseg 0.24 layout) into [`SegViTForSemanticSegmentation`]: the
mapping of the official tensor names onto ours, and the conversion functions. The `segvit-convert` command is
`segvit_hf.conversion_cli`; the conversion of all released files at once is `segvit_hf.released`.

The official files are torch pickles. They are read with `torch.load(weights_only=True)`, which refuses arbitrary
Python objects, so a tampered file cannot run code.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from .configuration_segvit import SegViTConfig
from .labels import id2label_for
from .modeling_segvit import SegViTForSemanticSegmentation
from .presets import PRESETS, get_preset
from .state_dicts import encoder_rename_rules, load_torch_checkpoint, rename_key, split_qkv

# Official keys that hold nothing our model needs: the CLS token never reaches the patch tokens (its position slot
# is dropped too), and the losses' class-weight buffers are rebuilt from the configuration.
_UNUSED_OFFICIAL_KEYS = (
    "backbone.cls_token",
    "decode_head.loss_decode.criterion.empty_weight",
    "decode_head.atm.loss_decode.criterion.empty_weight",
)

# (official pattern, our name) of the encoder, from the table shared with the timm reader.
_BACKBONE_RULES = encoder_rename_rules("mmseg", prefix="segvit.")
# (official pattern, our name) of the layers of an ATM stage.
_ATM_LAYER_RULES = [
    (r"self_attn\.(in_proj_weight|in_proj_bias)", r"self_attn.\1"),
    (r"self_attn\.out_proj\.(weight|bias)", r"self_attn.out_proj.\1"),
    (r"multihead_attn\.q\.(weight|bias)", r"cross_attn.q_proj.\1"),
    (r"multihead_attn\.k\.(weight|bias)", r"cross_attn.k_proj.\1"),
    (r"multihead_attn\.v\.(weight|bias)", r"cross_attn.v_proj.\1"),
    (r"multihead_attn\.proj\.(weight|bias)", r"cross_attn.o_proj.\1"),
    (r"linear1\.(weight|bias)", r"fc1.\1"),
    (r"linear2\.(weight|bias)", r"fc2.\1"),
    (r"norm1\.(weight|bias)", r"self_attn_norm.\1"),
    (r"norm2\.(weight|bias)", r"cross_attn_norm.\1"),
    (r"norm3\.(weight|bias)", r"mlp_norm.\1"),
]


class CheckpointConversionError(ValueError):
    """The file is not a SegViT checkpoint in the official layout, or does not match the requested architecture."""


def load_official_state_dict(path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor]) -> dict:
    """
    The `state_dict` of an official checkpoint: a path to the torch pickle (a `{"state_dict": ..., "meta": ...}`
    dict, as the official training saves, or a bare state dict), or an already loaded mapping.
    """
    if isinstance(path_or_state_dict, Mapping):
        checkpoint = path_or_state_dict
    else:
        checkpoint = load_torch_checkpoint(path_or_state_dict, CheckpointConversionError)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointConversionError(f"Expected a dict checkpoint, got {type(checkpoint).__name__}.")
    state_dict = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state_dict, Mapping) or not any(str(key).startswith("backbone.") for key in state_dict):
        raise CheckpointConversionError(
            "This is not an official SegViT checkpoint: expected `backbone.*` and `decode_head.*` tensors "
            f"(found keys such as {sorted(map(str, state_dict))[:5]})."
        )
    return {key: value for key, value in state_dict.items()}


def _count(pattern: str, keys) -> int:
    indices = {int(match.group(1)) for key in keys if (match := re.fullmatch(pattern, key))}
    return max(indices) + 1 if indices else 0


def _require(state_dict: Mapping, key: str) -> torch.Tensor:
    if key not in state_dict:
        raise CheckpointConversionError(f"The checkpoint lacks the tensor {key!r}.")
    return state_dict[key]


def is_shrunk_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether the head is the *Shrunk* model's `TPNATMHead` (QU decoders plus an inner `atm` head)."""
    return "decode_head.atm.q.weight" in state_dict


def infer_architecture(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Widths, depths, patch size, position grid, class count and head type, read from the official tensors."""
    keys = list(state_dict)
    shrunk = is_shrunk_checkpoint(state_dict)
    atm_prefix = "decode_head.atm." if shrunk else "decode_head."
    projection = _require(state_dict, "backbone.patch_embed.projection.weight")
    position = _require(state_dict, "backbone.pos_embed")
    class_queries = _require(state_dict, atm_prefix + "q.weight")
    grid_side = math.isqrt(position.shape[1] - 1)
    if grid_side * grid_side != position.shape[1] - 1:
        raise CheckpointConversionError(
            f"backbone.pos_embed has {position.shape[1]} rows: expected a CLS slot plus a square grid."
        )
    return {
        "hidden_size": projection.shape[0],
        "num_channels": projection.shape[1],
        "patch_size": projection.shape[-1],
        "num_hidden_layers": _count(r"backbone\.layers\.(\d+)\..*", keys),
        "intermediate_size": _require(state_dict, "backbone.layers.0.ffn.layers.0.0.weight").shape[0],
        "position_grid": grid_side,
        "num_labels": class_queries.shape[0],
        "decoder_hidden_size": class_queries.shape[1],
        "num_features": _count(r"decode_head\.input_proj_(\d+)\..*", keys) - 1,
        "decoder_layers_per_stage": _count(re.escape(atm_prefix) + r"decoder_1\.layers\.(\d+)\..*", keys),
        "query_upsampling": shrunk,
    }


def _rename_atm_layer(rest: str, prefix: str) -> str | None:
    return rename_key(rest, _ATM_LAYER_RULES, prefix)


def _rename_lateral(key: str, lateral: str) -> str | None:
    """The official `input_proj_k` / `proj_norm_k` (k from 1) as `lateral.format(k - 1)` + `.proj` / `.norm`."""
    if match := re.fullmatch(r"decode_head\.(input_proj|proj_norm)_(\d+)\.(weight|bias)", key):
        part = "proj" if match.group(1) == "input_proj" else "norm"
        return f"{lateral.format(int(match.group(2)) - 1)}.{part}.{match.group(3)}"
    return None


def _rename_cascade_head(key: str) -> str | None:
    """`ATMHead`: stage k's lateral and ATM layers, the class queries and the class head."""
    if (name := _rename_lateral(key, "decode_head.stages.{}.lateral")) is not None:
        return name
    if match := re.fullmatch(r"decode_head\.decoder_(\d+)\.layers\.(\d+)\.(.+)", key):
        stage, layer, rest = int(match.group(1)) - 1, match.group(2), match.group(3)
        return _rename_atm_layer(rest, f"decode_head.stages.{stage}.layers.{layer}.")
    return {
        "decode_head.q.weight": "decode_head.class_queries.weight",
        "decode_head.class_embed.weight": "decode_head.class_head.weight",
        "decode_head.class_embed.bias": "decode_head.class_head.bias",
    }.get(key)


def _rename_shrunk_head(key: str) -> str | None:
    """`TPNATMHead`: QU laterals, QU decoder layers (torch's own layer names), QU queries, and the inner `atm`."""
    if (name := _rename_lateral(key, "decode_head.query_upsampler.laterals.{}")) is not None:
        return name
    if match := re.fullmatch(r"decode_head\.decoder_(\d+)\.layers\.(\d+)\.(.+)", key):
        stage, layer, rest = int(match.group(1)) - 1, match.group(2), match.group(3)
        return f"decode_head.query_upsampler.decoders.{stage}.{layer}.{rest}"
    if match := re.fullmatch(r"decode_head\.atm\.decoder_1\.layers\.(\d+)\.(.+)", key):
        return _rename_atm_layer(match.group(2), f"decode_head.stages.0.layers.{match.group(1)}.")
    return {
        "decode_head.q.weight": "decode_head.query_upsampler.queries.weight",
        "decode_head.atm.q.weight": "decode_head.class_queries.weight",
        "decode_head.atm.class_embed.weight": "decode_head.class_head.weight",
        "decode_head.atm.class_embed.bias": "decode_head.class_head.bias",
    }.get(key)


def convert_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """
    Official tensors -> our parameter names. The fused q/k/v of the encoder attention are split, and the CLS slot of
    the position table is dropped. Keys that fit no rule raise a [`CheckpointConversionError`] naming them.
    """
    rename_head = _rename_shrunk_head if is_shrunk_checkpoint(state_dict) else _rename_cascade_head
    converted, unknown = {}, []
    for key, tensor in state_dict.items():
        if key in _UNUSED_OFFICIAL_KEYS:
            continue
        if key == "backbone.pos_embed":
            converted["segvit.embeddings.position_embeddings"] = tensor[:, 1:]
        elif match := re.fullmatch(r"backbone\.layers\.(\d+)\.attn\.attn\.in_proj_(weight|bias)", key):
            converted.update(split_qkv(tensor, *match.groups(), prefix="segvit."))
        elif (name := rename_key(key, _BACKBONE_RULES) or rename_head(key)) is not None:
            converted[name] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointConversionError(
            f"{len(unknown)} tensor(s) of the checkpoint match no SegViT parameter: {sorted(unknown)[:20]}"
        )
    return converted


def convert_official_checkpoint(
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    num_attention_heads: int | None = None,
    decoder_num_attention_heads: int | None = None,
    out_indices: list[int] | None = None,
    image_size: int | None = None,
    shrink_index: int | None = None,
    preset: str | None = None,
    id2label: dict[int, str] | None = None,
    **config_overrides: Any,
) -> SegViTForSemanticSegmentation:
    """
    Build a [`SegViTForSemanticSegmentation`] from an official SegViT checkpoint.

    Widths, depths, class count and position grid are read from the tensors; head counts, `out_indices`, the crop
    size and `shrink_index` come from the arguments, else from `preset` (one of `segvit_hf.PRESETS`). Labels come from
    `id2label`, else from the preset when its class count matches the checkpoint. `config_overrides` set what the
    tensors cannot tell, for checkpoints of the paper's ablations: e.g. `segmentation_loss="cross_entropy"` and
    `per_layer_outputs=True` for the single-layer ATM trained with cross-entropy (Table 4), or
    `query_downsampling="nearest_qkv"` (Table 7).

    Returns the model in eval mode. Raises [`CheckpointConversionError`] for unknown or missing tensors (named),
    or when the arguments disagree with the tensors.
    """
    state_dict = load_official_state_dict(path_or_state_dict)
    arch = infer_architecture(state_dict)
    chosen = get_preset(preset) if preset is not None else None

    def pick(value, preset_value, name):
        if value is not None:
            return value
        if chosen is None:
            raise CheckpointConversionError(f"`{name}` is needed: pass it, or a `preset` ({', '.join(PRESETS)}).")
        return preset_value

    num_attention_heads = pick(num_attention_heads, chosen and chosen.encoder["num_attention_heads"], "num_attention_heads")
    decoder_num_attention_heads = pick(
        decoder_num_attention_heads, chosen and chosen.decoder_num_attention_heads, "decoder_num_attention_heads"
    )
    out_indices = list(pick(out_indices, chosen and chosen.out_indices, "out_indices"))
    image_size = pick(image_size, chosen and chosen.crop_size, "image_size")
    if shrink_index is None and chosen is not None:
        shrink_index = chosen.shrink_index

    if image_size != arch["position_grid"] * arch["patch_size"]:
        raise CheckpointConversionError(
            f"image_size {image_size} does not match the checkpoint's position grid "
            f"({arch['position_grid']} x {arch['position_grid']} patches of {arch['patch_size']} pixels)."
        )
    if len(out_indices) != arch["num_features"]:
        raise CheckpointConversionError(
            f"The checkpoint's head reads {arch['num_features']} encoder features but {len(out_indices)} "
            f"out_indices were given ({out_indices})."
        )
    if arch["query_upsampling"] and shrink_index is None:
        raise CheckpointConversionError(
            "This is a Shrunk SegViT checkpoint (TPNATMHead): pass `shrink_index` (8 for the released ViT-L models) "
            "or a shrunk preset."
        )
    if id2label is None and chosen is not None:
        # PASCAL-Context exists with 59 classes (as released) and with 60 (background first): the tensors decide.
        candidates = [id2label_for(chosen.dataset)]
        if chosen.dataset == "pascal-context":
            candidates.append(id2label_for(chosen.dataset, with_background=True))
        id2label = next((labels for labels in candidates if len(labels) == arch["num_labels"]), None)
    if id2label is None:
        id2label = {i: f"class_{i}" for i in range(arch["num_labels"])}
    if len(id2label) != arch["num_labels"]:
        raise CheckpointConversionError(
            f"id2label has {len(id2label)} entries but the checkpoint has {arch['num_labels']} classes."
        )

    config = SegViTConfig(
        encoder_config={
            "hidden_size": arch["hidden_size"],
            "num_hidden_layers": arch["num_hidden_layers"],
            "num_attention_heads": num_attention_heads,
            "intermediate_size": arch["intermediate_size"],
            "image_size": image_size,
            "patch_size": arch["patch_size"],
            "num_channels": arch["num_channels"],
        },
        out_indices=out_indices,
        decoder_hidden_size=arch["decoder_hidden_size"],
        decoder_num_attention_heads=decoder_num_attention_heads,
        decoder_layers_per_stage=arch["decoder_layers_per_stage"],
        drop_path_rate=chosen.drop_path_rate if chosen is not None else 0.1,
        shrink_index=shrink_index,
        query_upsampling=arch["query_upsampling"],
        id2label=dict(id2label),
        label2id={label: int(i) for i, label in id2label.items()},
        **config_overrides,
    )
    model = SegViTForSemanticSegmentation(config)
    converted = convert_state_dict(state_dict)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise CheckpointConversionError(
            f"The checkpoint does not fit the architecture: missing {missing[:20]}, unexpected {unexpected[:20]}."
        )
    mismatched = [
        f"{name}: checkpoint {tuple(tensor.shape)} vs model {tuple(expected[name].shape)}"
        for name, tensor in converted.items()
        if tensor.shape != expected[name].shape
    ]
    if mismatched:
        raise CheckpointConversionError(f"Tensor shapes do not fit: {mismatched[:10]}")
    model.load_state_dict({name: tensor.float() for name, tensor in converted.items()}, strict=True)
    return model.eval()


__all__ = [
    "CheckpointConversionError",
    "convert_official_checkpoint",
    "convert_state_dict",
    "infer_architecture",
    "is_shrunk_checkpoint",
    "load_official_state_dict",
]
