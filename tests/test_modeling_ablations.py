"""The paper's ablation rows as configurations: the SETR baseline and the cross-entropy-trained ATM (Table 4), the
used layers (Table 5) and the three ways of query down-sampling (Table 7)."""

import pytest
import torch
import torch.nn.functional as F

from official_reference import (
    make_random_official_shrunk_state_dict,
    make_random_official_state_dict,
    official_forward,
)
from segvit_hf import SegViTConfig, SegViTForSemanticSegmentation, SegViTImageProcessor
from segvit_hf.conversion import CheckpointConversionError, convert_official_checkpoint
from segvit_hf.image_processing_segvit import segmentation_scores
from segvit_hf.modeling_segvit import downsample_token_grid
from segvit_testing import scores_of
from test_modeling_segvit import SegViTModelTester

SETR = dict(out_indices=[3], decoder_type="setr")
ATM_CROSS_ENTROPY = dict(out_indices=[3], per_layer_outputs=True, segmentation_loss="cross_entropy")
QD = dict(out_indices=[1, 5], shrink_index=2, query_upsampling=True)


@pytest.fixture
def tester():
    return SegViTModelTester()


@pytest.fixture
def shrunk_tester():
    return SegViTModelTester(num_hidden_layers=6)


def train_step(model, pixel_values, labels):
    """One AdamW step; returns the loss before it."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(pixel_values, labels=labels).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def assert_round_trip(model, pixel_values, labels, tmp_path):
    model.eval()
    expected = model(pixel_values, labels=labels)
    model.save_pretrained(tmp_path)
    reloaded = SegViTForSemanticSegmentation.from_pretrained(tmp_path).eval()
    for name in ("out_indices", "decoder_type", "segmentation_loss", "query_downsampling", "per_layer_outputs"):
        assert getattr(reloaded.config, name) == getattr(model.config, name)
    outputs = reloaded(pixel_values, labels=labels)
    for name in ("class_queries_logits", "masks_queries_logits", "loss"):
        torch.testing.assert_close(outputs[name], expected[name], atol=0, rtol=0)


# ----- Table 4: SETR baseline and ATM with cross-entropy ---------------------------------------------------------


@pytest.mark.parametrize("variant", [SETR, ATM_CROSS_ENTROPY], ids=["setr", "atm-cross-entropy"])
def test_table4_variants_train_save_and_post_process(tester, variant, tmp_path):
    model = SegViTForSemanticSegmentation(tester.get_config(**variant))
    pixel_values, labels = tester.prepare_inputs(48, 80)
    loss = train_step(model, pixel_values, labels)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert_round_trip(model, pixel_values, labels, tmp_path)

    outputs = model(pixel_values)
    assert outputs.class_queries_logits.shape == (2, tester.num_labels, tester.num_labels + 1)
    assert outputs.masks_queries_logits.shape == (2, tester.num_labels, 3, 5)
    processor = SegViTImageProcessor(patch_size=16, do_resize=False)
    label_maps = processor.post_process_semantic_segmentation(outputs, target_sizes=[(48, 80)] * 2)
    assert [tuple(label_map.shape) for label_map in label_maps] == [(48, 80)] * 2
    torch.testing.assert_close(torch.stack(label_maps), scores_of(model, outputs, (48, 80)).argmax(1))


def test_setr_head_is_two_1x1_convolutions_on_the_last_feature(tester):
    model = SegViTForSemanticSegmentation(tester.get_config(**SETR))
    head = model.decode_head
    assert (head.conv.kernel_size, head.classifier.kernel_size) == ((1, 1), (1, 1))
    assert head.conv.in_channels == tester.hidden_size and head.conv.out_channels == tester.decoder_hidden_size
    assert head.classifier.out_channels == tester.num_labels
    assert not hasattr(head, "class_queries")


def test_setr_outputs_are_certain_queries_with_log_probability_masks(tester):
    model = SegViTForSemanticSegmentation(tester.get_config(**SETR)).eval()
    pixel_values, _ = tester.prepare_inputs(48, 80)
    outputs = model(pixel_values)
    # Query c is class c for sure: exactly one-hot class probabilities, "no object" impossible.
    probabilities = outputs.class_queries_logits.softmax(-1)
    assert torch.equal(probabilities, torch.eye(tester.num_labels, tester.num_labels + 1).expand(2, -1, -1))
    assert torch.isfinite(outputs.class_queries_logits).all()
    # The masks are log-probabilities over classes at each cell.
    torch.testing.assert_close(outputs.masks_queries_logits.logsumexp(1), torch.zeros(2, 3, 5))
    # So the post-processed label map is the argmax of the resized class probabilities.
    resized = F.interpolate(outputs.masks_queries_logits, size=(48, 80), mode="bilinear", align_corners=False)
    scores = segmentation_scores(outputs.class_queries_logits, outputs.masks_queries_logits, (48, 80), 16)
    assert torch.equal(scores.argmax(1), resized.argmax(1))


def test_setr_scores_do_not_saturate_for_confident_classifiers(tester):
    """sigmoid of a large raw logit is 1.0 in fp32 for every confident class; of a log-probability, never."""
    model = SegViTForSemanticSegmentation(tester.get_config(**SETR)).eval()
    with torch.no_grad():
        model.decode_head.classifier.weight.mul_(1e4)
    pixel_values, _ = tester.prepare_inputs()
    outputs = model(pixel_values)
    scores = segmentation_scores(outputs.class_queries_logits, outputs.masks_queries_logits, (64, 64), 16)
    assert scores.max() <= 0.5
    resized = F.interpolate(outputs.masks_queries_logits, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.equal(scores.argmax(1), resized.argmax(1))


def test_setr_loss_is_pixel_cross_entropy_of_the_resized_logits(tester):
    model = SegViTForSemanticSegmentation(tester.get_config(**SETR)).eval()
    pixel_values, labels = tester.prepare_inputs(48, 80)
    outputs = model(pixel_values, labels=labels)
    logits = F.interpolate(outputs.masks_queries_logits, size=(48, 80), mode="bilinear", align_corners=False)
    losses = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    # mmseg 0.24's mean: over every label pixel, ignored ones counting zero.
    torch.testing.assert_close(outputs.loss, losses.sum() / labels.numel())
    assert (labels == 255).any()


def test_atm_cross_entropy_supervises_the_scores_of_the_prediction_only(tester):
    model = SegViTForSemanticSegmentation(tester.get_config(**ATM_CROSS_ENTROPY)).eval()
    pixel_values, labels = tester.prepare_inputs()
    outputs = model(pixel_values, labels=labels)
    assert len(outputs.auxiliary_logits) == 2  # returned, as with the mask loss, but not supervised
    scores = scores_of(model, outputs, (64, 64))
    losses = F.cross_entropy(scores, labels, ignore_index=255, reduction="none")
    torch.testing.assert_close(outputs.loss, losses.sum() / labels.numel())

    model.zero_grad()
    outputs.loss.backward()
    # The class head sees gradients through the last ATM layer's queries only: the first layers' outputs are unused.
    assert model.decode_head.stages[0].layers[-1].fc1.weight.grad.abs().sum() > 0


def test_atm_cross_entropy_differs_from_the_mask_loss(tester):
    pixel_values, labels = tester.prepare_inputs()
    config = tester.get_config(**ATM_CROSS_ENTROPY)
    model = SegViTForSemanticSegmentation(config).eval()
    mask_config = tester.get_config(out_indices=[3], per_layer_outputs=True)
    mask_model = SegViTForSemanticSegmentation(mask_config).eval()
    mask_model.load_state_dict(model.state_dict())
    assert not torch.allclose(model(pixel_values, labels=labels).loss, mask_model(pixel_values, labels=labels).loss)


@pytest.mark.parametrize("variant", [SETR, ATM_CROSS_ENTROPY], ids=["setr", "atm-cross-entropy"])
def test_cross_entropy_on_an_all_ignored_batch_is_zero_and_differentiable(tester, variant):
    model = SegViTForSemanticSegmentation(tester.get_config(**variant))
    pixel_values, labels = tester.prepare_inputs()
    labels[:] = 255
    loss = model(pixel_values, labels=labels).loss
    assert loss.item() == 0.0
    loss.backward()


def test_setr_learns_one_batch(tester):
    model = SegViTForSemanticSegmentation(tester.get_config(**SETR, drop_path_rate=0.0))
    pixel_values, _ = tester.prepare_inputs()
    # One class per patch: what a per-patch classifier can fit.
    labels = torch.randint(0, tester.num_labels, (2, 4, 4)).repeat_interleave(16, 1).repeat_interleave(16, 2)
    losses = tester.overfit(model, pixel_values, labels, steps=30, learning_rate=1e-2)
    assert losses[-1] < 0.5 * losses[0], losses


# ----- Table 5: used layers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "out_indices,per_layer_outputs",
    [([3], True), ([1, 3], False), ([1, 2, 3], False), ([0, 1, 2, 3], False)],
    ids=["single", "two", "three", "four"],
)
def test_table5_used_layers(tester, out_indices, per_layer_outputs, tmp_path):
    config = tester.get_config(out_indices=out_indices, per_layer_outputs=per_layer_outputs)
    model = SegViTForSemanticSegmentation(config)
    assert len(model.decode_head.stages) == len(out_indices)
    pixel_values, labels = tester.prepare_inputs(48, 80)
    loss = train_step(model, pixel_values, labels)
    assert torch.isfinite(loss)
    outputs = model.eval()(pixel_values)
    assert outputs.masks_queries_logits.shape == (2, tester.num_labels, 3, 5)
    # One supervised output per stage; the single-layer model supervises each of its ATM layers instead.
    expected_outputs = config.decoder_layers_per_stage if per_layer_outputs else len(out_indices)
    assert len(outputs.auxiliary_logits) == expected_outputs - 1
    assert_round_trip(model, pixel_values, labels, tmp_path)


# ----- Table 7: query down-sampling ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["conv", "nearest_qkv", "nearest"])
@pytest.mark.parametrize("height,width", [(64, 64), (48, 80), (80, 112)])
def test_table7_query_downsampling_modes(shrunk_tester, mode, height, width):
    model = SegViTForSemanticSegmentation(shrunk_tester.get_config(**QD, query_downsampling=mode))
    pixel_values, labels = shrunk_tester.prepare_inputs(height, width)
    loss = train_step(model, pixel_values, labels)
    assert torch.isfinite(loss)
    encoder_outputs = model.segvit.eval()(pixel_values)
    full = (height // 16, width // 16)
    half = (-(-full[0] // 2), -(-full[1] // 2))  # odd grids round up in every mode
    assert [tuple(f.shape[-2:]) for f in encoder_outputs.feature_maps] == [full, half]
    assert model.eval()(pixel_values).masks_queries_logits.shape[-2:] == full


@pytest.mark.parametrize("mode", ["conv", "nearest_qkv"])
def test_table7_round_trip(shrunk_tester, mode, tmp_path):
    model = SegViTForSemanticSegmentation(shrunk_tester.get_config(**QD, query_downsampling=mode))
    pixel_values, labels = shrunk_tester.prepare_inputs(48, 80)
    assert_round_trip(model, pixel_values, labels, tmp_path)


def test_only_the_conv_mode_adds_parameters(shrunk_tester):
    names = {}
    for mode in ("nearest", "nearest_qkv", "conv"):
        model = SegViTForSemanticSegmentation(shrunk_tester.get_config(**QD, query_downsampling=mode))
        names[mode] = set(model.state_dict())
    assert names["nearest"] == names["nearest_qkv"]
    assert names["conv"] - names["nearest"] == {
        "segvit.layers.2.query_downsampler.weight",
        "segvit.layers.2.query_downsampler.bias",
    }


def test_conv_picking_the_top_left_token_is_nearest_down_sampling(shrunk_tester):
    """A 2x2 stride-2 convolution whose only tap is the identity on the top-left token is the nearest QD."""
    nearest = SegViTForSemanticSegmentation(shrunk_tester.get_config(**QD)).eval()
    conv = SegViTForSemanticSegmentation(shrunk_tester.get_config(**QD, query_downsampling="conv")).eval()
    conv.load_state_dict(nearest.state_dict(), strict=False)
    downsampler = conv.segvit.layers[2].query_downsampler
    with torch.no_grad():
        downsampler.weight.zero_()
        downsampler.weight[:, :, 0, 0] = torch.eye(shrunk_tester.hidden_size)
        downsampler.bias.zero_()
    pixel_values, _ = shrunk_tester.prepare_inputs(48, 80)  # a 3 x 5 grid: odd, padded for the convolution
    torch.testing.assert_close(
        conv(pixel_values).masks_queries_logits, nearest(pixel_values).masks_queries_logits, atol=1e-5, rtol=1e-5
    )


def test_nearest_qkv_is_an_ordinary_layer_on_the_downsampled_tokens(shrunk_tester):
    model = SegViTForSemanticSegmentation(shrunk_tester.get_config(**QD, query_downsampling="nearest_qkv")).eval()
    layer = model.segvit.layers[2]
    tokens = torch.randn(2, 15, shrunk_tester.hidden_size)
    output, grid, _ = layer(tokens, (3, 5))
    kept, kept_grid = downsample_token_grid(tokens, (3, 5))
    layer.query_downsampling = None
    plain_output, _, _ = layer(kept, kept_grid)
    assert grid == kept_grid == (2, 3)
    torch.testing.assert_close(output, plain_output)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"out_indices": [1, 3], "decoder_type": "setr"}, "single out_index"),
        ({"out_indices": [3], "decoder_type": "setr", "segmentation_loss": "mask"}, "cross_entropy"),
        ({"out_indices": [3], "decoder_type": "setr", "per_layer_outputs": True}, "single out_index"),
        ({"decoder_type": "fcn"}, "decoder_type"),
        ({"segmentation_loss": "focal"}, "segmentation_loss"),
        ({"query_downsampling": "conv"}, "needs `shrink_index`"),
        ({"shrink_index": 2, "query_downsampling": "bilinear"}, "query_downsampling"),
    ],
)
def test_invalid_ablation_configurations(tester, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tester.get_config(**kwargs)


def test_setr_config_defaults_to_cross_entropy(tester):
    config = tester.get_config(**SETR)
    assert config.segmentation_loss == "cross_entropy"
    assert tester.get_config().segmentation_loss == "mask"
    assert isinstance(config, SegViTConfig)


# ----- converting official checkpoints of the ablations ------------------------------------------------------

TINY_OFFICIAL = dict(
    hidden_size=64, num_layers=4, num_heads=4, decoder_dim=32, decoder_num_heads=4, num_classes=7, crop=64
)


def _official_inputs():
    pixel_values = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    labels = torch.randint(0, 7, (2, 64, 64), generator=torch.Generator().manual_seed(1))
    labels[:, :16, :20] = 255
    return pixel_values, labels


def test_official_single_layer_atm_converts_with_the_cross_entropy_loss():
    """Table 4's ATM + CE: the official head with `CE_loss=True` hands its `pred` to a per-pixel cross-entropy."""
    state_dict = make_random_official_state_dict(**TINY_OFFICIAL, num_stages=1, seed=0)
    model = convert_official_checkpoint(
        state_dict,
        num_attention_heads=4,
        decoder_num_attention_heads=4,
        out_indices=[3],
        image_size=64,
        per_layer_outputs=True,
        segmentation_loss="cross_entropy",
    )
    pixel_values, labels = _official_inputs()
    expected_pred, _ = official_forward(state_dict, pixel_values, num_heads=4, decoder_num_heads=4, out_indices=[3])
    outputs = model(pixel_values, labels=labels)
    torch.testing.assert_close(scores_of(model, outputs, (64, 64)), expected_pred, atol=1e-4, rtol=0)
    expected_loss = F.cross_entropy(expected_pred, labels, ignore_index=255, reduction="none").sum() / labels.numel()
    torch.testing.assert_close(outputs.loss, expected_loss, atol=1e-4, rtol=1e-4)


def test_official_four_stage_cascade_converts_with_parity():
    """Table 5's [3, 6, 9, 12] row: a four-stage official ATM head."""
    state_dict = make_random_official_state_dict(**TINY_OFFICIAL, num_stages=4, seed=4)
    model = convert_official_checkpoint(
        state_dict, num_attention_heads=4, decoder_num_attention_heads=4, out_indices=[0, 1, 2, 3], image_size=64
    )
    pixel_values, labels = _official_inputs()
    expected_pred, expected_loss = official_forward(
        state_dict, pixel_values, num_heads=4, decoder_num_heads=4, out_indices=[0, 1, 2, 3], labels=labels
    )
    outputs = model(pixel_values, labels=labels)
    torch.testing.assert_close(scores_of(model, outputs, (64, 64)), expected_pred, atol=1e-4, rtol=0)
    torch.testing.assert_close(outputs.loss, expected_loss, rtol=1e-4, atol=0)


def test_official_shrunk_tensors_convert_with_the_nearest_qkv_mode():
    """QD's mode changes no tensor: a Shrunk checkpoint loads into the Q, K, V variant, which computes otherwise."""
    shrunk = dict(TINY_OFFICIAL, num_layers=6)
    state_dict = make_random_official_shrunk_state_dict(**shrunk, seed=0)
    arguments = dict(num_attention_heads=4, decoder_num_attention_heads=4, out_indices=[1, 5], image_size=64)
    nearest = convert_official_checkpoint(state_dict, shrink_index=2, **arguments)
    qkv = convert_official_checkpoint(state_dict, shrink_index=2, query_downsampling="nearest_qkv", **arguments)
    assert qkv.config.query_downsampling == "nearest_qkv"
    pixel_values, _ = _official_inputs()
    assert not torch.allclose(qkv(pixel_values).masks_queries_logits, nearest(pixel_values).masks_queries_logits)
    with pytest.raises(CheckpointConversionError, match="query_downsampler"):
        convert_official_checkpoint(state_dict, shrink_index=2, query_downsampling="conv", **arguments)
