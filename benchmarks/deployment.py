"""CPU deployment paths of SegViT-B at 512x512: eager PyTorch, torch.compile, ONNX Runtime, and int8 dynamic
quantisation (ONNX Runtime's and torch's), from `pixel_values` to the 512x512 label map.

Every path runs the model's forward and then `segmentation_label_maps` on its outputs (in PyTorch, the same for every
path). SegViT-B (`ade20k-vit-b`, 150 labels) is built with random weights: nothing is downloaded. For each thread
count, the timings are interleaved: each round runs every path once, in turn, so that load from other processes
spreads over all of them alike; each path's figure is the median over the rounds after the warm-up round (which also
compiles). Ratios are to eager PyTorch at the same thread count, measured in the same run.

Then the accuracy of int8: the toy model that `examples/demo.py` trains (`make demo` saves it to outputs/demo/model) is
exported and quantised the same way, and its validation mIoU (whole image, at each image's size) is computed through
`SegViTOnnxSegmenter` in fp32 and in int8. Without that folder this part is skipped.

Needs the onnx extra (`pip install -e ".[onnx]"`). Usage:

    python benchmarks/deployment.py                              # 1 and 2 threads, 5 rounds after 1 warm-up
    python benchmarks/deployment.py --threads 1 --repeats 3
    python benchmarks/deployment.py --toy-model outputs/demo/model
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import onnxruntime
import torch
from torch import nn
from transformers.utils import logging as transformers_logging

from segvit_hf import SegViTForSemanticSegmentation, SegViTImageProcessor, StreamingMeanIoU, get_preset
from segvit_hf.data import to_numpy_pair
from segvit_hf.toy import load_toy_dataset
from segvit_hf.export import INT8_FILE_NAME, SegViTOnnxSegmenter, export_onnx, quantize_onnx
from segvit_hf.image_processing_segvit import segmentation_label_maps

PRESET = "ade20k-vit-b"
SIZE = 512
EAGER = "eager PyTorch"


def session_options(threads: int) -> onnxruntime.SessionOptions:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def label_map_paths(model: nn.Module, onnx_dir: Path, threads: int) -> dict[str, Callable]:
    """Each deployment path as a function `pixel_values -> outputs` (class and mask logits), at `threads` threads."""
    torch.set_num_threads(threads)
    # Inductor writes the thread count into its kernels; naming it makes the two counts compile (and cache) apart.
    torch._inductor.config.cpp.threads = threads
    torch._dynamo.reset()
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which this project does not depend on.
        warnings.simplefilter("ignore")
        torch_int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    return {
        EAGER: model,
        "torch.compile": torch.compile(model),
        "ONNX Runtime": SegViTOnnxSegmenter(onnx_dir, session_options=session_options(threads)),
        "ONNX Runtime int8": SegViTOnnxSegmenter(
            onnx_dir, file_name=INT8_FILE_NAME, session_options=session_options(threads)
        ),
        "torch int8 (quantize_dynamic)": torch_int8,
    }


def time_label_map(run: Callable, pixel_values: torch.Tensor) -> float:
    start = time.perf_counter()
    outputs = run(pixel_values)
    segmentation_label_maps(outputs.class_queries_logits, outputs.masks_queries_logits, pixel_values.shape[-2:])
    return time.perf_counter() - start


def median_latencies(paths: dict[str, Callable], repeats: int, warmup: int) -> tuple[dict[str, float], float]:
    """Each path's median milliseconds over the timed rounds, and the seconds of torch.compile's first call."""
    pixel_values = torch.randn(1, 3, SIZE, SIZE)
    times = {name: [] for name in paths}
    with torch.inference_mode():
        for round_index in range(warmup + repeats):
            for name, run in paths.items():
                times[name].append(time_label_map(run, pixel_values))
    medians = {name: 1000 * statistics.median(values[warmup:]) for name, values in times.items()}
    return medians, times["torch.compile"][0]


def print_latency_table(latencies: dict[int, dict[str, float]]) -> None:
    thread_counts = list(latencies)
    header = "| path | " + " | ".join(f"{n} thread{'s' if n > 1 else ''}: median ms | vs eager" for n in thread_counts)
    print(header + " | GPU |")
    print("|---|" + "---|---|" * len(thread_counts) + "---|")
    gpu = "not measured (CPU script)" if torch.cuda.is_available() else "no GPU in this session"
    for name in latencies[thread_counts[0]]:
        cells = []
        for threads in thread_counts:
            milliseconds = latencies[threads][name]
            cells += [f"{milliseconds:.0f}", f"{milliseconds / latencies[threads][EAGER]:.2f}x"]
        print(f"| {name} | " + " | ".join(cells) + f" | {gpu} |")


def onnx_miou(model_dir: Path, file_name: str, validation, num_labels: int, ignore_index: int) -> float:
    segmenter = SegViTOnnxSegmenter(model_dir, file_name=file_name)
    metric = StreamingMeanIoU(num_labels, ignore_index)
    for example in validation:
        image, label = to_numpy_pair(example["image"], example["label"])
        metric.update(segmenter.segment(image), torch.from_numpy(label))
    return 100 * float(metric.compute()["mean_iou"])


def print_int8_accuracy(toy_model: Path, work_dir: Path) -> None:
    model = SegViTForSemanticSegmentation.from_pretrained(toy_model).eval()
    onnx_dir = work_dir / "toy"
    export_onnx(model, SegViTImageProcessor.from_pretrained(toy_model), onnx_dir)
    quantize_onnx(onnx_dir)
    # The demo's validation split: 64 images after its 384 training ones (the defaults of examples/demo.py).
    validation = load_toy_dataset()["validation"]
    config = model.config
    fp32 = onnx_miou(onnx_dir, "model.onnx", validation, config.num_labels, config.ignore_index)
    int8 = onnx_miou(onnx_dir, INT8_FILE_NAME, validation, config.num_labels, config.ignore_index)
    print(f"Toy validation set ({len(validation)} images, whole image), {toy_model} through SegViTOnnxSegmenter:\n")
    print("| ONNX Runtime | validation mIoU |")
    print("|---|---|")
    print(f"| fp32 | {fp32:.2f} |")
    print(f"| int8 | {int8:.2f} |")
    print(f"\nint8 - fp32: {int8 - fp32:+.2f} points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch / ONNX Runtime threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per thread count")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (torch.compile compiles there)")
    parser.add_argument("--toy-model", type=Path, default=Path("outputs/demo/model"), help="trained toy model folder")
    args = parser.parse_args()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {machine}; SegViT {PRESET} (random "
        f"weights), batch 1, {SIZE}x{SIZE}, fp32 unless int8\n"
    )
    torch.manual_seed(0)
    model = SegViTForSemanticSegmentation(get_preset(PRESET).config()).eval()
    with tempfile.TemporaryDirectory() as work_dir:
        onnx_dir = Path(work_dir) / "segvit-b"
        export_onnx(model, get_preset(PRESET).image_processor(), onnx_dir)
        quantize_onnx(onnx_dir)
        latencies, compile_seconds = {}, {}
        for threads in args.threads:
            paths = label_map_paths(model, onnx_dir, threads)
            latencies[threads], compile_seconds[threads] = median_latencies(paths, args.repeats, args.warmup)
        print(f"pixel_values -> {SIZE}x{SIZE} label map, median of {args.repeats} interleaved rounds:\n")
        print_latency_table(latencies)
        compile_times = ", ".join(f"{seconds:.0f} s at {n} thread(s)" for n, seconds in compile_seconds.items())
        print(f"\ntorch.compile's first call (compilation included): {compile_times}.\n")
        if args.toy_model.is_dir():
            print_int8_accuracy(args.toy_model, Path(work_dir))
        else:
            print(f"No trained toy model in {args.toy_model}: run `make demo` for the int8 accuracy check.")


if __name__ == "__main__":
    main()
