"""The paper's seven released SegViT models, as named presets, and the paper's facts about them.

Each preset records the architecture ([`SegViTPreset.config`]), the evaluation protocol of the official configuration
files (crop, test-time resizing, sliding-window stride, input normalisation: [`SegViTPreset.image_processor`]), the
training schedule of its dataset, and the paper's figures (GFLOPs, reported mIoU). This module is the one home of
those facts; the core classes know nothing of presets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .configuration_segvit import SegViTConfig
from .image_processing_segvit import SegViTImageProcessor
from .labels import id2label_for

VIT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
VIT_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The ViT-L models start from AugReg ("jax") weights, trained on inputs scaled to [-1, 1].
JAX_MEAN = (0.5, 0.5, 0.5)
JAX_STD = (0.5, 0.5, 0.5)

# Test-time `img_scale` of the official configurations, as (longest edge, shortest edge) bounds: ADE20K and
# COCO-Stuff rescale the short side to the crop with the long side at most 2048. PASCAL-Context's test resize is
# "fit in 520x520" but with the official `min_size=480` option, which makes mmseg rescale the short side to 520 with
# no bound on the long side.
TEST_SCALES: dict[str, tuple[int | None, int | None]] = {
    "ade20k": (2048, None),
    "cocostuff": (2048, None),
    "pascal-context": (None, 520),
}


@dataclass(frozen=True)
class TrainingSchedule:
    """The official configuration's schedule for a dataset."""

    iterations: int
    weight_decay: float
    poly_power: float


TRAINING_SCHEDULES: dict[str, TrainingSchedule] = {
    "ade20k": TrainingSchedule(160_000, 0.01, 1.0),
    "cocostuff": TrainingSchedule(80_000, 0.02, 2.0),
    "pascal-context": TrainingSchedule(80_000, 0.03, 1.0),
}


@dataclass(frozen=True)
class SegViTPreset:
    """One released model: architecture, evaluation protocol and the paper's numbers."""

    name: str
    dataset: str
    encoder: dict = field(repr=False)
    crop_size: int
    out_indices: tuple[int, ...]
    decoder_hidden_size: int
    decoder_num_attention_heads: int
    drop_path_rate: float
    slide_stride: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    paper_gflops: float
    # AdamW's base learning rate in the official configuration (the decoder's is 10x).
    learning_rate: float
    shrink_index: int | None = None
    official_checkpoint: str | None = None
    # mIoU (%): "ss" single scale from the official release's results table, "ms" multi-scale from the paper's
    # Tables 1-3 (PASCAL-Context: averaged over its 59 classes).
    reported_miou: Mapping[str, float] = field(default_factory=dict, repr=False)

    @property
    def training_schedule(self) -> TrainingSchedule:
        """The official schedule of this preset's dataset."""
        return TRAINING_SCHEDULES[self.dataset]

    def config(self, with_background: bool = False, **overrides: Any) -> SegViTConfig:
        """
        The [`SegViTConfig`] of this released model.

        Args:
            with_background (`bool`, *optional*, defaults to `False`):
                PASCAL-Context only: 60 labels (background first) instead of the released 59.
            overrides:
                Any configuration attribute.
        """
        id2label = id2label_for(self.dataset, with_background=with_background)
        values: dict[str, Any] = {
            "encoder_config": {**self.encoder, "image_size": self.crop_size},
            "out_indices": list(self.out_indices),
            "decoder_hidden_size": self.decoder_hidden_size,
            "decoder_num_attention_heads": self.decoder_num_attention_heads,
            "drop_path_rate": self.drop_path_rate,
            "shrink_index": self.shrink_index,
            "query_upsampling": self.shrink_index is not None,
            "id2label": id2label,
            "label2id": {label: i for i, label in id2label.items()},
        }
        values.update(overrides)
        return SegViTConfig(**values)

    def image_processor(self, with_background: bool = False, **overrides: Any):
        """
        The image processor of this released model: the official test-time resizing (ADE20K, COCO-Stuff: short side
        to the crop, long side at most 2048; PASCAL-Context: short side to 520), normalisation (ImageNet statistics for
        ViT-B, [-1, 1] for the ViT-L "jax" models) and label reduction of the official dataset configurations.

        Args:
            with_background (`bool`, *optional*, defaults to `False`):
                PASCAL-Context only: keep the background label 0 (60 classes) instead of reducing it away.
            overrides:
                Any image-processor option. `image_processor_class` picks the class (default
                [`SegViTImageProcessor`], e.g. [`SegViTImageProcessorPil`] for the PIL backend).
        """
        processor_class = overrides.pop("image_processor_class", SegViTImageProcessor)
        longest_edge, shortest_edge = TEST_SCALES[self.dataset]
        values: dict[str, Any] = {
            "size": {"shortest_edge": shortest_edge or self.crop_size}
            | ({"longest_edge": longest_edge} if longest_edge else {}),
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            # The official ADE20K and COCO-Stuff annotations use 0 for "unlabelled"; so does PASCAL-Context's
            # background, which the released 59-class models do not predict.
            "do_reduce_labels": not (self.dataset == "pascal-context" and with_background),
        }
        values.update(overrides)
        return processor_class(**values)

    def image_processor_for(self, num_labels: int, **overrides: Any):
        """
        [`image_processor`] for a model of `num_labels` classes converted with this preset: a PASCAL-Context model
        with 60 classes instead of 59 keeps the background.
        """
        with_background = self.dataset == "pascal-context" and num_labels == 60
        return self.image_processor(with_background=with_background, **overrides)


def _vit_l(name, dataset, crop, stride, gflops, checkpoint, miou, shrunk=False):
    return SegViTPreset(
        name=name,
        dataset=dataset,
        encoder=VIT_LARGE,
        crop_size=crop,
        out_indices=(7, 23) if shrunk else (7, 15, 23),
        decoder_hidden_size=512,
        decoder_num_attention_heads=16,
        drop_path_rate=0.3,
        slide_stride=stride,
        image_mean=JAX_MEAN,
        image_std=JAX_STD,
        paper_gflops=gflops,
        learning_rate=2e-5,
        shrink_index=8 if shrunk else None,
        official_checkpoint=checkpoint,
        reported_miou=miou,
    )


PRESETS: dict[str, SegViTPreset] = {
    preset.name: preset
    for preset in (
        SegViTPreset(
            name="ade20k-vit-b",
            dataset="ade20k",
            encoder=VIT_BASE,
            crop_size=512,
            out_indices=(5, 7, 11),
            decoder_hidden_size=384,
            decoder_num_attention_heads=12,
            drop_path_rate=0.1,
            slide_stride=341,
            image_mean=IMAGENET_MEAN,
            image_std=IMAGENET_STD,
            paper_gflops=120.9,
            learning_rate=6e-5,
            official_checkpoint="ade_51.3.pth",
            reported_miou={"ss": 51.3, "ms": 53.0},
        ),
        _vit_l("ade20k-vit-l", "ade20k", 640, 608, 637.9, "ade_54.6.pth", {"ss": 54.6, "ms": 55.2}),
        _vit_l(
            "ade20k-vit-l-shrunk", "ade20k", 640, 608, 373.5, "ade_shrunk_53.9.pth", {"ss": 53.9, "ms": 55.1},
            shrunk=True,
        ),
        _vit_l("cocostuff10k-vit-l", "cocostuff", 512, 341, 383.9, "COCOstuff_49.9.pth", {"ss": 49.9, "ms": 50.3}),
        _vit_l(
            "cocostuff10k-vit-l-shrunk", "cocostuff", 512, 341, 224.8, "COCOstuff10k_shrunk_49.1.pth",
            {"ss": 49.1, "ms": 49.4}, shrunk=True,
        ),
        _vit_l("pascal-context-vit-l", "pascal-context", 480, 320, 321.6, "PC59cls_64.1.pth", {"ss": 64.1, "ms": 65.3}),
        _vit_l(
            "pascal-context-vit-l-shrunk", "pascal-context", 480, 320, 186.9, "PC59cls_62.3.pth",
            {"ss": 62.3, "ms": 63.7}, shrunk=True,
        ),
    )
}


def get_preset(name: str) -> SegViTPreset:
    """The preset called `name`; a `ValueError` listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown SegViT preset {name!r}. Known presets: {', '.join(PRESETS)}.") from None
