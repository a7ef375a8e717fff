"""SegViT on transformers backbones (`AutoBackbone`): plain ones (DINOv2, ViTDet) and hierarchical ones (Swin,
ConvNeXt), built from tiny local configurations."""

import pytest
import torch
from transformers import (
    BeitConfig,
    ConvNextConfig,
    Dinov2Config,
    Dinov2Model,
    SwinConfig,
    ViTConfig,
    VitDetConfig,
)

from segvit_hf import SegViTConfig, SegViTForSemanticSegmentation, SegViTImageProcessor, SegViTModel
from segvit_hf.configuration_segvit import backbone_stage_strides
from segvit_hf.image_processing_segvit import segmentation_scores
from segvit_hf.inference import predict

NUM_LABELS = 5
DECODER = dict(decoder_hidden_size=16, decoder_num_attention_heads=4, decoder_layers_per_stage=1)


def swin_config(**overrides):
    values = dict(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4], window_size=4, drop_path_rate=0.0)
    return SwinConfig(**{**values, **overrides})


def dinov2_config(**overrides):
    values = dict(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, patch_size=8, image_size=64
    )
    return Dinov2Config(**{**values, **overrides})


BACKBONES = {
    # name: (backbone configuration, out_indices, strides of those features)
    "swin": (swin_config(), [2, 3, 4], [8, 16, 32]),
    "dinov2": (dinov2_config(), [2, 3, 4], [8, 8, 8]),
    "dinov2-patch14": (dinov2_config(patch_size=14, image_size=56), [2, 4], [14, 14]),
    "convnext": (ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]), [2, 3, 4], [8, 16, 32]),
    "vitdet": (
        VitDetConfig(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            mlp_ratio=2,
            image_size=64,
            pretrain_image_size=64,
        ),
        [2, 4],
        [16, 16],
    ),
}


def segvit_config(name, **overrides):
    backbone_config, out_indices, _ = BACKBONES[name]
    values = dict(
        backbone_config=backbone_config,
        out_indices=out_indices,
        id2label={i: f"class_{i}" for i in range(NUM_LABELS)},
        **DECODER,
    )
    return SegViTConfig(**{**values, **overrides})


def inputs(height, width, batch_size=2):
    pixel_values = torch.randn(batch_size, 3, height, width)
    coarse = torch.randint(0, NUM_LABELS, (batch_size, 1, -(-height // 8), -(-width // 8)))
    labels = torch.nn.functional.interpolate(coarse.float(), scale_factor=8, mode="nearest").long()[:, 0]
    return pixel_values, labels[:, :height, :width].contiguous()


def cells(size, stride):
    return tuple(-(-side // stride) for side in size)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_config_records_the_backbone_features(name):
    config = segvit_config(name)
    _, out_indices, strides = BACKBONES[name]
    assert config.encoder_config is None
    assert config.out_indices == out_indices == config.backbone_config.out_indices
    assert config.feature_strides == strides and config.output_stride == strides[0]


@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.parametrize("height,width", [(64, 64), (70, 100)])
def test_feature_maps_lie_on_the_ceil_grid_of_each_stride(name, height, width):
    model = SegViTModel(segvit_config(name)).eval()
    outputs = model(torch.randn(1, 3, height, width))
    _, _, strides = BACKBONES[name]
    assert [tuple(f.shape[-2:]) for f in outputs.feature_maps] == [cells((height, width), s) for s in strides]
    assert [f.shape[1] for f in outputs.feature_maps] == model.feature_channels


@pytest.mark.parametrize("name", list(BACKBONES))
def test_train_step_shapes_and_post_processing(name):
    model = SegViTForSemanticSegmentation(segvit_config(name))
    pixel_values, labels = inputs(70, 100)
    outputs = model(pixel_values, labels=labels)
    assert torch.isfinite(outputs.loss)
    outputs.loss.backward()
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()

    model.eval()
    outputs = model(pixel_values)
    stride = model.config.output_stride
    assert outputs.class_queries_logits.shape == (2, NUM_LABELS, NUM_LABELS + 1)
    assert outputs.masks_queries_logits.shape == (2, NUM_LABELS, *cells((70, 100), stride))
    processor = SegViTImageProcessor(patch_size=stride, do_resize=False)
    label_maps = processor.post_process_semantic_segmentation(outputs, target_sizes=[(70, 100)] * 2)
    scores = segmentation_scores(outputs.class_queries_logits, outputs.masks_queries_logits, (70, 100), stride)
    assert torch.equal(torch.stack(label_maps), scores.argmax(1))


@pytest.mark.parametrize("name", ["swin", "dinov2"])
def test_save_and_load_round_trip(name, tmp_path):
    model = SegViTForSemanticSegmentation(segvit_config(name)).eval()
    pixel_values, labels = inputs(48, 80)
    expected = model(pixel_values, labels=labels)
    model.save_pretrained(tmp_path)
    reloaded = SegViTForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert type(reloaded.config.backbone_config) is type(model.config.backbone_config)
    assert reloaded.config.out_indices == model.config.out_indices
    outputs = reloaded(pixel_values, labels=labels)
    for key in ("class_queries_logits", "masks_queries_logits", "loss"):
        torch.testing.assert_close(outputs[key], expected[key], atol=0, rtol=0)


def test_hierarchical_cascade_runs_coarse_to_fine_and_predicts_on_the_finest_grid():
    model = SegViTForSemanticSegmentation(segvit_config("swin")).eval()
    # Stage k reads the k-th deepest feature: Swin's stage 4, then 3, then 2.
    swin_channels = model.segvit.feature_channels
    assert [stage.lateral.proj.in_features for stage in model.decode_head.stages] == swin_channels[::-1]
    outputs = model(torch.randn(1, 3, 64, 96))
    assert outputs.masks_queries_logits.shape[-2:] == (8, 12)  # 1/8, the finest stage used
    # Every output is on that grid: coarser stages' masks are up-sampled before they are accumulated.
    assert [aux["masks_queries_logits"].shape[-2:] for aux in outputs.auxiliary_logits] == [(8, 12)] * 2


@pytest.mark.parametrize("name", ["swin", "convnext", "dinov2-patch14"])
def test_padding_to_the_coarsest_stride_is_zero_padding(name):
    """The input is zero-padded before the backbone: an explicitly padded input gives the same top-left features."""
    model = SegViTModel(segvit_config(name)).eval()
    pixel_values = torch.randn(1, 3, 70, 100)
    multiple = max(model.config.feature_strides)
    padded = torch.nn.functional.pad(pixel_values, (0, -100 % multiple, 0, -70 % multiple))
    for feature_map, padded_map in zip(model(pixel_values).feature_maps, model(padded).feature_maps):
        torch.testing.assert_close(feature_map, padded_map[..., : feature_map.shape[-2], : feature_map.shape[-1]])


@pytest.mark.parametrize("name", ["swin", "dinov2"])
def test_toy_batch_is_learned(name):
    model = SegViTForSemanticSegmentation(segvit_config(name, decoder_dropout=0.0))
    pixel_values, labels = inputs(64, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = model(pixel_values, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_backbone_hidden_states_are_passed_through():
    model = SegViTModel(segvit_config("dinov2")).eval()
    outputs = model(torch.randn(1, 3, 64, 64), output_hidden_states=True)
    assert len(outputs.hidden_states) == 5  # embeddings + 4 layers, as Dinov2Backbone returns them
    assert outputs.last_hidden_state.shape == (1, 64, 32)


def test_whole_image_inference_uses_the_output_stride():
    model = SegViTForSemanticSegmentation(segvit_config("swin")).eval()
    processor = SegViTImageProcessor(patch_size=model.config.output_stride, size={"shortest_edge": 64})
    image = torch.randint(0, 255, (3, 50, 90), dtype=torch.uint8).numpy()
    assert tuple(predict(model, processor, image).shape) == (50, 90)
    assert tuple(predict(model, processor, image, mode="slide", crop_size=64).shape) == (50, 90)
    with pytest.raises(ValueError, match="crop_size"):
        predict(model, processor, image, mode="slide")


# ----- pretrained backbone weights ----------------------------------------------------------------------------


@pytest.fixture
def dinov2_checkpoint(tmp_path):
    """A tiny DINOv2 saved as transformers saves Hub checkpoints (`Dinov2Model`, not the backbone class)."""
    path = tmp_path / "dinov2-tiny"
    Dinov2Model(dinov2_config()).save_pretrained(path)
    return path


def test_use_pretrained_backbone_loads_the_checkpoint(dinov2_checkpoint):
    config = SegViTConfig(
        backbone=str(dinov2_checkpoint),
        use_pretrained_backbone=True,
        out_indices=[2, 4],
        id2label={i: str(i) for i in range(NUM_LABELS)},
        **DECODER,
    )
    assert config.backbone_config.model_type == "dinov2" and config.backbone_config.out_indices == [2, 4]
    model = SegViTForSemanticSegmentation(config)
    reference = Dinov2Model.from_pretrained(dinov2_checkpoint).state_dict()
    loaded = model.segvit.backbone.state_dict()
    for name in ("embeddings.patch_embeddings.projection.weight", "encoder.layer.3.mlp.fc2.weight", "layernorm.bias"):
        torch.testing.assert_close(loaded[name], reference[name], atol=0, rtol=0)
    # Without the flag the same configuration starts from random weights.
    random = SegViTForSemanticSegmentation(SegViTConfig(**{**config.to_dict(), "use_pretrained_backbone": False}))
    name = "encoder.layer.3.mlp.fc2.weight"
    assert not torch.equal(random.segvit.backbone.state_dict()[name], reference[name])


def test_saved_model_does_not_read_the_backbone_checkpoint_again(dinov2_checkpoint, tmp_path):
    config = SegViTConfig(
        backbone=str(dinov2_checkpoint), use_pretrained_backbone=True, id2label={0: "a", 1: "b"}, **DECODER
    )
    model = SegViTForSemanticSegmentation(config).eval()
    with torch.no_grad():
        model.segvit.backbone.layernorm.bias.fill_(0.5)  # "fine-tuned"
    model.save_pretrained(tmp_path / "segvit")
    for file in dinov2_checkpoint.iterdir():
        file.unlink()
    reloaded = SegViTForSemanticSegmentation.from_pretrained(tmp_path / "segvit")
    assert torch.equal(reloaded.segvit.backbone.layernorm.bias, torch.full((32,), 0.5))


def test_backbone_kwargs_override_the_checkpoint_configuration(dinov2_checkpoint):
    config = SegViTConfig(backbone=str(dinov2_checkpoint), backbone_kwargs={"drop_path_rate": 0.2}, **DECODER)
    assert config.backbone_config.drop_path_rate == 0.2
    assert config.backbone_kwargs is None  # folded into backbone_config, so the saved configuration reloads as is


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"backbone_config": swin_config(), "shrink_index": 2}, "Shrunk"),
        ({"backbone_config": swin_config(), "out_indices": [2, 3], "query_upsampling": True}, "Shrunk"),
        ({"backbone_config": swin_config(), "encoder_config": {"hidden_size": 32}}, "not both"),
        ({"backbone_config": swin_config(), "backbone_kwargs": {"embed_dim": 8}}, "backbone_kwargs"),
        ({"backbone_config": ViTConfig()}, "AutoBackbone"),
        ({"backbone_config": {"embed_dim": 16}}, "model_type"),
        ({"use_pretrained_backbone": True}, "needs `backbone`"),
        ({"backbone_config": swin_config(), "out_indices": [4, 2]}, "out_indices"),
    ],
)
def test_invalid_backbone_configurations(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SegViTConfig(**DECODER, **kwargs)


def test_a_backbone_breaking_the_stride_rule_fails_by_name():
    # BEiT with its FPN outputs strides 4 to 32 from a plain ViT configuration: not the plain rule.
    beit = BeitConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=64,
        add_fpn=True,
        out_indices=[1, 2, 3, 4],
        use_absolute_position_embeddings=True,
    )
    model = SegViTForSemanticSegmentation(SegViTConfig(backbone_config=beit, id2label={0: "a", 1: "b"}, **DECODER))
    with pytest.raises(ValueError, match="'beit' backbone's stage1 feature map"):
        model(torch.randn(1, 3, 64, 64))


def test_stage_strides():
    assert backbone_stage_strides(swin_config()) == [4, 4, 8, 16, 32]
    assert backbone_stage_strides(dinov2_config()) == [8] * 5
    assert backbone_stage_strides(ConvNextConfig(depths=[1, 1, 1, 1])) == [4, 4, 8, 16, 32]
