"""The `segvit_mean_iou` evaluate module; see `segvit_hf.metrics.load_mean_iou_metric`."""
