"""Semantic-segmentation data for SegViT: three sources, a torch dataset applying the augmentation, and collation.

Sources, each returned as a `datasets.DatasetDict` with splits `"train"` and `"validation"` and two columns,
`"image"` (RGB) and `"label"` (a single-channel map of class ids), both decoded to PIL images on access:

* [`load_hub_dataset`]: a Hub data set id (or an already loaded `datasets.DatasetDict`) with an image column and a
  label-map column, e.g. ADE20K's `scene_parse_150` layout (`image`, `annotation`).
* [`load_folder_dataset`]: a local folder in the ADEChallengeData2016 layout (`images/{training,validation}/*.jpg`,
  `annotations/{training,validation}/*.png`), or the mmseg layouts of COCO-Stuff-10K and PASCAL-Context.
* `segvit_hf.toy.load_toy_dataset`: a small synthetic scene-parsing set generated deterministically in code (nothing
  is downloaded), used by the demo, the examples' defaults and the tests.

[`load_dataset_source`] picks one from a single string (`"toy"`, a folder, or a Hub id), as the example scripts do.

[`SegmentationDataset`] turns a split into `{"pixel_values", "labels"}` tensors with a transform from
`segvit_hf.transforms`; [`collate_segmentation`] pads a list of those into a batch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .configuration_segvit import IGNORE_INDEX
from .image_processing_segvit import reduce_labels, to_8bit_image
from .toy import TOY_ID2LABEL, load_toy_dataset
from .transforms import Normalize, build_eval_transforms, build_train_transforms, check_pair

# --------------------------------------------------------------------------------------------------------------------
# Hub data sets and local folders
# --------------------------------------------------------------------------------------------------------------------


def load_hub_dataset(
    dataset,
    image_column: str = "image",
    label_column: str = "annotation",
    train_split: str = "train",
    validation_split: str = "validation",
    **load_kwargs,
):
    """
    A Hub semantic-segmentation data set with one image column and one label-map column, as a `DatasetDict` with
    splits `"train"` / `"validation"` and columns `"image"` / `"label"`.

    Args:
        dataset (`str` or `datasets.DatasetDict`):
            A Hub id (loaded with `datasets.load_dataset(dataset, **load_kwargs)`) or an already loaded
            `DatasetDict` of the same shape.
        image_column, label_column (`str`):
            Column names of the RGB image and of the label map (ADE20K's `scene_parse_150`: `"image"`,
            `"annotation"`; its raw labels keep 0 = "other", so train with `reduce_labels=True`).
        train_split, validation_split (`str`):
            Names of the two splits in the source.
    """
    import datasets

    if isinstance(dataset, str):
        dataset = datasets.load_dataset(dataset, **load_kwargs)
    if not isinstance(dataset, datasets.DatasetDict):
        raise TypeError(f"`dataset` must be a Hub id or a datasets.DatasetDict, got {type(dataset).__name__}.")
    splits = {}
    for target, source in (("train", train_split), ("validation", validation_split)):
        if source not in dataset:
            raise ValueError(f"Split {source!r} not found; the data set has {list(dataset)}.")
        split = dataset[source]
        missing = [column for column in (image_column, label_column) if column not in split.column_names]
        if missing:
            raise ValueError(
                f"Column(s) {missing} not in split {source!r} (columns: {split.column_names}); set `image_column` "
                "and `label_column`."
            )
        split = split.select_columns([image_column, label_column])
        renames = {old: new for old, new in ((image_column, "image"), (label_column, "label")) if old != new}
        if renames:
            # Swapping names through a temporary one keeps e.g. label_column="image" unambiguous.
            split = split.rename_columns({old: f"__segvit_{new}" for old, new in renames.items()})
            split = split.rename_columns({f"__segvit_{new}": new for new in renames.values()})
        splits[target] = split
    return datasets.DatasetDict(splits)


@dataclass(frozen=True)
class FolderLayout:
    """Where images and label maps of each split live inside a data set folder."""

    image_dirs: Mapping[str, str]
    label_dirs: Mapping[str, str]
    image_suffix: str = ".jpg"
    label_suffix: str = ".png"
    # Text files listing the image stems of each split (PASCAL-Context); `None`: every image in the folder.
    split_files: Mapping[str, str] | None = None
    reduce_labels: bool = True
    notes: str = field(default="", compare=False)


FOLDER_LAYOUTS: dict[str, FolderLayout] = {
    "ade20k": FolderLayout(
        image_dirs={"train": "images/training", "validation": "images/validation"},
        label_dirs={"train": "annotations/training", "validation": "annotations/validation"},
        notes="ADEChallengeData2016; raw label 0 is 'other' (reduce labels).",
    ),
    "cocostuff10k": FolderLayout(
        image_dirs={"train": "images/train2014", "validation": "images/test2014"},
        label_dirs={"train": "annotations/train2014", "validation": "annotations/test2014"},
        label_suffix="_labelTrainIds.png",
        notes="mmseg's tools/convert_datasets/coco_stuff10k.py output; 0 is unlabelled (reduce labels).",
    ),
    "pascal-context": FolderLayout(
        image_dirs={"train": "JPEGImages", "validation": "JPEGImages"},
        label_dirs={"train": "SegmentationClassContext", "validation": "SegmentationClassContext"},
        split_files={
            "train": "ImageSets/SegmentationContext/train.txt",
            "validation": "ImageSets/SegmentationContext/val.txt",
        },
        notes="VOC2010 with mmseg's tools/convert_datasets/pascal_context.py output; 0 is background "
        "(reduce labels for the 59-class models, keep it for 60 classes).",
    ),
}


def _split_files(root: Path, layout: FolderLayout, split: str) -> tuple[list[str], list[str]]:
    image_dir, label_dir = root / layout.image_dirs[split], root / layout.label_dirs[split]
    for directory in (image_dir, label_dir):
        if not directory.is_dir():
            raise FileNotFoundError(f"Expected the folder {directory} for the {split!r} split.")
    if layout.split_files is not None:
        list_file = root / layout.split_files[split]
        if not list_file.is_file():
            raise FileNotFoundError(f"Expected the split list {list_file}.")
        stems = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    else:
        stems = sorted(path.name[: -len(layout.image_suffix)] for path in image_dir.glob(f"*{layout.image_suffix}"))
    if not stems:
        raise FileNotFoundError(f"No '*{layout.image_suffix}' images for the {split!r} split in {image_dir}.")
    images, labels = [], []
    for stem in stems:
        image_path, label_path = image_dir / f"{stem}{layout.image_suffix}", label_dir / f"{stem}{layout.label_suffix}"
        if not image_path.is_file():
            raise FileNotFoundError(f"Image {image_path} listed for the {split!r} split does not exist.")
        if not label_path.is_file():
            raise FileNotFoundError(f"Image {image_path} has no label map {label_path}.")
        images.append(str(image_path))
        labels.append(str(label_path))
    return images, labels


def load_folder_dataset(root: str | os.PathLike, layout: str = "ade20k"):
    """
    A local data set folder as a `DatasetDict` (`"train"` / `"validation"`, columns `"image"` / `"label"`), decoded
    lazily from the files. `layout` is one of [`FOLDER_LAYOUTS`]: `"ade20k"` (ADEChallengeData2016:
    `images/{training,validation}/*.jpg` with `annotations/{training,validation}/*.png` of the same name),
    `"cocostuff10k"` or `"pascal-context"` (mmseg's converted layouts). Whether labels need reducing is
    `FOLDER_LAYOUTS[layout].reduce_labels`.

    Items come as PIL images, each decoded in full when accessed ([`open_folder_examples`]): a corrupt file, or a
    label map whose size differs from its image's, raises an error that names the file.
    """
    import datasets

    if layout not in FOLDER_LAYOUTS:
        raise ValueError(f"Unknown folder layout {layout!r}; known: {', '.join(FOLDER_LAYOUTS)}.")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Data set folder {root} does not exist.")
    layout_spec = FOLDER_LAYOUTS[layout]
    # The files are opened by `open_folder_examples`, not by datasets' decoder, whose errors do not name the file.
    features = datasets.Features({"image": datasets.Image(decode=False), "label": datasets.Image(decode=False)})
    splits = {}
    for split in ("train", "validation"):
        images, labels = _split_files(root, layout_spec, split)
        dataset = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
        splits[split] = dataset.with_transform(open_folder_examples)
    return datasets.DatasetDict(splits)


def _open_image_file(path: str) -> Image.Image:
    """The image at `path`, decoded in full; an unreadable or corrupt file raises an `OSError` naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, ValueError) as error:  # PIL reports truncated and corrupt data as either
        raise OSError(f"Cannot read {path}: {error}") from error


def open_folder_examples(batch: dict[str, list]) -> dict[str, list]:
    """
    The `datasets` transform of [`load_folder_dataset`]: each `{"path": ...}` entry of the `"image"` and `"label"`
    columns opened as a PIL image, every file named in the error when it cannot be read, and each label map checked
    to have its image's size.
    """
    opened = {column: [_open_image_file(item["path"]) for item in items] for column, items in batch.items()}
    if {"image", "label"} <= opened.keys():
        pairs = zip(opened["image"], opened["label"], batch["image"], batch["label"])
        for image, label, image_item, label_item in pairs:
            if image.size != label.size:
                raise ValueError(
                    f"The label map {label_item['path']} is {label.width}x{label.height} pixels but its image "
                    f"{image_item['path']} is {image.width}x{image.height}: each map must label its image pixel for "
                    "pixel."
                )
    return opened


@dataclass
class DataSource:
    """A loaded data source: the two splits, the class names and whether raw labels must be reduced."""

    splits: object  # datasets.DatasetDict with "train" / "validation" and columns "image" / "label"
    id2label: dict[int, str] | None
    reduce_labels: bool


def load_dataset_source(
    source: str = "toy",
    *,
    folder_layout: str = "ade20k",
    image_column: str = "image",
    label_column: str = "annotation",
    reduce_labels: bool | None = None,
    toy_num_train: int = 384,
    toy_num_validation: int = 64,
    seed: int = 0,
) -> DataSource:
    """
    Resolves the example scripts' `--dataset` argument: `"toy"` (the embedded data set), an existing folder
    (read with `folder_layout`), or else a Hub data set id (`image_column` / `label_column`). `reduce_labels=None`
    takes the source's convention: False for the toy set, the layout's for folders, True for Hub ids (ADE20K).
    `id2label` is known for the toy set only; the others take the model's (e.g. from a preset).
    """
    if source == "toy":
        splits = load_toy_dataset(toy_num_train, toy_num_validation, seed)
        return DataSource(splits, dict(TOY_ID2LABEL), bool(reduce_labels) if reduce_labels is not None else False)
    if os.path.isdir(source):
        splits = load_folder_dataset(source, folder_layout)
        default = FOLDER_LAYOUTS[folder_layout].reduce_labels
        return DataSource(splits, None, default if reduce_labels is None else reduce_labels)
    splits = load_hub_dataset(source, image_column=image_column, label_column=label_column)
    return DataSource(splits, None, True if reduce_labels is None else reduce_labels)


# --------------------------------------------------------------------------------------------------------------------
# From examples to tensors
# --------------------------------------------------------------------------------------------------------------------


def to_numpy_pair(image, label) -> tuple[np.ndarray, np.ndarray]:
    """
    An `(H, W, 3)` uint8 RGB array and an `(H, W)` int64 label array from PIL images or arrays. Label images must be
    single-channel (modes "L", "P", "I", "I;16"): palette images give their indices, as class ids should be.
    """
    if isinstance(image, Image.Image):
        image = np.asarray(to_8bit_image(image).convert("RGB"))
    if isinstance(label, Image.Image):
        if label.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
            raise ValueError(
                f"Label maps must be single-channel images of class ids (mode L, P or I), got mode {label.mode!r}."
            )
        label = np.asarray(label)
    image, label = np.asarray(image), np.asarray(label)
    if image.dtype != np.uint8:
        raise TypeError(f"Images must be uint8 RGB, got dtype {image.dtype}.")
    if label.ndim != 2:
        raise ValueError(
            f"Label maps must be single-channel (height, width) maps of class ids, got an array of shape {label.shape}"
            + (": turn a colour-coded map into class ids first." if label.ndim == 3 else ".")
        )
    if label.dtype.kind not in "iu":
        raise TypeError(f"Label maps must hold integer class ids, got dtype {label.dtype}.")
    label = label.astype(np.int64)
    check_pair(image, label)
    return image, label


class SegmentationDataset(torch.utils.data.Dataset):
    """
    A split of a data source as model inputs. Item `i` is `{"pixel_values": (3, H, W) float32, "labels": (H, W)
    int64}` after `transform` (a `segvit_hf.transforms` callable; if it does not normalise, the image is normalised
    with `image_mean` / `image_std` at the end).

    Augmentation is reproducible: sample `i` in epoch `e` draws from `numpy.random.default_rng([seed, e, i])`, so
    the result does not depend on data-loader workers, processes, or batches skipped when resuming. Call
    [`set_epoch`] at each epoch (the Trainer does it through [`DatasetEpochCallback`]).

    Args:
        split: a `datasets.Dataset` (or any indexable) whose items have `"image"` and `"label"`.
        transform: `(image, label, rng) -> (image, label)`.
        image_mean, image_std: normalisation used when `transform` leaves a uint8 image.
        reduce_labels: apply ADE20K's label reduction first (0 -> `ignore_index`, k -> k - 1:
            `segvit_hf.image_processing_segvit.reduce_labels`; ADE20K, COCO-Stuff-10K, PASCAL-Context 59).
        num_labels: when given, labels outside `[0, num_labels)` other than `ignore_index` raise a ValueError
            naming the sample.
        seed: base seed of the augmentation.
    """

    def __init__(
        self,
        split,
        transform: Callable | None = None,
        image_mean=(0.485, 0.456, 0.406),
        image_std=(0.229, 0.224, 0.225),
        reduce_labels: bool = False,
        num_labels: int | None = None,
        ignore_index: int = IGNORE_INDEX,
        seed: int = 0,
    ):
        self.split = split
        self.transform = transform
        self.normalize = Normalize(image_mean, image_std)
        self.reduce_labels = reduce_labels
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the augmentation draws of epoch `epoch`."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        example = self.split[index]
        image, label = to_numpy_pair(example["image"], example["label"])
        if self.reduce_labels:
            label = reduce_labels(label, self.ignore_index)
        if self.num_labels is not None:
            bad = (label < 0) | (label >= self.num_labels)
            bad &= label != self.ignore_index
            if bad.any():
                raise ValueError(
                    f"Sample {index} has label values {np.unique(label[bad])[:10].tolist()} outside "
                    f"[0, {self.num_labels}) that are not {self.ignore_index}"
                    + ("" if self.reduce_labels else " (raw ADE20K-style labels need reduce_labels=True)")
                    + "."
                )
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.transform is not None:
            image, label = self.transform(image, label, rng)
        if image.dtype == np.uint8:
            image, label = self.normalize(image, label, rng)
        pixel_values = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
        return {"pixel_values": pixel_values, "labels": torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))}


def collate_segmentation(
    examples: list[Mapping[str, torch.Tensor]], ignore_index: int = IGNORE_INDEX, size_divisor: int = 1
) -> dict[str, torch.Tensor]:
    """
    Stacks `{"pixel_values": (3, H, W), "labels": (H, W)}` examples into `(B, 3, H_max, W_max)` / `(B, H_max, W_max)`,
    padding at the bottom and right with 0 (image) and `ignore_index` (labels), the sizes rounded up to a multiple of
    `size_divisor`. Examples without labels give only `pixel_values`.
    """
    if not examples:
        raise ValueError("Cannot collate an empty list of examples.")
    height = max(example["pixel_values"].shape[-2] for example in examples)
    width = max(example["pixel_values"].shape[-1] for example in examples)
    height, width = (math.ceil(size / size_divisor) * size_divisor for size in (height, width))
    first = examples[0]["pixel_values"]
    pixel_values = first.new_zeros((len(examples), first.shape[0], height, width))
    has_labels = "labels" in examples[0]
    labels = torch.full((len(examples), height, width), ignore_index, dtype=torch.long) if has_labels else None
    for row, example in enumerate(examples):
        image = example["pixel_values"]
        pixel_values[row, :, : image.shape[-2], : image.shape[-1]] = image
        if has_labels:
            label = example["labels"]
            if label.shape != image.shape[-2:]:
                raise ValueError(
                    f"Example {row}: labels {tuple(label.shape)} do not match the image {tuple(image.shape)}."
                )
            labels[row, : label.shape[0], : label.shape[1]] = label
    batch = {"pixel_values": pixel_values}
    if has_labels:
        batch["labels"] = labels
    return batch


def build_segmentation_datasets(
    source: DataSource,
    crop_size: int | tuple[int, int],
    image_mean,
    image_std,
    num_labels: int | None = None,
    train_scale: tuple[int, int] | None = None,
    ratio_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    photometric: bool = True,
    ignore_index: int = IGNORE_INDEX,
    seed: int = 0,
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """
    Training and evaluation [`SegmentationDataset`]s of a source: the paper's augmentation for training
    (`build_train_transforms`; `train_scale` defaults to `(2048, crop)`), and fixed crop-size inputs for the metric
    monitored during training (`build_eval_transforms`).
    """
    train_transform = build_train_transforms(
        crop_size,
        image_mean,
        image_std,
        scale=train_scale,
        ratio_range=ratio_range,
        cat_max_ratio=cat_max_ratio,
        photometric=photometric,
        ignore_index=ignore_index,
    )
    eval_transform = build_eval_transforms(crop_size, image_mean, image_std, ignore_index)
    common = {
        "image_mean": image_mean,
        "image_std": image_std,
        "reduce_labels": source.reduce_labels,
        "num_labels": num_labels,
        "ignore_index": ignore_index,
        "seed": seed,
    }
    train = SegmentationDataset(source.splits["train"], train_transform, **common)
    evaluation = SegmentationDataset(source.splits["validation"], eval_transform, **common)
    return train, evaluation


__all__ = [
    "FOLDER_LAYOUTS",
    "DataSource",
    "FolderLayout",
    "SegmentationDataset",
    "build_segmentation_datasets",
    "collate_segmentation",
    "load_dataset_source",
    "load_folder_dataset",
    "load_hub_dataset",
    "open_folder_examples",
    "to_numpy_pair",
]
