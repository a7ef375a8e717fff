"""The paper's seven released SegViT models, as named presets.

Each preset records the architecture (read by `SegViTConfig.from_preset`) and the evaluation protocol of the
official configuration files (crop, sliding-window stride, input normalisation), plus the paper's figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VIT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
VIT_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The ViT-L models start from AugReg ("jax") weights, trained on inputs scaled to [-1, 1].
JAX_MEAN = (0.5, 0.5, 0.5)
JAX_STD = (0.5, 0.5, 0.5)


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
    shrink_index: int | None = None
    official_checkpoint: str | None = None


def _vit_l(name, dataset, crop, stride, gflops, checkpoint, shrunk=False):
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
        shrink_index=8 if shrunk else None,
        official_checkpoint=checkpoint,
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
            official_checkpoint="ade_51.3.pth",
        ),
        _vit_l("ade20k-vit-l", "ade20k", 640, 608, 637.9, "ade_54.6.pth"),
        _vit_l("ade20k-vit-l-shrunk", "ade20k", 640, 608, 373.5, "ade_shrunk_53.9.pth", shrunk=True),
        _vit_l("cocostuff10k-vit-l", "cocostuff", 512, 341, 383.9, "COCOstuff_49.9.pth"),
        _vit_l("cocostuff10k-vit-l-shrunk", "cocostuff", 512, 341, 224.8, "COCOstuff10k_shrunk_49.1.pth", shrunk=True),
        _vit_l("pascal-context-vit-l", "pascal-context", 480, 320, 321.6, "PC59cls_64.1.pth"),
        _vit_l("pascal-context-vit-l-shrunk", "pascal-context", 480, 320, 186.9, "PC59cls_62.3.pth", shrunk=True),
    )
}


def get_preset(name: str) -> SegViTPreset:
    """The preset called `name`; a `ValueError` listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown SegViT preset {name!r}. Known presets: {', '.join(PRESETS)}.") from None
