"""The paper's optimiser: parameter groups, learning rates, weight decay, and the poly schedule with warm-up."""

import math

import pytest
import torch
from torch import nn

from segvit_hf import SegViTForSemanticSegmentation
from segvit_hf.optimization import (
    create_segvit_optimizer,
    get_poly_schedule_with_warmup,
    group_learning_rates,
    parameter_groups,
    poly_warmup_factor,
)
from segvit_testing import tiny_toy_config


@pytest.fixture(scope="module")
def model():
    return SegViTForSemanticSegmentation(tiny_toy_config())


def groups_by_name(model, **kwargs):
    return {group["name"]: group for group in parameter_groups(model, learning_rate=1e-4, **kwargs)}


def test_every_trainable_parameter_in_exactly_one_group(model):
    groups = groups_by_name(model)
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    names = [name for group in groups.values() for name in group["param_names"]]
    assert sorted(names) == sorted(name for name, _ in model.named_parameters())
    for group in groups.values():
        assert len(group["params"]) == len(group["param_names"])


def test_head_learns_ten_times_faster(model):
    groups = groups_by_name(model)
    assert groups["backbone"]["lr"] == groups["backbone_no_decay"]["lr"] == 1e-4
    assert math.isclose(groups["head"]["lr"], 1e-3) and math.isclose(groups["head_no_decay"]["lr"], 1e-3)
    assert all(name.startswith("segvit.") for name in groups["backbone"]["param_names"])
    assert all(name.startswith("decode_head.") for name in groups["head"]["param_names"])
    assert math.isclose(groups_by_name(model, head_lr_multiplier=4.0)["head"]["lr"], 4e-4)


def test_no_weight_decay_on_norms_biases_position_embeddings_and_class_queries(model):
    groups = groups_by_name(model, weight_decay=0.05)
    no_decay = set(groups["backbone_no_decay"]["param_names"]) | set(groups["head_no_decay"]["param_names"])
    decay = set(groups["backbone"]["param_names"]) | set(groups["head"]["param_names"])
    assert groups["backbone"]["weight_decay"] == groups["head"]["weight_decay"] == 0.05
    assert groups["backbone_no_decay"]["weight_decay"] == groups["head_no_decay"]["weight_decay"] == 0.0

    norms = {
        f"{module_name}.{param_name}"
        for module_name, module in model.named_modules()
        if isinstance(module, nn.LayerNorm)
        for param_name, _ in module.named_parameters(recurse=False)
    }
    assert norms and norms <= no_decay
    biases = {name for name, _ in model.named_parameters() if name.endswith("bias")}
    assert biases <= no_decay
    assert "segvit.embeddings.position_embeddings" in no_decay
    class_queries = {name for name, _ in model.named_parameters() if "class_queries" in name}
    assert class_queries and class_queries <= no_decay
    # Weight matrices are decayed: patch projection, attention, MLP, decoder projections, class head.
    assert "segvit.embeddings.patch_embeddings.projection.weight" in decay
    assert any("self_attn.in_proj_weight" in name for name in decay)
    assert all(name.endswith("weight") for name in decay)


def test_swin_backbone_position_tables_and_norms_are_not_decayed():
    from transformers import SwinConfig

    from segvit_hf import SegViTConfig

    swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], window_size=4)
    config = SegViTConfig(
        backbone_config=swin, out_indices=[2, 3, 4], decoder_hidden_size=16, decoder_num_attention_heads=4
    )
    groups = groups_by_name(SegViTForSemanticSegmentation(config), weight_decay=0.05)
    tables = [name for name in groups["backbone_no_decay"]["param_names"] if "relative_position_bias_table" in name]
    assert tables and not any("relative_position_bias_table" in name for name in groups["backbone"]["param_names"])
    assert any("hidden_states_norms" in name for name in groups["backbone_no_decay"]["param_names"])
    assert all(name.startswith("segvit.backbone.") for name in groups["backbone"]["param_names"])


def test_frozen_parameters_are_left_out(model):
    model.segvit.embeddings.patch_embeddings.projection.weight.requires_grad_(False)
    try:
        names = {name for group in parameter_groups(model, 1e-4) for name in group["param_names"]}
        assert "segvit.embeddings.patch_embeddings.projection.weight" not in names
    finally:
        model.segvit.embeddings.patch_embeddings.projection.weight.requires_grad_(True)


def test_optimizer_is_adamw_with_the_groups(model):
    optimizer = create_segvit_optimizer(model, learning_rate=6e-5, weight_decay=0.01)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["betas"] == (0.9, 0.999)
    rates = group_learning_rates(optimizer)
    assert math.isclose(rates["head"], 6e-4) and math.isclose(rates["backbone"], 6e-5)


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="learning_rate"):
        parameter_groups(model, learning_rate=0)
    with pytest.raises(ValueError, match="backbone_prefix"):
        parameter_groups(nn.Linear(2, 2), learning_rate=1e-3)
    optimizer = create_segvit_optimizer(model)
    with pytest.raises(ValueError, match="num_training_steps"):
        get_poly_schedule_with_warmup(optimizer, 10, 0)


def test_poly_factor_with_linear_warmup():
    # Warm-up from warmup_ratio, multiplied by the poly decay (mmcv semantics), then poly power 1 to zero.
    assert math.isclose(poly_warmup_factor(0, 10, 100), 1e-6)
    assert math.isclose(poly_warmup_factor(5, 10, 100), (1 - 0.05) * (1e-6 + (1 - 1e-6) * 0.5))
    assert math.isclose(poly_warmup_factor(10, 10, 100), 0.9)
    assert math.isclose(poly_warmup_factor(55, 10, 100), 0.45)
    assert poly_warmup_factor(100, 10, 100) == 0.0
    assert poly_warmup_factor(150, 10, 100) == 0.0
    assert math.isclose(poly_warmup_factor(50, 0, 100, power=2.0), 0.25)


def test_schedule_keeps_the_head_ratio_and_survives_state_dict(model):
    optimizer = create_segvit_optimizer(model, learning_rate=1e-3)
    scheduler = get_poly_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=10)
    seen = []
    for _ in range(6):
        optimizer.step()
        scheduler.step()
        rates = group_learning_rates(optimizer)
        seen.append(rates["backbone"])
        assert math.isclose(rates["head"], 10 * rates["backbone"])
    assert math.isclose(seen[-1], 1e-3 * poly_warmup_factor(6, 2, 10))
    assert seen[1] > seen[2] > seen[3]  # decaying after the warm-up

    restored = get_poly_schedule_with_warmup(create_segvit_optimizer(model, 1e-3), 2, 10)
    restored.load_state_dict(scheduler.state_dict())
    assert restored.last_epoch == scheduler.last_epoch
