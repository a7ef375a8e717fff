"""Draws the pictures of docs/inference.md: an overlay and an ATM mask grid of scikit-image's "astronaut" photograph.

The model is NOT a trained SegViT: a tiny SegViT with random initial weights, fitted for a few hundred steps on this
one photograph's own colour clusters (k-means on colour and position) so that its maps have visible structure. Its
"classes" are those clusters. Needs scikit-image (`pip install scikit-image`), only to read the photograph.

    python docs/make_inference_pictures.py
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

from segvit_hf import SegViTConfig, SegViTForSemanticSegmentation, SegViTImageProcessor
from segvit_hf.inference import predict
from segvit_hf.visualize import draw_mask_grid, draw_overlay

OUTPUT = Path(__file__).parent / "images"
NUM_CLUSTERS = 6
CROP = 128
STEPS = 300


def colour_clusters(image: np.ndarray, num_clusters: int, iterations: int = 20) -> np.ndarray:
    """k-means on (R, G, B, y, x) of every pixel; returns the `(H, W)` cluster ids, largest cluster first."""
    height, width, _ = image.shape
    ys, xs = np.mgrid[0:height, 0:width]
    features = np.concatenate([image / 255.0, 0.5 * ys[..., None] / height, 0.5 * xs[..., None] / width], axis=-1)
    features = torch.from_numpy(features.reshape(-1, 5)).float()
    generator = torch.Generator().manual_seed(0)
    centres = features[torch.randperm(len(features), generator=generator)[:num_clusters]]
    for _ in range(iterations):
        assignment = torch.cdist(features, centres).argmin(dim=1)
        centres = torch.stack([features[assignment == k].mean(dim=0) for k in range(num_clusters)])
    order = torch.bincount(assignment, minlength=num_clusters).argsort(descending=True)
    relabel = torch.empty_like(order)
    relabel[order] = torch.arange(num_clusters)
    return relabel[assignment].reshape(height, width).numpy()


def save_small(picture: Image.Image, path: Path) -> None:
    """PNG with a 256-colour palette: a few hundred KB instead of a megabyte for the docs."""
    picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> None:
    torch.manual_seed(0)
    photo = data.astronaut()  # 512 x 512 RGB, public domain (NASA)
    encoder = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 128}
    config = SegViTConfig(
        encoder_config={**encoder, "image_size": CROP},
        out_indices=[1, 2, 3],
        decoder_hidden_size=32,
        decoder_num_attention_heads=4,
        id2label={k: f"colour cluster {k + 1}" for k in range(NUM_CLUSTERS)},
    )
    model = SegViTForSemanticSegmentation(config)
    processor = SegViTImageProcessor(size={"shortest_edge": CROP, "longest_edge": 4 * CROP})

    clusters = colour_clusters(photo, NUM_CLUSTERS)
    batch = processor(photo, segmentation_maps=clusters, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(STEPS):
        loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()

    label_map = predict(model, processor, photo, mode="slide")
    OUTPUT.mkdir(exist_ok=True)
    save_small(draw_overlay(photo, label_map, id2label=config.id2label, alpha=0.55), OUTPUT / "inference_overlay.png")
    with torch.no_grad():
        outputs = model(**processor(photo, return_tensors="pt"))
    grid = draw_mask_grid(photo, outputs, processor, id2label=config.id2label, top_k=6, columns=3, tile_size=200)
    save_small(grid, OUTPUT / "inference_masks.png")
    print(f"final loss {loss.item():.3f}; wrote the pictures to {OUTPUT}")


if __name__ == "__main__":
    main()
