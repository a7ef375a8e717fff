#!/usr/bin/env python
"""`make demo`: train, evaluate, save and use a small SegViT on the embedded toy data set, offline, on a CPU.

1. generates the toy scene-parsing set (6 classes; 384 training and 64 validation images of varied, non-square
   sizes; nothing downloaded);
2. trains a small SegViT (ViT patch 8, width 96, 6 layers; ATM decoder of width 64) with the 🤗 Trainer and the
   paper's recipe: its augmentation (random resize 0.5-2, crop with cat_max_ratio 0.75, flip, photometric
   distortion, padding), AdamW with head lr x10 and no decay on norms / biases / position embeddings / class
   queries, poly decay with linear warm-up, gradient clipping 35;
3. evaluates on the validation images at their original size (sliding window, the paper's protocol, and whole
   image) and prints mIoU and per-class IoU;
4. saves model + image processor + model card to `outputs/demo/model`, the results to `outputs/demo` (and, with
   `--results_file`, with the settings that produced them: `make demo` records `benchmarks/results/demo.json`, the
   source of the README's table, see [`readme_table`]);
5. runs the `image-segmentation` pipeline on validation images and writes overlays to `outputs/demo/overlays`.

    python examples/demo.py [--output_dir outputs/demo] [--max_steps 300] [--results_file FILE]
"""

from __future__ import annotations

import os

# Offline by construction: nothing here needs the network, and nothing may try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import Trainer, TrainingArguments, pipeline
from transformers.utils import logging as transformers_logging

import segvit_hf
from segvit_hf import SegViTForSemanticSegmentation, SegViTImageProcessor
from segvit_hf.data import build_segmentation_datasets, collate_segmentation, load_dataset_source
from segvit_hf.hub import model_card, save_pretrained_with_code
from segvit_hf.metrics import evaluate_dataset, format_iou_table, results_to_json
from segvit_hf.optimization import create_segvit_optimizer, get_poly_schedule_with_warmup
from segvit_hf.toy import TOY_CROP_SIZE, TOY_PALETTE, TOY_TRAIN_SCALE, toy_model_config
from segvit_hf.training import DatasetEpochCallback
from segvit_hf.visualize import draw_overlay

# The toy images are normalised to [-1, 1].
IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)
# The arguments that decide the demo's figures, recorded beside them in --results_file.
RECORDED_SETTINGS = ("max_steps", "batch_size", "learning_rate", "warmup_steps", "num_train", "num_validation", "seed",
                     "threads")
OVERLAY_ZOOM = 4  # the toy images are small: overlays are enlarged (nearest neighbour) to be readable


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--max_steps", type=int, default=300, help="Optimiser steps (batches of 16 crops).")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=5e-4, help="Encoder lr; the head gets 10x.")
    parser.add_argument("--warmup_steps", type=int, default=50)
    parser.add_argument("--num_train", type=int, default=384, help="Toy training images.")
    parser.add_argument("--num_validation", type=int, default=64, help="Toy validation images.")
    parser.add_argument("--num_overlays", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads. 1 by default: this small model gains little from more, and on a CPU shared "
        "with other work, threads waiting on each other at every small operation make training many times slower.",
    )
    parser.add_argument(
        "--results_file",
        help="Also write the results and the settings that produced them to this JSON file (`make demo`: "
        "benchmarks/results/demo.json, from which the README's table comes).",
    )
    return parser.parse_args(argv)


def readme_table(report: dict) -> str:
    """The README's table: per-class validation IoU and mIoU (sliding window) in percent, from a results report."""
    slide = report["slide"]
    names = list(slide["per_category_iou"])
    values = ["n/a" if value is None else f"{100 * value:.1f}" for value in slide["per_category_iou"].values()]
    return "\n".join(
        [
            "| " + " | ".join(names) + " | **mean** |",
            "|" + "---|" * (len(names) + 1),
            "| " + " | ".join(values) + f" | **{100 * slide['mean_iou']:.1f}** |",
        ]
    )


def label_map_from_segments(segments, label2id, size) -> np.ndarray:
    """The pipeline's per-class binary masks back into one `(height, width)` label map."""
    label_map = np.full(size, -1, dtype=np.int64)  # negative ids are drawn black: no pixel should stay so
    for segment in segments:
        label_map[np.asarray(segment["mask"]) > 0] = label2id[segment["label"]]
    return label_map


def enlarge(image: Image.Image, label_map: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    size = (image.width * OVERLAY_ZOOM, image.height * OVERLAY_ZOOM)
    big_labels = np.kron(label_map, np.ones((OVERLAY_ZOOM, OVERLAY_ZOOM), dtype=label_map.dtype))
    return image.resize(size, Image.NEAREST), big_labels


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (left.width + right.width + 8, max(left.height, right.height)), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + 8, 0))
    return canvas


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    transformers_logging.set_verbosity_error()
    output_dir = Path(args.output_dir)
    model_dir, overlay_dir = output_dir / "model", output_dir / "overlays"
    for directory in (model_dir, overlay_dir):
        directory.mkdir(parents=True, exist_ok=True)

    print(f"segvit-hf {segvit_hf.__version__} demo: torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)")
    print("[1/5] Generating the toy data set ...")
    source = load_dataset_source(
        "toy", toy_num_train=args.num_train, toy_num_validation=args.num_validation, seed=args.seed
    )
    train_dataset, _ = build_segmentation_datasets(
        source, TOY_CROP_SIZE, IMAGE_MEAN, IMAGE_STD, num_labels=len(source.id2label), train_scale=TOY_TRAIN_SCALE
    )
    validation = source.splits["validation"]
    print(
        f"      {len(train_dataset)} training / {len(validation)} validation images, classes {list(source.id2label.values())}"
    )

    print(f"[2/5] Training a small SegViT for {args.max_steps} steps of {args.batch_size} crops ...")
    torch.manual_seed(args.seed)
    config = toy_model_config()
    model = SegViTForSemanticSegmentation(config)
    num_parameters = sum(p.numel() for p in model.parameters())
    print(
        f"      {num_parameters / 1e6:.2f}M parameters; ViT patch {config.encoder_config.patch_size}, crop {TOY_CROP_SIZE}"
    )
    optimizer = create_segvit_optimizer(model, learning_rate=args.learning_rate, weight_decay=0.01)
    scheduler = get_poly_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps)
    training_args = TrainingArguments(
        output_dir=str(output_dir / "trainer"),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        max_grad_norm=35.0,
        logging_steps=50,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=args.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,  # CPU only
        disable_tqdm=False,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=collate_segmentation,
        optimizers=(optimizer, scheduler),
        callbacks=[DatasetEpochCallback()],
    )
    train_start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - train_start
    model = trainer.model.eval()

    print("[3/5] Evaluating on the validation images at their original size ...")
    processor = SegViTImageProcessor(
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        size={"shortest_edge": TOY_CROP_SIZE, "longest_edge": max(TOY_TRAIN_SCALE)},
        patch_size=config.encoder_config.patch_size,
    )
    results = {}
    for mode in ("slide", "whole"):
        results[mode] = evaluate_dataset(model, processor, validation, mode=mode)
    slide = results["slide"]
    table = format_iou_table(slide, config.id2label)
    print(table)
    print(
        f"      validation mIoU: {100 * slide['mean_iou']:.2f} (sliding window, the paper's protocol), "
        f"{100 * results['whole']['mean_iou']:.2f} (whole image)"
    )

    print("[4/5] Saving model, image processor and model card ...")
    # With the model code alongside, the directory also loads with transformers alone (trust_remote_code=True).
    save_pretrained_with_code(model, model_dir, image_processor=processor)
    model_card(
        model_dir,
        config=config,
        measured_miou={"ss": round(100 * float(slide["mean_iou"]), 2)},
        measured_with=(
            f"segvit-hf {segvit_hf.__version__}: toy validation set ({len(validation)} images), sliding window "
            f"{TOY_CROP_SIZE}px, trained {args.max_steps} steps by examples/demo.py"
        ),
        num_parameters=num_parameters,
    )
    report = {mode: results_to_json(values, config.id2label) for mode, values in results.items()}
    report["train_seconds"] = round(train_seconds, 1)
    report["max_steps"] = args.max_steps
    report["settings"] = {name: getattr(args, name) for name in RECORDED_SETTINGS}
    report["versions"] = {"segvit-hf": segvit_hf.__version__, "torch": torch.__version__}
    (output_dir / "eval_results.json").write_text(json.dumps(report, indent=2))
    if args.results_file:
        Path(args.results_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results_file).write_text(json.dumps(report, indent=2) + "\n")
    (output_dir / "eval_results.md").write_text(
        f"# Toy validation set, sliding window\n\n{table}\n\nWhole image: mIoU "
        f"{100 * results['whole']['mean_iou']:.2f}\n"
    )

    print(f"[5/5] Running the image-segmentation pipeline on {args.num_overlays} validation images ...")
    segmenter = pipeline("image-segmentation", model=str(model_dir), device="cpu")
    overlay_paths = []
    for index in range(min(args.num_overlays, len(validation))):
        example = validation[index]
        image = example["image"].convert("RGB")
        segments = segmenter(image)
        predicted = label_map_from_segments(segments, config.label2id, (image.height, image.width))
        truth = np.asarray(example["label"]).astype(np.int64)  # 255 (disc rims) is drawn black
        left = draw_overlay(*enlarge(image, predicted), id2label=config.id2label, palette=TOY_PALETTE, legend=True)
        right = draw_overlay(*enlarge(image, truth), id2label=config.id2label, palette=TOY_PALETTE, legend=False)
        path = overlay_dir / f"validation_{index:02d}.png"
        side_by_side(left, right).save(path)
        overlay_paths.append(path)

    total = time.perf_counter() - started
    print()
    print(f"Done in {total:.0f} s (training {train_seconds:.0f} s).")
    print(
        f"  validation mIoU     {100 * slide['mean_iou']:.2f} (sliding window), {100 * results['whole']['mean_iou']:.2f} (whole image)"
    )
    print(f"  model + processor   {model_dir}/ (config.json, model.safetensors, preprocessor_config.json)")
    print(f"  model card          {model_dir / 'README.md'}")
    print(f"  results             {output_dir / 'eval_results.json'}, {output_dir / 'eval_results.md'}"
          + (f", {args.results_file}" if args.results_file else ""))
    print(f"  overlays            {overlay_dir}/ (prediction with legend | ground truth), {len(overlay_paths)} images")
    print(f"Try it: pipeline('image-segmentation', model='{model_dir}') after `import segvit_hf`.")
    print(f"\nThe README's table (validation IoU, sliding window):\n{readme_table(report)}")
    return {"results": results, "train_seconds": train_seconds, "total_seconds": total}


if __name__ == "__main__":
    main()
