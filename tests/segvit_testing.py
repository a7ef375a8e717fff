"""Helpers shared by the tests."""

from segvit_hf.configuration_segvit import as_pair
from segvit_hf.image_processing_segvit import segmentation_scores


def scores_of(model, outputs, size):
    """The official full-resolution ATM scores (`pred`) of `outputs`, for an input of `size` pixels."""
    patch_size = as_pair(model.config.encoder_config.patch_size)
    return segmentation_scores(outputs.class_queries_logits, outputs.masks_queries_logits, tuple(size), patch_size)


def predict_scores(model, pixel_values, **kwargs):
    """Runs `model` on `pixel_values` and returns its outputs and their full-resolution scores."""
    outputs = model(pixel_values, **kwargs)
    return outputs, scores_of(model, outputs, pixel_values.shape[-2:])
