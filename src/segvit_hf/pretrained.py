"""Start a SegViT from pretrained ViT encoder weights.

Two kinds of source are understood:

* a transformers ViT checkpoint (`ViTModel` or `ViTForImageClassification`): a Hub id such as
  `google/vit-base-patch16-384` or a local directory. It is read through transformers itself, so sharded files and
  the older weight names that most ViT repositories on the Hub still use load too;
* a ViT state dict in timm's layout, as the AugReg weights recommended by the paper are distributed: a `.safetensors`
  or `.pth` file, or a timm repository / directory (a `config.json` with an `architecture` entry next to
  `model.safetensors` or `pytorch_model.bin`). timm itself is not needed.

The encoder takes the weights; the CLS token and its position slot are dropped (SegViT runs on patch tokens only), the
position table is resized bicubically from the pretraining grid to the configured crop, and the ATM decoder keeps its
fresh initialisation. What did not fit is reported by name in an [`EncoderLoadingReport`].
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedConfig, ViTModel
from transformers.utils import logging

from .configuration_segvit import SegViTConfig, as_pair
from .hub import HubUnreachableError, download_hub_file
from .modeling_segvit import SegViTForSemanticSegmentation, resize_position_embeddings
from .presets import get_preset
from .state_dicts import encoder_rename_rules, load_torch_checkpoint, rename_key, split_qkv

logger = logging.get_logger(__name__)

_POSITION_KEY = "embeddings.position_embeddings"

# timm's ViT names -> ours (relative to `SegViTModel`); the fused `attn.qkv` is split separately.
_TIMM_RULES = encoder_rename_rules("timm")
_TIMM_QKV = re.compile(r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)")
# Tensors of a timm ViT that SegViT deliberately does without: prefix tokens (CLS, distillation, registers) never
# enter its sequence, and it reads features before the final norm and has no classification head.
_TIMM_IGNORED = re.compile(
    r"(cls_token|dist_token|reg_token|norm\.(weight|bias)|fc_norm\..*|head\..*|head_dist\..*|pre_logits\..*"
    r"|attn_pool\..*)"
)
# Parts of some timm ViT variants that change what a block computes; SegViT's encoder has no place for them, so
# loading such weights would give silently different features.
_TIMM_UNSUPPORTED = re.compile(
    r".*(\.ls[12]\.|norm_pre\.|\.q_norm\.|\.k_norm\.|patch_embed\.norm\.|\.attn\.[qv]_bias).*"
)
# Heads of timm's named ViT sizes: the count is not recorded in the tensors, so it is checked against the name.
_TIMM_HEADS = {"tiny": 3, "small": 6, "base": 12, "large": 16, "huge": 16}

# A transformers ViT's own tensors that SegViT does without (see above).
_TRANSFORMERS_IGNORED = re.compile(
    r"(embeddings\.cls_token|embeddings\.mask_token|layernorm\..*|pooler\..*|classifier\..*)"
)


@dataclass
class EncoderLoadingReport:
    """
    What happened to each tensor when pretrained ViT weights were loaded into a SegViT encoder. Names are the
    SegViT model's parameter names (`segvit.layers.0.attention.q_proj.weight`, ...) except for `unexpected` and
    `ignored`, which are the checkpoint's own names.

    Attributes:
        source: where the weights came from.
        layout: `"transformers"` or `"timm"`.
        loaded: encoder parameters that received pretrained values.
        missing: encoder parameters the checkpoint did not provide; they keep their fresh initialisation.
        unexpected: checkpoint tensors that match no encoder parameter (e.g. layers beyond the configured depth).
        ignored: checkpoint tensors SegViT deliberately does not use (CLS token, final norm, classification head).
        mismatched: `"name: checkpoint shape vs model shape"` for tensors whose shapes do not fit.
        position_grid: the pretraining token grid and the grid the position table was resized to.
    """

    source: str
    layout: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    position_grid: tuple[tuple[int, int], tuple[int, int]] | None = None

    def __str__(self) -> str:
        lines = [f"Loaded {len(self.loaded)} encoder tensors from {self.source} ({self.layout} layout)."]
        if self.position_grid is not None and self.position_grid[0] != self.position_grid[1]:
            (source_h, source_w), (target_h, target_w) = self.position_grid
            lines.append(
                f"Position embeddings resized bicubically from {source_h}x{source_w} to {target_h}x{target_w}."
            )
        for title, names in (
            ("Missing (freshly initialised)", self.missing),
            ("Unexpected (not used)", self.unexpected),
            ("Shape mismatch (freshly initialised)", self.mismatched),
            ("Deliberately unused", self.ignored),
        ):
            if names:
                lines.append(f"{title}: {', '.join(names)}")
        return "\n".join(lines)


def load_timm_vit_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """
    Reads a timm ViT checkpoint file: `.safetensors`, or a torch file (`.pth`, `.pt`, `.bin`) read with
    `torch.load(weights_only=True)`, which refuses anything but tensors and plain containers. A state dict wrapped in
    `{"model": ...}` or `{"state_dict": ...}`, or saved from `DataParallel` (`module.` prefixes), is unwrapped.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors") and os.path.isfile(path):
        from safetensors.torch import load_file

        state_dict: Any = load_file(path)
    else:
        state_dict = load_torch_checkpoint(path)
    for wrapper in ("model", "state_dict"):
        if isinstance(state_dict, Mapping) and isinstance(state_dict.get(wrapper), Mapping):
            state_dict = state_dict[wrapper]
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{path!r} does not hold a state dict (found {type(state_dict).__name__}).")
    return {str(key).removeprefix("module."): value for key, value in state_dict.items()}


def _square_side(count: int) -> int | None:
    side = math.isqrt(count)
    return side if side * side == count else None


def convert_timm_vit_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], tuple[int, int], list[str]]:
    """
    Converts a timm `VisionTransformer` state dict into SegViT encoder names.

    The fused `blocks.N.attn.qkv` projection is split into `q_proj`, `k_proj`, `v_proj`; the prefix-token slots (CLS,
    and distillation or register tokens where present) are cut from `pos_embed`.

    Args:
        state_dict: timm names (`patch_embed.proj.weight`, `pos_embed`, `blocks.0.attn.qkv.weight`, ...).

    Returns:
        `(encoder_state_dict, position_grid, ignored)`: tensors named as in [`SegViTModel`]
        (`embeddings.position_embeddings` of shape `(1, grid_h * grid_w, hidden_size)` at the stored grid,
        `layers.0.attention.q_proj.weight`, ...), that grid, and the timm names deliberately left out.

    Raises:
        ValueError: for tensors of ViT variants SegViT cannot represent (LayerScale, pre-norm, q/k norm), unknown
            names, or a position table that is not a square grid plus the prefix tokens.
    """
    if "patch_embed.proj.weight" not in state_dict or "pos_embed" not in state_dict:
        raise ValueError(
            "Not a timm ViT state dict: expected `patch_embed.proj.weight` and `pos_embed` (found keys such as "
            f"{sorted(state_dict)[:5]})."
        )
    unsupported = sorted(key for key in state_dict if _TIMM_UNSUPPORTED.fullmatch(key))
    if unsupported:
        raise ValueError(
            "This timm ViT has parts SegViT's encoder does not have (LayerScale, pre-norm, q/k norm or split q/v "
            f"biases), so its features could not be reproduced: {unsupported[:10]}"
        )
    converted: dict[str, torch.Tensor] = {}
    ignored, unknown = [], []
    for key, tensor in state_dict.items():
        if key == "pos_embed":
            continue
        if match := _TIMM_QKV.fullmatch(key):
            converted.update(split_qkv(tensor, *match.groups()))
        elif _TIMM_IGNORED.fullmatch(key):
            ignored.append(key)
        elif (name := rename_key(key, _TIMM_RULES)) is not None:
            converted[name] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} tensor(s) are not part of a timm ViT as SegViT knows it: {sorted(unknown)[:20]}"
        )

    position = state_dict["pos_embed"]
    if position.ndim != 3 or position.shape[0] != 1:
        raise ValueError(f"`pos_embed` must have shape (1, tokens, hidden_size), got {tuple(position.shape)}.")
    num_prefix_tokens = int("cls_token" in state_dict) + int("dist_token" in state_dict)
    if "reg_token" in state_dict:
        num_prefix_tokens += state_dict["reg_token"].shape[1]
    # Some timm ViTs store no slots for their prefix tokens (`no_embed_class`): then the table is the grid alone.
    for prefix in dict.fromkeys((num_prefix_tokens, 0)):
        side = _square_side(position.shape[1] - prefix)
        if side:
            break
    else:
        raise ValueError(
            f"`pos_embed` has {position.shape[1]} rows: expected a square grid of patches plus {num_prefix_tokens} "
            "prefix-token slot(s)."
        )
    converted[_POSITION_KEY] = position[:, prefix:]
    if prefix:
        ignored.append(f"pos_embed[:, :{prefix}]")
    return converted, (side, side), ignored


def _transformers_vit_to_encoder(
    vit_state_dict: Mapping[str, torch.Tensor], vit_config, not_from_checkpoint: set[str]
) -> tuple[dict[str, torch.Tensor], tuple[int, int], list[str]]:
    """A transformers `ViTModel` state dict -> SegViT encoder names, position grid, names deliberately left out."""
    converted, ignored = {}, []
    for key, tensor in vit_state_dict.items():
        if key in not_from_checkpoint:
            continue
        if _TRANSFORMERS_IGNORED.fullmatch(key):
            ignored.append(key)
        elif key == _POSITION_KEY:
            converted[key] = tensor[:, 1:]
            ignored.append(f"{key}[:, :1]")
        else:
            converted[key] = tensor
    image_size, patch_size = as_pair(vit_config.image_size), as_pair(vit_config.patch_size)
    grid = (image_size[0] // patch_size[0], image_size[1] // patch_size[1])
    if _POSITION_KEY in converted and converted[_POSITION_KEY].shape[1] != grid[0] * grid[1]:
        raise ValueError(
            f"The ViT's position table has {converted[_POSITION_KEY].shape[1] + 1} rows, which does not fit its "
            f"image_size {vit_config.image_size} and patch_size {vit_config.patch_size} ({grid[0]}x{grid[1]} + CLS)."
        )
    return converted, grid, ignored


def load_encoder_weights(
    model: SegViTForSemanticSegmentation,
    encoder_state_dict: Mapping[str, torch.Tensor],
    position_grid: tuple[int, int],
    *,
    source: str = "state dict",
    layout: str = "transformers",
    ignored: Sequence[str] = (),
    ignore_mismatched_sizes: bool = False,
) -> EncoderLoadingReport:
    """
    Copies encoder weights (named as in [`SegViTModel`], e.g. from [`convert_timm_vit_state_dict`]) into a SegViT
    model or its base model, resizing `embeddings.position_embeddings` bicubically from `position_grid` (rows x
    columns of patches it was stored for) to the model's crop grid. Anything else of the model is left untouched.

    Raises:
        ValueError: when shapes do not fit (all offending names listed), unless `ignore_mismatched_sizes=True`, in
            which case those parameters keep their initialisation and are reported as mismatched.
    """
    prefix = model.base_model_prefix
    encoder = getattr(model, prefix, None)
    if encoder is None:  # the base model itself
        encoder, prefix = model, ""
    expected = encoder.state_dict()
    target_grid = tuple(encoder.embeddings.position_grid)
    report = EncoderLoadingReport(source=source, layout=layout, ignored=list(ignored))

    def full_name(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    to_load = {}
    for name, tensor in encoder_state_dict.items():
        if name == _POSITION_KEY and name in expected and tensor.shape[-1] == expected[name].shape[-1]:
            if tensor.shape[1] != position_grid[0] * position_grid[1]:
                raise ValueError(
                    f"The position table has {tensor.shape[1]} rows but position_grid {tuple(position_grid)} was given."
                )
            tensor = resize_position_embeddings(tensor.float(), position_grid, target_grid)
            report.position_grid = (tuple(position_grid), target_grid)
        if name not in expected:
            report.unexpected.append(name)
        elif tensor.shape != expected[name].shape:
            report.mismatched.append(
                f"{full_name(name)}: checkpoint {tuple(tensor.shape)} vs model {tuple(expected[name].shape)}"
            )
        else:
            to_load[name] = tensor
    if report.mismatched and not ignore_mismatched_sizes:
        raise ValueError(
            "The pretrained encoder does not fit the SegViT configuration (pass ignore_mismatched_sizes=True to "
            "leave these freshly initialised):\n  " + "\n  ".join(report.mismatched)
        )
    mismatched_names = {entry.split(":")[0] for entry in report.mismatched}
    report.missing = [
        full_name(name) for name in expected if name not in to_load and full_name(name) not in mismatched_names
    ]
    report.loaded = [full_name(name) for name in to_load]
    encoder.load_state_dict(to_load, strict=False)
    if report.missing or report.unexpected or report.mismatched:
        logger.warning(str(report))
    else:
        logger.info(str(report))
    return report


def _normalise_id2label(id2label: Mapping | Sequence[str]) -> dict[int, str]:
    if isinstance(id2label, Mapping):
        try:
            labels = {int(key): str(value) for key, value in id2label.items()}
        except (TypeError, ValueError):
            raise TypeError("`id2label` keys must be class ids (integers).") from None
    elif isinstance(id2label, Sequence) and not isinstance(id2label, str):
        labels = {index: str(name) for index, name in enumerate(id2label)}
    else:
        raise TypeError(f"`id2label` must be a dict {{id: name}} or a list of names, got {type(id2label).__name__}.")
    if not labels or sorted(labels) != list(range(len(labels))):
        raise ValueError(f"`id2label` must number its classes 0 .. n-1, got ids {sorted(labels)[:10]}.")
    return labels


def _build_config(config_or_preset, config_class, id2label, config_kwargs) -> SegViTConfig:
    overrides = dict(config_kwargs)
    if id2label is not None:
        labels = _normalise_id2label(id2label)
        overrides.update(id2label=labels, label2id={name: index for index, name in labels.items()})
    if isinstance(config_or_preset, str):
        return get_preset(config_or_preset).config(**overrides)
    if isinstance(config_or_preset, PreTrainedConfig) and config_or_preset.model_type == config_class.model_type:
        if not overrides:
            return copy.deepcopy(config_or_preset)
        values = config_or_preset.to_dict()
        values.update(overrides)
        return config_class.from_dict(values)
    raise TypeError(
        "`config_or_preset` must be a SegViTConfig or a preset name (see segvit_hf.PRESETS), got "
        f"{type(config_or_preset).__name__}."
    )


def _local_or_hub_file(pretrained: str, filename: str, hub_kwargs: dict) -> str | None:
    """
    Path of `filename` in the local directory `pretrained`, or downloaded from the Hub repo; None if the directory or
    repository has no such file. A file neither cached nor reachable raises a `HubUnreachableError`.

    transformers' `cached_file` does the same lookup, but with missing entries tolerated it also returns None for a
    file that is merely unreachable (offline, no connection), and otherwise raises an `OSError` for both: a missing
    config.json and an offline machine would then read alike.
    """
    if os.path.isdir(pretrained):
        path = os.path.join(pretrained, filename)
        return path if os.path.isfile(path) else None
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return download_hub_file(pretrained, filename, **hub_kwargs)
    except EntryNotFoundError:
        return None


def _check_encoder_config(source_config: Mapping[str, Any], encoder_config, source: str) -> None:
    """Architecture settings that shapes cannot reveal: a difference would give silently wrong features."""
    problems = [
        f"{name}: checkpoint {source_config[name]!r} vs configuration {getattr(encoder_config, name)!r}"
        for name in ("num_attention_heads", "hidden_act")
        if name in source_config and source_config[name] != getattr(encoder_config, name)
    ]
    if problems:
        raise ValueError(
            f"The ViT at {source} was trained with a different architecture than the SegViT encoder configuration "
            f"({'; '.join(problems)}). Pass a configuration that matches it."
        )


def _timm_architecture_settings(architecture: str) -> dict[str, Any]:
    """Heads and patch size implied by a timm model name such as `vit_large_patch16_384.augreg_in21k_ft_in1k`."""
    match = re.match(r"vit_(tiny|small|base|large|huge)_patch(\d+)", architecture)
    if match is None:
        return {}
    return {"num_attention_heads": _TIMM_HEADS[match.group(1)], "patch_size": int(match.group(2))}


def _read_encoder_source(pretrained: str, encoder_config, hub_kwargs: dict):
    """Finds and converts the weights at `pretrained`: (encoder state dict, grid, ignored names, layout)."""
    if os.path.isfile(pretrained):
        state_dict = load_timm_vit_state_dict(pretrained)
        return (*convert_timm_vit_state_dict(state_dict), "timm")
    try:
        config_path = _local_or_hub_file(pretrained, "config.json", hub_kwargs)
    except HubUnreachableError:
        raise
    except Exception as error:  # unknown repo, no access, invalid id: all surface as different hub errors
        raise OSError(
            f"{pretrained!r} is neither a local file or directory nor a reachable Hub repository: {error}"
        ) from error
    if config_path is None:
        raise OSError(f"{pretrained!r} has no config.json: expected a transformers ViT or a timm checkpoint.")
    with open(config_path, encoding="utf-8") as handle:
        source_config = json.load(handle)

    if source_config.get("model_type") == "vit":
        _check_encoder_config(source_config, encoder_config, pretrained)
        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # its load report would list the heads we drop anyway; ours is complete
        try:
            vit, info = ViTModel.from_pretrained(
                pretrained, add_pooling_layer=False, output_loading_info=True, **hub_kwargs
            )
        finally:
            logging.set_verbosity(verbosity)
        # Parameters the checkpoint did not provide were randomly initialised by ViTModel: they must not be copied.
        not_from_checkpoint = set(info["missing_keys"]) | {
            key[0] if isinstance(key, tuple) else key for key in info["mismatched_keys"]
        }
        encoder_state, grid, ignored = _transformers_vit_to_encoder(vit.state_dict(), vit.config, not_from_checkpoint)
        ignored += sorted(info["unexpected_keys"])
        return encoder_state, grid, ignored, "transformers"
    if "architecture" in source_config and "model_type" not in source_config:
        _check_encoder_config(_timm_architecture_settings(source_config["architecture"]), encoder_config, pretrained)
        for filename in ("model.safetensors", "pytorch_model.bin"):
            weights = _local_or_hub_file(pretrained, filename, hub_kwargs)
            if weights is not None:
                return (*convert_timm_vit_state_dict(load_timm_vit_state_dict(weights)), "timm")
        raise OSError(f"The timm checkpoint {pretrained!r} has neither model.safetensors nor pytorch_model.bin.")
    raise ValueError(
        f"{pretrained!r} is not a ViT checkpoint: its config.json has model_type "
        f"{source_config.get('model_type')!r} (expected 'vit', or a timm config with an 'architecture' entry)."
    )


def segvit_from_vit_pretrained(
    pretrained_vit: str | os.PathLike,
    config_or_preset: SegViTConfig | str,
    *,
    id2label: Mapping[int, str] | Sequence[str] | None = None,
    model_class: type | None = None,
    ignore_mismatched_sizes: bool = False,
    output_loading_info: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    **config_kwargs: Any,
):
    """
    A SegViT whose encoder starts from pretrained ViT weights and whose ATM decoder is freshly initialised.

    Args:
        pretrained_vit (`str` or `os.PathLike`):
            A transformers ViT checkpoint (Hub id like `google/vit-base-patch16-384`, or a directory saved with
            `ViTModel`/`ViTForImageClassification.save_pretrained`), a timm ViT repository or directory, or a timm
            state-dict file (`.safetensors`, `.pth`).
        config_or_preset (`SegViTConfig` or `str`):
            The SegViT architecture, or a preset name (`"ade20k-vit-b"`, ...). Its encoder must match the ViT's
            widths, heads and patch size; its `image_size` (the training crop) sets the grid the position embeddings
            are resized to.
        id2label (`dict[int, str]` or `list[str]`, *optional*):
            The classes to segment, replacing those of the preset or configuration (sets `num_labels`).
        model_class (`type`, *optional*):
            The SegViT class to build, [`SegViTForSemanticSegmentation`] by default.
        ignore_mismatched_sizes (`bool`, *optional*, defaults to `False`):
            Leave encoder parameters whose shapes do not fit freshly initialised instead of raising.
        output_loading_info (`bool`, *optional*, defaults to `False`):
            Also return the [`EncoderLoadingReport`].
        revision, cache_dir, token, local_files_only:
            Passed to the Hub download.
        config_kwargs:
            Further configuration overrides (e.g. `drop_path_rate=0.2`).

    Returns:
        The model in eval mode, as `from_pretrained` returns it (call `.train()` to fine-tune), or `(model, report)`
        with `output_loading_info=True`. Encoder parameters the checkpoint lacks and checkpoint tensors that fit
        nothing are logged as a warning and listed in the report.
    """
    model_class = model_class or SegViTForSemanticSegmentation
    config = _build_config(config_or_preset, model_class.config_class, id2label, config_kwargs)
    source = os.fspath(pretrained_vit)
    hub_kwargs = {"revision": revision, "cache_dir": cache_dir, "token": token, "local_files_only": local_files_only}
    encoder_state, grid, ignored, layout = _read_encoder_source(source, config.encoder_config, hub_kwargs)
    model = model_class(config)
    report = load_encoder_weights(
        model,
        encoder_state,
        grid,
        source=source,
        layout=layout,
        ignored=ignored,
        ignore_mismatched_sizes=ignore_mismatched_sizes,
    )
    model.eval()
    return (model, report) if output_loading_info else model


__all__ = [
    "EncoderLoadingReport",
    "convert_timm_vit_state_dict",
    "load_encoder_weights",
    "load_timm_vit_state_dict",
    "segvit_from_vit_pretrained",
]
