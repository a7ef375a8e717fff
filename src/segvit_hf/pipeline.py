"""transformers' image-segmentation pipeline, able to batch SegViT inputs of different sizes.

SegViT's image processor keeps each image's aspect ratio, so two photos rarely share a size, and transformers'
pipeline batches images by concatenating them (it expects processors that resize to one fixed size). For SegViT
models this pipeline pads each batch at the bottom/right instead, as the image processor pads its own batches, and
hands the pixel mask to the post-processing so that every label map covers its own image only. For every other
model it is transformers' pipeline, unchanged.
"""

from __future__ import annotations

import torch
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.image_segmentation import ImageSegmentationPipeline
from transformers.utils import logging

TASK = "image-segmentation"


class SegViTImageSegmentationPipeline(ImageSegmentationPipeline):
    """`ImageSegmentationPipeline` that batches SegViT inputs of any sizes (`batch_size=N` with mixed photos)."""

    def _pads_its_batches(self) -> bool:
        return getattr(self.model.config, "model_type", None) == "segvit"

    def check_model_type(self, supported_models: list[str] | dict) -> None:
        # transformers' image-segmentation pipeline checks the model's class name against its own name tables, which
        # `AutoModelForSemanticSegmentation.register` does not extend (it would log "not supported"). SegViT's class
        # is added to the names checked here rather than written into transformers' module-level table.
        if isinstance(supported_models, dict) and self._pads_its_batches():
            supported_models = {**supported_models, "segvit": type(self.model).__name__}
        super().check_model_type(supported_models)

    def preprocess(self, image, subtask=None, timeout=None):
        inputs = super().preprocess(image, subtask=subtask, timeout=timeout)
        if self._pads_its_batches():
            # A list is collated as a list (a tensor would be concatenated), so `_forward` sees every image's size.
            inputs["pixel_values"] = [inputs["pixel_values"]]
            inputs.pop("pixel_mask", None)
        return inputs

    def _forward(self, model_inputs):
        if not self._pads_its_batches():
            return super()._forward(model_inputs)
        target_size = model_inputs.pop("target_size")
        images = [image for item in model_inputs.pop("pixel_values") for image in _as_list(item)]
        pixel_values, pixel_mask = pad_images(images)
        outputs = self.model(pixel_values=pixel_values, **model_inputs)
        # Only what the post-processing reads travels on: the pipeline splits every entry along the batch.
        model_outputs = type(outputs)(
            class_queries_logits=outputs.class_queries_logits, masks_queries_logits=outputs.masks_queries_logits
        )
        model_outputs["pixel_mask"] = pixel_mask
        model_outputs["target_size"] = target_size
        return model_outputs


def _as_list(item):
    return item if isinstance(item, (list, tuple)) else [item]


def pad_images(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """
    `(1, C, h, w)` processed images of any sizes -> one `(n, C, H, W)` batch zero-padded at the bottom/right, and its
    `(n, H, W)` pixel mask (1 on image pixels), as the image processor pads a batch.
    """
    height = max(image.shape[-2] for image in images)
    width = max(image.shape[-1] for image in images)
    batch = images[0].new_zeros((len(images), images[0].shape[-3], height, width))
    pixel_mask = torch.zeros((len(images), height, width), dtype=torch.int64, device=images[0].device)
    for index, image in enumerate(images):
        batch[index, :, : image.shape[-2], : image.shape[-1]] = image[0]
        pixel_mask[index, : image.shape[-2], : image.shape[-1]] = 1
    return batch, pixel_mask


def register_pipeline() -> None:
    """Makes `pipeline("image-segmentation")` this class, keeping transformers' models, default and type."""
    task = dict(PIPELINE_REGISTRY.supported_tasks[TASK])
    transformers_logger = logging.get_logger("transformers.pipelines.base")
    level = transformers_logger.level
    # transformers warns that the task is overwritten; here that is the point.
    transformers_logger.setLevel(logging.ERROR)
    try:
        PIPELINE_REGISTRY.register_pipeline(
            TASK,
            pipeline_class=SegViTImageSegmentationPipeline,
            pt_model=task.get("pt"),
            default=task.get("default"),
            type=task.get("type"),
        )
    finally:
        transformers_logger.setLevel(level)


__all__ = ["SegViTImageSegmentationPipeline", "pad_images", "register_pipeline"]
