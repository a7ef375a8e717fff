"""Starting a SegViT from pretrained ViT encoders: transformers ViT checkpoints and timm-layout state dicts.

Every checkpoint here is a tiny random ViT written to tmp_path; nothing is downloaded.
"""

import argparse
import json
import time

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import ViTConfig, ViTForImageClassification, ViTModel

from segvit_hf import SegViTForSemanticSegmentation, SegViTModel
from segvit_hf.hub import HubUnreachableError
from segvit_testing import TINY_ENCODER, tiny_config
from segvit_hf.pretrained import (
    EncoderLoadingReport,
    convert_timm_vit_state_dict,
    load_timm_vit_state_dict,
    segvit_from_vit_pretrained,
)

HIDDEN, HEADS, PATCH = TINY_ENCODER["hidden_size"], TINY_ENCODER["num_attention_heads"], 8


def vit_config(num_hidden_layers=4, image_size=32, hidden_size=HIDDEN, num_attention_heads=HEADS):
    # LayerNorm eps as SegViT's encoder, so that features can be compared exactly.
    return ViTConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=2 * hidden_size,
        image_size=image_size,
        patch_size=PATCH,
        layer_norm_eps=1e-6,
        num_labels=3,
    )


def segvit_config(crop=32, num_hidden_layers=4, **overrides):
    """[`tiny_config`] with 8-pixel patches, a `crop`-pixel crop and the features of layers 1 and the last."""
    encoder = {"num_hidden_layers": num_hidden_layers, "image_size": crop, "patch_size": PATCH}
    return tiny_config(encoder=encoder, **{"out_indices": [1, num_hidden_layers - 1], **overrides})


def patch_features_of_vit(vit: ViTModel, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """The ViT's own layers run on its patch tokens + position embeddings without the CLS token (SegViT's sequence)."""
    hidden_states = vit.embeddings.patch_embeddings(pixel_values) + vit.embeddings.position_embeddings[:, 1:]
    outputs = []
    for layer in vit.layers:
        hidden_states = layer(hidden_states)
        outputs.append(hidden_states)
    return outputs


def segvit_layer_outputs(model, pixel_values):
    return model.segvit(pixel_values, output_hidden_states=True).hidden_states[1:]


@pytest.mark.parametrize("vit_class", [ViTModel, ViTForImageClassification])
def test_transformers_vit_checkpoint_gives_the_same_patch_features(tmp_path, vit_class):
    vit = vit_class(vit_config()).eval()
    vit.save_pretrained(tmp_path / "vit")
    model, report = segvit_from_vit_pretrained(
        tmp_path / "vit", segvit_config(), output_loading_info=True
    )
    assert isinstance(model, SegViTForSemanticSegmentation)
    assert isinstance(report, EncoderLoadingReport)
    assert report.layout == "transformers"
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert len(report.loaded) == len(model.segvit.state_dict())
    assert "embeddings.cls_token" in report.ignored and "layernorm.weight" in report.ignored
    if vit_class is ViTForImageClassification:
        assert "classifier.weight" in report.ignored

    pixel_values = torch.randn(2, 3, 32, 32)
    base = vit.vit if vit_class is ViTForImageClassification else vit
    with torch.no_grad():
        expected = patch_features_of_vit(base, pixel_values)
        actual = segvit_layer_outputs(model, pixel_values)
    for expected_layer, actual_layer in zip(expected, actual, strict=True):
        torch.testing.assert_close(actual_layer, expected_layer, atol=1e-5, rtol=1e-5)


def test_decoder_is_freshly_initialised_and_the_model_runs(tmp_path):
    ViTModel(vit_config()).save_pretrained(tmp_path / "vit")
    model, report = segvit_from_vit_pretrained(tmp_path / "vit", segvit_config(), output_loading_info=True)
    assert not any(name.startswith("decode_head") for name in report.loaded)
    # Fresh ATM decoder: standard-normal class queries, zero biases in the class head.
    assert 0.5 < model.decode_head.class_queries.weight.std().item() < 1.5
    assert torch.count_nonzero(model.decode_head.class_head.bias) == 0
    outputs = model(torch.randn(1, 3, 40, 56))
    assert outputs.masks_queries_logits.shape == (1, 5, 5, 7) and torch.isfinite(outputs.masks_queries_logits).all()


def test_position_embeddings_are_resized_bicubically_without_the_cls_slot(tmp_path):
    vit = ViTModel(vit_config(image_size=32))
    vit.save_pretrained(tmp_path / "vit")
    model, report = segvit_from_vit_pretrained(tmp_path / "vit", segvit_config(crop=48), output_loading_info=True)
    assert report.position_grid == ((4, 4), (6, 6))
    grid_table = vit.embeddings.position_embeddings[:, 1:].detach().reshape(1, 4, 4, HIDDEN).permute(0, 3, 1, 2)
    expected = F.interpolate(grid_table, size=(6, 6), mode="bicubic", align_corners=False)
    expected = expected.flatten(2).transpose(1, 2)
    torch.testing.assert_close(model.segvit.embeddings.position_embeddings.detach(), expected)
    assert "Position embeddings resized bicubically from 4x4 to 6x6" in str(report)


def test_older_hub_weight_names_are_understood(tmp_path):
    """Most ViT repositories on the Hub still use the pre-v5 names (`encoder.layer.N.attention.attention.query`)."""
    vit = ViTForImageClassification(vit_config()).eval()
    legacy = {}
    for name, tensor in vit.state_dict().items():
        for new, old in (
            ("layers.", "encoder.layer."),
            ("attention.q_proj", "attention.attention.query"),
            ("attention.k_proj", "attention.attention.key"),
            ("attention.v_proj", "attention.attention.value"),
            ("attention.o_proj", "attention.output.dense"),
            ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense"),
        ):
            name = name.replace(new, old)
        legacy[name] = tensor.contiguous()
    assert "vit.encoder.layer.0.attention.attention.query.weight" in legacy
    directory = tmp_path / "legacy"
    directory.mkdir()
    save_file(legacy, directory / "model.safetensors")
    vit.config.save_pretrained(directory)

    model, report = segvit_from_vit_pretrained(directory, segvit_config(), output_loading_info=True)
    assert report.missing == [] and report.unexpected == []
    torch.testing.assert_close(
        model.segvit.layers[2].attention.k_proj.weight, vit.vit.layers[2].attention.k_proj.weight
    )


def test_depth_differences_are_reported_by_name(tmp_path):
    ViTModel(vit_config(num_hidden_layers=3)).save_pretrained(tmp_path / "shallow")
    _, report = segvit_from_vit_pretrained(tmp_path / "shallow", segvit_config(), output_loading_info=True)
    assert "segvit.layers.3.attention.q_proj.weight" in report.missing
    assert not any(name.startswith("segvit.layers.2.") for name in report.missing)

    ViTModel(vit_config(num_hidden_layers=5)).save_pretrained(tmp_path / "deep")
    _, report = segvit_from_vit_pretrained(tmp_path / "deep", segvit_config(), output_loading_info=True)
    assert "layers.4.mlp.fc1.weight" in report.unexpected
    assert report.missing == []


def test_width_mismatch_raises_with_names_unless_ignored(tmp_path):
    ViTModel(vit_config(hidden_size=48)).save_pretrained(tmp_path / "wide")
    with pytest.raises(ValueError, match=r"segvit\.embeddings\.patch_embeddings\.projection\.weight"):
        segvit_from_vit_pretrained(tmp_path / "wide", segvit_config())
    _, report = segvit_from_vit_pretrained(
        tmp_path / "wide", segvit_config(), ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert any(entry.startswith("segvit.layers.0.mlp.fc1.weight: checkpoint (96, 48)") for entry in report.mismatched)
    assert report.loaded == []


def test_head_count_mismatch_is_an_error_before_anything_is_built(tmp_path):
    """Same shapes, different heads: loading would silently compute different features."""
    ViTModel(vit_config(num_attention_heads=2)).save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match="num_attention_heads: checkpoint 2 vs configuration 4"):
        segvit_from_vit_pretrained(tmp_path / "vit", segvit_config())
    # A preset's encoder (ViT-B, 12 heads) is checked the same way.
    with pytest.raises(ValueError, match="num_attention_heads: checkpoint 2 vs configuration 12"):
        segvit_from_vit_pretrained(tmp_path / "vit", "ade20k-vit-b")


def test_labels_and_configuration_overrides(tmp_path):
    ViTModel(vit_config()).save_pretrained(tmp_path / "vit")
    model = segvit_from_vit_pretrained(
        tmp_path / "vit", segvit_config(), id2label=["sky", "road", "car"], drop_path_rate=0.2
    )
    assert model.config.num_labels == 3
    assert model.config.id2label == {0: "sky", 1: "road", 2: "car"}
    assert model.config.label2id["car"] == 2
    assert model.config.drop_path_rate == 0.2
    assert model.decode_head.class_head.out_features == 4
    base = segvit_from_vit_pretrained(tmp_path / "vit", segvit_config(), model_class=SegViTModel)
    assert isinstance(base, SegViTModel)
    torch.testing.assert_close(base.layers[0].mlp.fc1.weight, model.segvit.layers[0].mlp.fc1.weight)

    with pytest.raises(ValueError, match="0 .. n-1"):
        segvit_from_vit_pretrained(tmp_path / "vit", segvit_config(), id2label={1: "a", 2: "b"})
    with pytest.raises(TypeError, match="id2label"):
        segvit_from_vit_pretrained(tmp_path / "vit", segvit_config(), id2label="sky")
    with pytest.raises(TypeError, match="config_or_preset"):
        segvit_from_vit_pretrained(tmp_path / "vit", vit_config())
    with pytest.raises(ValueError, match="Unknown SegViT preset"):
        segvit_from_vit_pretrained(tmp_path / "vit", "ade20k-vit-xxl")


def test_sources_that_are_not_vit_checkpoints(tmp_path):
    with pytest.raises(OSError, match="neither a local file or directory nor a reachable Hub repository"):
        segvit_from_vit_pretrained(tmp_path / "does-not-exist", segvit_config())
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        segvit_from_vit_pretrained(tmp_path / "bert", segvit_config())
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match="no config.json"):
        segvit_from_vit_pretrained(tmp_path / "empty", segvit_config())



def test_an_uncached_hub_id_offline_says_so_promptly(tmp_path):
    # conftest turns on HF_HUB_OFFLINE; the empty cache_dir guarantees the files are not cached.
    started = time.perf_counter()
    with pytest.raises(HubUnreachableError, match="config.json of 'google/vit-base-patch16-384' is not in the local "
                       "Hugging Face cache and offline mode is on"):
        segvit_from_vit_pretrained(
            "google/vit-base-patch16-384", "ade20k-vit-b", cache_dir=tmp_path
        )
    assert time.perf_counter() - started < 5


# --- timm layout -------------------------------------------------------------------------------------------------


def random_timm_state_dict(depth=4, grid=4, seed=0, prefix_slots=1):
    """Random tensors named as timm's `VisionTransformer` (fused qkv), CLS token included."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.1):
        return torch.randn(*shape, generator=generator) * scale

    state_dict = {
        "cls_token": rand(1, 1, HIDDEN),
        "pos_embed": rand(1, prefix_slots + grid * grid, HIDDEN, scale=0.5),
        "patch_embed.proj.weight": rand(HIDDEN, 3, PATCH, PATCH),
        "patch_embed.proj.bias": rand(HIDDEN),
        "norm.weight": 1 + rand(HIDDEN),
        "norm.bias": rand(HIDDEN),
        "head.weight": rand(10, HIDDEN),
        "head.bias": rand(10),
    }
    for i in range(depth):
        state_dict.update({
            f"blocks.{i}.norm1.weight": 1 + rand(HIDDEN),
            f"blocks.{i}.norm1.bias": rand(HIDDEN),
            f"blocks.{i}.attn.qkv.weight": rand(3 * HIDDEN, HIDDEN, scale=0.3),
            f"blocks.{i}.attn.qkv.bias": rand(3 * HIDDEN),
            f"blocks.{i}.attn.proj.weight": rand(HIDDEN, HIDDEN, scale=0.3),
            f"blocks.{i}.attn.proj.bias": rand(HIDDEN),
            f"blocks.{i}.norm2.weight": 1 + rand(HIDDEN),
            f"blocks.{i}.norm2.bias": rand(HIDDEN),
            f"blocks.{i}.mlp.fc1.weight": rand(2 * HIDDEN, HIDDEN, scale=0.3),
            f"blocks.{i}.mlp.fc1.bias": rand(2 * HIDDEN),
            f"blocks.{i}.mlp.fc2.weight": rand(HIDDEN, 2 * HIDDEN, scale=0.3),
            f"blocks.{i}.mlp.fc2.bias": rand(HIDDEN),
        })
    return state_dict


def timm_semantics_features(state_dict, pixel_values, num_heads=HEADS, prefix_slots=1):
    """What a timm ViT block stack computes on the patch tokens (no CLS), written directly on the timm tensors."""
    tokens = F.conv2d(
        pixel_values, state_dict["patch_embed.proj.weight"], state_dict["patch_embed.proj.bias"], stride=PATCH
    )
    tokens = tokens.flatten(2).transpose(1, 2) + state_dict["pos_embed"][:, prefix_slots:]
    batch, length, width = tokens.shape
    head_dim = width // num_heads
    outputs = []
    depth = len({key.split(".")[1] for key in state_dict if key.startswith("blocks.")})
    for i in range(depth):
        p = lambda name: state_dict[f"blocks.{i}.{name}"]  # noqa: E731
        normed = F.layer_norm(tokens, (width,), p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        qkv = F.linear(normed, p("attn.qkv.weight"), p("attn.qkv.bias"))
        query, key, value = qkv.reshape(batch, length, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
        attention = (query @ key.transpose(-2, -1) * head_dim**-0.5).softmax(dim=-1)
        attended = (attention @ value).transpose(1, 2).reshape(batch, length, width)
        tokens = tokens + F.linear(attended, p("attn.proj.weight"), p("attn.proj.bias"))
        normed = F.layer_norm(tokens, (width,), p("norm2.weight"), p("norm2.bias"), eps=1e-6)
        hidden = F.gelu(F.linear(normed, p("mlp.fc1.weight"), p("mlp.fc1.bias")))
        tokens = tokens + F.linear(hidden, p("mlp.fc2.weight"), p("mlp.fc2.bias"))
        outputs.append(tokens)
    return outputs


@pytest.mark.parametrize("file_name", ["vit.safetensors", "vit.pth"])
def test_timm_file_gives_the_features_timm_computes(tmp_path, file_name):
    state_dict = random_timm_state_dict()
    path = tmp_path / file_name
    if file_name.endswith(".safetensors"):
        save_file(state_dict, path)
    else:
        torch.save({"model": state_dict, "epoch": 300}, path)  # timm's training checkpoints wrap the weights
    model, report = segvit_from_vit_pretrained(path, segvit_config(), output_loading_info=True)
    assert report.layout == "timm"
    assert report.missing == [] and report.unexpected == []
    assert {"cls_token", "norm.weight", "head.weight", "pos_embed[:, :1]"} <= set(report.ignored)

    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = timm_semantics_features(state_dict, pixel_values)
        actual = segvit_layer_outputs(model, pixel_values)
    for expected_layer, actual_layer in zip(expected, actual, strict=True):
        torch.testing.assert_close(actual_layer, expected_layer, atol=1e-5, rtol=1e-5)


def test_timm_conversion_splits_qkv_in_query_key_value_order():
    state_dict = random_timm_state_dict(depth=1)
    converted, grid, ignored = convert_timm_vit_state_dict(state_dict)
    assert grid == (4, 4)
    qkv = state_dict["blocks.0.attn.qkv.weight"]
    torch.testing.assert_close(converted["layers.0.attention.q_proj.weight"], qkv[:HIDDEN])
    torch.testing.assert_close(converted["layers.0.attention.k_proj.weight"], qkv[HIDDEN : 2 * HIDDEN])
    torch.testing.assert_close(
        converted["layers.0.attention.v_proj.bias"], state_dict["blocks.0.attn.qkv.bias"][2 * HIDDEN :]
    )
    assert converted["embeddings.position_embeddings"].shape == (1, 16, HIDDEN)
    assert "pos_embed" not in converted and "cls_token" in ignored


def test_timm_prefix_tokens_with_and_without_position_slots():
    # Registers plus CLS with their own position slots: all five are cut.
    state_dict = random_timm_state_dict(depth=1, prefix_slots=5)
    state_dict["reg_token"] = torch.zeros(1, 4, HIDDEN)
    converted, grid, ignored = convert_timm_vit_state_dict(state_dict)
    torch.testing.assert_close(converted["embeddings.position_embeddings"], state_dict["pos_embed"][:, 5:])
    assert "reg_token" in ignored and grid == (4, 4)
    # `no_embed_class`: the table holds the grid only.
    state_dict = random_timm_state_dict(depth=1, prefix_slots=0)
    converted, grid, _ = convert_timm_vit_state_dict(state_dict)
    torch.testing.assert_close(converted["embeddings.position_embeddings"], state_dict["pos_embed"])
    # Neither fits.
    state_dict["pos_embed"] = torch.zeros(1, 19, HIDDEN)
    with pytest.raises(ValueError, match="19 rows"):
        convert_timm_vit_state_dict(state_dict)


@pytest.mark.parametrize(
    "extra_key", ["blocks.0.ls1.gamma", "norm_pre.weight", "blocks.0.attn.q_norm.weight", "blocks.0.unknown.weight"]
)
def test_timm_variants_segvit_cannot_represent_are_refused_by_name(extra_key):
    state_dict = random_timm_state_dict(depth=1)
    state_dict[extra_key] = torch.ones(HIDDEN)
    with pytest.raises(ValueError, match=extra_key.replace(".", r"\.")):
        convert_timm_vit_state_dict(state_dict)
    with pytest.raises(ValueError, match="Not a timm ViT state dict"):
        convert_timm_vit_state_dict({"backbone.pos_embed": torch.zeros(1)})


def test_timm_repository_layout_and_architecture_name_check(tmp_path):
    state_dict = random_timm_state_dict()
    repo = tmp_path / "timm-repo"
    repo.mkdir()
    save_file(state_dict, repo / "model.safetensors")
    (repo / "config.json").write_text(json.dumps({"architecture": "vit_test_patch8_32", "num_classes": 10}))
    model = segvit_from_vit_pretrained(repo, segvit_config())
    torch.testing.assert_close(
        model.segvit.layers[1].mlp.fc2.weight, state_dict["blocks.1.mlp.fc2.weight"]
    )
    # A known timm size fixes the head count: ViT-L has 16 heads, this configuration 4.
    (repo / "config.json").write_text(json.dumps({"architecture": "vit_large_patch16_384.augreg_in21k_ft_in1k"}))
    with pytest.raises(ValueError, match="num_attention_heads: checkpoint 16 vs configuration 4"):
        segvit_from_vit_pretrained(repo, segvit_config())


def test_torch_files_are_read_without_unpickling_objects(tmp_path):
    path = tmp_path / "with_objects.pth"
    torch.save({"model": random_timm_state_dict(depth=1), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_timm_vit_state_dict(path)
    path = tmp_path / "data_parallel.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in random_timm_state_dict(depth=1).items()}}, path)
    assert "patch_embed.proj.weight" in load_timm_vit_state_dict(path)


def test_feature_equality_with_timm_itself():
    timm = pytest.importorskip("timm")
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=PATCH, embed_dim=HIDDEN, depth=4, num_heads=HEADS, mlp_ratio=2.0, qkv_bias=True,
        num_classes=10,
    ).eval()
    converted, grid, _ = convert_timm_vit_state_dict(vit.state_dict())
    model = SegViTForSemanticSegmentation(segvit_config()).eval()
    from segvit_hf.pretrained import load_encoder_weights

    report = load_encoder_weights(model, converted, grid, layout="timm")
    assert report.missing == []
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = vit.patch_embed(pixel_values) + vit.pos_embed[:, 1:]
        expected = []
        for block in vit.blocks:
            tokens = block(tokens)
            expected.append(tokens)
        actual = segvit_layer_outputs(model, pixel_values)
    for expected_layer, actual_layer in zip(expected, actual, strict=True):
        torch.testing.assert_close(actual_layer, expected_layer, atol=1e-5, rtol=1e-5)
