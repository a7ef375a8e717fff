"""The `segvit` command.

    segvit predict IMAGE... --model DIR --out DIR [--slide] [--tta] [--masks]

For each image it writes `<name>_labels.png` (the class id of every pixel, at the image's size), `<name>_overlay.png`
(the label map over the image, with a legend) and, with `--masks`, `<name>_masks.png` (the ATM mask maps of the top
classes). Predictions go through `segvit_hf.inference.predict`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from .image_processing_segvit import SegViTImageProcessor
from .inference import TTA_SCALES, predict
from .modeling_segvit import SegViTForSemanticSegmentation
from .visualize import draw_mask_grid, draw_overlay


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segvit", description="SegViT semantic segmentation.")
    commands = parser.add_subparsers(dest="command", required=True)
    predict_parser = commands.add_parser(
        "predict",
        help="segment images and write label maps and pictures",
        description=(
            "Segment images with a SegViT checkpoint directory (model and image processor saved with "
            "save_pretrained) and write, per image, NAME_labels.png (class ids), NAME_overlay.png and, with --masks, "
            "NAME_masks.png."
        ),
    )
    predict_parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    predict_parser.add_argument("--model", required=True, help="checkpoint directory (or Hub id)")
    predict_parser.add_argument("--out", required=True, type=Path, help="output directory (created if missing)")
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
    export_parser = commands.add_parser(
        "export",
        help="export a checkpoint to ONNX",
        description=(
            "Export a SegViT checkpoint directory (model and image processor saved with save_pretrained) to "
            "OUT_DIR/model.onnx, with dynamic batch, height and width, and save the configuration and image processor "
            "beside it. Needs the onnx extra: pip install \"segvit-hf[onnx]\"."
        ),
    )
    export_parser.add_argument("model", metavar="MODEL_DIR", help="checkpoint directory (or Hub id)")
    export_parser.add_argument("out", metavar="OUT_DIR", type=Path, help="output directory (created if missing)")
    export_parser.add_argument("--opset", type=int, help="ONNX opset version (default: torch.onnx's)")
    export_parser.add_argument(
        "--int8", action="store_true", help="also write model_int8.onnx (dynamic int8 quantisation of the weights)"
    )
    return parser


def _check_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for path in args.images:
        if not path.is_file():
            parser.error(f"no such image file: {path}")
        try:
            with Image.open(path) as image:
                image.verify()
        except (UnidentifiedImageError, OSError) as error:
            parser.error(f"cannot read {path} as an image: {error}")
    stems = [path.stem for path in args.images]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        parser.error(f"several images are named {duplicates}: their outputs would overwrite each other")
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if not 0.0 <= args.alpha <= 1.0:
        parser.error("--alpha must be in [0, 1]")


def _save_label_map(label_map: torch.Tensor, num_labels: int, path: Path) -> None:
    """Class ids as an 8-bit grayscale PNG (16-bit beyond 256 classes)."""
    array = label_map.numpy()
    if num_labels <= 256:
        Image.fromarray(array.astype(np.uint8), mode="L").save(path)
    else:
        Image.fromarray(array.astype(np.uint16), mode="I;16").save(path)


def _predict_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    _check_inputs(parser, args)
    try:
        processor = SegViTImageProcessor.from_pretrained(args.model)
    except OSError as error:
        parser.error(
            f"no image processor in {args.model} ({error.__class__.__name__}). Save one beside the model, e.g. "
            "SegViTImageProcessor.from_preset('ade20k-vit-b').save_pretrained(DIR)."
        )
    model = SegViTForSemanticSegmentation.from_pretrained(args.model)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    scales = args.scales or (TTA_SCALES if args.tta else (1.0,))
    flip = args.flip or args.tta
    mode = "slide" if args.slide else "whole"
    id2label = model.config.id2label
    args.out.mkdir(parents=True, exist_ok=True)

    for path in tqdm(args.images, desc="segvit predict", unit="image", disable=len(args.images) < 2):
        with Image.open(path) as opened:
            # Upright as viewers show it (EXIF orientation), as transformers' `load_image` does.
            image = ImageOps.exif_transpose(opened)
        label_map = predict(model, processor, image, mode=mode, scales=scales, flip=flip)
        _save_label_map(label_map, model.config.num_labels, args.out / f"{path.stem}_labels.png")
        overlay = draw_overlay(image, label_map, id2label=id2label, alpha=args.alpha)
        overlay.save(args.out / f"{path.stem}_overlay.png")
        if args.masks:
            # The mask maps come from one whole-image pass at scale 1, whatever --slide/--tta chose for the labels.
            inputs = processor(images=image, return_tensors="pt").to(device)
            with torch.inference_mode():
                outputs = model(pixel_values=inputs["pixel_values"].to(model.dtype))
            grid = draw_mask_grid(image, outputs, processor, id2label=id2label, top_k=args.top_k)
            grid.save(args.out / f"{path.stem}_masks.png")
    return 0


def _export_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .export import export_onnx, quantize_onnx

    try:
        processor = SegViTImageProcessor.from_pretrained(args.model)
    except OSError as error:
        parser.error(
            f"no image processor in {args.model} ({error.__class__.__name__}); the export saves it beside the ONNX "
            "file. Save one beside the model, e.g. "
            "SegViTImageProcessor.from_preset('ade20k-vit-b').save_pretrained(DIR)."
        )
    model = SegViTForSemanticSegmentation.from_pretrained(args.model)
    path = export_onnx(model, processor, args.out, opset_version=args.opset)
    print(f"Wrote {path} with config.json and preprocessor_config.json beside it.")
    if args.int8:
        print(f"Wrote {quantize_onnx(args.out)}.")
    print(f"Run it with segvit_hf.export.SegViTOnnxSegmenter({str(args.out)!r}).")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `segvit` console command; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "export":
        return _export_command(parser, args)
    return _predict_command(parser, args)


if __name__ == "__main__":
    sys.exit(main())
