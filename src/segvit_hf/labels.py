"""Class names and colour palettes for the datasets SegViT was trained on.

The label sets below follow the class order of mmsegmentation's (v0.24-era)
dataset definitions, which is the order the original SegViT checkpoints
predict in:

* ``ADE20K_CLASSES`` -- the 150 ADE20K / SceneParsing-150 classes, with the
  raw label 0 ("other") already removed (``reduce_zero_label=True``), so index
  0 is ``'wall'``.  mmsegmentation spells class 7 as ``'bed '`` (with a
  trailing space); it is given here without the space.
* ``COCO_STUFF_CLASSES`` -- the 171 COCO-Stuff classes (80 "thing" classes
  followed by 91 "stuff" classes).
* ``PASCAL_CONTEXT_59_CLASSES`` -- the 59 PASCAL-Context classes without
  background; ``PASCAL_CONTEXT_60_CLASSES`` prepends ``'background'``.
* ``ADE20K_PALETTE`` -- the standard 150-entry ADE20K RGB palette.

Helpers:

* :func:`id2label_for` builds an ``id2label`` mapping for a model config.
* :func:`default_palette` returns a colour palette for visualising a
  segmentation map with any number of labels.

Only the standard library is used.
"""

from __future__ import annotations

import colorsys
from typing import Dict, List, Tuple

__all__ = [
    "ADE20K_CLASSES",
    "ADE20K_PALETTE",
    "COCO_STUFF_CLASSES",
    "PASCAL_CONTEXT_59_CLASSES",
    "PASCAL_CONTEXT_60_CLASSES",
    "default_palette",
    "id2label_for",
]

ADE20K_CLASSES: Tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed",
    "windowpane", "grass", "cabinet", "sidewalk", "person", "earth", "door",
    "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp",
    "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill",
    "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel",
    "light", "truck", "tower", "chandelier", "awning", "streetlight",
    "booth", "television receiver", "airplane", "dirt track", "apparel",
    "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy",
    "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food",
    "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle",
    "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce",
    "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)

COCO_STUFF_CLASSES: Tuple[str, ...] = (
    # 80 thing classes
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train",
    "truck", "boat", "traffic light", "fire hydrant", "stop sign",
    "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
    # 91 stuff classes
    "banner", "blanket", "branch", "bridge", "building-other", "bush",
    "cabinet", "cage", "cardboard", "carpet", "ceiling-other",
    "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard",
    "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog",
    "food-other", "fruit", "furniture-other", "grass", "gravel",
    "ground-other", "hill", "house", "leaves", "light", "mat", "metal",
    "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform",
    "playingfield", "railing", "railroad", "river", "road", "rock", "roof",
    "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow",
    "solid-other", "stairs", "stone", "straw", "structural-other", "table",
    "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick",
    "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other",
    "wood",
)

PASCAL_CONTEXT_59_CLASSES: Tuple[str, ...] = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird",
    "boat", "book", "bottle", "building", "bus", "cabinet", "car", "cat",
    "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog",
    "door", "fence", "floor", "flower", "food", "grass", "ground", "horse",
    "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate",
    "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train",
    "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)

PASCAL_CONTEXT_60_CLASSES: Tuple[str, ...] = (
    ("background",) + PASCAL_CONTEXT_59_CLASSES
)

ADE20K_PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50),
    (4, 200, 3), (120, 120, 80), (140, 140, 140), (204, 5, 255),
    (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82),
    (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3),
    (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220),
    (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224),
    (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7),
    (255, 122, 8), (0, 255, 20), (255, 8, 41), (255, 5, 153),
    (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0),
    (255, 31, 0), (255, 224, 0), (153, 255, 0), (0, 0, 255),
    (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255),
    (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0),
    (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255),
    (173, 255, 0), (0, 255, 153), (255, 92, 0), (255, 0, 255),
    (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255),
    (255, 0, 204), (0, 255, 194), (0, 255, 82), (0, 10, 255),
    (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0),
    (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0),
    (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112),
    (92, 255, 0), (0, 224, 255), (112, 224, 255), (70, 184, 160),
    (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0),
    (255, 0, 235), (245, 0, 255), (255, 0, 122), (255, 245, 0),
    (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204),
    (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194),
    (102, 255, 0), (92, 0, 255),
)

# Canonical dataset name -> class tuple (without background).
_DATASET_CLASSES: Dict[str, Tuple[str, ...]] = {
    "ade20k": ADE20K_CLASSES,
    "cocostuff": COCO_STUFF_CLASSES,
    "pascal-context": PASCAL_CONTEXT_59_CLASSES,
}

# Accepted spellings -> canonical dataset name.
_DATASET_ALIASES: Dict[str, str] = {
    "ade20k": "ade20k",
    "cocostuff": "cocostuff",
    "coco-stuff": "cocostuff",
    "cocostuff10k": "cocostuff",
    "pascal-context": "pascal-context",
}

_GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def id2label_for(
    dataset: str, *, with_background: bool = False
) -> Dict[int, str]:
    """Return the ``{index: class name}`` mapping for a known dataset.

    Args:
        dataset: One of ``"ade20k"`` (150 classes), ``"cocostuff"`` (171
            classes; aliases ``"coco-stuff"`` and ``"cocostuff10k"``) or
            ``"pascal-context"`` (59 classes). Matching ignores case and
            surrounding whitespace.
        with_background: Only valid for ``"pascal-context"``; when true the
            60-class variant is returned, with ``0 -> "background"`` and the
            59 classes shifted to ``1..59``.

    Returns:
        A new dict mapping consecutive integer ids, starting at 0, to class
        names, suitable for a transformers config's ``id2label``.

    Raises:
        ValueError: If the dataset name is unknown, or ``with_background`` is
            requested for a dataset other than PASCAL-Context.
    """
    key = None
    if isinstance(dataset, str):
        key = _DATASET_ALIASES.get(dataset.strip().lower())
    if key is None:
        known = ", ".join(repr(name) for name in _DATASET_ALIASES)
        raise ValueError(
            f"Unknown dataset {dataset!r}; expected one of: {known}."
        )
    if with_background:
        if key != "pascal-context":
            raise ValueError(
                "with_background=True is only supported for 'pascal-context', "
                f"not {dataset!r}."
            )
        classes = PASCAL_CONTEXT_60_CLASSES
    else:
        classes = _DATASET_CLASSES[key]
    return dict(enumerate(classes))


def default_palette(num_labels: int) -> List[Tuple[int, int, int]]:
    """Return a deterministic list of ``num_labels`` RGB colours.

    For ``num_labels <= 150`` this is the first ``num_labels`` entries of
    :data:`ADE20K_PALETTE`. For larger label sets a palette of the requested
    length is generated by walking the hue circle in golden-ratio steps,
    cycling through a few saturation/brightness levels so that neighbouring
    ids get clearly different colours. The result depends only on
    ``num_labels``; every call returns the same colours.

    Args:
        num_labels: Number of colours wanted (must be >= 0).

    Returns:
        A new list of ``(R, G, B)`` tuples with components in ``0..255``.

    Raises:
        ValueError: If ``num_labels`` is negative.
    """
    num_labels = int(num_labels)
    if num_labels < 0:
        raise ValueError(f"num_labels must be non-negative, got {num_labels}.")
    if num_labels <= len(ADE20K_PALETTE):
        return list(ADE20K_PALETTE[:num_labels])

    saturations = (0.90, 0.65, 0.80)
    values = (0.95, 0.75, 0.60, 0.85)
    palette: List[Tuple[int, int, int]] = []
    for i in range(num_labels):
        hue = (i * _GOLDEN_RATIO_CONJUGATE) % 1.0
        s = saturations[i % len(saturations)]
        v = values[(i // len(saturations)) % len(values)]
        r, g, b = colorsys.hsv_to_rgb(hue, s, v)
        palette.append((round(r * 255), round(g * 255), round(b * 255)))
    return palette
