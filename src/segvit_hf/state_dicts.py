"""Reading and renaming ViT state dicts of other codebases: what the conversion of official SegViT checkpoints
(`segvit_hf.conversion`, mmseg layout) and the loading of pretrained encoders (`segvit_hf.pretrained`, timm layout)
share.

- [`load_torch_checkpoint`]: a torch pickle read with `torch.load(weights_only=True)`, which refuses arbitrary Python
  objects, so a tampered file cannot run code.
- [`ENCODER_PARAMETERS`]: one table of the encoder's parameters under their SegViT, timm and mmseg names, from which
  [`encoder_rename_rules`] builds the rename rules of each layout.
- [`split_qkv`]: a fused query/key/value projection as SegViT's three.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import torch

# The ViT encoder's parameters: (SegViT name relative to `SegViTModel`, timm name, official mmseg name). `{i}` is the
# layer number, `{p}` "weight" or "bias". The fused q/k/v projection is split separately ([`split_qkv`]), and the
# position table (CLS slot first) is cut by each reader.
ENCODER_PARAMETERS: tuple[tuple[str, str, str], ...] = (
    ("embeddings.patch_embeddings.projection.{p}", "patch_embed.proj.{p}", "backbone.patch_embed.projection.{p}"),
    ("layers.{i}.layernorm_before.{p}", "blocks.{i}.norm1.{p}", "backbone.layers.{i}.ln1.{p}"),
    ("layers.{i}.layernorm_after.{p}", "blocks.{i}.norm2.{p}", "backbone.layers.{i}.ln2.{p}"),
    ("layers.{i}.attention.o_proj.{p}", "blocks.{i}.attn.proj.{p}", "backbone.layers.{i}.attn.attn.out_proj.{p}"),
    ("layers.{i}.mlp.fc1.{p}", "blocks.{i}.mlp.fc1.{p}", "backbone.layers.{i}.ffn.layers.0.0.{p}"),
    ("layers.{i}.mlp.fc2.{p}", "blocks.{i}.mlp.fc2.{p}", "backbone.layers.{i}.ffn.layers.1.{p}"),
)
_LAYOUT_COLUMNS = {"timm": 1, "mmseg": 2}


def encoder_rename_rules(layout: str, prefix: str = "") -> list[tuple[str, str]]:
    """
    `(pattern, replacement)` rules from the encoder names of `layout` (`"timm"` or `"mmseg"`) to SegViT's, each
    replacement prefixed with `prefix` (e.g. `"segvit."` for names in [`SegViTForSemanticSegmentation`]).
    """
    column = _LAYOUT_COLUMNS[layout]
    rules = []
    for names in ENCODER_PARAMETERS:
        source, target = re.escape(names[column]), prefix + names[0]
        # The escaped braces of the placeholders become capture groups; the targets refer to them in order.
        groups = {"i": r"(\d+)", "p": r"(weight|bias)"}
        order = re.findall(r"\{(\w)\}", names[column])
        pattern = re.sub(r"\\\{(\w)\\\}", lambda match: groups[match.group(1)], source)
        replacement = target.format(**{key: f"\\{order.index(key) + 1}" for key in order})
        rules.append((pattern, replacement))
    return rules


def rename_key(key: str, rules: Sequence[tuple[str, str]], prefix: str = "") -> str | None:
    """`key` renamed by the first rule whose pattern matches all of it, with `prefix` added; None if none does."""
    for pattern, replacement in rules:
        if re.fullmatch(pattern, key):
            return prefix + re.sub(pattern, replacement, key)
    return None


def split_qkv(tensor: torch.Tensor, layer: str | int, kind: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """A fused `(3 * hidden, ...)` query/key/value projection (weight or bias) as SegViT's three, by name."""
    return {
        f"{prefix}layers.{layer}.attention.{name}.{kind}": part
        for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0))
    }


def load_torch_checkpoint(path: str | os.PathLike, error_class: type[Exception] = ValueError) -> Any:
    """
    The object in the torch file at `path`, read with `torch.load(weights_only=True)` onto the CPU. A missing file
    raises a `FileNotFoundError`; an unreadable one an `error_class` saying why it may be.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike for unreadable files
        raise error_class(
            f"Could not read {path!r} as a torch checkpoint with weights_only=True (it is corrupt, truncated, not a "
            f"torch file, or holds Python objects beyond tensors and plain containers): {error}"
        ) from error


__all__ = ["ENCODER_PARAMETERS", "encoder_rename_rules", "load_torch_checkpoint", "rename_key", "split_qkv"]
