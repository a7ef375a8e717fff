import os

import pytest
import torch

# Tests never reach the network: tiny models are built from configs, checkpoints are written locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

# Tiny models gain nothing from intra-op threads, and spinning threads slow everything on a busy 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_toy_config():
    """A factory of tiny SegViT configurations for the toy data set (2 layers, 8-pixel patches, 32-pixel crop)."""
    from segvit_hf.data import toy_model_config

    def build():
        return toy_model_config(
            encoder_config={
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 64,
                "image_size": 32,
                "patch_size": 8,
            },
            out_indices=[0, 1],
            decoder_hidden_size=16,
            decoder_num_attention_heads=4,
            decoder_layers_per_stage=1,
        )

    return build
