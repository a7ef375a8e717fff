"""GFLOPs of every SegViT preset, of the paper's ablations and backbone rows, and of transformers' MaskFormer and
Mask2Former on Swin-T, beside the paper's figures.

Counted as the paper counts them (fvcore, one multiply-add = 1, attention products included): see
`segvit_hf.flops.count_flops`. One image at the training crop size, single scale, the full model (encoder, decoder)
and its test output at the input size: the ATM scores (the official head's `pred`: mask logits resized to the input,
sigmoid, class mix) and the SETR baseline's class logits resized to the input, both added by `count_flops` itself,
and for MaskFormer / Mask2Former the same class mix of their 100 queries' masks, added here.

The official tool counted the mmseg segmentor, whose test path ends with a bilinear resize of the class scores to
the input size, a no-op at the crop size that fvcore still counts (4 FLOPs per output value: 4 * labels * H * W).
Our ATM model has no such resize; the "+ resize" column adds that term so the last column compares like with like.
For the SETR baseline our output resize is that step, and MaskFormer / Mask2Former are not mmseg models: nothing is
added to them.

Needs fvcore (`pip install fvcore`, the `benchmark` extra); the MaskFormer and Mask2Former rows also need scipy
(their losses' matcher is built with the model) and are skipped without it. Usage:

    python benchmarks/flops.py                     # every row (ViT-L rows take about a minute each on 2 cores)
    python benchmarks/flops.py --only ade20k-vit-b ade20k-swin-t
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from importlib.util import find_spec

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    MaskFormerConfig,
    MaskFormerForInstanceSegmentation,
    SwinConfig,
)
from transformers.initialization import no_init_weights

from segvit_hf import PRESETS, SegViTConfig, SegViTForSemanticSegmentation, get_preset
from segvit_hf.flops import flop_count_analysis
from segvit_hf.labels import id2label_for

# Swin-T as in the paper's Table 6 (and the MaskFormer / Mask2Former papers): ImageNet-1k Swin-T, window 7.
SWIN_TINY = dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, drop_path_rate=0.3)
# SegViT on Swin-T: the ATM cascade over stages 2-4 (strides 8, 16, 32) at the released ViT-L models' decoder width;
# see docs/architecture.md for the choice of stages and docs/benchmarks.md for the width.
SEGVIT_SWIN_TINY = dict(
    backbone_config=SwinConfig(**SWIN_TINY),
    out_indices=[2, 3, 4],
    decoder_hidden_size=512,
    decoder_num_attention_heads=16,
)


@dataclass(frozen=True)
class Variant:
    """
    A model to count: a SegViT preset with configuration overrides (or, with `family`, a transformers model on
    Swin-T) and the paper's GFLOPs for it (`None` where the paper gives none).
    """

    name: str
    preset: str | None
    paper_gflops: float | None
    overrides: dict = field(default_factory=dict)
    family: str = "segvit"

    def config(self) -> SegViTConfig:
        if self.preset is None:
            return SegViTConfig(id2label=id2label_for("ade20k"), **self.overrides)
        return get_preset(self.preset).config(**self.overrides)

    @property
    def crop_size(self) -> int:
        """The preset's training crop; 512 for the Swin-T rows, as Table 6 counts them."""
        return 512 if self.preset is None else PRESETS[self.preset].crop_size

    @property
    def official_resize(self) -> bool:
        """Whether the official count adds mmseg's resize of the scores after our prediction (see the docstring)."""
        return self.family == "segvit" and self.overrides.get("decoder_type") != "setr"


# The paper's ViT-B ablations on ADE20K at 512 (Table 8), as configurations of the ade20k-vit-b preset.
VIT_B_ABLATIONS = (
    Variant("ade20k-vit-b-single-atm", "ade20k-vit-b", 115.8, {"out_indices": [11], "per_layer_outputs": True}),
    Variant(
        "ade20k-vit-b-naive-shrunk",
        "ade20k-vit-b",
        74.1,
        {"out_indices": [11], "shrink_index": 6, "per_layer_outputs": True},
    ),
    Variant(
        "ade20k-vit-b-shrunk",
        "ade20k-vit-b",
        97.1,
        {"out_indices": [5, 11], "shrink_index": 6, "query_upsampling": True},
    ),
)
# Tables 4 to 7. Table 4's mask-loss ATM is the single-layer ATM above; Table 5's [6, 8, 12] is ade20k-vit-b and its
# [12] the single-layer ATM; Table 7's nearest-on-Q is ade20k-vit-l-shrunk.
PAPER_TABLE_ROWS = (
    # The SETR-naive head's hidden width is mmseg's (256); the paper gives its GFLOPs in Table 8.
    Variant(
        "ade20k-vit-b-setr",
        "ade20k-vit-b",
        107.3,
        {"out_indices": [11], "decoder_type": "setr", "decoder_hidden_size": 256},
    ),
    # The same network as the single-layer ATM: only the loss differs.
    Variant(
        "ade20k-vit-b-single-atm-ce",
        "ade20k-vit-b",
        115.8,
        {"out_indices": [11], "per_layer_outputs": True, "segmentation_loss": "cross_entropy"},
    ),
    Variant("ade20k-vit-b-layers-6-12", "ade20k-vit-b", None, {"out_indices": [5, 11]}),
    Variant("ade20k-vit-b-layers-3-6-9-12", "ade20k-vit-b", None, {"out_indices": [2, 5, 8, 11]}),
    Variant("ade20k-swin-t", None, 48.0, SEGVIT_SWIN_TINY),
    Variant("maskformer-swin-t", None, 57.3, family="maskformer"),
    Variant("mask2former-swin-t", None, 73.7, family="mask2former"),
    Variant("ade20k-vit-l-shrunk-qd-conv", "ade20k-vit-l-shrunk", None, {"query_downsampling": "conv"}),
    Variant(
        "ade20k-vit-l-shrunk-qd-nearest-qkv", "ade20k-vit-l-shrunk", None, {"query_downsampling": "nearest_qkv"}
    ),
)
VARIANTS = (
    tuple(Variant(name, name, preset.paper_gflops) for name, preset in PRESETS.items())
    + VIT_B_ABLATIONS
    + PAPER_TABLE_ROWS
)


class SemanticInference(nn.Module):
    """
    MaskFormer or Mask2Former followed by its semantic inference at the input size, which the papers' counts include:
    each query's mask resized to the input, its sigmoid mixed over the classes by the query's class probabilities
    ("no object" dropped). (`count_flops` adds the same for SegViT.)
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        outputs = self.model(pixel_values)
        masks = F.interpolate(
            outputs.masks_queries_logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False
        )
        class_probabilities = outputs.class_queries_logits.softmax(dim=-1)[..., :-1]
        return torch.einsum("bqc,bqhw->bchw", class_probabilities, masks.sigmoid())


def build_model(variant: Variant) -> nn.Module:
    """The model of `variant`, weights left uninitialised (their values do not change the count)."""
    id2label = id2label_for("ade20k")
    # MaskFormer's and Mask2Former's pixel decoders read all four Swin stages.
    swin_stages = SwinConfig(**SWIN_TINY, out_indices=[1, 2, 3, 4])
    with no_init_weights():
        if variant.family == "maskformer":
            config = MaskFormerConfig(backbone_config=swin_stages, id2label=id2label)
            model = MaskFormerForInstanceSegmentation(config)
        elif variant.family == "mask2former":
            config = Mask2FormerConfig(backbone_config=swin_stages, id2label=id2label)
            model = Mask2FormerForUniversalSegmentation(config)
        else:
            return SegViTForSemanticSegmentation(variant.config())
    return SemanticInference(model)


def output_resize_gflops(num_labels: int, height: int, width: int) -> float:
    """What fvcore counts for the official segmentor's final bilinear resize of `(1, labels, H, W)` scores."""
    return 4 * num_labels * height * width / 1e9


def percent(ours: float, paper: float | None) -> str:
    return "—" if paper is None else f"{100 * (ours / paper - 1):+.2f}%"


def count_gflops(variant: Variant) -> tuple[float, set[str]]:
    """GFLOPs of `variant` at its crop, and the operators it executed that are not counted."""
    model = build_model(variant)
    analysis = flop_count_analysis(model, variant.crop_size, variant.crop_size, num_channels=3)
    return analysis.total() / 1e9, set(analysis.unsupported_ops())


def table_row(variant: Variant, ours: float) -> str:
    """The row of `variant` in the table this script prints (and docs/benchmarks.md shows)."""
    size, paper = variant.crop_size, variant.paper_gflops
    paper_cell = "—" if paper is None else f"{paper:.1f}"
    resize_cells = "—", "—"
    if variant.official_resize:
        with_resize = ours + output_resize_gflops(len(variant.config().id2label), size, size)
        resize_cells = f"{with_resize:.2f}", percent(with_resize, paper)
    return (
        f"| {variant.name} | {size} | {ours:.2f} | {resize_cells[0]} | {paper_cell} | {percent(ours, paper)} "
        f"| {resize_cells[1]} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[variant.name for variant in VARIANTS], help="rows to count")
    args = parser.parse_args()
    variants = [variant for variant in VARIANTS if not args.only or variant.name in args.only]
    if find_spec("scipy") is None:
        skipped = [variant.name for variant in variants if variant.family != "segvit"]
        variants = [variant for variant in variants if variant.family == "segvit"]
        if skipped:
            print(f"scipy is not installed: skipping {', '.join(skipped)}.\n")

    print("| model | crop | ours GFLOPs | + resize | paper | ours vs paper | + resize vs paper |")
    print("|---|---|---|---|---|---|---|")
    ours_by_name, not_counted = {}, set()
    started = time.perf_counter()
    for variant in variants:
        ours, unsupported = count_gflops(variant)
        ours_by_name[variant.name] = ours
        not_counted.update(unsupported)
        print(table_row(variant, ours), flush=True)

    if {"ade20k-vit-l", "ade20k-vit-l-shrunk"} <= ours_by_name.keys():
        ratio = ours_by_name["ade20k-vit-l-shrunk"] / ours_by_name["ade20k-vit-l"]
        print(f"\nShrunk / full ViT-L at 640: {ratio:.3f} (paper {373.5 / 637.9:.3f})")
    print(f"\nExecuted but not counted (as in the paper's fvcore count): {', '.join(sorted(not_counted))}")
    print(f"Counted in {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
