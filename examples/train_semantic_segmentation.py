#!/usr/bin/env python
"""Fine-tune SegViT for semantic segmentation with the 🤗 Trainer.

Data: the embedded toy data set (default, offline), a local folder (ADEChallengeData2016, or the mmseg layouts of
COCO-Stuff-10K / PASCAL-Context), or a Hub data set with an image and a label-map column. Model: a preset
(`--preset ade20k-vit-b`), a configuration file, an existing SegViT checkpoint (`--model_name_or_path`), optionally
with the encoder initialised from a ViT checkpoint (`--vit_checkpoint`). Optimiser and schedule: the paper's (AdamW,
head lr x10, no decay on norms / biases / position embeddings / class queries, poly decay with linear warm-up);
gradient clipping comes from `--max_grad_norm` (35 in the paper).

Toy run (CPU, about two minutes; one thread suits this small model):

    OMP_NUM_THREADS=1 python examples/train_semantic_segmentation.py --output_dir outputs/toy --do_train --do_eval \
        --max_steps 300 --per_device_train_batch_size 16 --learning_rate 5e-4 --warmup_steps 50 --report_to none

The paper's ADE20K ViT-B recipe: see docs/training.md. Distributed: `torchrun --nproc_per_node N` (or
`accelerate launch`) in front of the same command.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from functools import partial

import transformers
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from segvit_hf import SegViTConfig, SegViTForSemanticSegmentation, get_preset
from segvit_hf.data import build_segmentation_datasets, collate_segmentation, load_dataset_source
from segvit_hf.metrics import SemanticSegmentationMetrics, logits_to_label_maps
from segvit_hf.optimization import create_segvit_optimizer, get_poly_schedule_with_warmup
from segvit_hf.presets import IMAGENET_MEAN, IMAGENET_STD
from segvit_hf.pretrained import segvit_from_vit_pretrained
from segvit_hf.toy import TOY_CROP_SIZE, TOY_TRAIN_SCALE, toy_model_config
from segvit_hf.training import DatasetEpochCallback

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    preset: str | None = field(
        default=None, metadata={"help": "A SegViT preset (e.g. ade20k-vit-b): architecture, crop and normalisation."}
    )
    config_name: str | None = field(default=None, metadata={"help": "A SegViT config.json (file or directory)."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A SegViT checkpoint (Hub id or directory) to fine-tune."}
    )
    vit_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Initialise the encoder from this ViT checkpoint (transformers or timm; Hub id or path)."},
    )
    head_lr_multiplier: float = field(default=10.0, metadata={"help": "Learning-rate factor of the decode head."})
    warmup_ratio_start: float = field(
        default=1e-6, metadata={"help": "Warm-up starts at this fraction of the learning rate (mmcv warmup_ratio)."}
    )
    poly_power: float = field(default=1.0, metadata={"help": "Power of the polynomial learning-rate decay."})
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Allow a checkpoint with another number of classes (new head)."}
    )
    image_mean: list[float] | None = field(
        default=None,
        metadata={"help": "Normalisation mean on [0, 1] pixels (default: preset / checkpoint / ImageNet)."},
    )
    image_std: list[float] | None = field(
        default=None, metadata={"help": "Normalisation std on [0, 1] pixels (default: preset / checkpoint / ImageNet)."}
    )


@dataclass
class DataArguments:
    dataset: str = field(
        default="toy", metadata={"help": "'toy', a local data set folder, or a Hub data set id (e.g. scene_parse_150)."}
    )
    folder_layout: str = field(default="ade20k", metadata={"help": "ade20k, cocostuff10k or pascal-context."})
    image_column: str = field(default="image", metadata={"help": "Hub data sets: the image column."})
    label_column: str = field(default="annotation", metadata={"help": "Hub data sets: the label-map column."})
    reduce_labels: bool | None = field(
        default=None, metadata={"help": "Map raw label 0 to 255 and k to k-1 (default: the data source's convention)."}
    )
    crop_size: int | None = field(default=None, metadata={"help": "Training crop (default: the model's image_size)."})
    train_scale: list[int] | None = field(
        default=None, metadata={"help": "Resize box (long short) at ratio 1 (default: 2048 crop; toy: 256 64)."}
    )
    cat_max_ratio: float = field(default=0.75, metadata={"help": "Largest share of one class in a training crop."})
    toy_num_train: int = field(default=384, metadata={"help": "Toy data set: training images."})
    toy_num_validation: int = field(default=64, metadata={"help": "Toy data set: validation images."})


def build_model(model_args: ModelArguments, data_source) -> tuple[SegViTForSemanticSegmentation, tuple, tuple]:
    """The model and its normalisation (mean, std) from the model arguments."""
    model, mean, std = _build_model(model_args, data_source)
    if model_args.image_mean is not None or model_args.image_std is not None:
        if model_args.image_mean is None or model_args.image_std is None or len(model_args.image_mean) != 3:
            raise ValueError("Pass both --image_mean and --image_std, three values each.")
        mean, std = tuple(model_args.image_mean), tuple(model_args.image_std)
    return model, mean, std


def _build_model(model_args: ModelArguments, data_source) -> tuple[SegViTForSemanticSegmentation, tuple, tuple]:
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    id2label = data_source.id2label
    label_kwargs = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}
    if model_args.preset:
        preset = get_preset(model_args.preset)
        mean, std = preset.image_mean, preset.image_std
    if model_args.model_name_or_path:
        model = SegViTForSemanticSegmentation.from_pretrained(
            model_args.model_name_or_path, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **label_kwargs
        )
        mean, std = _processor_normalisation(model_args.model_name_or_path, (mean, std))
        return model, mean, std
    if model_args.config_name:
        config = SegViTConfig.from_pretrained(model_args.config_name, **label_kwargs)
    elif model_args.preset:
        config = get_preset(model_args.preset).config(**label_kwargs)
    elif data_source.id2label is not None:
        config = toy_model_config(**label_kwargs)
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    else:
        raise ValueError("Pass --preset, --config_name or --model_name_or_path for this data set.")
    if model_args.vit_checkpoint:
        # Encoder from the ViT (CLS token dropped, position table resized to the crop); decoder freshly initialised.
        model = segvit_from_vit_pretrained(model_args.vit_checkpoint, config)
        model.train()
    else:
        model = SegViTForSemanticSegmentation(config)
    return model, mean, std


def _processor_normalisation(name_or_path: str, default: tuple) -> tuple:
    """The image_mean / image_std of the image processor saved with a checkpoint, else `default`."""
    from segvit_hf.image_processing_segvit import SegViTImageProcessor

    try:
        processor = SegViTImageProcessor.from_pretrained(name_or_path)
    except OSError:
        return default
    return tuple(processor.image_mean), tuple(processor.image_std)


def num_optimizer_steps(args: TrainingArguments, num_train_examples: int) -> int:
    """Optimiser steps of the whole run, as the Trainer counts them (needed up front by the poly schedule)."""
    if args.max_steps > 0:
        return args.max_steps
    batches_per_epoch = math.ceil(num_train_examples / (args.per_device_train_batch_size * args.world_size))
    steps_per_epoch = max(math.ceil(batches_per_epoch / args.gradient_accumulation_steps), 1)
    return math.ceil(args.num_train_epochs * steps_per_epoch)


def parse_arguments(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Command-line (or a single JSON file) arguments, with the Trainer settings this script relies on."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    # The data sets hand the Trainer ready tensors; its column pruning would drop the raw image / label columns.
    training_args.remove_unused_columns = False
    # Evaluate batch by batch into a confusion matrix: the Trainer never stores the evaluation scores.
    training_args.batch_eval_metrics = True
    training_args.label_names = ["labels"]
    return model_args, data_args, training_args


def build_model_and_datasets(model_args: ModelArguments, data_args: DataArguments, seed: int):
    """
    The model and the augmented training / evaluation data sets (shared by this script and `train_accelerate.py`).
    Returns `(model, train_dataset, eval_dataset, preprocessing)`, the last being what [`save_processor`] records:
    `image_mean`, `image_std`, `crop_size`, `train_scale`, `reduce_labels`, `preset`.
    """
    data_source = load_dataset_source(
        data_args.dataset,
        folder_layout=data_args.folder_layout,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
        reduce_labels=data_args.reduce_labels,
        toy_num_train=data_args.toy_num_train,
        toy_num_validation=data_args.toy_num_validation,
        seed=seed,
    )
    model, image_mean, image_std = build_model(model_args, data_source)
    config = model.config
    if data_args.crop_size is None and config.encoder_config is None:
        raise ValueError("A SegViT on a transformers backbone has no training crop in its config: pass --crop_size.")
    crop_size = data_args.crop_size or config.encoder_config.image_size
    train_scale = tuple(data_args.train_scale) if data_args.train_scale else None
    if train_scale is None and data_args.dataset == "toy" and crop_size == TOY_CROP_SIZE:
        train_scale = TOY_TRAIN_SCALE
    train_dataset, eval_dataset = build_segmentation_datasets(
        data_source,
        crop_size,
        image_mean,
        image_std,
        num_labels=config.num_labels,
        train_scale=train_scale,
        cat_max_ratio=data_args.cat_max_ratio,
        ignore_index=config.ignore_index,
        seed=seed,
    )
    preprocessing = {
        "image_mean": image_mean,
        "image_std": image_std,
        "crop_size": crop_size,
        "train_scale": train_scale,
        "reduce_labels": data_source.reduce_labels,
        "preset": model_args.preset,
    }
    return model, train_dataset, eval_dataset, preprocessing


def build_trainer(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments
) -> tuple[Trainer, dict]:
    """
    The data, model, paper optimiser and schedule, metric and callbacks, assembled into a Trainer; also returns the
    preprocessing that [`save_processor`] records.
    """
    set_seed(training_args.seed)
    model, train_dataset, eval_dataset, preprocessing = build_model_and_datasets(
        model_args, data_args, training_args.seed
    )
    config = model.config
    num_steps = num_optimizer_steps(training_args, len(train_dataset))
    optimizer = create_segvit_optimizer(
        model,
        learning_rate=training_args.learning_rate,
        weight_decay=training_args.weight_decay,
        head_lr_multiplier=model_args.head_lr_multiplier,
        betas=(training_args.adam_beta1, training_args.adam_beta2),
        eps=training_args.adam_epsilon,
    )
    scheduler = get_poly_schedule_with_warmup(
        optimizer,
        num_warmup_steps=training_args.get_warmup_steps(num_steps),
        num_training_steps=num_steps,
        power=model_args.poly_power,
        warmup_ratio=model_args.warmup_ratio_start,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=partial(collate_segmentation, ignore_index=config.ignore_index),
        compute_metrics=SemanticSegmentationMetrics(config.num_labels, config.ignore_index, config.id2label),
        preprocess_logits_for_metrics=partial(logits_to_label_maps, patch_size=config.output_stride),
        optimizers=(optimizer, scheduler),
        callbacks=[DatasetEpochCallback()],
    )
    return trainer, preprocessing


def main(argv: list[str] | None = None) -> Trainer:
    model_args, data_args, training_args = parse_arguments(argv)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", handlers=[logging.StreamHandler()]
    )
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    transformers.utils.logging.set_verbosity(log_level)

    trainer, preprocessing = build_trainer(model_args, data_args, training_args)
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        if trainer.is_world_process_zero():
            save_processor(training_args.output_dir, trainer.model.config, **preprocessing)
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
    if training_args.do_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub(tags=["image-segmentation", "segvit"], dataset=data_args.dataset)
    return trainer


def save_processor(
    output_dir, config, image_mean, image_std, crop_size: int, train_scale=None, reduce_labels=False, preset=None
) -> None:
    """
    Saves the image processor matching the training next to the model: the preset's test-time protocol when training
    from a preset, else short side to the crop and long side at most the training scale's long side (2048 by
    default); the normalisation used in training; label reduction as the data source needs.
    """
    from segvit_hf.image_processing_segvit import SegViTImageProcessor

    options = {
        "image_mean": list(image_mean),
        "image_std": list(image_std),
        "do_reduce_labels": bool(reduce_labels),
        "patch_size": config.output_stride,
    }
    if preset:
        processor = get_preset(preset).image_processor(**options)
    else:
        longest_edge = max(train_scale) if train_scale else 2048
        processor = SegViTImageProcessor(size={"shortest_edge": crop_size, "longest_edge": longest_edge}, **options)
    processor.save_pretrained(output_dir)


if __name__ == "__main__":
    main()
