"""Convert checkpoints of the official SegViT code (mmseg 0.24 layout) into [`SegViTForSemanticSegmentation`].

Command line (`segvit-convert`, or `python -m segvit_hf.conversion`)::

    segvit-convert ade_51.3.pth converted/ade20k-vit-b --preset ade20k-vit-b

The official files are torch pickles. They are read with `torch.load(weights_only=True)`, which refuses arbitrary
Python objects, so a tampered file cannot run code.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .configuration_segvit import SegViTConfig
from .console import ArgumentParser, add_debug_argument, run_command
from .image_processing_segvit import SegViTImageProcessor
from .labels import id2label_for
from .modeling_segvit import SegViTForSemanticSegmentation
from .presets import PRESETS, get_preset

# Official keys that hold nothing our model needs: the CLS token never reaches the patch tokens (its position slot
# is dropped too), and the losses' class-weight buffers are rebuilt from the configuration.
_UNUSED_OFFICIAL_KEYS = (
    "backbone.cls_token",
    "decode_head.loss_decode.criterion.empty_weight",
    "decode_head.atm.loss_decode.criterion.empty_weight",
)

# (official pattern, our name); `{i}`, `{k}`, `{j}` stand for layer, stage and decoder-layer numbers.
_BACKBONE_RULES = [
    (r"backbone\.patch_embed\.projection\.(weight|bias)", r"segvit.embeddings.patch_embeddings.projection.\1"),
    (r"backbone\.layers\.(\d+)\.ln1\.(weight|bias)", r"segvit.layers.\1.layernorm_before.\2"),
    (r"backbone\.layers\.(\d+)\.ln2\.(weight|bias)", r"segvit.layers.\1.layernorm_after.\2"),
    (r"backbone\.layers\.(\d+)\.attn\.attn\.out_proj\.(weight|bias)", r"segvit.layers.\1.attention.o_proj.\2"),
    (r"backbone\.layers\.(\d+)\.ffn\.layers\.0\.0\.(weight|bias)", r"segvit.layers.\1.mlp.fc1.\2"),
    (r"backbone\.layers\.(\d+)\.ffn\.layers\.1\.(weight|bias)", r"segvit.layers.\1.mlp.fc2.\2"),
]
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
        path = os.fspath(path_or_state_dict)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No checkpoint file at {path!r}.")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises pickle, zip and runtime errors alike for unreadable files
            raise CheckpointConversionError(
                f"Could not read {path!r} as a torch checkpoint with weights_only=True (it is corrupt, truncated, "
                f"not a torch file, or holds Python objects beyond tensors and plain containers): {error}"
            ) from error
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


def _rename_backbone(key: str) -> str | None:
    for pattern, replacement in _BACKBONE_RULES:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def _rename_atm_layer(rest: str, prefix: str) -> str | None:
    for pattern, replacement in _ATM_LAYER_RULES:
        if re.fullmatch(pattern, rest):
            return prefix + re.sub(pattern, replacement, rest)
    return None


def _rename_cascade_head(key: str) -> str | None:
    """`ATMHead`: stage k's lateral and ATM layers, the class queries and the class head."""
    if match := re.fullmatch(r"decode_head\.input_proj_(\d+)\.(weight|bias)", key):
        return f"decode_head.stages.{int(match.group(1)) - 1}.lateral.proj.{match.group(2)}"
    if match := re.fullmatch(r"decode_head\.proj_norm_(\d+)\.(weight|bias)", key):
        return f"decode_head.stages.{int(match.group(1)) - 1}.lateral.norm.{match.group(2)}"
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
    if match := re.fullmatch(r"decode_head\.input_proj_(\d+)\.(weight|bias)", key):
        return f"decode_head.query_upsampler.laterals.{int(match.group(1)) - 1}.proj.{match.group(2)}"
    if match := re.fullmatch(r"decode_head\.proj_norm_(\d+)\.(weight|bias)", key):
        return f"decode_head.query_upsampler.laterals.{int(match.group(1)) - 1}.norm.{match.group(2)}"
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
            layer, kind = match.groups()
            for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                converted[f"segvit.layers.{layer}.attention.{name}.{kind}"] = part
        elif (name := _rename_backbone(key) or rename_head(key)) is not None:
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
) -> SegViTForSemanticSegmentation:
    """
    Build a [`SegViTForSemanticSegmentation`] from an official SegViT checkpoint.

    Widths, depths, class count and position grid are read from the tensors; head counts, `out_indices`, the crop
    size and `shrink_index` come from the arguments, else from `preset` (one of `segvit_hf.PRESETS`). Labels come from
    `id2label`, else from the preset when its class count matches the checkpoint.

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


def preset_image_processor(preset: str, num_labels: int):
    """
    The image processor of a released model converted with `preset`: the preset's test-time resizing and
    normalisation, with the background class kept when a PASCAL-Context checkpoint has 60 classes instead of 59.
    """
    with_background = get_preset(preset).dataset == "pascal-context" and num_labels == 60
    return SegViTImageProcessor.from_preset(preset, with_background=with_background)


# Architecture settings the official tensors do not record: without --preset, each must be given.
_ARCHITECTURE_FLAGS = ("num_attention_heads", "decoder_num_attention_heads", "out_indices", "image_size")


def _build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="segvit-convert",
        description="Convert an official SegViT checkpoint (mmseg layout) into a transformers checkpoint directory "
        "(also run as `python -m segvit_hf.conversion`).",
    )
    parser.add_argument("checkpoint", help="official .pth file; with --all, the directory holding the released files")
    parser.add_argument(
        "output_dir",
        help="directory to write config.json, model.safetensors and preprocessor_config.json to; with --all, the "
        "parent of one directory per preset",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="convert every released checkpoint found in the source directory, recognised by its file name, each "
        "with its processor settings, model card and model code",
    )
    parser.add_argument("--push-to-hub", metavar="ORG", help="with --all: upload each model to ORG/segvit-<preset>")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="architecture and labels of a released model")
    parser.add_argument("--num-attention-heads", type=int, help="encoder heads (needed without --preset)")
    parser.add_argument("--decoder-num-attention-heads", type=int, help="ATM decoder heads (needed without --preset)")
    parser.add_argument("--out-indices", type=int, nargs="+", help="encoder layers fed to the decoder (needed "
                        "without --preset)")
    parser.add_argument("--image-size", type=int, help="training crop size (needed without --preset)")
    parser.add_argument("--shrink-index", type=int, help="QD layer of a Shrunk checkpoint")
    add_debug_argument(parser)
    return parser


def _check_arguments(parser: ArgumentParser, args: argparse.Namespace) -> None:
    if args.all:
        overrides = ("preset", "shrink_index", *_ARCHITECTURE_FLAGS)
        given = [name for name in overrides if getattr(args, name) is not None]
        if given:
            parser.error(f"--all takes the architecture from each file's preset; drop {', '.join(given)}.")
        if not os.path.isdir(args.checkpoint):
            parser.error(f"no such directory of released checkpoints: {args.checkpoint}")
        return
    if args.push_to_hub:
        parser.error("--push-to-hub is for --all; push a single model with segvit_hf.hub.push_to_hub.")
    if not os.path.isfile(args.checkpoint):
        parser.error(f"no such checkpoint file: {args.checkpoint}")
    missing = [name for name in _ARCHITECTURE_FLAGS if getattr(args, name) is None]
    if args.preset is None and missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        parser.error(f"without --preset, give {flags}: the checkpoint's tensors do not record them")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        parser.error(f"output_dir {args.output_dir} is a file, not a directory")


def _convert_all(args: argparse.Namespace) -> int:
    results = convert_released_checkpoints(args.checkpoint, args.output_dir, push_to_hub=args.push_to_hub)
    converted = sum(result.status == "converted" for result in results)
    failed = sum(result.status == "failed" for result in results)
    print(f"{converted} of {len(results)} released checkpoints converted, {failed} failed.")
    return 1 if failed or not converted else 0


def _convert_one(args: argparse.Namespace) -> int:
    model = convert_official_checkpoint(
        args.checkpoint,
        num_attention_heads=args.num_attention_heads,
        decoder_num_attention_heads=args.decoder_num_attention_heads,
        out_indices=args.out_indices,
        image_size=args.image_size,
        shrink_index=args.shrink_index,
        preset=args.preset,
    )
    if args.preset is not None:
        processor = preset_image_processor(args.preset, model.config.num_labels)
    else:
        processor = SegViTImageProcessor(size={"shortest_edge": model.config.encoder_config.image_size})
        print("No --preset: the image processor uses ImageNet normalisation; ViT-L 'jax' models need [-1, 1] "
              "(image_mean = image_std = 0.5): edit preprocessor_config.json if so.")
    model.save_pretrained(args.output_dir)
    processor.save_pretrained(args.output_dir)
    print(f"Wrote {type(model).__name__} ({model.config.num_labels} classes) and its image processor to "
          f"{args.output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The `segvit-convert` command (`python -m segvit_hf.conversion`); returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    return run_command(_convert_all if args.all else _convert_one, args, parser.prog)


@dataclass
class ReleasedCheckpointConversion:
    """
    What `--all` did with one released file: `status` is `"converted"`, `"missing"` (not in the source directory)
    or `"failed"` (with the error in `message`).
    """

    file_name: str
    preset: str
    status: str
    output_dir: str | None = None
    num_labels: int | None = None
    repo_id: str | None = None
    message: str = ""


def convert_released_checkpoints(
    source_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    push_to_hub: str | None = None,
    api=None,
) -> list[ReleasedCheckpointConversion]:
    """
    Converts each of the seven released checkpoints found in `source_dir` (recognised by the file names of the
    release, `PRESETS[name].official_checkpoint`) into `output_dir/segvit-<preset>`: weights, configuration (class
    count read from the tensors: PASCAL-Context files may hold 59 or 60 classes), the preset's image-processor
    settings, a model card, and the model code so the directory loads with transformers alone. With `push_to_hub`
    (an organisation or user name) each result is uploaded to `<push_to_hub>/segvit-<preset>` (`api`: the
    `huggingface_hub.HfApi` to use). One file's failure is reported and the others go on; a line per file is printed.
    """
    from .hub import model_card, push_folder_to_hub, save_pretrained_with_code

    source_dir, output_dir = Path(source_dir), Path(output_dir)
    if not source_dir.is_dir():
        raise FileNotFoundError(f"{source_dir} is not a directory of released checkpoints.")
    results = []
    for preset in PRESETS.values():
        if preset.official_checkpoint is None:
            continue
        result = ReleasedCheckpointConversion(preset.official_checkpoint, preset.name, "missing")
        results.append(result)
        path = source_dir / preset.official_checkpoint
        if not path.is_file():
            print(f"{preset.official_checkpoint}: missing from {source_dir}")
            continue
        try:
            model = convert_official_checkpoint(path, preset=preset.name)
            destination = output_dir / f"segvit-{preset.name}"
            repo_id = f"{push_to_hub}/segvit-{preset.name}" if push_to_hub else None
            save_pretrained_with_code(model, destination, preset_image_processor(preset.name, model.config.num_labels))
            model_card(
                destination,
                preset=preset.name,
                config=model.config,
                model_id=repo_id,
                num_parameters=model.num_parameters(),
            )
            result.output_dir, result.num_labels = str(destination), model.config.num_labels
            del model
            if repo_id is not None:
                message = f"Convert {preset.official_checkpoint}"
                push_folder_to_hub(destination, repo_id, commit_message=message, api=api)
                result.repo_id = repo_id
            result.status = "converted"
            print(f"{preset.official_checkpoint}: {preset.name}, {result.num_labels} classes -> {destination}"
                  + (f" -> {repo_id}" if repo_id else ""))
        except Exception as error:  # one bad file must not stop the others; the error is reported and fails the run
            result.status, result.message = "failed", f"{type(error).__name__}: {error}"
            print(f"{preset.official_checkpoint}: FAILED ({result.message})")
    return results


if __name__ == "__main__":
    sys.exit(main())
