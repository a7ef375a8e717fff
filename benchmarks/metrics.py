"""Streaming mIoU beside `evaluate`'s `mean_iou`, on a full validation set's worth of label maps.

64 prediction / reference maps of 512x512 with 150 classes (ADE20K-like: 5% of reference pixels ignored), fed in
batches of 8 to `StreamingMeanIoU.update`, against `evaluate`'s `mean_iou` on the same 64 maps, and 64 plain
`torch.bincount` calls over the same pixels as the floor. Interleaved rounds, median; one and two torch threads.

`evaluate.load("mean_iou")` downloads the metric script from the Hub the first time. Where it cannot (offline, as on
the machine the docs' figures come from), the script runs the same inputs through `evaluate`'s own machinery (a
metric module with `mean_iou`'s input features, so the maps are stored in Arrow as `evaluate` stores them) around a
restatement of that module's computation (per image, histograms of the intersection, prediction and reference areas,
summed over images), and says so.

Usage:

    python benchmarks/metrics.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from segvit_hf.metrics import StreamingMeanIoU

NUM_LABELS, IGNORE_INDEX, NUM_MAPS, SIZE, BATCH = 150, 255, 64, 512, 8


RESTATED_MODULE = """
import datasets
import evaluate
import numpy as np

from segvit_benchmark_metrics import histogram_mean_iou


class RestatedMeanIou(evaluate.Metric):
    def _info(self):
        maps = datasets.Sequence(datasets.Sequence(datasets.Value("uint16")))
        return evaluate.MetricInfo(
            description="", citation="", features=datasets.Features({"predictions": maps, "references": maps})
        )

    def _compute(self, predictions, references, num_labels, ignore_index):
        return {"mean_iou": histogram_mean_iou([np.asarray(p) for p in predictions], [np.asarray(r) for r in references])}
"""


def evaluate_mean_iou():
    """`evaluate`'s `mean_iou`, or its computation restated inside `evaluate`'s machinery when it cannot be loaded."""
    import evaluate

    try:
        metric, name = evaluate.load("mean_iou"), "evaluate mean_iou"
    except Exception:  # offline: the Hub script cannot be fetched
        import sys

        sys.modules["segvit_benchmark_metrics"] = sys.modules[__name__]
        module = Path(tempfile.mkdtemp()) / "restated_mean_iou.py"
        module.write_text(RESTATED_MODULE)
        metric, name = evaluate.load(str(module)), "evaluate mean_iou (restated: offline)"
    return name, lambda predictions, references: metric.compute(
        predictions=predictions, references=references, num_labels=NUM_LABELS, ignore_index=IGNORE_INDEX
    )


def histogram_mean_iou(predictions, references):
    totals = np.zeros((4, NUM_LABELS))
    bins = {"bins": NUM_LABELS, "range": (0, NUM_LABELS - 1)}
    for prediction, label in zip(predictions, references):
        keep = label != IGNORE_INDEX
        prediction, label = prediction[keep], label[keep]
        intersect = np.histogram(prediction[prediction == label], **bins)[0]
        area_prediction, area_label = np.histogram(prediction, **bins)[0], np.histogram(label, **bins)[0]
        totals += [intersect, area_prediction + area_label - intersect, area_prediction, area_label]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nanmean(totals[0] / totals[1])


def main() -> None:
    rng = np.random.default_rng(0)
    references = rng.integers(0, NUM_LABELS, (NUM_MAPS, SIZE, SIZE))
    references[rng.random(references.shape) < 0.05] = IGNORE_INDEX
    predictions = rng.integers(0, NUM_LABELS, (NUM_MAPS, SIZE, SIZE)).astype(np.int32)
    prediction_tensor, reference_tensor = torch.from_numpy(predictions), torch.from_numpy(references)
    evaluate_name, evaluate_compute = evaluate_mean_iou()

    def streaming():
        metric = StreamingMeanIoU(NUM_LABELS, IGNORE_INDEX)
        for start in range(0, NUM_MAPS, BATCH):
            metric.update(prediction_tensor[start : start + BATCH], reference_tensor[start : start + BATCH])
        return metric.compute()["mean_iou"]

    codes = (reference_tensor.clamp(max=NUM_LABELS - 1) * NUM_LABELS + prediction_tensor).flatten(1)

    def bincounts():
        for code_map in codes:
            torch.bincount(code_map, minlength=NUM_LABELS**2)

    runs = {
        "StreamingMeanIoU.update + compute": streaming,
        evaluate_name: lambda: evaluate_compute(list(predictions), list(references)),
        "64 torch.bincount (floor)": bincounts,
    }
    print(f"{NUM_MAPS} maps of {SIZE}x{SIZE}, {NUM_LABELS} classes, batches of {BATCH}; median of 5 interleaved rounds.\n")
    print("| torch threads | " + " | ".join(runs) + " | evaluate / streaming |")
    print("|---" * (len(runs) + 2) + "|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        seconds = {name: [] for name in runs}
        for _ in range(6):
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - started)
        medians = {name: statistics.median(values[1:]) for name, values in seconds.items()}
        cells = " | ".join(f"{medians[name]:.3f} s" for name in runs)
        ratio = medians[evaluate_name] / medians["StreamingMeanIoU.update + compute"]
        print(f"| {threads} | {cells} | {ratio:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
