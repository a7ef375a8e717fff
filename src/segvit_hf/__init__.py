"""SegViT (NeurIPS 2022) as a Hugging Face transformers model.

Importing the package registers the model with transformers' Auto classes.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation

from .configuration_segvit import SegViTConfig
from .modeling_segvit import (
    SegViTForSemanticSegmentation,
    SegViTModel,
    SegViTModelOutput,
    SegViTPreTrainedModel,
    SegViTSemanticSegmenterOutput,
)
from .image_processing_segvit import IMAGE_PROCESSOR_CLASSES, SegViTImageProcessor, SegViTImageProcessorPil
from .presets import PRESETS, SegViTPreset, get_preset
from .metrics import SemanticSegmentationMetrics, StreamingMeanIoU
from .optimization import create_segvit_optimizer, get_poly_schedule_with_warmup
from .pipeline import SegViTImageSegmentationPipeline, register_pipeline

AutoConfig.register(SegViTConfig.model_type, SegViTConfig, exist_ok=True)
AutoModel.register(SegViTConfig, SegViTModel, exist_ok=True)
AutoModelForSemanticSegmentation.register(SegViTConfig, SegViTForSemanticSegmentation, exist_ok=True)
AutoImageProcessor.register(SegViTConfig, image_processor_classes=IMAGE_PROCESSOR_CLASSES, exist_ok=True)
# `pipeline("image-segmentation")` becomes the SegViT-aware subclass (transformers' pipeline for other models); it
# also accepts the registered SegViT classes, which transformers' own class-name check does not know.
register_pipeline()

__version__ = "0.2.0"

__all__ = [
    "PRESETS",
    "SegViTConfig",
    "SegViTForSemanticSegmentation",
    "SegViTImageProcessor",
    "SegViTImageProcessorPil",
    "SegViTImageSegmentationPipeline",
    "SegViTModel",
    "SegViTModelOutput",
    "SegViTPreTrainedModel",
    "SegViTPreset",
    "SegViTSemanticSegmenterOutput",
    "SemanticSegmentationMetrics",
    "StreamingMeanIoU",
    "create_segvit_optimizer",
    "get_poly_schedule_with_warmup",
    "get_preset",
]
