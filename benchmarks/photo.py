"""A phone photo through the whole prediction path: SegViT beside transformers' SegFormer-B0.

What a user runs on a 4000x3000 photo: the model's own image processor, the forward pass, and
`post_process_semantic_segmentation(outputs, target_sizes=[(3000, 4000)])`, which returns the label map at the photo's
size. Each model runs in a fresh process, so that its peak resident memory (Linux `VmHWM`) is its own; every figure
comes from this one run, ratios included.

- SegViT small: 150 labels, a 6-layer ViT of width 96 (3 heads, patch 16, features of layers 2/4/6), a decoder of
  width 96, and `get_preset("ade20k-vit-b").image_processor()` (short side to 512: a 512x683 input).
- SegViT ade20k-vit-b: the released ViT-B/16 architecture, same processor.
- SegViT ade20k-vit-b, `segvit_hf.inference.predict(mode="slide")`: the paper's sliding-window protocol.
- SegFormer-B0: `SegformerForSemanticSegmentation` (150 labels) and `SegformerImageProcessor()` (512x512 input).

All weights are random (nothing is downloaded); the photo is a smooth synthetic RGB image.

Usage:

    python benchmarks/photo.py --threads 1
    python benchmarks/photo.py --height 3000 --width 4000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

NUM_LABELS = 150
MODELS = ("SegViT small", "SegViT ade20k-vit-b", "SegViT ade20k-vit-b, slide", "SegFormer-B0")


def synthetic_photo(height: int, width: int) -> Image.Image:
    """Smooth colour gradients with a little noise: photo-like, and the same in every process."""
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    noise = np.random.default_rng(0).random((height, width), dtype=np.float32)
    channels = [rows * cols, (1 - rows) * cols, 0.5 + 0.5 * np.sin(6 * rows + 4 * cols)]
    pixels = np.stack([0.9 * channel + 0.1 * noise for channel in channels], axis=-1)
    return Image.fromarray((255 * pixels).astype(np.uint8))


def build(name: str):
    """`(model, processor, predict)` where `predict(image)` returns the label map at the image's size."""
    torch.manual_seed(0)
    if name.startswith("SegFormer"):
        from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

        model = SegformerForSemanticSegmentation(SegformerConfig(num_labels=NUM_LABELS)).eval()
        processor = SegformerImageProcessor()
    else:
        from segvit_hf import SegViTForSemanticSegmentation, get_preset

        if name == "SegViT small":
            encoder = {"hidden_size": 96, "num_hidden_layers": 6, "num_attention_heads": 3, "intermediate_size": 384}
            config = get_preset("ade20k-vit-b").config(
                encoder_config={**encoder, "image_size": 512},
                out_indices=[1, 3, 5],
                decoder_hidden_size=96,
                decoder_num_attention_heads=3,
            )
        else:
            config = get_preset("ade20k-vit-b").config()
        model = SegViTForSemanticSegmentation(config).eval()
        processor = get_preset("ade20k-vit-b").image_processor()

    if name.endswith("slide"):
        from segvit_hf.inference import predict as predict_slide

        return lambda image: predict_slide(model, processor, image, mode="slide")

    def predict(image):
        inputs = processor(images=image, return_tensors="pt")
        outputs = model(pixel_values=inputs["pixel_values"])
        return processor.post_process_semantic_segmentation(outputs, target_sizes=[(image.height, image.width)])[0]

    return predict


def memory_status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field} line.")


def probe(name: str, height: int, width: int) -> dict:
    """Runs one model on the photo (after one small warm-up image) and reports seconds and memory."""
    image = synthetic_photo(height, width)
    predict = build(name)
    with torch.inference_mode():
        predict(synthetic_photo(300, 400))
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # the peak below is the photo's own
        before = memory_status_mib("VmRSS")
        started = time.perf_counter()
        label_map = predict(image)
        seconds = time.perf_counter() - started
    assert tuple(label_map.shape) == (height, width), label_map.shape
    return {"seconds": seconds, "peak_mib": memory_status_mib("VmHWM"), "before_mib": before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--only", nargs="+", choices=MODELS, help="run these models only")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(probe(args.probe, args.height, args.width)))
        return

    print(f"{args.width}x{args.height} photo -> label map at {args.width}x{args.height}; fp32, CPU, "
          f"{args.threads} torch thread(s), {os.cpu_count()} logical CPUs, torch {torch.__version__}.\n")
    print("| model | seconds | peak RSS MiB | added by the photo MiB |")
    print("|---|---|---|---|")
    results = {}
    for name in args.only or MODELS:
        command = [sys.executable, os.path.abspath(__file__), "--probe", name, "--threads", str(args.threads),
                   "--height", str(args.height), "--width", str(args.width)]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        results[name] = result
        print(f"| {name} | {result['seconds']:.2f} | {result['peak_mib']:.0f} | "
              f"{result['peak_mib'] - result['before_mib']:.0f} |", flush=True)
    if "SegFormer-B0" in results:
        reference = results["SegFormer-B0"]["seconds"]
        print()
        for name, result in results.items():
            if name != "SegFormer-B0":
                print(f"{name} / SegFormer-B0 wall time: {result['seconds'] / reference:.2f}x")


if __name__ == "__main__":
    main()
