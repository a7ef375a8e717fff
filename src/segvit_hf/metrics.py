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

from .configuration_segvit import IGNORE_INDEX
from .image_processing_segvit import reduce_labels, segmentation_label_maps
from .modeling_segvit import mask_cell_size

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
    ...     outputs = model(batch["pixel_values"])
    ...     metric.update(logits_to_label_maps(outputs.to_tuple(), batch["labels"]), batch["labels"])
    >>> metric.compute()["mean_iou"]  # doctest: +SKIP
    ```
    """

    def __init__(
        self,
        num_labels: int,
        ignore_index: int = IGNORE_INDEX,
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

    def update(self, predictions, references) -> None:
        """
        Adds one batch.

        Args:
            predictions: predicted class ids, `(batch, H, W)` or `(H, W)` (tensor or array), a list of `(H, W)`
                maps of any sizes, or scores `(batch, num_labels, H, W)` as a float tensor, arg-maxed over dim 1.
            references: class ids of the same `(batch, H, W)` / `(H, W)` shape; `ignore_index` and -100 are skipped.
        """
        if any(isinstance(values, (list, tuple)) and not len(values) for values in (predictions, references)):
            raise ValueError("`update` got no label maps: pass at least one prediction and its reference.")
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
        if predictions.numel() == 0 or predictions.shape != references.shape:
            raise ValueError(
                f"`predictions` {tuple(predictions.shape)} and `references` {tuple(references.shape)} must be label "
                "maps of the same, non-empty shape (resize the predictions to the label map first)."
            )
        if self.confusion_matrix.device.type == "cpu":
            # NumPy runs these passes single-threaded: torch's small multi-threaded ops stall on a busy machine.
            counts = self._count_pairs_numpy(predictions.cpu().numpy().ravel(), references.cpu().numpy().ravel())
            self.confusion_matrix += torch.from_numpy(counts)
        else:
            device = self.confusion_matrix.device
            self.confusion_matrix += self._count_pairs_torch(
                predictions.to(device).flatten(), references.to(device).flatten()
            )

    def _count_pairs_numpy(self, predictions: np.ndarray, references: np.ndarray) -> np.ndarray:
        """`(num_labels, num_labels)` counts of (reference, prediction) pairs at labelled pixels: one bincount."""
        num_labels = self.num_labels
        references, unlabelled = self._references_and_unlabelled(references.astype(np.int64))
        labelled_references = np.where(unlabelled, 0, references)
        if (
            labelled_references.min() < 0
            or labelled_references.max() >= num_labels
            or predictions.min() < 0
            or predictions.max() >= num_labels
        ):
            self._raise_out_of_range(
                torch.from_numpy(predictions), torch.from_numpy(references), torch.from_numpy(unlabelled)
            )
        codes = references * num_labels + predictions
        # Every unlabelled pixel goes to one extra bin, past the confusion matrix.
        codes[unlabelled] = num_labels * num_labels
        counts = np.bincount(codes, minlength=num_labels * num_labels + 1)
        return counts[: num_labels * num_labels].reshape(num_labels, num_labels)

    def _count_pairs_torch(self, predictions: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        num_labels = self.num_labels
        references, unlabelled = self._references_and_unlabelled(references.to(torch.int64))
        predictions = predictions.to(torch.int64)
        reference_low, reference_high = torch.aminmax(torch.where(unlabelled, 0, references))
        prediction_low, prediction_high = torch.aminmax(torch.where(unlabelled, 0, predictions))
        if min(reference_low, prediction_low) < 0 or max(reference_high, prediction_high) >= num_labels:
            self._raise_out_of_range(predictions, references, unlabelled)
        codes = torch.where(unlabelled, num_labels * num_labels, references * num_labels + predictions)
        counts = torch.bincount(codes, minlength=num_labels * num_labels + 1)
        return counts[: num_labels * num_labels].reshape(num_labels, num_labels)

    def _references_and_unlabelled(self, references):
        """
        The references with `label_map` and the label reduction applied, and the mask of their unlabelled pixels
        (`ignore_index`, the Trainer's -100 padding, and with `reduce_labels` the raw 0); NumPy arrays or tensors.
        """
        references = self._mapped_references(references)
        padding = references == TRAINER_PADDING_INDEX
        if self.reduce_labels:
            references = reduce_labels(references, self.ignore_index)
        return references, padding | (references == self.ignore_index)

    def _mapped_references(self, references):
        """`label_map` applied (each pair in turn, as `evaluate`); works on NumPy arrays and tensors alike."""
        if not self.label_map:
            return references
        references = references.copy() if isinstance(references, np.ndarray) else references.clone()
        for old_id, new_id in self.label_map.items():
            references[references == old_id] = new_id
        return references

    def _raise_out_of_range(self, predictions, references, unlabelled) -> None:
        labelled = ~unlabelled
        for name, values in (("references", references[labelled]), ("predictions", predictions[labelled])):
            outside = (values < 0) | (values >= self.num_labels)
            if outside.any():
                raise ValueError(
                    f"`{name}` hold ids {torch.unique(values[outside])[:10].tolist()} outside [0, {self.num_labels}) "
                    f"at labelled pixels (ignore_index is {self.ignore_index})."
                )

    def all_reduce(self) -> None:
        """Sums the confusion matrices of all processes (under `torch.distributed`); a no-op otherwise."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.confusion_matrix)

    def compute(self, nan_to_num: float | None = None) -> dict:
        """The `evaluate` `mean_iou` results of everything added so far (see [`metrics_from_confusion_matrix`])."""
        return metrics_from_confusion_matrix(self.confusion_matrix, nan_to_num)


def logits_to_label_maps(logits, labels: torch.Tensor | None = None, patch_size: int = 16) -> torch.Tensor:
    """
    A Trainer `preprocess_logits_for_metrics`: the model's outputs as the Trainer passes them
    (`class_queries_logits`, `masks_queries_logits`, ...) -> `(batch, H, W)` int32 label maps at the labels' size,
    the model input's (`segmentation_label_maps`). Only these small maps are then gathered and passed on to
    `compute_metrics`. For a model whose patch size is not 16, bind it: `functools.partial(logits_to_label_maps,
    patch_size=8)`.

    The labels must have the input's size. They can only differ when the Trainer pads the labels of a distributed
    evaluation to a common height (its `pad_across_processes`) because processes hold batches of different sizes;
    evaluate at fixed sizes then (e.g. `segvit_hf.transforms.build_eval_transforms`).
    """
    if (
        not isinstance(logits, (tuple, list))
        or len(logits) < 2
        or not all(isinstance(tensor, torch.Tensor) for tensor in logits[:2])
        or logits[0].ndim != 3
        or logits[1].ndim != 4
    ):
        raise ValueError(
            "Expected the model's outputs (class_queries_logits (batch, queries, labels + 1), masks_queries_logits "
            f"(batch, queries, grid_h, grid_w), ...), got {_describe(logits)}."
        )
    if labels is None:
        raise ValueError("`labels` are needed: the label maps are computed at their size, the model input's.")
    class_queries_logits, masks_queries_logits = logits[0], logits[1]
    size, grid = tuple(labels.shape[-2:]), tuple(masks_queries_logits.shape[-2:])
    try:
        mask_cell_size(grid, size, (patch_size, patch_size))
    except ValueError:
        raise ValueError(
            f"Labels of size {size} do not fit the {grid} mask grid (patch size {patch_size}): in distributed "
            "evaluation every process must hold batches of the same size; pad or resize evaluation images to a fixed "
            "size (segvit_hf.transforms.build_eval_transforms)."
        ) from None
    label_maps = segmentation_label_maps(class_queries_logits, masks_queries_logits, size, patch_size)
    return label_maps.to(torch.int32)


def _describe(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of " + ", ".join(_describe(item) for item in value[:3])
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


class SemanticSegmentationMetrics:
    """
    A Trainer `compute_metrics` reporting mIoU from a data-set-wide confusion matrix.

    With `TrainingArguments(batch_eval_metrics=True)` the Trainer calls it once per evaluation batch with
    `compute_result=False` (the batch is added to the confusion matrix and `{}` returned) and with
    `compute_result=True` on the last batch (the results are returned and the matrix reset), so no evaluation
    logits are kept. Without `batch_eval_metrics` it is called once on everything and works the same way.

    Predictions may be label maps (use [`logits_to_label_maps`] as `preprocess_logits_for_metrics`) or the raw
    model outputs (`class_queries_logits`, `masks_queries_logits`, ...; `patch_size` places the masks). Returns
    `mean_iou`, `mean_accuracy`, `overall_accuracy` and, per class, `iou_<name>` / `accuracy_<name>` (names from
    `id2label`, else the class ids).
    """

    def __init__(
        self,
        num_labels: int,
        ignore_index: int = IGNORE_INDEX,
        id2label: Mapping[int, str] | None = None,
        patch_size: int = 16,
    ):
        self.metric = StreamingMeanIoU(num_labels, ignore_index)
        self.patch_size = patch_size
        id2label = id2label or {}
        self.class_names = [str(id2label.get(i, i)) for i in range(num_labels)]

    def __call__(self, eval_prediction, compute_result: bool = True) -> dict[str, float]:
        references = torch.as_tensor(eval_prediction.label_ids)
        predictions = eval_prediction.predictions
        if isinstance(predictions, (tuple, list)):
            raw_outputs = [torch.as_tensor(tensor) for tensor in predictions[:2]]
            predictions = logits_to_label_maps(raw_outputs, references, self.patch_size)
        predictions = torch.as_tensor(predictions)
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

    from .data import to_numpy_pair
    from .inference import predict

    config = model.config
    metric = StreamingMeanIoU(config.num_labels, config.ignore_index)
    count = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    for index in tqdm(range(count), desc=f"evaluate ({mode})", disable=not progress):
        example = dataset[index]
        image, label = to_numpy_pair(example["image"], example["label"])
        if reduce_labels:
            label = reduce_labels(label, config.ignore_index)
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
