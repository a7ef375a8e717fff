"""Helpers for training SegViT with the transformers `Trainer`."""

from __future__ import annotations

from transformers import TrainerCallback


class DatasetEpochCallback(TrainerCallback):
    """Tells a [`SegmentationDataset`] training set which epoch starts, so that its augmentation draws follow it."""

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        dataset = getattr(train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            # `state.epoch` is fractional when resuming mid-epoch; its integer part is the epoch being run.
            dataset.set_epoch(int(state.epoch or 0))


__all__ = ["DatasetEpochCallback"]
