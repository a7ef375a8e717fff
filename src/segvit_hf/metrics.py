"""Streaming mIoU from a data-set-wide confusion matrix.

[`StreamingMeanIoU`] accumulates a `(num_labels, num_labels)` confusion matrix batch by batch, so memory does not
grow with the data set, and reports the metrics of `evaluate`'s `mean_iou` under the same names and with the same
semantics (`mean_iou`, `mean_accuracy`, `overall_accuracy`, `per_category_iou`, `per_category_accuracy`; NaN for a
class absent from both predictions and references, NaN accuracy for a class absent from the references, means that
skip NaNs). Unlike `evaluate`'s version, out-of-range ids raise a ValueError instead of being dropped silently.

[`SemanticSegmentationMetrics`] wraps it as a Trainer `compute_metrics` that works with
`TrainingArguments(batch_eval_metrics=True)`; pair it with [`logits_to_label_maps`] as
`preprocess_logits_for_metrics` so only `(batch, H, W)` label maps ever leave the model, never the
`(batch, num_labels, H, W)` scores.

The same computation is available as an `evaluate` module shipped in the package: `evaluate.load(MEAN_IOU_MODULE_PATH)`
(see [`load_mean_iou_metric`]).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

# Labels the Trainer pads with when gathering batches of different sizes: never a class.
TRAINER_PADDING_INDEX = -100

MEAN_IOU_MODULE_PATH = str(Path(__file__).parent / "evaluate_metrics" / "segvit_mean_iou" / "segvit_mean_iou.py")


def _is_sequence_of_maps(values) -> bool:
    return isinstance(values, (list, tuple)) and len(values) > 0 and np.asarray(values[0]).ndim >= 2


def _as_tensor(values, name: str) -> torch.Tensor:
    tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold integer class ids, got dtype {tensor.dtype}.")
    return tensor


def metrics_from_confusion_matrix(confusion: np.ndarray | torch.Tensor, nan_to_num: float | None = None) -> dict:
    """
    `evaluate`'s `mean_iou` results from a confusion matrix `confusion[reference, prediction]` of pixel counts,
    shape `(num_labels, num_labels)`:

    * `per_category_iou[c]` = intersection / union (NaN when the class is in neither predictions nor references),
    * `per_category_accuracy[c]` = intersection / reference pixels (NaN when the class is not in the references),
    * `mean_iou`, `mean_accuracy`: means over the non-NaN entries,
    * `overall_accuracy`: correctly classified pixels / labelled pixels.

    `nan_to_num` replaces NaNs in every result when given. Arrays are float64 numpy arrays, scalars numpy floats.
    """
    if isinstance(confusion, torch.Tensor):
        confusion = confusion.detach().cpu().numpy()
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"`confusion` must be a square (num_labels, num_labels) matrix, got {confusion.shape}.")
    intersection = np.diag(confusion)
    area_reference = confusion.sum(axis=1)
    area_prediction = confusion.sum(axis=0)
    union = area_reference + area_prediction - intersection
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        # Classes missing everywhere give 0/0 = NaN on purpose; an all-NaN mean is NaN, as in `evaluate`.
        warnings.simplefilter("ignore", RuntimeWarning)
        iou = intersection / union
        accuracy = intersection / area_reference
        results = {
            "mean_iou": np.nanmean(iou),
            "mean_accuracy": np.nanmean(accuracy),
            "overall_accuracy": intersection.sum() / area_reference.sum(),
            "per_category_iou": iou,
            "per_category_accuracy": accuracy,
        }
    if nan_to_num is not None:
        results = {key: np.nan_to_num(value, nan=nan_to_num) for key, value in results.items()}
    return results


class StreamingMeanIoU:
    """
    Data-set-wide mIoU accumulated batch by batch in a `(num_labels, num_labels)` int64 confusion matrix.

    Args:
        num_labels (`int`): number of classes; ids are `0 .. num_labels - 1`.
        ignore_index (`int`, defaults to 255): reference value of unlabelled pixels. Pixels whose reference is
            `ignore_index` or the Trainer's padding value -100 are skipped.
        reduce_labels (`bool`): reduce raw references first (0 -> ignore, k -> k - 1), as `evaluate`'s option.
        label_map (`dict[int, int]`, *optional*): reference ids replaced before anything else, one pair after the
            other, as `evaluate`'s option.
        device: where the confusion matrix lives (the predictions' device is fine; it is moved as needed).

    Example:

    ```python
    >>> metric = StreamingMeanIoU(num_labels=150)
    >>> for batch in dataloader:  # doctest: +SKIP
    ...     metric.update(model(batch["pixel_values"]).logits.argmax(1), batch["labels"])
    >>> metric.compute()["mean_iou"]  # doctest: +SKIP
    ```
    """

    def __init__(
        self,
        num_labels: int,
        ignore_index: int = 255,
        reduce_labels: bool = False,
        label_map: Mapping[int, int] | None = None,
        device: torch.device | str | None = None,
    ):
        if not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"`num_labels` must be a positive int, got {num_labels!r}.")
        if 0 <= ignore_index < num_labels:
            raise ValueError(f"`ignore_index` {ignore_index} is a class id in [0, {num_labels}); pick another value.")
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        self.reduce_labels = reduce_labels
        self.label_map = dict(label_map) if label_map else None
        self.confusion_matrix = torch.zeros(num_labels, num_labels, dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Forgets everything accumulated."""
        self.confusion_matrix.zero_()

    def _prepare_references(self, references: torch.Tensor) -> torch.Tensor:
        references = references.to(torch.int64)
        if self.label_map:
            references = references.clone()
            for old_id, new_id in self.label_map.items():
                references[references == old_id] = new_id
        if self.reduce_labels:
            unlabelled = (references == 0) | (references == self.ignore_index)
            references = torch.where(unlabelled, self.ignore_index, references - 1)
        return references

    def update(self, predictions, references) -> None:
        """
        Adds one batch.

        Args:
            predictions: predicted class ids, `(batch, H, W)` or `(H, W)` (tensor or array), a list of `(H, W)`
                maps of any sizes, or scores `(batch, num_labels, H, W)` as a float tensor, arg-maxed over dim 1.
            references: class ids of the same `(batch, H, W)` / `(H, W)` shape; `ignore_index` and -100 are skipped.
        """
        if _is_sequence_of_maps(predictions) or _is_sequence_of_maps(references):
            # Maps of different sizes (one per image) cannot be stacked: add them one by one.
            if len(predictions) != len(references):
                raise ValueError(f"Got {len(predictions)} predictions for {len(references)} references.")
            for prediction, reference in zip(predictions, references):
                self.update(prediction, reference)
            return
        if isinstance(predictions, torch.Tensor) and predictions.is_floating_point():
            if predictions.ndim != 4 or predictions.shape[1] != self.num_labels:
                raise ValueError(
                    f"Floating-point `predictions` must be scores (batch, {self.num_labels}, H, W), "
                    f"got {tuple(predictions.shape)}."
                )
            predictions = predictions.argmax(dim=1)
        predictions = _as_tensor(predictions, "predictions")
        references = _as_tensor(references, "references")
        if predictions.shape != references.shape:
            raise ValueError(
                f"`predictions` {tuple(predictions.shape)} and `references` {tuple(references.shape)} must have the same "
                "shape (resize the predictions to the label map first)."
            )
        device = self.confusion_matrix.device
        predictions = predictions.to(device=device, dtype=torch.int64).flatten()
        references = self._prepare_references(references.to(device)).flatten()
        labelled = (references != self.ignore_index) & (references != TRAINER_PADDING_INDEX)
        predictions, references = predictions[labelled], references[labelled]
        for name, values in (("references", references), ("predictions", predictions)):
            outside = (values < 0) | (values >= self.num_labels)
            if outside.any():
                raise ValueError(
                    f"`{name}` hold ids {torch.unique(values[outside])[:10].tolist()} outside [0, {self.num_labels}) "
                    f"at labelled pixels (ignore_index is {self.ignore_index})."
                )
        counts = torch.bincount(references * self.num_labels + predictions, minlength=self.num_labels**2)
        self.confusion_matrix += counts.reshape(self.num_labels, self.num_labels)

    def all_reduce(self) -> None:
        """Sums the confusion matrices of all processes (under `torch.distributed`); a no-op otherwise."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.confusion_matrix)

    def compute(self, nan_to_num: float | None = None) -> dict:
        """The `evaluate` `mean_iou` results of everything added so far (see [`metrics_from_confusion_matrix`])."""
        return metrics_from_confusion_matrix(self.confusion_matrix, nan_to_num)


def logits_to_label_maps(logits, labels: torch.Tensor | None = None) -> torch.Tensor:
    """
    A Trainer `preprocess_logits_for_metrics`: the model's `(batch, num_labels, H, W)` scores (alone or first in the
    output tuple) -> `(batch, H, W)` int32 label maps. Only these small maps are then gathered and passed on to
    `compute_metrics`.

    The labels must have the scores' size. They can only differ when the Trainer pads the labels of a distributed
    evaluation to a common height (its `pad_across_processes`) because processes hold batches of different sizes;
    evaluate at fixed sizes then (e.g. `segvit_hf.transforms.build_eval_transforms`).
    """
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
        raise ValueError(
            "Expected the model's scores of shape (batch, num_labels, height, width) first in the outputs, got "
            f"{getattr(logits, 'shape', type(logits).__name__)}."
        )
    if labels is not None and tuple(labels.shape[-2:]) != tuple(logits.shape[-2:]):
        raise ValueError(
            f"Labels of size {tuple(labels.shape[-2:])} for scores of size {tuple(logits.shape[-2:])}: in distributed "
            "evaluation every process must hold batches of the same size; pad or resize evaluation images to a "
            "fixed size (segvit_hf.transforms.build_eval_transforms)."
        )
    return logits.argmax(dim=1).to(torch.int32)


class SemanticSegmentationMetrics:
    """
    A Trainer `compute_metrics` reporting mIoU from a data-set-wide confusion matrix.

    With `TrainingArguments(batch_eval_metrics=True)` the Trainer calls it once per evaluation batch with
    `compute_result=False` (the batch is added to the confusion matrix and `{}` returned) and with
    `compute_result=True` on the last batch (the results are returned and the matrix reset), so no evaluation
    logits are kept. Without `batch_eval_metrics` it is called once on everything and works the same way.

    Predictions may be label maps (use [`logits_to_label_maps`] as `preprocess_logits_for_metrics`) or the raw
    model outputs (scores first). Returns `mean_iou`, `mean_accuracy`, `overall_accuracy` and, per class,
    `iou_<name>` / `accuracy_<name>` (names from `id2label`, else the class ids).
    """

    def __init__(self, num_labels: int, ignore_index: int = 255, id2label: Mapping[int, str] | None = None):
        self.metric = StreamingMeanIoU(num_labels, ignore_index)
        id2label = id2label or {}
        self.class_names = [str(id2label.get(i, i)) for i in range(num_labels)]

    def __call__(self, eval_prediction, compute_result: bool = True) -> dict[str, float]:
        predictions = eval_prediction.predictions
        if isinstance(predictions, (tuple, list)):
            predictions = predictions[0]
        if isinstance(predictions, np.ndarray):
            predictions = torch.from_numpy(predictions)
        references = eval_prediction.label_ids
        if isinstance(references, np.ndarray):
            references = torch.from_numpy(references)
        if predictions.is_floating_point():
            predictions = logits_to_label_maps(predictions, references)
        self.metric.update(predictions, references)
        if not compute_result:
            return {}
        results = self.metric.compute()
        self.metric.reset()
        summary = {key: float(results[key]) for key in ("mean_iou", "mean_accuracy", "overall_accuracy")}
        for name, iou, accuracy in zip(self.class_names, results["per_category_iou"], results["per_category_accuracy"]):
            summary[f"iou_{name}"] = float(iou)
            summary[f"accuracy_{name}"] = float(accuracy)
        return summary


def evaluate_dataset(
    model,
    processor,
    dataset,
    mode: str = "whole",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crop_size=None,
    stride=None,
    reduce_labels: bool = False,
    max_samples: int | None = None,
    progress: bool = True,
) -> dict:
    """
    mIoU of `model` on a data set split under the paper's test protocol: each image predicted at its original size
    with `segvit_hf.inference.predict` (`mode` "whole" or "slide", optional multi-scale `scales` and `flip`) and
    compared with its full-resolution label map, accumulated in one confusion matrix.

    Args:
        dataset: indexable items with `"image"` and `"label"` (a split from `segvit_hf.data`).
        reduce_labels: map raw labels 0 -> ignore, k -> k - 1 first (ADE20K-style annotations).
        max_samples: evaluate the first `max_samples` items only.
        progress: show a progress bar.
    Returns:
        The `mean_iou` results (see [`metrics_from_confusion_matrix`]).
    """
    from tqdm.auto import tqdm

    from .data import reduce_label_map, to_numpy_pair
    from .inference import predict

    config = model.config
    metric = StreamingMeanIoU(config.num_labels, config.ignore_index)
    count = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    for index in tqdm(range(count), desc=f"evaluate ({mode})", disable=not progress):
        example = dataset[index]
        image, label = to_numpy_pair(example["image"], example["label"])
        if reduce_labels:
            label = reduce_label_map(label, config.ignore_index)
        prediction = predict(
            model, processor, image, mode=mode, scales=scales, flip=flip, crop_size=crop_size, stride=stride
        )
        metric.update(prediction, torch.from_numpy(label))
    return metric.compute()


def load_mean_iou_metric(**kwargs):
    """
    The `evaluate` module shipped in this package (`segvit_mean_iou`, same inputs and results as `evaluate`'s
    `mean_iou`), loaded from its local script: no network. `kwargs` go to `evaluate.load`.
    """
    import evaluate

    return evaluate.load(MEAN_IOU_MODULE_PATH, **kwargs)


def format_iou_table(results: Mapping, id2label: Mapping[int, str] | None = None, digits: int = 2) -> str:
    """A markdown table of per-class IoU and accuracy (in %), followed by the mean / overall rows."""
    id2label = id2label or {}
    rows = ["| class | IoU | Acc |", "|---|---:|---:|"]

    def percent(value) -> str:
        return "nan" if np.isnan(value) else f"{100 * value:.{digits}f}"

    for class_id, (iou, accuracy) in enumerate(zip(results["per_category_iou"], results["per_category_accuracy"])):
        rows.append(f"| {id2label.get(class_id, class_id)} | {percent(iou)} | {percent(accuracy)} |")
    rows.append(f"| **mean** | **{percent(results['mean_iou'])}** | **{percent(results['mean_accuracy'])}** |")
    rows.append(f"| overall accuracy | | {percent(results['overall_accuracy'])} |")
    return "\n".join(rows)


def results_to_json(results: Mapping, id2label: Mapping[int, str] | None = None) -> dict:
    """JSON-ready results: floats (NaN as `None`) and per-class dictionaries keyed by class name."""
    id2label = id2label or {}

    def number(value):
        value = float(value)
        return None if np.isnan(value) else value

    names = [str(id2label.get(i, i)) for i in range(len(results["per_category_iou"]))]
    return {
        "mean_iou": number(results["mean_iou"]),
        "mean_accuracy": number(results["mean_accuracy"]),
        "overall_accuracy": number(results["overall_accuracy"]),
        "per_category_iou": {name: number(v) for name, v in zip(names, results["per_category_iou"])},
        "per_category_accuracy": {name: number(v) for name, v in zip(names, results["per_category_accuracy"])},
    }


__all__ = [
    "MEAN_IOU_MODULE_PATH",
    "SemanticSegmentationMetrics",
    "StreamingMeanIoU",
    "evaluate_dataset",
    "format_iou_table",
    "load_mean_iou_metric",
    "logits_to_label_maps",
    "metrics_from_confusion_matrix",
    "results_to_json",
]
