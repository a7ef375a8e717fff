"""The paper's ablation tables on toy data: trains every variant of Tables 4-7 for the same number of steps on the
embedded toy data set and prints its validation mIoU beside its GFLOPs, in the structure of the paper's tables.

THE NUMBERS ARE TOY NUMBERS. Models of 1.4-3.3 M parameters, 64-pixel crops of synthetic scenes with 6 classes, a
few hundred steps from random weights: they show that every variant builds, trains and learns, not the paper's
values (which come from ImageNet-pretrained ViT-B / ViT-L / Swin-T trained 80k-160k steps on ADE20K). The paper's
mIoU is printed beside them for the table's structure only. GFLOPs are the toy models' at the toy crop (64x64),
counted as `benchmarks/flops.py` counts the full-size models (whose figures are in docs/benchmarks.md).

The toy models scale the paper's down: a 12-layer ViT of width 96 with 8-pixel patches (an 8x8 token grid on a
64-pixel crop), so that the paper's layer indices apply unchanged; ATM width 64. Table 6's backbones are a 4-stage
Swin and a 12-layer DINOv2 of about the same size, from random weights (the paper's start from ImageNet). Table 7's
QD runs at layer 4 of 12 (the paper: 8 of 24) in front of a two-stage ATM cascade over layers [3, 11] (the paper:
QU over [7, 23], then one ATM stage): from random weights the QU decoder does not learn the toy task in this budget
(its one-query-per-cell queries must find their cells through the position information of an untrained encoder),
and the QD modes are what Table 7 compares.

Not part of the test suite. About 9 minutes on 2 CPU cores:

    python benchmarks/ablations.py                     # every variant, 250 steps each
    python benchmarks/ablations.py --steps 50 --only table4-setr table6-swin
"""

from __future__ import annotations

import os

# Offline by construction: the toy data set and the tiny models need nothing from the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import argparse
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader
from transformers import Dinov2Config, SwinConfig
from transformers.utils import logging as transformers_logging

from segvit_hf import SegViTForSemanticSegmentation, SegViTImageProcessor
from segvit_hf.data import build_segmentation_datasets, collate_segmentation, load_dataset_source
from segvit_hf.metrics import evaluate_dataset
from segvit_hf.optimization import create_segvit_optimizer, get_poly_schedule_with_warmup
from segvit_hf.flops import count_flops
from segvit_hf.toy import TOY_CROP_SIZE, TOY_TRAIN_SCALE, toy_model_config

# The toy images are normalised to [-1, 1], as in examples/demo.py.
IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)
TOY_ENCODER = {
    "hidden_size": 96,
    "num_hidden_layers": 12,
    "num_attention_heads": 4,
    "intermediate_size": 384,
    "image_size": TOY_CROP_SIZE,
    "patch_size": 8,
}
TOY_SWIN = SwinConfig(
    image_size=TOY_CROP_SIZE,
    patch_size=4,
    embed_dim=32,
    depths=[2, 2, 4, 2],
    num_heads=[2, 4, 8, 8],
    window_size=4,
    drop_path_rate=0.0,
)
TOY_DINOV2 = Dinov2Config(**TOY_ENCODER)


@dataclass(frozen=True)
class Variant:
    """One row: the paper's table, its row label and mIoU, and the toy configuration's overrides."""

    name: str
    table: str
    row: str
    paper_miou: float | None
    overrides: dict = field(default_factory=dict)


def backbone(config, out_indices):
    return {"encoder_config": None, "backbone_config": config, "out_indices": out_indices}


SINGLE = {"out_indices": [11], "per_layer_outputs": True}
QD = {"out_indices": [3, 11], "shrink_index": 4}
VARIANTS = (
    Variant("table4-setr", "Table 4", "SETR, CE loss", 46.5, {"out_indices": [11], "decoder_type": "setr"}),
    Variant("table4-atm-ce", "Table 4", "ATM, CE loss", 47.0, {**SINGLE, "segmentation_loss": "cross_entropy"}),
    Variant("table4-atm-mask", "Table 4 / 5", "ATM, mask loss = single [12]", 49.6, SINGLE),
    Variant("table5-6-12", "Table 5", "cascade [6, 12]", 50.9, {"out_indices": [5, 11]}),
    Variant("table5-6-8-12", "Table 5", "cascade [6, 8, 12]", 51.3, {"out_indices": [5, 7, 11]}),
    Variant("table5-3-6-9-12", "Table 5", "cascade [3, 6, 9, 12]", 51.2, {"out_indices": [2, 5, 8, 11]}),
    Variant("table6-swin", "Table 6", "SegViT, Swin (stages 2-4)", 47.1, backbone(TOY_SWIN, [2, 3, 4])),
    Variant(
        "table6-dinov2", "(beyond the paper)", "SegViT, DINOv2 [6, 8, 12]", None, backbone(TOY_DINOV2, [6, 8, 12])
    ),
    Variant("table7-conv", "Table 7", "QD on Q, conv", 44.5, {**QD, "query_downsampling": "conv"}),
    Variant(
        "table7-nearest-qkv", "Table 7", "QD on Q, K, V, nearest", 52.6, {**QD, "query_downsampling": "nearest_qkv"}
    ),
    Variant("table7-nearest", "Table 7", "QD on Q, nearest", 53.9, QD),
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=250, help="optimiser steps per variant (batches of 16 crops)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=5e-4, help="encoder lr; the decoder gets 10x")
    parser.add_argument("--warmup_steps", type=int, default=50)
    parser.add_argument("--num_train", type=int, default=384)
    parser.add_argument("--num_validation", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: tiny models on a shared CPU)")
    parser.add_argument("--only", nargs="+", choices=[variant.name for variant in VARIANTS], help="variants to run")
    return parser.parse_args(argv)


def build_model(variant: Variant, seed: int) -> SegViTForSemanticSegmentation:
    torch.manual_seed(seed)
    overrides = {"encoder_config": TOY_ENCODER, "drop_path_rate": 0.0, **variant.overrides}
    return SegViTForSemanticSegmentation(toy_model_config(**overrides))


def toy_gflops(model: SegViTForSemanticSegmentation) -> float:
    """Counted as the paper counts: the forward pass and the test output at the input size (`count_flops`)."""
    return count_flops(model, TOY_CROP_SIZE, TOY_CROP_SIZE, num_channels=3)


def train(model, train_dataset, args) -> None:
    """`args.steps` optimiser steps with the paper's recipe (AdamW, head lr x10, poly schedule, clip 35)."""
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(
        train_dataset, batch_size=args.batch_size, shuffle=True, collate_fn=collate_segmentation, generator=generator
    )
    optimizer = create_segvit_optimizer(model, learning_rate=args.learning_rate, weight_decay=0.01)
    scheduler = get_poly_schedule_with_warmup(optimizer, args.warmup_steps, args.steps)
    model.train()
    step, epoch = 0, 0
    while step < args.steps:
        train_dataset.set_epoch(epoch)
        for batch in loader:
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
            optimizer.step()
            scheduler.step()
            step += 1
            if step == args.steps:
                break
        epoch += 1


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers_logging.set_verbosity_error()
    source = load_dataset_source(
        "toy", toy_num_train=args.num_train, toy_num_validation=args.num_validation, seed=args.seed
    )
    train_dataset, _ = build_segmentation_datasets(
        source, TOY_CROP_SIZE, IMAGE_MEAN, IMAGE_STD, num_labels=len(source.id2label), train_scale=TOY_TRAIN_SCALE
    )
    validation = source.splits["validation"]
    variants = [variant for variant in VARIANTS if not args.only or variant.name in args.only]
    print(
        f"TOY ablations: {len(variants)} variants x {args.steps} steps of {args.batch_size} crops of "
        f"{TOY_CROP_SIZE}px, {len(validation)} toy validation images (whole-image inference), seed {args.seed}."
    )
    started = time.perf_counter()
    results = []
    for variant in variants:
        model = build_model(variant, args.seed)
        gflops = toy_gflops(model)
        variant_started = time.perf_counter()
        train(model, train_dataset, args)
        model.eval()
        processor = SegViTImageProcessor(
            image_mean=list(IMAGE_MEAN),
            image_std=list(IMAGE_STD),
            size={"shortest_edge": TOY_CROP_SIZE, "longest_edge": max(TOY_TRAIN_SCALE)},
            patch_size=model.config.output_stride,
        )
        miou = evaluate_dataset(model, processor, validation, mode="whole", progress=False)["mean_iou"]
        results.append(
            {
                "variant": variant,
                "miou": 100 * float(miou),
                "gflops": gflops,
                "parameters": sum(p.numel() for p in model.parameters()) / 1e6,
                "seconds": time.perf_counter() - variant_started,
            }
        )
        print(f"  {variant.name}: toy mIoU {results[-1]['miou']:.1f} ({results[-1]['seconds']:.0f} s)", flush=True)

    print()
    print("| paper table | row | paper mIoU (ADE20K) | TOY mIoU | TOY GFLOPs (64x64) | params (M) | seconds |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        variant = result["variant"]
        paper = "—" if variant.paper_miou is None else f"{variant.paper_miou:.1f}"
        print(
            f"| {variant.table} | {variant.row} | {paper} | {result['miou']:.1f} | {result['gflops']:.3f} "
            f"| {result['parameters']:.2f} | {result['seconds']:.0f} |"
        )
    elapsed = time.perf_counter() - started
    print(f"\nToy numbers: they show that the variants learn, not the paper's values. {elapsed:.0f} s in all.")
    return results


if __name__ == "__main__":
    main()
