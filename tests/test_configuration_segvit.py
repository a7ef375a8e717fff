import pytest
from transformers import ViTConfig

from segvit_hf import PRESETS, SegViTConfig, get_preset
from segvit_hf.labels import ADE20K_CLASSES


def test_defaults_are_the_official_vit_b():
    config = SegViTConfig()
    encoder = config.encoder_config
    assert isinstance(encoder, ViTConfig)
    assert (encoder.hidden_size, encoder.num_hidden_layers, encoder.num_attention_heads) == (768, 12, 12)
    assert encoder.layer_norm_eps == 1e-6 and encoder.hidden_act == "gelu" and encoder.qkv_bias
    assert config.out_indices == [5, 7, 11]
    assert (config.decoder_hidden_size, config.decoder_num_attention_heads, config.decoder_layers_per_stage) == (384, 12, 3)
    assert (config.class_weight, config.focal_weight, config.dice_weight, config.no_object_weight) == (1.0, 20.0, 1.0, 0.1)
    assert config.ignore_index == 255


def test_partial_encoder_dict_keeps_official_defaults():
    config = SegViTConfig(encoder_config={"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 12})
    assert config.encoder_config.layer_norm_eps == 1e-6
    assert config.encoder_config.hidden_size == 64


@pytest.mark.parametrize(
    "name,num_labels,depth,out_indices,crop",
    [
        ("ade20k-vit-b", 150, 12, [5, 7, 11], 512),
        ("ade20k-vit-l", 150, 24, [7, 15, 23], 640),
        ("cocostuff10k-vit-l", 171, 24, [7, 15, 23], 512),
        ("pascal-context-vit-l", 59, 24, [7, 15, 23], 480),
        ("ade20k-vit-l-shrunk", 150, 24, [7, 23], 640),
    ],
)
def test_presets(name, num_labels, depth, out_indices, crop):
    config = get_preset(name).config()
    assert config.num_labels == num_labels
    assert config.encoder_config.num_hidden_layers == depth
    assert config.out_indices == out_indices
    assert config.encoder_config.image_size == crop
    assert len(config.label2id) == num_labels


def test_preset_labels_and_background_option():
    assert get_preset("ade20k-vit-b").config().id2label == dict(enumerate(ADE20K_CLASSES))
    with_background = get_preset("pascal-context-vit-l").config(with_background=True)
    assert with_background.num_labels == 60 and with_background.id2label[0] == "background"
    with pytest.raises(ValueError, match="background"):
        get_preset("ade20k-vit-b").config(with_background=True)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_keep_the_built_in_encoder_atm_decoder_and_mask_loss(name):
    config = get_preset(name).config()
    assert config.backbone_config is None and isinstance(config.encoder_config, ViTConfig)
    assert (config.decoder_type, config.segmentation_loss, config.query_downsampling) == ("atm", "mask", "nearest")
    assert config.output_stride == 16


def test_preset_overrides():
    config = get_preset("ade20k-vit-b").config(decoder_dropout=0.0)
    assert config.decoder_dropout == 0.0


def test_seven_presets_are_defined():
    assert len(PRESETS) == 7
    assert sum(preset.shrink_index is not None for preset in PRESETS.values()) == 3


def test_unknown_preset():
    with pytest.raises(ValueError, match="Unknown SegViT preset 'ade20k-vit-h'.*ade20k-vit-b"):
        get_preset("ade20k-vit-h").config()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"out_indices": [5, 7, 12]}, r"in \[0, 12\)"),
        ({"out_indices": [7, 5, 11]}, "strictly increasing"),
        ({"out_indices": []}, "at least one"),
        ({"decoder_hidden_size": 100, "decoder_num_attention_heads": 12}, "not divisible"),
        ({"encoder_config": {"hidden_size": 100, "num_attention_heads": 12}}, "not divisible"),
        ({"encoder_config": {"image_size": 500}}, "multiple of the patch size"),
        ({"shrink_index": 0}, "shrink_index"),
        ({"decoder_layers_per_stage": 0}, "decoder_layers_per_stage` must be positive"),
        ({"num_labels": 0}, "at least one class"),
        ({"id2label": {}}, "at least one class"),
        ({"ignore_index": 1}, "ignore_index` 1 is the id of the class"),
        ({"id2label": {0: "a", 1: "b"}, "ignore_index": 0}, "'a': that class would never be supervised"),
        ({"decoder_hidden_size": -384}, "decoder_hidden_size` must be positive, got -384"),
        ({"encoder_config": {"hidden_size": -768}}, "encoder_config.hidden_size` must be positive"),
        ({"encoder_config": {"num_attention_heads": 0}}, "encoder_config.num_attention_heads` must be positive"),
        ({"encoder_config": {"image_size": [512, -512]}}, "encoder_config.image_size` must be positive"),
        ({"decoder_num_attention_heads": 0}, "decoder_num_attention_heads` must be positive"),
    ],
)
def test_invalid_configurations_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SegViTConfig(**kwargs)


def test_serialisation_round_trip(tmp_path):
    config = get_preset("cocostuff10k-vit-l").config()
    config.save_pretrained(tmp_path)
    loaded = SegViTConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert isinstance(loaded.encoder_config, ViTConfig)


@pytest.mark.parametrize("ignore_index", [255, -100, 150])
def test_ignore_index_outside_the_class_ids_is_accepted(ignore_index):
    assert get_preset("ade20k-vit-b").config(ignore_index=ignore_index).ignore_index == ignore_index
