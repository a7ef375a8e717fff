"""`segvit_mean_iou`: `evaluate`'s `mean_iou` (same inputs, arguments and results) from a confusion matrix.

Loaded offline from the installed package::

    import evaluate
    from segvit_hf.metrics import MEAN_IOU_MODULE_PATH

    metric = evaluate.load(MEAN_IOU_MODULE_PATH)
    metric.compute(predictions=[pred_map], references=[label_map], num_labels=150, ignore_index=255)

Each image updates one `(num_labels, num_labels)` confusion matrix, so the result is the data-set-wide mIoU
(not a mean of per-image scores). `evaluate` itself still stores every added map until `compute`; for data sets of
full-size label maps use `segvit_hf.metrics.StreamingMeanIoU` directly, which keeps only the matrix.
"""

import datasets
import evaluate
import numpy as np

from segvit_hf.metrics import StreamingMeanIoU

_DESCRIPTION = """
Mean Intersection-over-Union for semantic segmentation, from a data-set-wide confusion matrix: per class,
IoU = intersection / union of predicted and reference pixels; pixels whose reference is `ignore_index` are skipped.
Results are named and defined as in `evaluate`'s `mean_iou`; NaN marks a class absent from both predictions and
references (IoU) or from the references (accuracy), and the means skip NaNs.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`List[ndarray]`): predicted label maps, each `(height, width)` of class ids.
    references (`List[ndarray]`): reference label maps of the same sizes.
    num_labels (`int`): number of classes.
    ignore_index (`int`): reference value of unlabelled pixels (255 for SegViT's data sets).
    nan_to_num (`float`, *optional*): replaces NaNs in the results.
    label_map (`dict`, *optional*): reference ids to replace (old id -> new id), applied first.
    reduce_labels (`bool`, *optional*, defaults to `False`): map reference 0 to the ignore index and k to k - 1.
Returns:
    `mean_iou`, `mean_accuracy`, `overall_accuracy` (floats), `per_category_iou` and `per_category_accuracy`
    (`ndarray` of shape `(num_labels,)`).
Examples:
    >>> import numpy as np
    >>> metric = evaluate.load(MEAN_IOU_MODULE_PATH)
    >>> prediction = np.array([[0, 1], [1, 1]])
    >>> reference = np.array([[0, 1], [0, 255]])
    >>> results = metric.compute(predictions=[prediction], references=[reference], num_labels=2, ignore_index=255)
    >>> float(results["mean_iou"])
    0.5
"""

_CITATION = """
@inproceedings{zhang2022segvit,
  title={SegViT: Semantic Segmentation with Plain Vision Transformers},
  author={Zhang, Bowen and Tian, Zhi and Tang, Quan and Chu, Xiangxiang and Wei, Xiaolin and Shen, Chunhua and Liu, Yifan},
  booktitle={Advances in Neural Information Processing Systems},
  year={2022}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SegvitMeanIou(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("uint16"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint16"))),
                }
            ),
        )

    def _compute(
        self,
        predictions,
        references,
        num_labels: int,
        ignore_index: int,
        nan_to_num=None,
        label_map=None,
        reduce_labels: bool = False,
    ):
        metric = StreamingMeanIoU(
            num_labels=num_labels, ignore_index=ignore_index, reduce_labels=reduce_labels, label_map=label_map
        )
        for prediction, reference in zip(predictions, references):
            metric.update(np.asarray(prediction), np.asarray(reference))
        return metric.compute(nan_to_num)
