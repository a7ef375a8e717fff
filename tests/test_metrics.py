"""Streaming mIoU equals `evaluate`'s `mean_iou` definition, batch by batch, through the Trainer and as a module."""

import math

import numpy as np
import pytest
import torch

from segvit_hf.image_processing_segvit import segmentation_scores
from transformers import EvalPrediction

from segvit_hf.metrics import (
    MEAN_IOU_MODULE_PATH,
    SemanticSegmentationMetrics,
    StreamingMeanIoU,
    format_iou_table,
    load_mean_iou_metric,
    logits_to_label_maps,
    metrics_from_confusion_matrix,
    results_to_json,
)


def reference_mean_iou(predictions, references, num_labels, ignore_index, reduce_labels=False):
    """`evaluate`'s `mean_iou` as documented: per-image histograms of intersection / prediction / label areas."""
    totals = np.zeros((4, num_labels))
    for prediction, label in zip(predictions, references):
        prediction, label = np.asarray(prediction), np.asarray(label).copy()
        if reduce_labels:
            label[label == 0] = 255
            label = label - 1
            label[label == 254] = 255
        keep = label != ignore_index
        prediction, label = prediction[keep], label[keep]
        bins = {"bins": num_labels, "range": (0, num_labels - 1)}
        intersect = np.histogram(prediction[prediction == label], **bins)[0]
        area_prediction = np.histogram(prediction, **bins)[0]
        area_label = np.histogram(label, **bins)[0]
        totals += [intersect, area_prediction + area_label - intersect, area_prediction, area_label]
    intersect, union, _, area_label = totals
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, accuracy = intersect / union, intersect / area_label
    return {
        "mean_iou": np.nanmean(iou),
        "mean_accuracy": np.nanmean(accuracy),
        "overall_accuracy": intersect.sum() / area_label.sum(),
        "per_category_iou": iou,
        "per_category_accuracy": accuracy,
    }


def assert_same_results(actual, expected):
    assert set(actual) == set(expected)
    for key in expected:
        np.testing.assert_allclose(np.asarray(actual[key], dtype=float), np.asarray(expected[key], dtype=float))


def test_hand_made_case():
    # Class 0: 1 correct pixel, 1 missed -> IoU 1/2; class 1: 2 correct, 1 false positive -> IoU 2/3;
    # class 2 absent everywhere -> NaN; the ignored pixel (255) counts nowhere.
    prediction = np.array([[0, 1, 1], [1, 1, 2]])
    reference = np.array([[0, 0, 1], [1, 255, 255]])
    metric = StreamingMeanIoU(num_labels=4)
    metric.update(prediction, reference)
    results = metric.compute()
    np.testing.assert_allclose(results["per_category_iou"][:2], [1 / 2, 2 / 3])
    # Class 2 is predicted only where the reference is ignored: absent from both, so NaN like class 3.
    assert np.isnan(results["per_category_iou"][2]) and np.isnan(results["per_category_iou"][3])
    np.testing.assert_allclose(results["per_category_accuracy"][:2], [1 / 2, 1.0])
    assert math.isclose(results["mean_iou"], (1 / 2 + 2 / 3) / 2)
    assert math.isclose(results["mean_accuracy"], 0.75)
    assert math.isclose(results["overall_accuracy"], 3 / 4)


def test_class_predicted_but_absent_from_references_has_zero_iou_and_nan_accuracy():
    metric = StreamingMeanIoU(num_labels=3)
    metric.update(np.array([[2, 0]]), np.array([[0, 0]]))
    results = metric.compute()
    assert results["per_category_iou"][2] == 0.0
    assert np.isnan(results["per_category_accuracy"][2])
    assert np.isnan(results["per_category_iou"][1])


@pytest.mark.parametrize("reduce_labels", [False, True])
def test_equals_definition_on_random_maps_accumulated_in_batches(reduce_labels):
    rng = np.random.default_rng(0)
    num_labels = 6
    predictions, references = [], []
    for _ in range(7):
        height, width = rng.integers(5, 20, 2)
        references.append(rng.choice([*range(num_labels + int(reduce_labels)), 255], (height, width)))
        predictions.append(rng.integers(0, num_labels, (height, width)))
    # Class 4 never appears in predictions nor references.
    predictions = [np.where(p == 4, 0, p) for p in predictions]
    references = [np.where(r == 4 + int(reduce_labels), 255, r) for r in references]

    metric = StreamingMeanIoU(num_labels, reduce_labels=reduce_labels)
    metric.update(predictions[:3], references[:3])  # a list of maps of different sizes
    for prediction, reference in zip(predictions[3:], references[3:]):
        metric.update(torch.from_numpy(prediction)[None], torch.from_numpy(reference)[None])
    expected = reference_mean_iou(predictions, references, num_labels, 255, reduce_labels)
    assert_same_results(metric.compute(), expected)
    assert np.isnan(metric.compute()["per_category_iou"][4])


def test_scores_are_argmaxed_and_nan_to_num():
    scores = torch.zeros(1, 3, 2, 2)
    scores[0, 1] = 1.0  # everything predicted as class 1
    metric = StreamingMeanIoU(3)
    metric.update(scores, torch.tensor([[[1, 1], [0, 255]]]))
    results = metric.compute(nan_to_num=-1.0)
    np.testing.assert_allclose(results["per_category_iou"], [0.0, 2 / 3, -1.0])


def test_memory_is_a_fixed_confusion_matrix():
    metric = StreamingMeanIoU(5)
    for _ in range(3):
        metric.update(torch.randint(0, 5, (2, 16, 16)), torch.randint(0, 5, (2, 16, 16)))
    assert metric.confusion_matrix.shape == (5, 5)
    assert metric.confusion_matrix.sum() == 3 * 2 * 16 * 16
    metric.reset()
    assert metric.confusion_matrix.sum() == 0


def test_bad_inputs_raise():
    metric = StreamingMeanIoU(3)
    with pytest.raises(ValueError, match="outside"):
        metric.update(np.array([[0, 1]]), np.array([[0, 7]]))
    with pytest.raises(ValueError, match="outside"):
        metric.update(np.array([[0, 5]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="same, non-empty shape"):
        metric.update(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(ValueError, match="same, non-empty shape"):
        metric.update(torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="no label maps"):
        metric.update([], [])
    with pytest.raises(TypeError, match="integer"):
        metric.update(np.zeros((2, 2)), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="ignore_index"):
        StreamingMeanIoU(3, ignore_index=1)


def test_trainer_compute_metrics_in_batch_mode_matches_one_shot():
    rng = np.random.default_rng(1)
    predictions = [rng.integers(0, 4, (2, 8, 8)) for _ in range(3)]
    references = [rng.choice([0, 1, 2, 3, 255], (2, 8, 8)) for _ in range(3)]
    references[-1][0, :2] = -100  # the Trainer's padding when gathering uneven batches
    compute_metrics = SemanticSegmentationMetrics(4, id2label={0: "a", 1: "b", 2: "c", 3: "d"})
    for prediction, reference in zip(predictions[:-1], references[:-1]):
        assert compute_metrics(EvalPrediction(prediction, reference), compute_result=False) == {}
    results = compute_metrics(EvalPrediction(predictions[-1], references[-1]), compute_result=True)
    valid = [np.where(r == -100, 255, r) for r in references]
    expected = reference_mean_iou(
        [p for batch in predictions for p in batch], [r for batch in valid for r in batch], 4, 255
    )
    assert math.isclose(results["mean_iou"], expected["mean_iou"])
    assert math.isclose(results["iou_c"], expected["per_category_iou"][2])
    assert math.isclose(results["accuracy_a"], expected["per_category_accuracy"][0])
    # The state is reset after a result, ready for the next evaluation.
    again = compute_metrics(EvalPrediction(np.concatenate(predictions), np.concatenate(references)))
    assert math.isclose(again["mean_iou"], results["mean_iou"])


def test_logits_to_label_maps_reduces_what_the_trainer_keeps():
    class_logits, mask_logits = torch.randn(2, 5, 6), 3 * torch.randn(2, 5, 4, 3)
    auxiliary = [{"class_queries_logits": class_logits, "masks_queries_logits": mask_logits}]
    label_maps = logits_to_label_maps((class_logits, mask_logits, auxiliary), torch.zeros(2, 64, 48))
    assert label_maps.shape == (2, 64, 48) and label_maps.dtype == torch.int32
    expected = segmentation_scores(class_logits, mask_logits, (64, 48), 16).argmax(1)
    assert torch.equal(label_maps.long(), expected)
    # Labels padded across processes no longer match the masks: refused rather than silently resized.
    with pytest.raises(ValueError, match="fixed size"):
        logits_to_label_maps((class_logits, mask_logits), torch.zeros(2, 96, 48))
    with pytest.raises(ValueError, match="class_queries_logits"):
        logits_to_label_maps(torch.randn(2, 5, 8, 8), torch.zeros(2, 8, 8))


@pytest.mark.parametrize("reduce_labels", [False, True])
def test_update_counts_pairs_at_labelled_pixels_only(reduce_labels):
    """Ignore index and the Trainer's -100 padding are skipped, with or without label reduction."""
    rng = np.random.default_rng(0)
    predictions = rng.integers(0, 4, (3, 16, 16))
    raw_ids = [1, 2, 3, 4, 0] if reduce_labels else [0, 1, 2, 3]
    references = rng.choice([*raw_ids, 255, -100], (3, 16, 16))
    metric = StreamingMeanIoU(4, reduce_labels=reduce_labels)
    metric.update(predictions, references)
    shifted = references - 1 if reduce_labels else references
    labelled = (references != 255) & (references != -100) & ((references != 0) | (not reduce_labels))
    expected = np.zeros((4, 4), np.int64)
    np.add.at(expected, (shifted[labelled], predictions[labelled]), 1)
    np.testing.assert_array_equal(metric.confusion_matrix.numpy(), expected)


def test_evaluate_module_loads_offline_and_matches():
    rng = np.random.default_rng(2)
    predictions = [rng.integers(0, 3, (6, 7)) for _ in range(2)]
    references = [rng.choice([0, 1, 2, 255], (6, 7)) for _ in range(2)]
    metric = load_mean_iou_metric()
    results = metric.compute(predictions=predictions, references=references, num_labels=3, ignore_index=255)
    assert_same_results(results, reference_mean_iou(predictions, references, 3, 255))
    assert MEAN_IOU_MODULE_PATH.endswith("segvit_mean_iou.py")


def test_reports():
    results = metrics_from_confusion_matrix(np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]]))
    table = format_iou_table(results, {0: "wall", 1: "sky", 2: "tree"})
    assert "| wall | 75.00 |" in table and "| tree | nan |" in table and "**mean**" in table
    as_json = results_to_json(results, {0: "wall", 1: "sky", 2: "tree"})
    assert as_json["per_category_iou"]["tree"] is None
    assert math.isclose(as_json["mean_iou"], (0.75 + 2 / 3) / 2)
