"""torch.compile and torch.export serve any input size, plain and Shrunk, on tiny configurations.

Compiling is the slow part of the test suite (inductor builds C++ kernels), so the models are the smallest that keep
every code path: two encoder layers (three for Shrunk), one ATM layer per stage.
"""

import pytest
import torch
from test_modeling_segvit import SegViTModelTester

from segvit_hf import SegViTForSemanticSegmentation
from segvit_hf.export import export_dynamic_shapes, minimum_input_side

# Square, non-square, and sides that are not multiples of the 16-pixel patch (odd token grids included).
SIZES = [(64, 64), (48, 80), (70, 50), (100, 33), (33, 100)]


def plain_config():
    return SegViTModelTester(num_hidden_layers=2, out_indices=(0, 1)).get_config(decoder_layers_per_stage=1)


def shrunk_config():
    tester = SegViTModelTester(num_hidden_layers=3, out_indices=(0, 2))
    return tester.get_config(shrink_index=1, query_upsampling=True, decoder_layers_per_stage=1)


CONFIGS = {"plain": plain_config, "shrunk": shrunk_config}


def assert_same_logits(actual, expected):
    torch.testing.assert_close(actual[0], expected.class_queries_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(actual[1], expected.masks_queries_logits, atol=1e-4, rtol=0)


def test_compiled_model_serves_every_size_like_eager():
    """Default settings: a static graph for the first size, one dynamic graph for the second, then no recompilation."""
    model = SegViTForSemanticSegmentation(plain_config()).eval()
    compiled = torch.compile(model)
    with torch.no_grad():
        for index, (height, width) in enumerate(SIZES):
            pixel_values = torch.randn(1, 3, height, width)
            stance = "fail_on_recompile" if index >= 2 else "default"
            with torch.compiler.set_stance(stance):
                outputs = compiled(pixel_values)
            expected = model(pixel_values)
            assert_same_logits((outputs.class_queries_logits, outputs.masks_queries_logits), expected)


def test_dynamic_compilation_of_the_shrunk_model_compiles_once():
    model = SegViTForSemanticSegmentation(shrunk_config()).eval()
    compiled = torch.compile(model, dynamic=True)
    with torch.no_grad():
        for index, (height, width) in enumerate(SIZES[1:]):
            pixel_values = torch.randn(1, 3, height, width)
            with torch.compiler.set_stance("fail_on_recompile" if index else "default"):
                outputs = compiled(pixel_values)
            assert_same_logits((outputs.class_queries_logits, outputs.masks_queries_logits), model(pixel_values))


@pytest.mark.parametrize("variant", CONFIGS)
def test_export_with_dynamic_height_and_width(variant):
    config = CONFIGS[variant]()
    model = SegViTForSemanticSegmentation(config).eval()
    program = torch.export.export(
        model, (torch.randn(1, 3, 64, 80),), dynamic_shapes=export_dynamic_shapes(config, dynamic_batch=False)
    )
    exported = program.module()
    smallest = minimum_input_side(config)
    with torch.no_grad():
        for height, width in [*SIZES, (smallest, 3 * smallest)]:
            pixel_values = torch.randn(1, 3, height, width)
            outputs = exported(pixel_values)
            assert_same_logits((outputs.class_queries_logits, outputs.masks_queries_logits), model(pixel_values))


def test_export_with_a_dynamic_batch():
    config = plain_config()
    model = SegViTForSemanticSegmentation(config).eval()
    program = torch.export.export(model, (torch.randn(2, 3, 64, 80),), dynamic_shapes=export_dynamic_shapes(config))
    exported = program.module()
    with torch.no_grad():
        for batch_size, (height, width) in zip((1, 3), SIZES[2:]):
            pixel_values = torch.randn(batch_size, 3, height, width)
            outputs = exported(pixel_values)
            assert_same_logits((outputs.class_queries_logits, outputs.masks_queries_logits), model(pixel_values))


def test_minimum_input_side_keeps_every_token_grid_at_two_cells():
    assert minimum_input_side(plain_config()) == 17
    assert minimum_input_side(shrunk_config()) == 33  # 3 tokens, halved to 2
