"""Helpers shared by the tests: the one tiny SegViT configuration (and its toy and official-layout variants), and the
official full-resolution scores of a forward pass."""

from segvit_hf import SegViTConfig
from segvit_hf.configuration_segvit import as_pair
from segvit_hf.image_processing_segvit import segmentation_scores
from segvit_hf.toy import toy_model_config

# The tiny ViT encoder of the tests: 4 layers of width 32 with 4 heads, 16-pixel patches, a 64-pixel crop.
TINY_ENCODER = {
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "image_size": 64,
}
# Its decoder: features of layers 1, 2 and 3, ATM layers of width 16 with 4 heads.
TINY_DECODER = {"out_indices": [1, 2, 3], "decoder_hidden_size": 16, "decoder_num_attention_heads": 4}


def tiny_config(*, encoder=None, num_labels=5, **overrides) -> SegViTConfig:
    """
    The tests' tiny SegViT: [`TINY_ENCODER`] (its entries replaced by those of `encoder`), features of layers 1, 2 and
    3, an ATM decoder of width 16 with 4 heads, and `num_labels` classes named `class_<i>`. `overrides` replace any
    configuration attribute (`encoder_config` the whole encoder).
    """
    values = {
        "encoder_config": {**TINY_ENCODER, **(encoder or {})},
        **TINY_DECODER,
        "id2label": {i: f"class_{i}" for i in range(num_labels)},
    }
    values.update(overrides)
    return SegViTConfig(**values)


def tiny_toy_config(**overrides) -> SegViTConfig:
    """The toy set's model (`toy_model_config`: its classes, no stochastic depth) at the tiny sizes: 2 layers,
    8-pixel patches, a 32-pixel crop, features of layers 0 and 1, one ATM layer per stage."""
    values = {
        "encoder_config": {**TINY_ENCODER, "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
        **TINY_DECODER,
        "out_indices": [0, 1],
        "decoder_layers_per_stage": 1,
    }
    values.update(overrides)
    return toy_model_config(**values)


# The tiny model in the official checkpoint layout (arguments of `official_reference.make_random_official_*`).
TINY_OFFICIAL = dict(
    hidden_size=64, num_layers=4, num_heads=4, decoder_dim=32, decoder_num_heads=4, num_classes=7, crop=64
)


def scores_of(model, outputs, size):
    """The official full-resolution ATM scores (`pred`) of `outputs`, for an input of `size` pixels."""
    patch_size = as_pair(model.config.encoder_config.patch_size)
    return segmentation_scores(outputs.class_queries_logits, outputs.masks_queries_logits, tuple(size), patch_size)


def predict_scores(model, pixel_values, **kwargs):
    """Runs `model` on `pixel_values` and returns its outputs and their full-resolution scores."""
    outputs = model(pixel_values, **kwargs)
    return outputs, scores_of(model, outputs, pixel_values.shape[-2:])
