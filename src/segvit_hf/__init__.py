"""SegViT (NeurIPS 2022) as a Hugging Face transformers model.

Importing the package registers the model with transformers' Auto classes.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSemanticSegmentation

from .configuration_segvit import SegViTConfig
from .modeling_segvit import (
    SegViTForSemanticSegmentation,
    SegViTModel,
    SegViTModelOutput,
    SegViTPreTrainedModel,
    SegViTSemanticSegmenterOutput,
)
from .presets import PRESETS, SegViTPreset, get_preset

AutoConfig.register(SegViTConfig.model_type, SegViTConfig, exist_ok=True)
AutoModel.register(SegViTConfig, SegViTModel, exist_ok=True)
AutoModelForSemanticSegmentation.register(SegViTConfig, SegViTForSemanticSegmentation, exist_ok=True)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "SegViTConfig",
    "SegViTForSemanticSegmentation",
    "SegViTModel",
    "SegViTModelOutput",
    "SegViTPreTrainedModel",
    "SegViTPreset",
    "SegViTSemanticSegmenterOutput",
    "get_preset",
]
