"""GFLOPs of every SegViT preset and of the paper's ViT-B ablations, beside the paper's figures.

Counted as the paper counts them (fvcore, one multiply-add = 1, attention products included): see
`segvit_hf.flops.count_flops`. One image at the training crop size, single scale, the full model (encoder, decoder
and the full-resolution class scores).

The official tool counted the mmseg segmentor, whose test path ends with a bilinear resize of the class scores to
the input size, a no-op at the crop size that fvcore still counts (4 FLOPs per output value: 4 * labels * H * W).
Our model has no such resize; the "+ resize" column adds that term so the last column compares like with like.

Needs fvcore (`pip install fvcore`, the `benchmark` extra). Usage:

    python benchmarks/flops.py                     # every row (about a minute in all on 2 cores)
    python benchmarks/flops.py --only ade20k-vit-b ade20k-vit-b-shrunk
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

from transformers.initialization import no_init_weights

from segvit_hf import PRESETS, SegViTConfig, SegViTForSemanticSegmentation, get_preset
from segvit_hf.flops import flop_count_analysis


@dataclass(frozen=True)
class Variant:
    """A model to count: a preset, optional config overrides, and the paper's GFLOPs for it."""

    name: str
    preset: str
    paper_gflops: float
    overrides: dict = field(default_factory=dict)

    def config(self) -> SegViTConfig:
        return get_preset(self.preset).config(**self.overrides)


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
VARIANTS = tuple(Variant(name, name, preset.paper_gflops) for name, preset in PRESETS.items()) + VIT_B_ABLATIONS


def output_resize_gflops(config: SegViTConfig, height: int, width: int) -> float:
    """What fvcore counts for the official segmentor's final bilinear resize of `(1, labels, H, W)` scores."""
    return 4 * config.num_labels * height * width / 1e9


def count_gflops(variant: Variant) -> tuple[float, set[str]]:
    """GFLOPs of `variant` at its training crop, and the operators it executed that are not counted."""
    config = variant.config()
    size = config.encoder_config.image_size
    # The weights' values do not change the count: skip their (slow, for ViT-L) random initialisation.
    with no_init_weights():
        model = SegViTForSemanticSegmentation(config)
    analysis = flop_count_analysis(model, size, size)
    return analysis.total() / 1e9, set(analysis.unsupported_ops())


def table_row(variant: Variant, ours: float) -> str:
    """The row of `variant` in the table this script prints (and docs/benchmarks.md shows)."""
    config = variant.config()
    size = config.encoder_config.image_size
    with_resize = ours + output_resize_gflops(config, size, size)
    paper = variant.paper_gflops
    return (
        f"| {variant.name} | {size} | {ours:.2f} | {with_resize:.2f} | {paper:.1f} "
        f"| {100 * (ours / paper - 1):+.2f}% | {100 * (with_resize / paper - 1):+.2f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[variant.name for variant in VARIANTS], help="rows to count")
    args = parser.parse_args()
    variants = [variant for variant in VARIANTS if not args.only or variant.name in args.only]

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
