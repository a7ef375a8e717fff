"""Latency and memory of SegViT beside a bare ViT encoder and transformers' own segmentation models.

Every model is built from its configuration with random weights (nothing is downloaded) and run in this one process.
Timings are interleaved: each round runs every model once, in turn, so that load from other processes spreads over
all of them alike; each model's figure is the median over the rounds after the warm-up.

1. 512x512, batch 1, pixel values to the 512x512 label map (forward pass and post-processing, as a user runs it):
   SegViT `ade20k-vit-b`, its single-layer ATM and shrunk ablations, DPT (ViT-B/16, non-hybrid), BEiT-B + UperNet
   and SegFormer-B2, all with 150 labels, each through its own image processor's `post_process_semantic_segmentation`;
   and the bare ViT-B/16 encoder (SegViT's own encoder: 1024 patch tokens, no decoder, forward only). Ratios are to
   the bare encoder. The DPT and BEiT auxiliary heads (training-only FCN heads) are switched off, as they would be at
   inference.
2. 640x640, batch 1: SegViT `ade20k-vit-l-shrunk` against `ade20k-vit-l`.
3. Peak resident memory (RSS) of one inference and of one training step (forward with labels, backward, AdamW step)
   for SegViT `ade20k-vit-b` and DPT ViT-B at 512x512, batch 2, each measured in a fresh subprocess (DPT trains with
   its auxiliary head, as it must in transformers). Labels: 4x4 square regions of random classes per image. SegViT's
   loss holds full-resolution mask terms for every class present, so its training memory grows with that number.

Usage:

    python benchmarks/latency.py                      # CPU, fp32, 5 rounds after 1 warm-up (several minutes)
    python benchmarks/latency.py --threads 1 --repeats 3   # steadier on a small shared machine
    python benchmarks/latency.py --repeats 3 --skip-large --skip-memory
    python benchmarks/latency.py --device cuda --dtype bfloat16 --batch-size 8 --skip-memory   # GPU throughput
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch
from transformers import (
    BeitConfig,
    BeitForSemanticSegmentation,
    BeitImageProcessorPil,
    DPTConfig,
    DPTForSemanticSegmentation,
    DPTImageProcessorPil,
    SegformerConfig,
    SegformerForSemanticSegmentation,
    SegformerImageProcessorPil,
)

from flops import VIT_B_ABLATIONS  # this directory: the ablation configurations counted there
from segvit_hf import SegViTForSemanticSegmentation, SegViTImageProcessor, SegViTModel, get_preset

NUM_LABELS = 150  # ADE20K
VIT_B = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
ENCODER = "ViT-B/16 encoder"
MEMORY_SIZE, MEMORY_BATCH_SIZE = 512, 2


def segvit(preset: str, **overrides) -> Callable[[], torch.nn.Module]:
    return lambda: SegViTForSemanticSegmentation(get_preset(preset).config(**overrides))


def ablation(name: str) -> Callable[[], torch.nn.Module]:
    variant = next(variant for variant in VIT_B_ABLATIONS if variant.name == name)
    return lambda: SegViTForSemanticSegmentation(variant.config())


def vit_b_encoder() -> torch.nn.Module:
    return SegViTModel(get_preset("ade20k-vit-b").config())


def dpt_vit_b(use_auxiliary_head: bool = False) -> torch.nn.Module:
    config = DPTConfig(
        **VIT_B, image_size=512, is_hybrid=False, num_labels=NUM_LABELS, use_auxiliary_head=use_auxiliary_head
    )
    return DPTForSemanticSegmentation(config)


def beit_b_upernet() -> torch.nn.Module:
    config = BeitConfig(
        **VIT_B,
        image_size=512,
        use_relative_position_bias=True,
        out_indices=[3, 5, 7, 11],
        num_labels=NUM_LABELS,
        use_auxiliary_head=False,
    )
    return BeitForSemanticSegmentation(config)


def segformer_b2() -> torch.nn.Module:
    config = SegformerConfig(
        depths=[3, 4, 6, 3],
        hidden_sizes=[64, 128, 320, 512],
        num_attention_heads=[1, 2, 5, 8],
        decoder_hidden_size=768,
        num_labels=NUM_LABELS,
    )
    return SegformerForSemanticSegmentation(config)


MODELS_512 = {
    ENCODER: vit_b_encoder,
    "SegViT ade20k-vit-b": segvit("ade20k-vit-b"),
    "SegViT-B single-layer ATM": ablation("ade20k-vit-b-single-atm"),
    "SegViT-B shrunk": ablation("ade20k-vit-b-shrunk"),
    "DPT ViT-B/16": dpt_vit_b,
    "BEiT-B + UperNet": beit_b_upernet,
    "SegFormer-B2": segformer_b2,
}
MODELS_640 = {
    "SegViT ade20k-vit-l": segvit("ade20k-vit-l"),
    "SegViT ade20k-vit-l-shrunk": segvit("ade20k-vit-l-shrunk"),
}
# Builders taking `training`. transformers' DPT computes its loss only with the auxiliary head on (without it, the
# loss raises UnboundLocalError in transformers 5.24), which is also how DPT trains for segmentation.
MEMORY_MODELS = {
    "SegViT ade20k-vit-b": lambda training: segvit("ade20k-vit-b")(),
    "DPT ViT-B/16": lambda training: dpt_vit_b(use_auxiliary_head=training),
}


# The image processor whose post-processing turns each model's outputs into label maps. SegViT's reads target sizes
# as the sizes images had before its resizing; these inputs were not resized.
POST_PROCESSORS = {
    "SegViT": lambda: SegViTImageProcessor(do_resize=False),
    "DPT": DPTImageProcessorPil,
    "BEiT": BeitImageProcessorPil,
    "SegFormer": SegformerImageProcessorPil,
}


def to_label_map(name: str, model: torch.nn.Module):
    """`pixel_values -> label maps at the input size` for `name`: the forward pass, then its own post-processing."""
    family = next((family for family in POST_PROCESSORS if name.startswith(family)), None)
    if family is None:  # the bare encoder: its forward pass only
        return model
    processor = POST_PROCESSORS[family]()

    def run(pixel_values: torch.Tensor):
        outputs = model(pixel_values)
        sizes = [tuple(pixel_values.shape[-2:])] * pixel_values.shape[0]
        return processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)

    return run


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_latencies(builders, size, *, repeats, warmup, batch_size, device, dtype) -> dict[str, float]:
    """Median seconds from pixel values to label maps for each model, rounds interleaved across the models."""
    torch.manual_seed(0)
    models = {name: build().eval().to(device=device, dtype=dtype) for name, build in builders.items()}
    runs = {name: to_label_map(name, model) for name, model in models.items()}
    pixel_values = torch.randn(batch_size, 3, size, size, device=device, dtype=dtype)
    seconds = {name: [] for name in models}
    with torch.inference_mode():
        for round_index in range(warmup + repeats):
            for name, run in runs.items():
                synchronize(device)
                started = time.perf_counter()
                run(pixel_values)
                synchronize(device)
                if round_index >= warmup:
                    seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}


def print_latencies(latencies: dict[str, float], batch_size: int, reference: str) -> None:
    print(f"| model | median ms | images/s | vs {reference} |")
    print("|---|---|---|---|")
    for name, value in latencies.items():
        ratio = value / latencies[reference]
        print(f"| {name} | {1000 * value:.0f} | {batch_size / value:.2f} | {ratio:.2f}x |")


def memory_status_mib(field: str) -> float:
    """`VmRSS` (resident now) or `VmHWM` (peak resident) of this process, from Linux's /proc, in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field} line.")


def block_labels(batch_size: int, size: int, blocks: int = 4) -> torch.Tensor:
    """`(batch, size, size)` label maps of `blocks` x `blocks` square regions, each of one random class."""
    coarse = torch.randint(0, NUM_LABELS, (batch_size, 1, blocks, blocks)).float()
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].long()


def memory_probe(name: str, mode: str) -> dict[str, float]:
    """RSS before, and peak RSS during, one inference or training step of `name` (run in a fresh subprocess)."""
    torch.manual_seed(0)
    model = MEMORY_MODELS[name](mode == "training")
    pixel_values = torch.randn(MEMORY_BATCH_SIZE, 3, MEMORY_SIZE, MEMORY_SIZE)
    labels = block_labels(MEMORY_BATCH_SIZE, MEMORY_SIZE)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets the peak (VmHWM) to the current RSS: the peak below is the step's own
    before = memory_status_mib("VmRSS")
    if mode == "inference":
        model.eval()
        with torch.inference_mode():
            model(pixel_values)
    else:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        model(pixel_values, labels=labels).loss.backward()
        optimizer.step()
    return {"before_mib": before, "peak_mib": memory_status_mib("VmHWM")}


def print_memory() -> None:
    print(f"\nPeak RSS, {MEMORY_SIZE}x{MEMORY_SIZE}, batch {MEMORY_BATCH_SIZE}, fp32, CPU, a fresh process per cell.")
    print("'step' = peak during the step minus RSS before it (built model and inputs): what the step itself added.\n")
    print("| model | inference peak MiB | inference step MiB | training peak MiB | training step MiB |")
    print("|---|---|---|---|---|")
    for name in MEMORY_MODELS:
        cells = []
        for mode in ("inference", "training"):
            command = [sys.executable, os.path.abspath(__file__), "--memory-probe", name, mode]
            command += ["--threads", str(torch.get_num_threads())]
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            cells += [f"{result['peak_mib']:.0f}", f"{result['peak_mib'] - result['before_mib']:.0f}"]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model_name = platform.processor() or "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as cpuinfo:
            names = (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
            model_name = next(names, model_name)
    return f"{model_name}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per model (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    parser.add_argument("--skip-large", action="store_true", help="skip the ViT-L comparison at 640")
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-RSS measurements")
    parser.add_argument("--memory-probe", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("--repeats and --batch-size must be at least 1, --warmup at least 0.")

    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1.")
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        name, mode = args.memory_probe
        print(json.dumps(memory_probe(name, mode)))
        return

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    print(f"Machine: {machine_description(device)}; torch {torch.__version__}; {args.dtype}; batch {args.batch_size}")
    print(f"Median over {args.repeats} interleaved rounds after {args.warmup} warm-up round(s).\n")
    timing = dict(repeats=args.repeats, warmup=args.warmup, batch_size=args.batch_size, device=device, dtype=dtype)

    latencies = median_latencies(MODELS_512, 512, **timing)
    print("512x512:\n")
    print_latencies(latencies, args.batch_size, ENCODER)
    segvit_b_vs_dpt = latencies["SegViT ade20k-vit-b"] / latencies["DPT ViT-B/16"]
    print(f"\nSegViT ade20k-vit-b / DPT ViT-B/16: {segvit_b_vs_dpt:.2f}x")

    if not args.skip_large:
        latencies = median_latencies(MODELS_640, 640, **timing)
        print("\n640x640:\n")
        print_latencies(latencies, args.batch_size, "SegViT ade20k-vit-l")

    if not args.skip_memory:
        if device.type != "cpu" or not sys.platform.startswith("linux"):
            print("\nPeak RSS is measured on CPU under Linux (/proc): skipped here.")
        else:
            print_memory()


if __name__ == "__main__":
    main()
