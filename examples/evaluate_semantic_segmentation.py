#!/usr/bin/env python
"""Evaluate a SegViT checkpoint on a data set: whole image, sliding window, or multi-scale + flip.

Every image is predicted at its original size (`segvit_hf.inference.predict`) and compared with its full-resolution
label map; the mIoU comes from one data-set-wide confusion matrix. The per-class IoU table is printed and written as
JSON and markdown.

    # the checkpoint written by `make demo`, on the toy validation set
    python examples/evaluate_semantic_segmentation.py --model outputs/demo/model --dataset toy --mode slide --threads 1

    # the paper's ADE20K protocol (single scale, then multi-scale + flip), as in docs/evaluation.md
    python examples/evaluate_semantic_segmentation.py --model converted/segvit-ade20k-vit-b \
        --dataset data/ADEChallengeData2016 --folder_layout ade20k --mode slide --output_dir results/ade20k-vit-b-ss
    python examples/evaluate_semantic_segmentation.py --model converted/segvit-ade20k-vit-b \
        --dataset data/ADEChallengeData2016 --folder_layout ade20k --mode slide --tta \
        --output_dir results/ade20k-vit-b-ms
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from segvit_hf import SegViTForSemanticSegmentation, SegViTImageProcessor, get_preset
from segvit_hf.data import load_dataset_source
from segvit_hf.inference import MODES, TTA_SCALES
from segvit_hf.metrics import evaluate_dataset, format_iou_table, results_to_json


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="SegViT checkpoint: a directory or a Hub id.")
    parser.add_argument("--processor", help="Image processor to use (default: the checkpoint's, else --preset's).")
    parser.add_argument("--preset", help="Take the image processor of this preset when the checkpoint has none.")
    parser.add_argument("--dataset", default="toy", help="'toy', a data set folder, or a Hub data set id.")
    parser.add_argument("--folder_layout", default="ade20k", help="ade20k, cocostuff10k or pascal-context.")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--label_column", default="annotation")
    parser.add_argument(
        "--reduce_labels",
        type=lambda value: value.lower() in ("1", "true", "yes"),
        default=None,
        help="Map raw label 0 to 255 and k to k-1 (default: the data source's convention).",
    )
    parser.add_argument("--split", default="validation", choices=("train", "validation"))
    parser.add_argument("--mode", default="slide", choices=MODES, help="Whole image or sliding window.")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0], help="Test scales (ratios).")
    parser.add_argument("--flip", action="store_true", help="Also predict the flipped images.")
    parser.add_argument("--tta", action="store_true", help=f"The paper's multi-scale + flip: scales {TTA_SCALES}.")
    parser.add_argument("--crop_size", type=int, help="Sliding-window crop (default: the model's training crop).")
    parser.add_argument("--stride", type=int, help="Sliding-window stride (default: the released models').")
    parser.add_argument("--max_samples", type=int, help="Evaluate the first N images only.")
    parser.add_argument("--toy_num_train", type=int, default=384, help="Toy set: training images (fixes the split).")
    parser.add_argument("--toy_num_validation", type=int, default=64, help="Toy set: validation images.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest for small models on a busy CPU).")
    parser.add_argument("--output_dir", help="Write results.json and results.md here.")
    return parser.parse_args(argv)


def load_processor(args):
    if args.processor:
        return SegViTImageProcessor.from_pretrained(args.processor)
    try:
        return SegViTImageProcessor.from_pretrained(args.model)
    except OSError:
        if not args.preset:
            raise ValueError(
                f"{args.model} has no preprocessor_config.json; pass --processor or --preset to say how to resize "
                "and normalise the images."
            ) from None
        return get_preset(args.preset).image_processor()


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = SegViTForSemanticSegmentation.from_pretrained(args.model).to(args.device).eval()
    processor = load_processor(args)
    source = load_dataset_source(
        args.dataset,
        folder_layout=args.folder_layout,
        image_column=args.image_column,
        label_column=args.label_column,
        reduce_labels=args.reduce_labels,
        toy_num_train=args.toy_num_train,
        toy_num_validation=args.toy_num_validation,
    )
    scales, flip = (TTA_SCALES, True) if args.tta else (tuple(args.scales), args.flip)
    protocol = f"{args.mode}, scales {list(scales)}, flip {flip}"
    print(f"Evaluating {args.model} on {args.dataset} ({args.split}): {protocol}")
    start = time.perf_counter()
    results = evaluate_dataset(
        model,
        processor,
        source.splits[args.split],
        mode=args.mode,
        scales=scales,
        flip=flip,
        crop_size=args.crop_size,
        stride=args.stride,
        reduce_labels=source.reduce_labels,
        max_samples=args.max_samples,
    )
    elapsed = time.perf_counter() - start
    table = format_iou_table(results, model.config.id2label)
    print(table)
    print(f"mIoU {100 * results['mean_iou']:.2f} ({protocol}; {elapsed:.1f} s)")
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        report = results_to_json(results, model.config.id2label)
        report.update(
            model=args.model, dataset=args.dataset, split=args.split, mode=args.mode, scales=list(scales), flip=flip
        )
        with open(os.path.join(args.output_dir, "results.json"), "w") as handle:
            json.dump(report, handle, indent=2)
        with open(os.path.join(args.output_dir, "results.md"), "w") as handle:
            handle.write(f"# {args.model} on {args.dataset} ({args.split})\n\nProtocol: {protocol}.\n\n{table}\n")
        print(f"Wrote {args.output_dir}/results.json and results.md")
    return results


if __name__ == "__main__":
    main()
