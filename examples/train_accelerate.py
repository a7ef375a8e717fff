#!/usr/bin/env python
"""Fine-tune SegViT with a plain 🤗 Accelerate loop (same data, model and recipe as train_semantic_segmentation.py).

    python examples/train_accelerate.py --output_dir outputs/toy-accelerate --max_steps 200 --learning_rate 5e-4
    accelerate launch --num_processes 2 --cpu examples/train_accelerate.py --output_dir ... --max_steps 20
    torchrun --nproc_per_node 2 examples/train_accelerate.py --cpu --output_dir ... --max_steps 20

The loop: AdamW with the paper's parameter groups, poly schedule with linear warm-up stepped once per optimiser step,
gradient clipping (35) on synchronised steps only, evaluation into a confusion matrix summed over processes (no
logits kept), checkpoints with `accelerator.save_state` every `--checkpointing_steps` and `--resume_from_checkpoint`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from segvit_hf.console import ArgumentParser
from segvit_hf.data import collate_segmentation
from segvit_hf.metrics import StreamingMeanIoU, format_iou_table, logits_to_label_maps, results_to_json
from segvit_hf.optimization import create_segvit_optimizer, get_poly_schedule_with_warmup

# The model building and processor saving are shared with the Trainer script next to this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_semantic_segmentation import DataArguments, ModelArguments, build_model_and_datasets, save_processor


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True)
    model = parser.add_argument_group("model")
    model.add_argument("--preset", help="SegViT preset, e.g. ade20k-vit-b.")
    model.add_argument("--config_name", help="A SegViT config.json (file or directory).")
    model.add_argument("--model_name_or_path", help="A SegViT checkpoint to fine-tune.")
    model.add_argument("--vit_checkpoint", help="Initialise the encoder from this ViT checkpoint.")
    model.add_argument("--image_mean", type=float, nargs=3, help="Normalisation mean on [0, 1] pixels.")
    model.add_argument("--image_std", type=float, nargs=3, help="Normalisation std on [0, 1] pixels.")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="toy", help="'toy', a data set folder, or a Hub data set id.")
    data.add_argument("--folder_layout", default="ade20k", help="ade20k, cocostuff10k or pascal-context.")
    data.add_argument("--image_column", default="image")
    data.add_argument("--label_column", default="annotation")
    data.add_argument("--reduce_labels", type=lambda v: v.lower() in ("1", "true", "yes"), default=None)
    data.add_argument("--crop_size", type=int)
    data.add_argument("--train_scale", type=int, nargs=2, help="Resize box (long short) at ratio 1.")
    data.add_argument("--cat_max_ratio", type=float, default=0.75)
    data.add_argument("--toy_num_train", type=int, default=384)
    data.add_argument("--toy_num_validation", type=int, default=64)
    optim = parser.add_argument_group("optimisation (paper defaults for ViT-B)")
    optim.add_argument("--learning_rate", type=float, default=6e-5)
    optim.add_argument("--head_lr_multiplier", type=float, default=10.0)
    optim.add_argument("--weight_decay", type=float, default=0.01)
    optim.add_argument("--warmup_steps", type=int, default=1500)
    optim.add_argument("--poly_power", type=float, default=1.0)
    optim.add_argument("--max_grad_norm", type=float, default=35.0)
    optim.add_argument("--max_steps", type=int, default=160_000)
    optim.add_argument("--per_device_train_batch_size", type=int, default=2)
    optim.add_argument("--per_device_eval_batch_size", type=int, default=2)
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default="no")
    optim.add_argument("--seed", type=int, default=42)
    run = parser.add_argument_group("run")
    run.add_argument("--checkpointing_steps", type=int, default=0, help="Save the training state every N steps.")
    run.add_argument("--resume_from_checkpoint", help="A step_N folder written by --checkpointing_steps.")
    run.add_argument("--eval_steps", type=int, default=0, help="Evaluate every N steps (and always at the end).")
    run.add_argument("--num_workers", type=int, default=0)
    run.add_argument(
        "--cpu",
        action="store_true",
        help="Run on CPU. Multi-process CPU runs need it under torchrun (`accelerate launch --cpu` sets it).",
    )
    run.add_argument("--push_to_hub", action="store_true")
    run.add_argument("--hub_model_id")
    args = parser.parse_args(argv)
    if args.resume_from_checkpoint:
        args.resumed_steps = resumed_steps(parser, args.resume_from_checkpoint)
    return args


def resumed_steps(parser: ArgumentParser, checkpoint: str) -> int:
    """The optimiser steps a `step_N` folder written by `--checkpointing_steps` holds: N, read from its name."""
    if not os.path.isdir(checkpoint):
        parser.error(f"--resume_from_checkpoint {checkpoint}: no such directory")
    match = re.fullmatch(r"step_(\d+)", os.path.basename(os.path.normpath(checkpoint)))
    if match is None:
        parser.error(
            f"--resume_from_checkpoint {checkpoint}: expected a step_N folder written by --checkpointing_steps (its "
            "name gives the steps already done)"
        )
    return int(match.group(1))


def evaluate(model, dataloader, accelerator, num_labels: int, ignore_index: int) -> dict:
    """mIoU of `model` over `dataloader`, every process accumulating the label maps of all processes."""
    model.eval()
    metric = StreamingMeanIoU(num_labels, ignore_index, device=accelerator.device)
    with torch.no_grad():
        for batch in dataloader:
            outputs = model(pixel_values=batch["pixel_values"])
            patch_size = accelerator.unwrap_model(model).config.output_stride
            predictions = logits_to_label_maps(outputs.to_tuple(), batch["labels"], patch_size)
            # Only label maps cross processes; gather_for_metrics drops the samples repeated to even out shards.
            predictions, references = accelerator.gather_for_metrics((predictions, batch["labels"]))
            metric.update(predictions, references)
    model.train()
    return metric.compute()


def main(argv=None):
    args = parse_args(argv)
    # The poly schedule counts optimiser steps: step it once per update, not once per process.
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        step_scheduler_with_optimizer=False,
        cpu=args.cpu,
    )
    set_seed(args.seed)

    model_args = ModelArguments(
        preset=args.preset,
        config_name=args.config_name,
        model_name_or_path=args.model_name_or_path,
        vit_checkpoint=args.vit_checkpoint,
        image_mean=args.image_mean,
        image_std=args.image_std,
    )
    data_args = DataArguments(
        **{name: getattr(args, name) for name in DataArguments.__dataclass_fields__ if hasattr(args, name)}
    )
    model, train_dataset, eval_dataset, preprocessing = build_model_and_datasets(model_args, data_args, args.seed)
    config = model.config

    def collate(examples):
        return collate_segmentation(examples, config.ignore_index)

    # Reseeded at every epoch, so the order of an epoch does not depend on where a resumed run started.
    generator = torch.Generator()
    train_loader = torch.utils.data.DataLoader(
        train_dataset,
        batch_size=args.per_device_train_batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collate,
        num_workers=args.num_workers,
        generator=generator,
    )
    eval_loader = torch.utils.data.DataLoader(
        eval_dataset, batch_size=args.per_device_eval_batch_size, collate_fn=collate, num_workers=args.num_workers
    )
    optimizer = create_segvit_optimizer(
        model, args.learning_rate, args.weight_decay, head_lr_multiplier=args.head_lr_multiplier
    )
    scheduler = get_poly_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps, power=args.poly_power)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    completed_steps = 0
    if args.resume_from_checkpoint:
        accelerator.load_state(args.resume_from_checkpoint)
        completed_steps = args.resumed_steps
    starting_epoch, skip_batches = divmod(completed_steps * args.gradient_accumulation_steps, len(train_loader))

    progress = tqdm(
        total=args.max_steps, initial=completed_steps, disable=not accelerator.is_local_main_process, desc="train"
    )
    model.train()
    epoch = starting_epoch
    while completed_steps < args.max_steps:
        generator.manual_seed(args.seed + epoch)
        loader = train_loader
        if epoch == starting_epoch and skip_batches:
            loader = accelerator.skip_first_batches(train_loader, skip_batches)
        # Accelerate's loaders forward their epoch counter to the data set (single process); set both to the real
        # epoch so that the augmentation draws of a resumed run match those of an uninterrupted one.
        loader.set_epoch(epoch)
        train_dataset.set_epoch(epoch)
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            completed_steps += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if args.checkpointing_steps and completed_steps % args.checkpointing_steps == 0:
                accelerator.save_state(os.path.join(args.output_dir, f"step_{completed_steps}"))
            if args.eval_steps and completed_steps % args.eval_steps == 0:
                results = evaluate(model, eval_loader, accelerator, config.num_labels, config.ignore_index)
                accelerator.print(f"step {completed_steps}: mIoU {100 * results['mean_iou']:.2f}")
            if completed_steps >= args.max_steps:
                break
        epoch += 1
    progress.close()

    results = evaluate(model, eval_loader, accelerator, config.num_labels, config.ignore_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(args.output_dir)
        save_processor(args.output_dir, config, **preprocessing)
        with open(os.path.join(args.output_dir, "eval_results.json"), "w") as handle:
            json.dump(results_to_json(results, config.id2label), handle, indent=2)
        print(format_iou_table(results, config.id2label))
        if args.push_to_hub:
            unwrapped.push_to_hub(args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir)))
    accelerator.end_training()
    return results


if __name__ == "__main__":
    main()
