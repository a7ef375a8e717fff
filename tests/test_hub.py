"""Sharing checkpoints: code-carrying saves usable without segvit-hf, model cards, pushes (to a local stand-in of the
Hub, never the network) and the conversion of all released checkpoints."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard, metadata_load
from PIL import Image

import segvit_hf.hub as hub
from official_reference import make_random_official_shrunk_state_dict, make_random_official_state_dict
from segvit_hf import PRESETS, SegViTForSemanticSegmentation, SegViTImageProcessor
from segvit_hf.conversion_cli import main
from segvit_hf.hub import model_card, push_folder_to_hub, push_to_hub, save_pretrained_with_code
from segvit_hf.released import convert_released_checkpoints
from segvit_testing import tiny_config


def tiny_model() -> SegViTForSemanticSegmentation:
    config = tiny_config(id2label={0: "sky", 1: "road", 2: "car", 3: "tree", 4: "person"})
    return SegViTForSemanticSegmentation(config).eval()


CORE_FILES = {"configuration_segvit.py", "modeling_segvit.py", "image_processing_segvit.py"}


def tiny_processor():
    return SegViTImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})


class LocalHub:
    """Stands in for `huggingface_hub.HfApi`: repositories are folders under `root`, commits copy files there."""

    def __init__(self, root: Path):
        self.root = root
        self.commits = []

    def create_repo(self, repo_id, private=None, token=None, exist_ok=False, repo_type=None, **kwargs):
        path = self.root / repo_id
        if path.exists() and not exist_ok:
            raise FileExistsError(repo_id)
        path.mkdir(parents=True, exist_ok=True)
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, commit_message, **kwargs):
        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)
        self.commits.append((repo_id, commit_message, sorted(os.listdir(folder_path))))
        return SimpleNamespace(commit_message=commit_message)

    def create_commit(self, *, repo_id, operations, commit_message, **kwargs):
        for operation in operations:
            destination = self.root / repo_id / operation.path_in_repo
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(operation.path_or_fileobj, destination)
        self.commits.append((repo_id, commit_message, sorted(op.path_in_repo for op in operations)))
        return SimpleNamespace(commit_message=commit_message)


# --- code-carrying checkpoints ------------------------------------------------------------------------------------

REMOTE_CODE_CHECK = textwrap.dedent(
    """
    import importlib.abc
    import json
    import sys

    class BlockSegViTHF(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "segvit_hf" or name.startswith("segvit_hf."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, BlockSegViTHF())

    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline

    checkpoint, image_path, expected_path = sys.argv[1:4]
    model = AutoModelForSemanticSegmentation.from_pretrained(checkpoint, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    image = Image.open(image_path)
    expected = torch.load(expected_path, weights_only=True)
    with torch.no_grad():
        logits = model(**processor(images=image, return_tensors="pt")).masks_queries_logits
    segmenter = pipeline("image-segmentation", model=checkpoint, trust_remote_code=True)
    label_ids = {name: int(index) for index, name in model.config.id2label.items()}
    label_map = np.full((image.height, image.width), -1)
    for segment in segmenter(image):
        label_map[np.array(segment["mask"]) > 0] = label_ids[segment["label"]]
    print(json.dumps({
        "model_module": type(model).__module__,
        "processor_module": type(processor).__module__,
        "max_logit_difference": (logits - expected["logits"]).abs().max().item(),
        "pipeline_matches": bool((label_map == expected["label_map"].numpy()).all()),
        "segvit_hf_imported": any(name.startswith("segvit_hf") for name in sys.modules),
    }))
    """
)


def test_checkpoint_with_code_loads_in_a_fresh_process_without_segvit_hf(tmp_path):
    model, processor = tiny_model(), tiny_processor()
    copied = save_pretrained_with_code(model, tmp_path / "checkpoint", processor)
    # Exactly the three core files: they import nothing else of the package.
    assert {path.name for path in copied} == CORE_FILES
    assert {path.name for path in (tmp_path / "checkpoint").glob("*.py")} == CORE_FILES
    image = Image.fromarray((np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8))
    image.save(tmp_path / "image.png")
    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    label_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[(48, 80)])[0]
    torch.save({"logits": outputs.masks_queries_logits, "label_map": label_map}, tmp_path / "expected.pt")
    (tmp_path / "check.py").write_text(REMOTE_CODE_CHECK)

    environment = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, str(tmp_path / "check.py"), str(tmp_path / "checkpoint"), str(tmp_path / "image.png"),
         str(tmp_path / "expected.pt")],
        capture_output=True, text=True, env=environment, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["model_module"].startswith("transformers_modules.")
    assert report["processor_module"].startswith("transformers_modules.")
    assert not report["segvit_hf_imported"]
    assert report["max_logit_difference"] < 1e-5
    assert report["pipeline_matches"]


def test_save_with_code_writes_sources_and_auto_map_without_touching_the_model(tmp_path):
    model = tiny_model()
    copied = save_pretrained_with_code(model, tmp_path, tiny_processor())
    names = {path.name for path in copied}
    # The three class files, which import nothing else of the package.
    assert names == CORE_FILES
    assert all((tmp_path / name).is_file() for name in names)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_segvit.SegViTConfig",
        "AutoModel": "modeling_segvit.SegViTModel",
        "AutoModelForSemanticSegmentation": "modeling_segvit.SegViTForSemanticSegmentation",
        "AutoImageProcessor": "image_processing_segvit.SegViTImageProcessor",
    }
    # The processor is found through config.json only (see the next test for why).
    processor_config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert "auto_map" not in processor_config and "image_processor_type" not in processor_config
    assert getattr(model.config, "auto_map", None) is None
    reloaded = SegViTForSemanticSegmentation.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.decode_head.class_queries.weight, model.decode_head.class_queries.weight)


def test_with_segvit_hf_installed_the_pipeline_uses_local_code_without_asking(tmp_path, monkeypatch):
    """transformers asks before running a checkpoint's code (and waits for an answer); with the package installed
    nothing should be asked, nor should its pipeline go looking for a video processor in the checkpoint's code."""
    from transformers import AutoImageProcessor, pipeline

    save_pretrained_with_code(tiny_model(), tmp_path, tiny_processor())
    questions = []
    monkeypatch.setattr("builtins.input", lambda *args: questions.append(args) or "n")
    segmenter = pipeline("image-segmentation", model=str(tmp_path))
    assert questions == []
    assert type(segmenter.model).__module__ == "segvit_hf.modeling_segvit"
    assert type(segmenter.image_processor).__module__ == "segvit_hf.image_processing_segvit"
    assert type(AutoImageProcessor.from_pretrained(tmp_path)).__module__ == "segvit_hf.image_processing_segvit"
    segments = segmenter(Image.new("RGB", (80, 48)))
    assert all(segment["mask"].size == (80, 48) for segment in segments)


# --- model cards --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_model_card_of_each_preset_has_valid_metadata(tmp_path, preset):
    model_id = f"segvit-org/segvit-{preset}"
    card = model_card(tmp_path, preset=preset, model_id=model_id)
    reread = ModelCard.load(tmp_path / "README.md")
    assert metadata_load(tmp_path / "README.md") == card.data.to_dict()
    data = reread.data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "image-segmentation"
    assert data.license == "other" and data.license_link.endswith("/LICENSE")
    assert len(data.datasets) == 1
    assert {"segvit", "semantic-segmentation", "custom_code"} <= set(data.tags)
    assert data.model_name == model_id
    reported = {result.metric_name: result.metric_value for result in data.eval_results}
    assert reported == {
        "mIoU (single-scale, reported by the authors)": PRESETS[preset].reported_miou["ss"],
        "mIoU (multi-scale (0.5-1.75, flip), reported by the authors)": PRESETS[preset].reported_miou["ms"],
    }
    assert all(
        result.task_type == "image-segmentation" and result.metric_type == "mean_iou" for result in data.eval_results
    )
    text = reread.text
    assert f'pipeline("image-segmentation", model="{model_id}", trust_remote_code=True)' in text
    assert f"| {PRESETS[preset].paper_gflops} |" in text
    assert PRESETS[preset].official_checkpoint in text
    assert f"stride {PRESETS[preset].slide_stride}" in text
    assert "## Training recipe" in text and "@inproceedings{zhang2022segvit" in text
    assert ("Shrunk: query down-sampling (QD) at layer 8" in text) == (PRESETS[preset].shrink_index is not None)


def test_measured_metrics_are_kept_apart_from_reported_ones(tmp_path):
    model_card(tmp_path, preset="ade20k-vit-b", measured_miou={"ss": 51.27}, measured_with="segvit-hf, ADE20K val")
    eval_results = ModelCard.load(tmp_path / "README.md").data.eval_results
    results = {result.metric_name: result.metric_value for result in eval_results}
    assert results["mIoU (single-scale, measured with segvit-hf)"] == 51.27
    assert results["mIoU (single-scale, reported by the authors)"] == 51.3
    text = (tmp_path / "README.md").read_text()
    assert "| single-scale | 51.27 | measured (segvit-hf, ADE20K val) |" in text
    with pytest.raises(ValueError, match="'ss' and/or 'ms'"):
        model_card(preset="ade20k-vit-b", measured_miou={"miou": 50.0})
    with pytest.raises(ValueError, match="percentage"):
        model_card(preset="ade20k-vit-b", measured_miou={"ss": 0.51 * 1000})


def test_model_card_of_a_custom_model(tmp_path):
    model = tiny_model()
    card = model_card(tmp_path, config=model.config, dataset="my-org/streets", license="apache-2.0",
                      base_model="google/vit-base-patch16-384", measured_miou={"ss": 40.0})
    data = ModelCard.load(tmp_path / "README.md").data
    assert data.license == "apache-2.0" and data.base_model == "google/vit-base-patch16-384"
    assert data.datasets == ["my-org/streets"]
    assert [result.metric_name for result in data.eval_results] == ["mIoU (single-scale, measured with segvit-hf)"]
    assert "reported" not in card.text.split("## Evaluation")[1].split("##")[0]
    assert f"| Parameters | {model.num_parameters() / 1e6:.1f} M |" in card.text
    with pytest.raises(ValueError, match="preset"):
        model_card()


# --- pushing ------------------------------------------------------------------------------------------------------


def test_push_to_hub_uploads_a_loadable_checkpoint_in_one_commit(tmp_path):
    local_hub = LocalHub(tmp_path / "hub")
    model = tiny_model()
    push_to_hub("me/segvit-tiny", model, tiny_processor(), api=local_hub)
    assert len(local_hub.commits) == 1
    repo = tmp_path / "hub" / "me" / "segvit-tiny"
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "modeling_segvit.py"} <= set(
        os.listdir(repo)
    )
    assert ModelCard.load(repo / "README.md").data.pipeline_tag == "image-segmentation"
    assert 'model="me/segvit-tiny"' in (repo / "README.md").read_text()
    reloaded = SegViTForSemanticSegmentation.from_pretrained(repo).eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values).masks_queries_logits, model(pixel_values).masks_queries_logits)
    assert SegViTImageProcessor.from_pretrained(repo).size == tiny_processor().size

    with pytest.raises(FileNotFoundError, match="config.json"):
        push_folder_to_hub(tmp_path / "hub", "me/nothing", api=local_hub)


def test_transformers_push_to_hub_works_for_model_and_processor(tmp_path, monkeypatch):
    import transformers.utils.hub as transformers_hub

    local_hub = LocalHub(tmp_path / "hub")
    monkeypatch.setattr(transformers_hub, "hf_api", lambda: local_hub)

    def no_remote_card(*args, **kwargs):
        raise transformers_hub.EntryNotFoundError("no README.md in the stand-in")

    monkeypatch.setattr(transformers_hub.ModelCard, "load", no_remote_card)
    model, processor = tiny_model(), tiny_processor()
    model.push_to_hub("me/tiny")
    processor.push_to_hub("me/tiny")
    repo = tmp_path / "hub" / "me" / "tiny"
    reloaded = SegViTForSemanticSegmentation.from_pretrained(repo)
    torch.testing.assert_close(reloaded.segvit.layers[0].mlp.fc1.weight, model.segvit.layers[0].mlp.fc1.weight)
    assert SegViTImageProcessor.from_pretrained(repo).to_dict()["size"] == processor.to_dict()["size"]
    assert [commit[0] for commit in local_hub.commits] == ["me/tiny", "me/tiny"]


# --- converting every released checkpoint -------------------------------------------------------------------------

# Released-file shapes at a tiny width: the presets fix depth, heads, crop and feature layers.
_TINY_WIDTHS = {"vit-b": dict(hidden_size=48, decoder_dim=24), "vit-l": dict(hidden_size=32, decoder_dim=32)}


def write_released_checkpoint(directory: Path, preset_name: str, num_classes: int | None = None, seed: int = 0) -> None:
    preset = PRESETS[preset_name]
    encoder = preset.encoder
    widths = _TINY_WIDTHS["vit-b" if encoder["hidden_size"] == 768 else "vit-l"]
    arguments = dict(
        hidden_size=widths["hidden_size"],
        num_layers=encoder["num_hidden_layers"],
        num_heads=encoder["num_attention_heads"],
        decoder_dim=widths["decoder_dim"],
        decoder_num_heads=preset.decoder_num_attention_heads,
        num_classes=num_classes or {"ade20k": 150, "cocostuff": 171, "pascal-context": 59}[preset.dataset],
        crop=preset.crop_size,
        seed=seed,
        with_loss_buffer=True,
    )
    if preset.shrink_index is None:
        state_dict = make_random_official_state_dict(**arguments, num_stages=len(preset.out_indices))
    else:
        state_dict = make_random_official_shrunk_state_dict(**arguments)
    torch.save({"meta": {"iter": 80000}, "state_dict": state_dict}, directory / preset.official_checkpoint)


def test_all_released_checkpoints_convert_with_processor_card_and_code(tmp_path, capsys, monkeypatch):
    source = tmp_path / "release"
    source.mkdir()
    for name in PRESETS:
        # The released PASCAL-Context files are named "59cls"; the class count is read from the tensors anyway.
        write_released_checkpoint(source, name, num_classes=60 if name == "pascal-context-vit-l" else None)
    local_hub = LocalHub(tmp_path / "hub")
    monkeypatch.setattr(hub, "HfApi", lambda token=None: local_hub)

    main(["--all", str(source), str(tmp_path / "converted"), "--push-to-hub", "segvit-org"])
    printed = capsys.readouterr().out
    assert printed.count("classes ->") == 7

    for name, preset in PRESETS.items():
        directory = tmp_path / "converted" / f"segvit-{name}"
        config = json.loads((directory / "config.json").read_text())
        assert config["auto_map"]["AutoModelForSemanticSegmentation"] == "modeling_segvit.SegViTForSemanticSegmentation"
        assert config["encoder_config"]["image_size"] == preset.crop_size
        assert config["shrink_index"] == preset.shrink_index
        processor = json.loads((directory / "preprocessor_config.json").read_text())
        assert processor["image_mean"] == list(preset.image_mean) and processor["image_std"] == list(preset.image_std)
        card = ModelCard.load(directory / "README.md")
        assert card.data.model_name == f"segvit-org/segvit-{name}"
        assert (tmp_path / "hub" / "segvit-org" / f"segvit-{name}" / "model.safetensors").is_file()

    pascal = json.loads((tmp_path / "converted" / "segvit-pascal-context-vit-l" / "config.json").read_text())
    assert len(pascal["id2label"]) == 60 and pascal["id2label"]["0"] == "background"
    assert "PC59cls_64.1.pth: pascal-context-vit-l, 60 classes" in printed
    pascal_processor = json.loads(
        (tmp_path / "converted" / "segvit-pascal-context-vit-l" / "preprocessor_config.json").read_text()
    )
    assert pascal_processor["do_reduce_labels"] is False
    shrunk = json.loads((tmp_path / "converted" / "segvit-pascal-context-vit-l-shrunk" / "config.json").read_text())
    assert len(shrunk["id2label"]) == 59
    assert len(local_hub.commits) == 7


def test_all_reports_each_file_and_goes_on(tmp_path, capsys):
    source = tmp_path / "release"
    source.mkdir()
    write_released_checkpoint(source, "ade20k-vit-b")
    write_released_checkpoint(source, "cocostuff10k-vit-l-shrunk")
    (source / "COCOstuff_49.9.pth").write_bytes(b"not a checkpoint")
    results = {result.file_name: result for result in convert_released_checkpoints(source, tmp_path / "out")}
    assert results["ade_51.3.pth"].status == "converted" and results["ade_51.3.pth"].num_labels == 150
    assert results["COCOstuff10k_shrunk_49.1.pth"].status == "converted"
    assert results["COCOstuff_49.9.pth"].status == "failed"
    assert "CheckpointConversionError" in results["COCOstuff_49.9.pth"].message
    assert results["ade_54.6.pth"].status == "missing"
    printed = capsys.readouterr().out
    assert "COCOstuff_49.9.pth: FAILED" in printed and "ade_54.6.pth: missing" in printed
    assert (tmp_path / "out" / "segvit-ade20k-vit-b" / "README.md").is_file()
    # A failed file fails the command (after the others were converted).
    assert main(["--all", str(source), str(tmp_path / "out2")]) == 1
    assert (tmp_path / "out2" / "segvit-ade20k-vit-b" / "model.safetensors").is_file()


def test_all_command_line_errors(tmp_path):
    with pytest.raises(SystemExit):
        main(["--all", str(tmp_path), str(tmp_path / "out"), "--preset", "ade20k-vit-b"])
    with pytest.raises(SystemExit):
        main([str(tmp_path / "x.pth"), str(tmp_path / "out"), "--push-to-hub", "org"])
    with pytest.raises(FileNotFoundError, match="not a directory"):
        convert_released_checkpoints(tmp_path / "absent", tmp_path / "out")
    with pytest.raises(SystemExit):
        main(["--all", str(tmp_path / "absent"), str(tmp_path / "out")])
    assert main(["--all", str(tmp_path), str(tmp_path / "out")]) == 1  # nothing to convert
