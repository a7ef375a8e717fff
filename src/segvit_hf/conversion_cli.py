"""The `segvit-convert` command (`python -m segvit_hf.conversion_cli`): an official SegViT checkpoint converted into a
transformers checkpoint directory, or with `--all` every released file of a directory (optionally pushed to the Hub)::

    segvit-convert ade_51.3.pth converted/ade20k-vit-b --preset ade20k-vit-b
    segvit-convert --all downloads/ converted/ [--push-to-hub ORG]

The conversion itself is `segvit_hf.conversion`; `--all` is `segvit_hf.released.convert_released_checkpoints`.
"""

from __future__ import annotations

import argparse
import os
import sys

from .console import ArgumentParser, add_debug_argument, run_command
from .conversion import convert_official_checkpoint
from .image_processing_segvit import SegViTImageProcessor
from .presets import PRESETS, get_preset
from .released import convert_released_checkpoints

# Architecture settings the official tensors do not record: without --preset, each must be given.
_ARCHITECTURE_FLAGS = ("num_attention_heads", "decoder_num_attention_heads", "out_indices", "image_size")


def _build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="segvit-convert",
        description="Convert an official SegViT checkpoint (mmseg layout) into a transformers checkpoint directory "
        "(also run as `python -m segvit_hf.conversion_cli`).",
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
        processor = get_preset(args.preset).image_processor_for(model.config.num_labels)
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
    """The `segvit-convert` command (`python -m segvit_hf.conversion_cli`); returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    return run_command(_convert_all if args.all else _convert_one, args, parser.prog)


__all__ = ["main"]


if __name__ == "__main__":
    sys.exit(main())
