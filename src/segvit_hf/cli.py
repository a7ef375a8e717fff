"""The `segvit` command.

    segvit predict IMAGE... --model MODEL --out DIR [--slide] [--tta] [--masks] [--threads N] [--overwrite]
    segvit download NAME... [--revision REV]

`predict` writes, for each image, `<name>_labels.png` (the class id of every pixel, at the image's size),
`<name>_overlay.png` (the label map over the image, with a legend) and, with `--masks`, `<name>_masks.png` (the ATM
mask maps of the top classes). Predictions go through `segvit_hf.inference.predict`. MODEL is a checkpoint
directory, a Hub id, or the name of a released model (`ade20k-vit-b`, ...), which is downloaded from the authors'
Hub repository and converted on first use (`segvit_hf.released`); `download` does that ahead of time.

Everything that can be checked is checked before anything is written: the arguments, every image (decoded in
full), the model, and the output files, which never replace an input and replace existing files only with
`--overwrite`. Every failure ends in one line on stderr (the traceback with `--debug`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from huggingface_hub.errors import EntryNotFoundError, HFValidationError
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from .console import ArgumentParser, CommandError, add_debug_argument, run_command
from .hub import download_hub_file
from .image_processing_segvit import SegViTImageProcessor, to_8bit_image
from .inference import TTA_SCALES, predict
from .modeling_segvit import SegViTForSemanticSegmentation
from .presets import PRESETS
from .released import download_released
from .visualize import draw_mask_grid, draw_overlay

RELEASED_NAMES = tuple(name for name, preset in PRESETS.items() if preset.official_checkpoint is not None)

# The files --model must provide, and what is missing without each.
_CHECKPOINT_FILES = (("config.json", "no config.json"), ("preprocessor_config.json", "no image processor"))


def _build_parser() -> tuple[ArgumentParser, dict[str, ArgumentParser]]:
    parser = ArgumentParser(prog="segvit", description="SegViT semantic segmentation.")
    commands = parser.add_subparsers(dest="command", required=True)
    predict_parser = commands.add_parser(
        "predict",
        help="segment images and write label maps and pictures",
        description=(
            "Segment images with a SegViT checkpoint and write, per image, NAME_labels.png (class ids), "
            "NAME_overlay.png and, with --masks, NAME_masks.png."
        ),
    )
    predict_parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    predict_parser.add_argument(
        "--model",
        required=True,
        help="checkpoint directory (model and image processor saved with save_pretrained), Hub id, or released "
        f"model ({', '.join(RELEASED_NAMES)}: downloaded and converted on first use)",
    )
    predict_parser.add_argument("--out", required=True, type=Path, help="output directory (created if missing)")
    predict_parser.add_argument(
        "--overwrite", action="store_true", help="replace output files that already exist (never an input image)"
    )
    predict_parser.add_argument("--slide", action="store_true", help="sliding-window inference (the paper's protocol)")
    predict_parser.add_argument(
        "--tta", action="store_true", help=f"multi-scale {TTA_SCALES} + flip test-time augmentation"
    )
    predict_parser.add_argument("--scales", type=float, nargs="+", help="test scales (overrides those of --tta)")
    predict_parser.add_argument("--flip", action="store_true", help="add horizontally flipped inputs")
    predict_parser.add_argument("--masks", action="store_true", help="also write the ATM mask grid")
    predict_parser.add_argument("--top-k", type=int, default=8, help="classes in the mask grid (default 8)")
    predict_parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1] (default 0.5)")
    predict_parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    predict_parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice); on a CPU shared with other work, 1 can be much faster",
    )
    add_debug_argument(predict_parser)

    download_parser = commands.add_parser(
        "download",
        help="download and convert released models",
        description=(
            "Download the authors' released checkpoints from the Hub (Akide/SegViTv1), convert them once and print "
            "the directory of each converted model (in huggingface_hub's assets cache)."
        ),
    )
    download_parser.add_argument(
        "names", nargs="+", choices=RELEASED_NAMES, metavar="NAME", help=", ".join(RELEASED_NAMES)
    )
    download_parser.add_argument("--revision", help="branch, tag or commit of Akide/SegViTv1 (default: the latest)")
    add_debug_argument(download_parser)
    export_parser = commands.add_parser(
        "export",
        help="export a checkpoint to ONNX",
        description=(
            "Export a SegViT checkpoint (model and image processor saved with save_pretrained) to OUT_DIR/model.onnx, "
            "with dynamic batch, height and width, and save the configuration and image processor beside it. Needs "
            "the onnx extra: pip install \"segvit-hf[onnx]\"."
        ),
    )
    export_parser.add_argument("model", metavar="MODEL", help="checkpoint directory, Hub id or released model name")
    export_parser.add_argument("out", metavar="OUT_DIR", type=Path, help="output directory (created if missing)")
    export_parser.add_argument("--opset", type=int, help="ONNX opset version (default: torch.onnx's)")
    export_parser.add_argument(
        "--int8", action="store_true", help="also write model_int8.onnx (dynamic int8 quantisation of the weights)"
    )
    add_debug_argument(export_parser)
    return parser, {"predict": predict_parser, "download": download_parser, "export": export_parser}


def _read_image(path: Path) -> Image.Image:
    """The image at `path`, decoded in full, upright as viewers show it (EXIF orientation, as transformers'
    `load_image`) and at 8 bits per channel."""
    with Image.open(path) as opened:
        opened.load()  # decodes every pixel: a truncated or corrupt file fails here, not halfway through the outputs
        return to_8bit_image(ImageOps.exif_transpose(opened))


def _device(parser: ArgumentParser, name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
        torch.empty(0, device=device)  # an unknown, absent or uncompiled device fails here
    except (RuntimeError, AssertionError) as error:
        parser.error(f"--device {name}: {' '.join(str(error).split())}")
    return device


def _check_output_directory(parser: ArgumentParser, out: Path) -> None:
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file, not a directory")
    existing = next(directory for directory in (out, *out.absolute().parents) if directory.exists())
    if not existing.is_dir():
        parser.error(f"--out {out} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"--out {out}: {existing} is not writable")


def _output_files(args: argparse.Namespace) -> dict[Path, Path]:
    """Each output file of the run, with the image it comes from."""
    kinds = ("labels", "overlay", "masks") if args.masks else ("labels", "overlay")
    return {args.out / f"{path.stem}_{kind}.png": path for path in args.images for kind in kinds}


def _check_outputs(parser: ArgumentParser, args: argparse.Namespace) -> None:
    """No output may replace an input image; existing files are replaced only with --overwrite."""
    inputs = {path.resolve() for path in args.images}
    outputs = _output_files(args)
    for output, source in outputs.items():
        if output.resolve() in inputs:
            parser.error(f"the output {output} of {source} would replace that input image: choose another --out")
    existing = [str(output) for output in outputs if output.exists() or output.is_symlink()]
    if existing and not args.overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        parser.error(f"{existing[0]}{more} already exist(s): pass --overwrite to replace them, or choose another --out")


def _check_predict_arguments(parser: ArgumentParser, args: argparse.Namespace) -> None:
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if not 0.0 <= args.alpha <= 1.0:
        parser.error("--alpha must be in [0, 1]")
    if args.scales is not None and min(args.scales) <= 0:
        parser.error(f"--scales must be positive ratios, got {' '.join(map(str, args.scales))}")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    args.device = _device(parser, args.device)
    stems = [path.stem for path in args.images]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        parser.error(f"several images are named {duplicates}: their outputs would overwrite each other")
    for path in args.images:
        if not path.is_file():
            parser.error(f"no such image file: {path}")
        try:
            _read_image(path)
        except (OSError, ValueError) as error:  # PIL reports unreadable and corrupt files as OSError subclasses
            parser.error(f"cannot read {path} as an image: {' '.join(str(error).split())}")
    _check_output_directory(parser, args.out)
    _check_outputs(parser, args)


def _checkpoint_directory(model: str) -> str:
    """What `from_pretrained` should load for --model: a directory, or a Hub id whose files were checked."""
    if Path(model).is_dir():
        for filename, what in _CHECKPOINT_FILES:
            if not (Path(model) / filename).is_file():
                raise CommandError(_missing_file_message(model, what))
        return model
    if model in RELEASED_NAMES:
        return str(download_released(model))
    for filename, what in _CHECKPOINT_FILES:
        try:
            download_hub_file(model, filename)
        except HFValidationError:
            raise CommandError(f"--model {model} is neither a directory, a released model nor a Hub id") from None
        except EntryNotFoundError:
            raise CommandError(_missing_file_message(model, what)) from None
    return model


def _missing_file_message(model: str, what: str) -> str:
    return (
        f"{what} in {model}: --model needs a model and its image processor saved with save_pretrained, e.g. "
        "get_preset('ade20k-vit-b').image_processor().save_pretrained(DIR)"
    )


def _save_label_map(label_map: torch.Tensor, num_labels: int, path: Path) -> None:
    """Class ids as an 8-bit grayscale PNG (16-bit beyond 256 classes)."""
    array = label_map.numpy()
    if num_labels <= 256:
        Image.fromarray(array.astype(np.uint8), mode="L").save(path)
    else:
        Image.fromarray(array.astype(np.uint16), mode="I;16").save(path)


def _predict_command(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    checkpoint = _checkpoint_directory(args.model)
    processor = SegViTImageProcessor.from_pretrained(checkpoint)
    model = SegViTForSemanticSegmentation.from_pretrained(checkpoint)
    model.to(args.device).eval()
    scales = args.scales or (TTA_SCALES if args.tta else (1.0,))
    flip = args.flip or args.tta
    mode = "slide" if args.slide else "whole"
    id2label = model.config.id2label
    args.out.mkdir(parents=True, exist_ok=True)

    for path in tqdm(args.images, desc="segvit predict", unit="image", disable=len(args.images) < 2):
        image = _read_image(path)
        label_map = predict(model, processor, image, mode=mode, scales=scales, flip=flip)
        _save_label_map(label_map, model.config.num_labels, args.out / f"{path.stem}_labels.png")
        overlay = draw_overlay(image, label_map, id2label=id2label, alpha=args.alpha)
        overlay.save(args.out / f"{path.stem}_overlay.png")
        if args.masks:
            # The mask maps come from one whole-image pass at scale 1, whatever --slide/--tta chose for the labels.
            inputs = processor(images=image, return_tensors="pt").to(args.device)
            with torch.inference_mode():
                outputs = model(pixel_values=inputs["pixel_values"].to(model.dtype))
            grid = draw_mask_grid(image, outputs, processor, id2label=id2label, top_k=args.top_k)
            grid.save(args.out / f"{path.stem}_masks.png")
    return 0


def _download_command(args: argparse.Namespace) -> int:
    for name in args.names:
        print(f"{name}: {download_released(name, revision=args.revision)}")
    return 0


def _export_command(args: argparse.Namespace) -> int:
    from .export import export_onnx, quantize_onnx

    checkpoint = _checkpoint_directory(args.model)
    processor = SegViTImageProcessor.from_pretrained(checkpoint)
    model = SegViTForSemanticSegmentation.from_pretrained(checkpoint)
    path = export_onnx(model, processor, args.out, opset_version=args.opset)
    print(f"Wrote {path} with config.json and preprocessor_config.json beside it.")
    if args.int8:
        print(f"Wrote {quantize_onnx(args.out)}.")
    print(f"Run it with segvit_hf.export.SegViTOnnxSegmenter({str(args.out)!r}).")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `segvit` console command; returns the exit status."""
    parser, subparsers = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "predict":
        _check_predict_arguments(subparsers["predict"], args)
        return run_command(_predict_command, args, subparsers["predict"].prog)
    if args.command == "export":
        return run_command(_export_command, args, subparsers["export"].prog)
    return run_command(_download_command, args, subparsers["download"].prog)


if __name__ == "__main__":
    sys.exit(main())
