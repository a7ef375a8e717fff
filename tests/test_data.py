"""The three data sources, the dataset wrapper and collation."""

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from segvit_hf.data import (
    SegmentationDataset,
    collate_segmentation,
    load_dataset_source,
    load_folder_dataset,
    load_hub_dataset,
    to_numpy_pair,
)
from segvit_hf.image_processing_segvit import reduce_labels as reduce_label_map
from segvit_hf.toy import TOY_ID2LABEL, load_toy_dataset, make_toy_sample
from segvit_hf.transforms import build_train_transforms

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def raw_ade_pair(seed, height=24, width=32):
    """An RGB image and an ADE20K-style raw label map (0 = other, classes 1..3)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label = rng.integers(0, 4, (height, width)).astype(np.uint8)
    return Image.fromarray(image), Image.fromarray(label, mode="L")


def write_ade_folder(root, num_train=3, num_validation=2):
    for split, folder, count in (("train", "training", num_train), ("validation", "validation", num_validation)):
        (root / "images" / folder).mkdir(parents=True)
        (root / "annotations" / folder).mkdir(parents=True)
        for i in range(count):
            image, label = raw_ade_pair(hash((split, i)) % 1000)
            name = f"ADE_{split}_{i:08d}"
            image.save(root / "images" / folder / f"{name}.jpg")
            label.save(root / "annotations" / folder / f"{name}.png")


# ---------------------------------------------------------------- toy data set


def test_toy_samples_are_deterministic_and_varied():
    image, label = make_toy_sample(3, seed=0)
    again_image, again_label = make_toy_sample(3, seed=0)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(again_image))
    np.testing.assert_array_equal(np.asarray(label), np.asarray(again_label))
    other_image, _ = make_toy_sample(3, seed=1)
    assert not np.array_equal(np.asarray(image), np.asarray(other_image))

    sizes, classes = set(), set()
    for index in range(24):
        image, label = make_toy_sample(index)
        assert image.mode == "RGB" and label.mode == "L"
        assert image.size == label.size
        sizes.add(image.size)
        values = set(np.unique(np.asarray(label)).tolist())
        assert values <= set(TOY_ID2LABEL) | {255}
        classes |= values
    assert len(sizes) > 10 and any(w != h for w, h in sizes)  # varied, non-square
    assert classes == set(TOY_ID2LABEL) | {255}  # every class and the ignored disc rims appear


def test_toy_dataset_splits():
    splits = load_toy_dataset(num_train=4, num_validation=3, seed=0)
    assert set(splits) == {"train", "validation"}
    assert len(splits["train"]) == 4 and len(splits["validation"]) == 3
    assert splits["train"].column_names == ["image", "label"]
    example = splits["validation"][0]
    # Validation scenes continue the index sequence after the training ones: no overlap.
    np.testing.assert_array_equal(np.asarray(example["image"]), np.asarray(make_toy_sample(4)[0]))
    with pytest.raises(ValueError, match="at least one image"):
        load_toy_dataset(num_train=0)


# ---------------------------------------------------------------- Hub-style data sets


def scene_parse_like(num_train=3, num_validation=2):
    """A local `datasets.DatasetDict` shaped like `scene_parse_150` (image, annotation, scene_category)."""
    features = datasets.Features(
        {"image": datasets.Image(), "annotation": datasets.Image(), "scene_category": datasets.Value("int64")}
    )
    splits = {}
    for split, count in (("train", num_train), ("validation", num_validation)):
        pairs = [raw_ade_pair(i + (100 if split == "validation" else 0)) for i in range(count)]
        splits[split] = datasets.Dataset.from_dict(
            {"image": [p[0] for p in pairs], "annotation": [p[1] for p in pairs], "scene_category": [0] * count},
            features=features,
        )
    return datasets.DatasetDict(splits)


def test_hub_dataset_columns_are_normalised():
    source = scene_parse_like()
    splits = load_hub_dataset(source, image_column="image", label_column="annotation")
    assert splits["train"].column_names == ["image", "label"]
    assert len(splits["validation"]) == 2
    np.testing.assert_array_equal(np.asarray(splits["train"][1]["label"]), np.asarray(source["train"][1]["annotation"]))


def test_hub_dataset_errors_name_what_is_missing():
    with pytest.raises(ValueError, match="annotation"):
        load_hub_dataset(scene_parse_like(), label_column="segmentation_map")
    with pytest.raises(ValueError, match="Split 'val'"):
        load_hub_dataset(scene_parse_like(), validation_split="val")
    with pytest.raises(TypeError, match="DatasetDict"):
        load_hub_dataset([1, 2, 3])


def test_hub_dataset_through_segmentation_dataset_reduces_labels():
    splits = load_hub_dataset(scene_parse_like())
    dataset = SegmentationDataset(splits["train"], image_mean=MEAN, image_std=STD, reduce_labels=True, num_labels=3)
    item = dataset[0]
    raw = np.asarray(splits["train"][0]["label"]).astype(np.int64)
    expected = np.where(raw == 0, 255, raw - 1)
    np.testing.assert_array_equal(item["labels"].numpy(), expected)
    assert item["pixel_values"].shape == (3, 24, 32) and item["pixel_values"].dtype == torch.float32
    image = np.asarray(splits["train"][0]["image"]).astype(np.float32)
    torch.testing.assert_close(item["pixel_values"], torch.from_numpy((image / 255 - 0.5) / 0.5).permute(2, 0, 1))


def test_raw_labels_without_reduction_are_rejected():
    splits = load_hub_dataset(scene_parse_like())
    dataset = SegmentationDataset(splits["train"], num_labels=3, reduce_labels=False)
    with pytest.raises(ValueError, match="reduce_labels=True"):
        dataset[0]


# ---------------------------------------------------------------- local folders


def test_ade20k_folder(tmp_path):
    write_ade_folder(tmp_path)
    splits = load_folder_dataset(tmp_path, layout="ade20k")
    assert len(splits["train"]) == 3 and len(splits["validation"]) == 2
    example = splits["validation"][1]
    expected = Image.open(tmp_path / "annotations" / "validation" / "ADE_validation_00000001.png")
    np.testing.assert_array_equal(np.asarray(example["label"]), np.asarray(expected))
    assert example["image"].size == (32, 24)

    source = load_dataset_source(str(tmp_path))
    assert source.reduce_labels and source.id2label is None


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_folder_dataset(tmp_path / "missing")
    write_ade_folder(tmp_path)
    (tmp_path / "annotations" / "training" / "ADE_train_00000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="no label map"):
        load_folder_dataset(tmp_path)
    with pytest.raises(ValueError, match="Unknown folder layout"):
        load_folder_dataset(tmp_path, layout="cityscapes")


def test_folder_errors_name_the_file(tmp_path):
    write_ade_folder(tmp_path)
    image_path = tmp_path / "images" / "training" / "ADE_train_00000001.jpg"
    data = image_path.read_bytes()
    image_path.write_bytes(data[: len(data) // 2])  # a corrupt JPEG: its header reads, its pixels do not
    label_path = tmp_path / "annotations" / "validation" / "ADE_validation_00000000.png"
    Image.fromarray(np.zeros((24, 31), np.uint8)).save(label_path)  # the image is 32 pixels wide
    splits = load_folder_dataset(tmp_path)
    with pytest.raises(OSError, match=f"Cannot read {image_path}: "):
        splits["train"][1]
    with pytest.raises(ValueError, match=f"The label map {label_path} is 31x24 pixels but its image .*is 32x24"):
        splits["validation"][0]
    # Through the training data set, the error still names the file.
    dataset = SegmentationDataset(splits["train"], reduce_labels=True)
    assert dataset[0]["labels"].shape == (24, 32)
    with pytest.raises(OSError, match="ADE_train_00000001.jpg"):
        dataset[1]
    assert [example["image"].size for example in splits["train"].select([0, 2])] == [(32, 24), (32, 24)]


def test_pascal_context_folder_uses_split_lists(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "SegmentationClassContext").mkdir()
    (tmp_path / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    for i, stem in enumerate(["2008_000001", "2008_000002", "2008_000003"]):
        image, label = raw_ade_pair(i)
        image.save(tmp_path / "JPEGImages" / f"{stem}.jpg")
        label.save(tmp_path / "SegmentationClassContext" / f"{stem}.png")
    (tmp_path / "ImageSets" / "SegmentationContext" / "train.txt").write_text("2008_000001\n2008_000003\n")
    (tmp_path / "ImageSets" / "SegmentationContext" / "val.txt").write_text("2008_000002\n")
    splits = load_folder_dataset(tmp_path, layout="pascal-context")
    assert len(splits["train"]) == 2 and len(splits["validation"]) == 1


# ---------------------------------------------------------------- dataset wrapper and collation


def test_augmentation_is_reproducible_per_epoch_and_index():
    splits = load_toy_dataset(num_train=2, num_validation=1)
    transform = build_train_transforms(32, MEAN, STD, scale=(128, 32))
    dataset = SegmentationDataset(splits["train"], transform, MEAN, STD, num_labels=6, seed=5)
    first = dataset[1]
    again = SegmentationDataset(splits["train"], transform, MEAN, STD, num_labels=6, seed=5)[1]
    torch.testing.assert_close(first["pixel_values"], again["pixel_values"])
    assert torch.equal(first["labels"], again["labels"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1]["pixel_values"], first["pixel_values"])
    assert first["pixel_values"].shape == (3, 32, 32) and first["labels"].shape == (32, 32)


def test_collate_pads_images_with_zero_and_labels_with_ignore():
    examples = [
        {"pixel_values": torch.ones(3, 4, 6), "labels": torch.zeros(4, 6, dtype=torch.long)},
        {"pixel_values": torch.ones(3, 5, 3), "labels": torch.ones(5, 3, dtype=torch.long)},
    ]
    batch = collate_segmentation(examples)
    assert batch["pixel_values"].shape == (2, 3, 5, 6) and batch["labels"].shape == (2, 5, 6)
    assert (batch["pixel_values"][0, :, 4:] == 0).all() and (batch["labels"][0, 4:] == 255).all()
    assert (batch["pixel_values"][1, :, :, 3:] == 0).all() and (batch["labels"][1, :, 3:] == 255).all()
    assert (batch["labels"][1, :, :3] == 1).all()
    padded = collate_segmentation(examples, size_divisor=8)
    assert padded["labels"].shape == (2, 8, 8)
    with pytest.raises(ValueError, match="empty"):
        collate_segmentation([])


def test_reduce_label_map():
    raw = np.array([[0, 1, 2], [150, 255, 3]])
    np.testing.assert_array_equal(reduce_label_map(raw), [[255, 0, 1], [149, 255, 2]])


def test_rgb_label_maps_are_rejected():
    split = [{"image": Image.new("RGB", (4, 4)), "label": Image.new("RGB", (4, 4))}]
    with pytest.raises(ValueError, match="single-channel"):
        SegmentationDataset(split)[0]
    split = [{"image": Image.new("RGB", (4, 5)), "label": np.zeros((5, 4, 3), np.uint8)}]
    with pytest.raises(ValueError, match=r"shape \(5, 4, 3\): turn a colour-coded map into class ids first"):
        SegmentationDataset(split)[0]


def test_sixteen_bit_images_are_scaled_to_eight_bits():
    gradient = np.linspace(0, 65535, 4 * 5).reshape(4, 5).astype(np.uint16)
    image, _ = to_numpy_pair(Image.fromarray(gradient), np.zeros((4, 5), np.uint8))
    np.testing.assert_array_equal(image[..., 0], np.round(gradient / 257).astype(np.uint8))
