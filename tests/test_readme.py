"""The README's three-line inference runs as written, and its demo figures are those of the recorded demo run."""

import json
import re
import runpy
from pathlib import Path

import numpy as np
from PIL import Image

from segvit_hf import SegViTImageProcessor, SegViTForSemanticSegmentation
from segvit_testing import tiny_config

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def test_three_line_inference(tmp_path):
    section = README.read_text().split("## Three lines of inference", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(snippet.strip().splitlines()) == 3

    SegViTForSemanticSegmentation(tiny_config()).save_pretrained(tmp_path)
    SegViTImageProcessor(size={"shortest_edge": 64}).save_pretrained(tmp_path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    namespace = {"CKPT": str(tmp_path), "image": image}
    exec(snippet, namespace)
    label_map = namespace["label_map"]
    assert tuple(label_map.shape) == (90, 120)
    assert int(label_map.max()) < 5


def test_the_demo_table_is_the_recorded_make_demo_run():
    # `make demo` writes benchmarks/results/demo.json; the README's figures must be that file's, with the defaults.
    demo = runpy.run_path(str(REPO / "examples" / "demo.py"))
    report = json.loads((REPO / "benchmarks" / "results" / "demo.json").read_text())
    defaults = vars(demo["parse_args"]([]))
    assert report["settings"] == {name: defaults[name] for name in demo["RECORDED_SETTINGS"]}
    readme = README.read_text()
    assert demo["readme_table"](report) in readme
    slide, whole = 100 * report["slide"]["mean_iou"], 100 * report["whole"]["mean_iou"]
    assert f"**validation mIoU {slide:.1f}**" in readme
    assert f"{whole:.1f} whole-image" in readme
