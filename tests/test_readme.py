"""The README's three-line inference runs as written."""

import re
from pathlib import Path

import numpy as np
from PIL import Image

from segvit_hf import SegViTImageProcessor, SegViTForSemanticSegmentation
from test_modeling_segvit import SegViTModelTester

README = Path(__file__).resolve().parents[1] / "README.md"


def test_three_line_inference(tmp_path):
    section = README.read_text().split("## Three lines of inference", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(snippet.strip().splitlines()) == 3

    SegViTForSemanticSegmentation(SegViTModelTester().get_config()).save_pretrained(tmp_path)
    SegViTImageProcessor(size={"shortest_edge": 64}).save_pretrained(tmp_path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    namespace = {"CKPT": str(tmp_path), "image": image}
    exec(snippet, namespace)
    label_map = namespace["label_map"]
    assert tuple(label_map.shape) == (90, 120)
    assert int(label_map.max()) < 5
