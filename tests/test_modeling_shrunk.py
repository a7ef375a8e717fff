"""The Shrunk SegViT: query-based down-sampling (QD) in the encoder, query-based up-sampling (QU) in the decoder."""

import pytest
import torch

from segvit_hf import SegViTForSemanticSegmentation, SegViTModel, get_preset
from segvit_testing import scores_of
from segvit_hf.modeling_segvit import downsample_token_grid
from test_modeling_segvit import SegViTModelTester

SHRUNK = dict(out_indices=[1, 5], shrink_index=2, query_upsampling=True)
NAIVE_SHRUNK = dict(out_indices=[5], shrink_index=2)


@pytest.fixture
def tester():
    return SegViTModelTester(num_hidden_layers=6, out_indices=(1, 3, 5))


def test_downsampling_keeps_the_top_left_token_of_each_cell():
    grid = (3, 5)
    tokens = torch.arange(15.0).reshape(1, 15, 1)
    kept, new_grid = downsample_token_grid(tokens, grid)
    assert new_grid == (2, 3)
    assert kept.flatten().tolist() == [0, 2, 4, 10, 12, 14]


@pytest.mark.parametrize("height,width", [(64, 64), (48, 80), (80, 112), (16, 48)])
def test_encoder_grid_halves_at_the_shrink_index(tester, height, width):
    model = SegViTModel(tester.get_config(out_indices=[1, 2, 5], shrink_index=2)).eval()
    outputs = model(torch.randn(1, 3, height, width), output_hidden_states=True)
    full = (height // 16, width // 16)
    half = (-(-full[0] // 2), -(-full[1] // 2))
    assert [tuple(f.shape[-2:]) for f in outputs.feature_maps] == [full, half, half]
    assert outputs.hidden_states[2].shape[1] == full[0] * full[1]
    assert outputs.hidden_states[3].shape[1] == half[0] * half[1]


def test_qd_uses_the_same_weights_as_a_plain_layer(tester):
    """QD changes which tokens ask, not the weights: with full-grid queries it is the plain layer."""
    config = tester.get_config(out_indices=[5], shrink_index=2)
    shrunk = SegViTModel(config).eval()
    layer = shrunk.layers[2]
    tokens = torch.randn(2, 16, tester.hidden_size)
    shrunk_out, grid, _ = layer(tokens, (4, 4))
    layer.query_downsampling = None
    plain_out, _, _ = layer(tokens, (4, 4))
    kept, _ = downsample_token_grid(plain_out, (4, 4))
    assert grid == (2, 2)
    # Self-attention rows of the kept queries equal their rows in full attention: identical outputs.
    torch.testing.assert_close(shrunk_out, kept, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("variant", [SHRUNK, NAIVE_SHRUNK], ids=["shrunk", "naive-shrunk"])
@pytest.mark.parametrize("height,width", [(64, 64), (48, 80), (80, 112), (112, 48)])
def test_output_shapes_square_non_square_and_odd_grids(tester, variant, height, width):
    model = SegViTForSemanticSegmentation(tester.get_config(**variant)).eval()
    pixel_values, labels = tester.prepare_inputs(height, width)
    outputs = model(pixel_values, labels=labels)
    full = (height // 16, width // 16)
    half = (-(-full[0] // 2), -(-full[1] // 2))
    assert scores_of(model, outputs, (height, width)).shape == (2, tester.num_labels, height, width)
    if variant is SHRUNK:
        # QU brings the masks back to the 1/16 grid; each of the 3 ATM layers is supervised.
        assert outputs.masks_queries_logits.shape[-2:] == full
        assert len(outputs.auxiliary_logits) == 2
        assert all(aux["masks_queries_logits"].shape[-2:] == full for aux in outputs.auxiliary_logits)
    else:
        assert outputs.masks_queries_logits.shape[-2:] == half
        assert outputs.auxiliary_logits == []
    assert torch.isfinite(outputs.loss)


def test_qu_masks_are_not_accumulated(tester):
    model = SegViTForSemanticSegmentation(tester.get_config(**SHRUNK)).eval()
    pixel_values, _ = tester.prepare_inputs()
    outputs = model(pixel_values)
    feature_maps = model.segvit(pixel_values).feature_maps
    head = model.decode_head
    queries = head.class_queries.weight.unsqueeze(0).expand(2, -1, -1)
    per_layer = head.stages[0](queries, head.query_upsampler(feature_maps))
    torch.testing.assert_close(outputs.masks_queries_logits, per_layer[-1][1])
    torch.testing.assert_close(outputs.auxiliary_logits[0]["masks_queries_logits"], per_layer[0][1])


def test_qu_queries_follow_the_input_size(tester):
    """At the training crop the learned query table is used as is; other grids get it resized, not an error."""
    model = SegViTForSemanticSegmentation(tester.get_config(**SHRUNK)).eval()
    upsampler = model.decode_head.query_upsampler
    assert upsampler.query_grid == (4, 4) and upsampler.queries.weight.shape[0] == 16
    feature_maps = model.segvit(torch.randn(1, 3, 96, 48)).feature_maps
    assert upsampler(feature_maps).shape == (1, tester.decoder_hidden_size, 6, 3)


def test_shrunk_round_trip(tester, tmp_path):
    model = SegViTForSemanticSegmentation(tester.get_config(**SHRUNK)).eval()
    pixel_values, labels = tester.prepare_inputs(48, 80)
    expected = model(pixel_values, labels=labels)
    model.save_pretrained(tmp_path)
    reloaded = SegViTForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert reloaded.config.shrink_index == 2 and reloaded.config.query_upsampling
    outputs = reloaded(pixel_values, labels=labels)
    torch.testing.assert_close(outputs.masks_queries_logits, expected.masks_queries_logits, atol=0, rtol=0)
    torch.testing.assert_close(outputs.class_queries_logits, expected.class_queries_logits, atol=0, rtol=0)
    torch.testing.assert_close(outputs.loss, expected.loss, atol=0, rtol=0)


def test_shrunk_trains(tester):
    model = SegViTForSemanticSegmentation(tester.get_config(**SHRUNK, drop_path_rate=0.0, decoder_dropout=0.0))
    pixel_values, labels = tester.prepare_inputs()
    assert not tester.parameters_without_gradient(model, pixel_values, labels)
    losses = tester.overfit(model, pixel_values, labels, steps=25)
    assert losses[-1] < 0.7 * losses[0], losses


def test_shrunk_presets_build():
    config = get_preset("ade20k-vit-l-shrunk").config()
    assert config.shrink_index == 8 and config.query_upsampling and config.out_indices == [7, 23]
    assert config.num_stages == 1


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(out_indices=[1, 3, 5], shrink_index=2, query_upsampling=True), "exactly two"),
        (dict(out_indices=[3, 5], shrink_index=2, query_upsampling=True), "must precede"),
        (dict(out_indices=[1, 5], shrink_index=6), r"shrink_index"),
    ],
)
def test_invalid_shrunk_configurations(tester, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tester.get_config(**kwargs)


def test_single_stage_per_layer_outputs_as_the_official_single_head(tester):
    """The paper's single-layer ATM ablation: each of the stage's layers is an output; masks are not summed."""
    cascade = SegViTForSemanticSegmentation(tester.get_config(out_indices=[5])).eval()
    per_layer = SegViTForSemanticSegmentation(tester.get_config(out_indices=[5], per_layer_outputs=True)).eval()
    per_layer.load_state_dict(cascade.state_dict())
    pixel_values, labels = tester.prepare_inputs()
    single, layered = cascade(pixel_values, labels=labels), per_layer(pixel_values, labels=labels)
    assert single.auxiliary_logits == [] and len(layered.auxiliary_logits) == 2
    torch.testing.assert_close(layered.class_queries_logits, single.class_queries_logits)
    torch.testing.assert_close(layered.masks_queries_logits, single.masks_queries_logits)
    assert layered.loss > single.loss  # two more supervised outputs
    with pytest.raises(ValueError, match="single ATM stage"):
        tester.get_config(out_indices=[3, 5], per_layer_outputs=True)
