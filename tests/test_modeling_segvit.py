"""Behaviour of SegViTModel / SegViTForSemanticSegmentation on tiny configurations."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSemanticSegmentation

from segvit_hf import SegViTConfig, SegViTForSemanticSegmentation, SegViTModel
from segvit_testing import predict_scores, scores_of, tiny_config


class SegViTModelTester:
    """Builds tiny SegViT configurations and inputs."""

    def __init__(
        self,
        batch_size=2,
        image_size=64,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        out_indices=(1, 2, 3),
        decoder_hidden_size=16,
        decoder_num_attention_heads=4,
        num_labels=5,
    ):
        self.batch_size = batch_size
        self.image_size = image_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.out_indices = list(out_indices)
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_num_attention_heads = decoder_num_attention_heads
        self.num_labels = num_labels

    def get_config(self, **overrides) -> SegViTConfig:
        """[`tiny_config`] with this tester's sizes."""
        values = dict(
            encoder=dict(
                hidden_size=self.hidden_size,
                num_hidden_layers=self.num_hidden_layers,
                num_attention_heads=self.num_attention_heads,
                intermediate_size=2 * self.hidden_size,
                image_size=self.image_size,
            ),
            out_indices=self.out_indices,
            decoder_hidden_size=self.decoder_hidden_size,
            decoder_num_attention_heads=self.decoder_num_attention_heads,
            num_labels=self.num_labels,
        )
        values.update(overrides)
        return tiny_config(**values)

    def prepare_inputs(self, height=None, width=None, batch_size=None):
        height = height or self.image_size
        width = width or self.image_size
        batch_size = batch_size or self.batch_size
        pixel_values = torch.randn(batch_size, 3, height, width)
        # Regions of 8x8 pixels with one class each, and an ignored band at the top.
        coarse = torch.randint(0, self.num_labels, (batch_size, 1, -(-height // 8), -(-width // 8)))
        labels = torch.nn.functional.interpolate(coarse.float(), scale_factor=8, mode="nearest").long()[:, 0]
        labels = labels[:, :height, :width].contiguous()
        labels[:, : height // 8] = 255
        return pixel_values, labels

    @staticmethod
    def overfit(model, pixel_values, labels, steps, learning_rate=3e-3):
        """Trains `model` on one batch with AdamW; returns the loss of every step."""
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
        losses = []
        for _ in range(steps):
            loss = model(pixel_values, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    @staticmethod
    def parameters_without_gradient(model, pixel_values, labels):
        """Names of the parameters that one backward pass of the loss leaves without a (non-zero) gradient."""
        model.zero_grad()
        model(pixel_values, labels=labels).loss.backward()
        return [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]


@pytest.fixture
def tester():
    return SegViTModelTester()


def test_base_model_feature_maps(tester):
    model = SegViTModel(tester.get_config()).eval()
    pixel_values, _ = tester.prepare_inputs()
    outputs = model(pixel_values)
    assert len(outputs.feature_maps) == len(tester.out_indices)
    for feature_map in outputs.feature_maps:
        assert feature_map.shape == (2, tester.hidden_size, 4, 4)
    assert outputs.last_hidden_state.shape == (2, 16, tester.hidden_size)
    # The deepest feature map is the last layer's output, reshaped: no final norm, no CLS token.
    assert torch.equal(outputs.feature_maps[-1].flatten(2).transpose(1, 2), outputs.last_hidden_state)


@pytest.mark.parametrize("height,width", [(64, 64), (48, 80), (80, 32)])
def test_segmentation_output_shapes(tester, height, width):
    model = SegViTForSemanticSegmentation(tester.get_config()).eval()
    pixel_values, labels = tester.prepare_inputs(height, width)
    outputs = model(pixel_values, labels=labels)
    grid = (height // 16, width // 16)
    assert "logits" not in outputs  # nothing at full resolution unless asked for
    assert outputs.class_queries_logits.shape == (2, tester.num_labels, tester.num_labels + 1)
    assert outputs.masks_queries_logits.shape == (2, tester.num_labels, *grid)
    assert len(outputs.auxiliary_logits) == len(tester.out_indices) - 1
    for auxiliary in outputs.auxiliary_logits:
        assert auxiliary["masks_queries_logits"].shape == (2, tester.num_labels, *grid)
    assert outputs.loss.ndim == 0 and torch.isfinite(outputs.loss)
    # Each query spreads at most its sigmoid mask over the classes: scores are >= 0 and sum to at most num_labels.
    scores = scores_of(model, outputs, (height, width))
    assert scores.shape == (2, tester.num_labels, height, width)
    assert scores.min() >= 0 and scores.sum(1).max() <= tester.num_labels


def test_input_size_not_multiple_of_patch(tester):
    """The encoder pads bottom/right to whole patches; the output is cropped back to the input size."""
    model = SegViTForSemanticSegmentation(tester.get_config()).eval()
    pixel_values = torch.randn(1, 3, 50, 70)
    outputs, scores = predict_scores(model, pixel_values)
    assert scores.shape == (1, tester.num_labels, 50, 70)
    assert outputs.masks_queries_logits.shape[-2:] == (4, 5)
    # The padding is zeros appended to the image: an explicitly zero-padded input gives the same top-left region.
    padded = torch.nn.functional.pad(pixel_values, (0, 10, 0, 14))
    padded_outputs = model(padded)
    torch.testing.assert_close(outputs.masks_queries_logits, padded_outputs.masks_queries_logits)


def test_position_embeddings_follow_the_input_grid(tester):
    """At the training crop the stored table is used as is; elsewhere it is resized, not rejected."""
    model = SegViTModel(tester.get_config()).eval()
    embeddings = model.embeddings
    tokens, grid = embeddings(torch.zeros(1, 3, 64, 64))
    assert grid == (4, 4)
    torch.testing.assert_close(tokens - embeddings.patch_embeddings(torch.zeros(1, 3, 64, 64)), embeddings.position_embeddings)
    tokens, grid = embeddings(torch.zeros(1, 3, 32, 96))
    assert grid == (2, 6) and tokens.shape == (1, 12, tester.hidden_size)


def test_batch_independence(tester):
    model = SegViTForSemanticSegmentation(tester.get_config()).eval()
    pixel_values, _ = tester.prepare_inputs(batch_size=3)
    batched = model(pixel_values).masks_queries_logits
    for i in range(3):
        single = model(pixel_values[i : i + 1]).masks_queries_logits
        torch.testing.assert_close(batched[i : i + 1], single, atol=1e-5, rtol=1e-5)


def test_eval_is_deterministic_and_train_is_stochastic(tester):
    model = SegViTForSemanticSegmentation(tester.get_config(drop_path_rate=0.5)).eval()
    pixel_values, _ = tester.prepare_inputs()
    torch.testing.assert_close(model(pixel_values).masks_queries_logits, model(pixel_values).masks_queries_logits)
    model.train()
    assert not torch.allclose(model(pixel_values).masks_queries_logits, model(pixel_values).masks_queries_logits)


def test_save_and_load_round_trip(tester, tmp_path):
    model = SegViTForSemanticSegmentation(tester.get_config()).eval()
    pixel_values, labels = tester.prepare_inputs(48, 80)
    expected = model(pixel_values, labels=labels)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()

    for loader in (SegViTForSemanticSegmentation, AutoModelForSemanticSegmentation):
        reloaded = loader.from_pretrained(tmp_path).eval()
        assert isinstance(reloaded, SegViTForSemanticSegmentation)
        assert reloaded.config.encoder_config.layer_norm_eps == 1e-6
        outputs = reloaded(pixel_values, labels=labels)
        torch.testing.assert_close(outputs.class_queries_logits, expected.class_queries_logits, atol=0, rtol=0)
        torch.testing.assert_close(outputs.masks_queries_logits, expected.masks_queries_logits, atol=0, rtol=0)
        torch.testing.assert_close(outputs.loss, expected.loss, atol=0, rtol=0)


def test_auto_classes(tester, tmp_path):
    config = tester.get_config()
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, SegViTConfig)
    assert loaded.out_indices == tester.out_indices
    assert loaded.id2label == config.id2label
    assert isinstance(AutoModel.from_config(config), SegViTModel)
    assert isinstance(AutoModelForSemanticSegmentation.from_config(config), SegViTForSemanticSegmentation)


def test_base_model_weights_load_into_segmentation_model(tester, tmp_path):
    base = SegViTModel(tester.get_config()).eval()
    base.save_pretrained(tmp_path)
    full = SegViTForSemanticSegmentation.from_pretrained(tmp_path).eval()
    pixel_values, _ = tester.prepare_inputs()
    torch.testing.assert_close(full.segvit(pixel_values).last_hidden_state, base(pixel_values).last_hidden_state)


def test_loss_decreases_when_overfitting_one_batch(tester):
    model = SegViTForSemanticSegmentation(tester.get_config(drop_path_rate=0.0, decoder_dropout=0.0))
    pixel_values, labels = tester.prepare_inputs()
    losses = tester.overfit(model, pixel_values, labels, steps=40)
    assert losses[-1] < 0.5 * losses[0], losses


def test_gradients_reach_every_parameter(tester):
    model = SegViTForSemanticSegmentation(tester.get_config())
    pixel_values, labels = tester.prepare_inputs()
    assert not tester.parameters_without_gradient(model, pixel_values, labels)


def test_gradient_checkpointing_gives_the_same_gradients(tester):
    config = tester.get_config(drop_path_rate=0.0, decoder_dropout=0.0)
    model = SegViTForSemanticSegmentation(config).train()
    pixel_values, labels = tester.prepare_inputs()
    model(pixel_values, labels=labels).loss.backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    # transformers >= 5.2x renamed gradient_checkpointing_enable; both switch the same layers.
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    assert all(layer.gradient_checkpointing for layer in model.segvit.layers)
    model(pixel_values, labels=labels).loss.backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, reference[name], atol=1e-6, rtol=1e-5, msg=name)


def test_all_ignored_image_contributes_nothing(tester):
    model = SegViTForSemanticSegmentation(tester.get_config()).eval()
    pixel_values, labels = tester.prepare_inputs()
    alone = model(pixel_values[:1], labels=labels[:1]).loss
    labels[1] = 255
    with_ignored = model(pixel_values, labels=labels).loss
    torch.testing.assert_close(with_ignored, alone)

    labels[:] = 255
    loss = model(pixel_values, labels=labels).loss
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()  # still differentiable: distributed training needs every parameter in the graph


def test_sdpa_and_eager_attention_agree(tester, tmp_path):
    model = SegViTForSemanticSegmentation(tester.get_config()).eval()
    assert model.config.encoder_config._attn_implementation == "sdpa"
    model.save_pretrained(tmp_path)
    eager = SegViTForSemanticSegmentation.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert eager.config.encoder_config._attn_implementation == "eager"
    pixel_values, _ = tester.prepare_inputs()
    torch.testing.assert_close(
        model(pixel_values).masks_queries_logits, eager(pixel_values).masks_queries_logits, atol=1e-5, rtol=1e-4
    )


def test_hidden_states_and_attentions_on_request(tester, tmp_path):
    SegViTForSemanticSegmentation(tester.get_config()).save_pretrained(tmp_path)
    model = SegViTForSemanticSegmentation.from_pretrained(tmp_path, attn_implementation="eager").eval()
    pixel_values, _ = tester.prepare_inputs(48, 80)
    outputs = model(pixel_values, output_hidden_states=True, output_attentions=True)
    assert len(outputs.hidden_states) == tester.num_hidden_layers + 1
    assert outputs.hidden_states[0].shape == (2, 15, tester.hidden_size)
    assert len(outputs.attentions) == tester.num_hidden_layers
    assert outputs.attentions[0].shape == (2, tester.num_attention_heads, 15, 15)
    torch.testing.assert_close(outputs.attentions[0].sum(-1), torch.ones(2, tester.num_attention_heads, 15))
    plain = model(pixel_values)
    assert plain.hidden_states is None and plain.attentions is None


def test_attentions_with_sdpa_raise_a_clear_error(tester):
    model = SegViTForSemanticSegmentation(tester.get_config()).eval()
    with pytest.raises(ValueError, match="eager"):
        model(torch.randn(1, 3, 64, 64), output_attentions=True)


def test_bf16_autocast_on_cpu_keeps_the_loss_in_fp32(tester):
    model = SegViTForSemanticSegmentation(tester.get_config()).eval()
    pixel_values, labels = tester.prepare_inputs()
    reference = model(pixel_values, labels=labels).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(pixel_values, labels=labels)
    assert outputs.loss.dtype == torch.float32
    assert torch.isfinite(outputs.loss)
    torch.testing.assert_close(outputs.loss, reference, rtol=0.1, atol=0.1)


def test_return_tuple(tester):
    model = SegViTForSemanticSegmentation(tester.get_config()).eval()
    pixel_values, labels = tester.prepare_inputs()
    as_tuple = model(pixel_values, labels=labels, return_dict=False)
    as_output = model(pixel_values, labels=labels)
    torch.testing.assert_close(as_tuple[0], as_output.loss)
    torch.testing.assert_close(as_tuple[1], as_output.class_queries_logits)
    torch.testing.assert_close(as_tuple[2], as_output.masks_queries_logits)


# ----- bad input -----------------------------------------------------------------------------------------------


@pytest.fixture
def model(tester):
    return SegViTForSemanticSegmentation(tester.get_config()).eval()


def test_wrong_channel_count(model):
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.randn(1, 1, 64, 64))


def test_wrong_rank(model):
    with pytest.raises(ValueError, match=r"\(batch_size, 3, height, width\)"):
        model(torch.randn(3, 64, 64))


def test_integer_pixels(model):
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_labels_out_of_range(model, tester):
    pixel_values, labels = tester.prepare_inputs()
    labels[0, 5, 5] = tester.num_labels
    labels[1, 0, 0] = -1
    with pytest.raises(ValueError, match=r"\[-1, 5\] outside \[0, 5\)"):
        model(pixel_values, labels=labels)


def test_labels_of_the_wrong_size(model, tester):
    pixel_values, labels = tester.prepare_inputs()
    with pytest.raises(ValueError, match="to match `pixel_values`"):
        model(pixel_values, labels=labels[:, :32])
    with pytest.raises(ValueError, match="to match `pixel_values`"):
        model(pixel_values, labels=labels[:1])


def test_labels_with_a_channel_axis_as_mmseg_passes_them(model, tester):
    pixel_values, labels = tester.prepare_inputs()
    torch.testing.assert_close(
        model(pixel_values, labels=labels[:, None]).loss, model(pixel_values, labels=labels).loss
    )
    with pytest.raises(ValueError, match="to match `pixel_values`"):
        model(pixel_values, labels=labels[:, None].expand(-1, 2, -1, -1))


def test_float_labels(model, tester):
    pixel_values, labels = tester.prepare_inputs()
    with pytest.raises(TypeError, match="integer class ids"):
        model(pixel_values, labels=labels.float())
