"""The FLOP counter: counts as the paper does, attention included whichever kernel runs it."""

import re
import runpy
from pathlib import Path

import pytest
import torch
from torch import nn

from segvit_hf import SegViTForSemanticSegmentation
from segvit_testing import tiny_config

pytest.importorskip("fvcore")

from segvit_hf.flops import count_flops, flop_count_analysis  # noqa: E402

BATCH, HEADS, TOKENS, HEAD_DIM = 2, 4, 64, 8




class ImageToTokens(nn.Module):
    """Feeds `(batch, channels, height, width)` pixels to a token-sequence `block` as `(batch, h * w, channels)`."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, pixel_values):
        return self.block(pixel_values.flatten(2).transpose(1, 2))


class FusedAttention(nn.Module):
    """Self-attention of the tokens with themselves through `F.scaled_dot_product_attention`, `HEADS` heads."""

    def forward(self, tokens):
        heads = tokens.unflatten(-1, (HEADS, -1)).transpose(1, 2)
        return nn.functional.scaled_dot_product_attention(heads, heads, heads)


def test_scaled_dot_product_attention_is_counted():
    # Q K^T and softmax(.) V: batch * heads * L * S * (E + Ev) multiply-adds, nothing else.
    gflops = count_flops(ImageToTokens(FusedAttention()), 8, 8, batch_size=BATCH, num_channels=HEADS * HEAD_DIM)
    assert gflops * 1e9 == BATCH * HEADS * TOKENS * TOKENS * (HEAD_DIM + HEAD_DIM)


def test_segvit_sdpa_counts_as_much_as_eager_attention():
    # Eager attention runs plain matmuls, which fvcore counts by itself; the fused SDPA kernel must count the same.
    sdpa = SegViTForSemanticSegmentation(tiny_config())
    eager = SegViTForSemanticSegmentation._from_config(tiny_config(), attn_implementation="eager")
    assert sdpa.config.encoder_config._attn_implementation == "sdpa"
    assert eager.config.encoder_config._attn_implementation == "eager"

    analysis = flop_count_analysis(sdpa, 64, 64)
    assert "aten::scaled_dot_product_attention" not in analysis.unsupported_ops()
    # 4 encoder layers, 4 heads, 16 tokens, head size 8.
    assert analysis.by_operator()["scaled_dot_product_attention"] == 4 * 4 * 16 * 16 * (8 + 8)
    assert analysis.total() / 1e9 == count_flops(eager, 64, 64)


@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train"])
def test_multi_head_attention_counts_projections_and_products(train_mode):
    embed_dim = HEADS * HEAD_DIM
    attention = nn.MultiheadAttention(embed_dim, HEADS, batch_first=True)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = attention

        def forward(self, tokens):
            return self.attention(tokens, tokens, tokens, need_weights=False)[0]

    model = ImageToTokens(SelfAttention()).train(train_mode)
    gflops = count_flops(model, 8, 8, batch_size=BATCH, num_channels=embed_dim)
    projections = 4 * TOKENS * embed_dim * embed_dim  # q, k, v and output
    products = 2 * TOKENS * TOKENS * embed_dim
    assert gflops * 1e9 == BATCH * (projections + products)
    assert model.training is train_mode  # counted in eval mode, then put back


def test_baddbmm_counts_the_batched_product():
    class MaskedScores(nn.Module):
        def forward(self, tokens):
            bias = torch.zeros(tokens.shape[0], tokens.shape[1], tokens.shape[1])
            return torch.baddbmm(bias, tokens, tokens.transpose(1, 2))

    gflops = count_flops(ImageToTokens(MaskedScores()), 8, 8, batch_size=BATCH, num_channels=HEAD_DIM)
    assert gflops * 1e9 == BATCH * TOKENS * HEAD_DIM * TOKENS


def test_count_scales_with_batch_and_shrinking_saves_compute():
    plain = SegViTForSemanticSegmentation(tiny_config(out_indices=[3]))
    one_image = count_flops(plain, 64, 64)
    assert count_flops(plain, 64, 64, batch_size=2) == pytest.approx(2 * one_image, rel=1e-12)
    # Query-based down-sampling at layer 2 quarters the tokens of layers 2 and 3 (and the ATM input).
    shrunk = SegViTForSemanticSegmentation(tiny_config(out_indices=[3], shrink_index=2))
    assert count_flops(shrunk, 64, 64) < one_image
    # Non-square, odd token grids trace too.
    assert count_flops(shrunk, 48, 80) > 0


def test_each_module_keeps_its_mode():
    model = SegViTForSemanticSegmentation(tiny_config()).train()
    model.segvit.eval()  # e.g. a frozen encoder while the decoder trains
    count_flops(model, 64, 64)
    assert model.training and model.decode_head.training and not model.segvit.training


def test_bad_arguments_are_rejected():
    model = SegViTForSemanticSegmentation(tiny_config())
    with pytest.raises(ValueError, match="height"):
        count_flops(model, 0, 64)
    with pytest.raises(TypeError, match="width"):
        count_flops(model, 64, 64.0)
    with pytest.raises(TypeError, match="nn.Module"):
        count_flops(lambda pixels: pixels, 64, 64)
    with pytest.raises(ValueError, match="num_channels"):
        count_flops(ImageToTokens(FusedAttention()), 8, 8)


def test_the_documented_figures_of_ade20k_vit_b_are_what_the_code_counts():
    # The cheapest row of `python benchmarks/flops.py` and the count_flops examples, recomputed.
    repo = Path(__file__).resolve().parents[1]
    flops = runpy.run_path(str(repo / "benchmarks" / "flops.py"))
    variant = next(variant for variant in flops["VARIANTS"] if variant.name == "ade20k-vit-b")
    ours, _ = flops["count_gflops"](variant)
    benchmarks = (repo / "docs" / "benchmarks.md").read_text()
    assert flops["table_row"](variant, ours) in benchmarks
    assert re.search(r"count_flops\(model, 512, 512\) +# ([\d.]+)", benchmarks).group(1) == f"{ours:.2f}"
    docstring = (repo / "src" / "segvit_hf" / "flops.py").read_text()
    example = re.search(r">>> round\(count_flops\(model, 512, 512\), 1\).*\n +([\d.]+)", docstring)
    assert example.group(1) == f"{ours:.1f}"
