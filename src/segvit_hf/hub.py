"""Sharing SegViT checkpoints on the Hugging Face Hub.

- [`save_pretrained_with_code`] writes a checkpoint that people who do not install `segvit-hf` can load: the
  modeling, configuration and image-processing source files are copied next to the weights and registered in
  `auto_map`, so `AutoModelForSemanticSegmentation.from_pretrained(path, trust_remote_code=True)` and
  `pipeline("image-segmentation", model=path, trust_remote_code=True)` work with transformers alone.
- [`model_card`] writes the README.md: Hub metadata (library, pipeline tag, license, datasets, tags and a
  `model-index` with the mIoU), intended use, usage, architecture, evaluation protocol, training recipe and citation.
  Figures from the paper (kept with the presets, `segvit_hf.presets`) are marked as reported, figures measured with
  this package as measured.
- [`push_to_hub`] and [`push_folder_to_hub`] upload such a checkpoint in one commit.
- [`download_hub_file`] fetches one file through huggingface_hub and says plainly when it is neither in the local
  cache nor reachable (offline mode, no connection).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants, hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError

from .configuration_segvit import SegViTConfig, as_pair
from .presets import get_preset

PAPER_URL = "https://arxiv.org/abs/2210.05844"
OFFICIAL_CODE_URL = "https://github.com/zbwxp/SegVit"
OFFICIAL_LICENSE_URL = "https://github.com/zbwxp/SegVit/blob/master/LICENSE"

CITATION = """@inproceedings{zhang2022segvit,
  title     = {SegViT: Semantic Segmentation with Plain Vision Transformers},
  author    = {Zhang, Bowen and Tian, Zhi and Tang, Quan and Chu, Xiangxiang and Wei, Xiaolin and
               Shen, Chunhua and Liu, Yifan},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2022}
}"""

_SCALE_NAMES = {"ss": "single-scale", "ms": "multi-scale (0.5-1.75, flip)"}


@dataclass(frozen=True)
class _DatasetCard:
    hub_id: str
    name: str
    split: str


# Hub dataset identifiers (ADE20K's SceneParsing-150 is `scene_parse_150` on the Hub) and evaluation splits.
_DATASET_CARDS = {
    "ade20k": _DatasetCard("scene_parse_150", "ADE20K", "validation"),
    "cocostuff": _DatasetCard("cocostuff10k", "COCO-Stuff-10K", "test"),
    "pascal-context": _DatasetCard("pascal_context", "PASCAL-Context", "validation"),
}


class HubUnreachableError(OSError):
    """A file is not in the local cache and cannot be downloaded: offline mode is on, or the Hub cannot be reached."""


def download_hub_file(repo_id: str, filename: str, **hub_kwargs: Any) -> str:
    """
    `huggingface_hub.hf_hub_download(repo_id, filename, **hub_kwargs)`: the local path of the file, from the cache or
    downloaded (`revision`, `cache_dir`, `token`, `local_files_only`, ... are passed on).

    Raises:
        HubUnreachableError: the file is not cached and cannot be fetched. huggingface_hub reports this as a
            `LocalEntryNotFoundError`, which is also an `EntryNotFoundError` ("the repository has no such file"):
            this tells the two apart.
        huggingface_hub's own errors otherwise (`EntryNotFoundError`, `RepositoryNotFoundError`, ...).
    """
    try:
        return hf_hub_download(repo_id, filename, **hub_kwargs)
    except LocalEntryNotFoundError as error:
        if constants.HF_HUB_OFFLINE:
            why = "offline mode is on (HF_HUB_OFFLINE)"
        elif hub_kwargs.get("local_files_only"):
            why = "local_files_only=True"
        else:
            why = "the Hub cannot be reached"
        raise HubUnreachableError(
            f"{filename} of {repo_id!r} is not in the local Hugging Face cache and {why}: connect to the Hub once to "
            "download it, or use a local directory."
        ) from error


def _module_file(cls: type) -> Path:
    module = sys.modules[cls.__module__]
    if getattr(module, "__file__", None) is None:
        raise ValueError(f"{cls.__name__} is not defined in a source file, so its code cannot be saved.")
    return Path(module.__file__)


def _class_reference(cls: type, public_name: str | None = None) -> str:
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{public_name or cls.__name__}"


def _update_json(path: Path, auto_map: dict[str, str]) -> None:
    content = json.loads(path.read_text(encoding="utf-8"))
    content["auto_map"] = {**content.get("auto_map", {}), **auto_map}
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_pretrained_with_code(
    model,
    save_directory: str | os.PathLike,
    image_processor=None,
    **save_kwargs: Any,
) -> list[Path]:
    """
    Saves `model` (and `image_processor`) with the SegViT source code, so that the directory loads with
    transformers alone (`trust_remote_code=True`), without `segvit-hf` installed.

    The files defining the configuration, model and image-processor classes are copied, with every file they import
    relatively (found the way transformers resolves them when loading), and `auto_map` entries for `AutoConfig`,
    `AutoModel`, `AutoModelForSemanticSegmentation` and `AutoImageProcessor` are added to `config.json`. The model
    and processor objects are not modified.

    Args:
        model: a `SegViTForSemanticSegmentation` (or `SegViTModel`).
        save_directory: where to write; created if needed.
        image_processor (*optional*): a `SegViTImageProcessor`, saved as `preprocessor_config.json`.
        save_kwargs: passed to `model.save_pretrained` (e.g. `max_shard_size`).

    Returns:
        The copied source files.
    """
    from transformers.dynamic_module_utils import get_relative_import_files

    save_directory = Path(save_directory)
    model.save_pretrained(save_directory, **save_kwargs)

    model_module = sys.modules[type(model).__module__]
    base_model_class = getattr(model_module, "SegViTModel", type(model))
    head_class = getattr(model_module, "SegViTForSemanticSegmentation", type(model))
    auto_map = {
        "AutoConfig": _class_reference(type(model.config)),
        "AutoModel": _class_reference(base_model_class),
        "AutoModelForSemanticSegmentation": _class_reference(head_class),
    }
    sources = {_module_file(cls) for cls in (type(model.config), base_model_class, head_class)}
    if image_processor is not None:
        image_processor.save_pretrained(save_directory)
        processor_module = sys.modules[type(image_processor).__module__]
        # The module's public name picks the torchvision or the PIL backend on the loading side.
        public = "SegViTImageProcessor" if hasattr(processor_module, "SegViTImageProcessor") else None
        auto_map["AutoImageProcessor"] = _class_reference(type(image_processor), public)
        # The processor is found through config.json's auto_map only. transformers' pipelines also probe for a video
        # processor and derive one ("...VideoProcessor") from an image-processor class name or auto_map found in
        # preprocessor_config.json; that probe would ask users who have segvit-hf installed whether to run remote
        # code (and wait for an answer) for a class that does not exist.
        processor_config_path = save_directory / "preprocessor_config.json"
        processor_config = json.loads(processor_config_path.read_text(encoding="utf-8"))
        processor_config.pop("image_processor_type", None)
        processor_config.pop("auto_map", None)
        processor_config_path.write_text(
            json.dumps(processor_config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        sources.add(_module_file(type(image_processor)))
    for source in list(sources):
        sources.update(Path(path) for path in get_relative_import_files(str(source)))
    _update_json(save_directory / "config.json", auto_map)

    copied = []
    for source in sorted(sources):
        destination = save_directory / source.name
        shutil.copyfile(source, destination)
        copied.append(destination)
    return copied


def _count_parameters(config: SegViTConfig) -> int:
    """Parameters of the model `config` describes, counted without allocating its weights."""
    import torch

    from .modeling_segvit import SegViTForSemanticSegmentation

    with torch.device("meta"):
        model = SegViTForSemanticSegmentation(config)
    return sum(parameter.numel() for parameter in model.parameters())


def _architecture_table(config: SegViTConfig, preset, num_parameters: int | None) -> str:
    encoder = config.encoder_config
    crop = as_pair(encoder.image_size)
    sizes = {768: "ViT-B/16", 1024: "ViT-L/16"}
    backbone = sizes.get(encoder.hidden_size, "ViT") if as_pair(encoder.patch_size)[0] == 16 else "ViT"
    rows = [
        ("Backbone", f"{backbone}: {encoder.num_hidden_layers} layers, width {encoder.hidden_size}, "
                     f"{encoder.num_attention_heads} heads, patch {encoder.patch_size}"),
        ("Features used (0-based layers)", ", ".join(map(str, config.out_indices))),
        ("ATM decoder", f"width {config.decoder_hidden_size}, {config.decoder_num_attention_heads} heads, "
                        f"{config.decoder_layers_per_stage} layers per stage"),
        ("Classes", str(config.num_labels)),
        ("Training crop", f"{crop[0]} x {crop[1]}"),
    ]
    if config.query_upsampling:
        structure = "query up-sampling (QU) over the two features, then one ATM stage"
    else:
        structure = f"cascade of {config.num_stages} ATM stage(s), deepest feature first"
    if config.shrink_index is not None:
        structure = f"Shrunk: query down-sampling (QD) at layer {config.shrink_index}; {structure}"
    rows.insert(2, ("Structure", structure))
    if num_parameters is not None:
        rows.append(("Parameters", f"{num_parameters / 1e6:.1f} M"))
    if preset is not None:
        rows.append(("GFLOPs (paper, fvcore, single scale at the crop)", f"{preset.paper_gflops}"))
    return "| | |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)


def _training_recipe(preset) -> str:
    dataset = _DATASET_CARDS[preset.dataset]
    schedule = preset.training_schedule
    large = preset.encoder["hidden_size"] == 1024
    weights = (
        "ImageNet-21k AugReg ViT-L/16 (384), the \"jax\" weights" if large else "ImageNet-21k ViT-B/16 (384)"
    )
    normalisation = "[-1, 1] (mean = std = 127.5)" if large else "ImageNet mean and standard deviation"
    learning_rate = f"{preset.learning_rate:.0e}".replace("e-0", "e-")  # 2e-5, as the official configuration
    return "\n".join([
        f"- Encoder initialised from {weights}; ATM decoder from scratch.",
        f"- {dataset.name} train split, {schedule.iterations // 1000}k iterations at batch size 16, "
        f"{preset.crop_size} x {preset.crop_size} crops.",
        "- Augmentation: random rescale (ratio 0.5-2.0), random crop with no class above 75% of the crop, "
        "horizontal flip, photometric distortion; images normalised to " + normalisation + ".",
        f"- AdamW, learning rate {learning_rate} (x10 for the decoder), betas (0.9, 0.999), weight "
        f"decay {schedule.weight_decay} (none on norms); polynomial decay (power {schedule.poly_power}) after 1500 "
        "linear warm-up iterations; gradient clipping at 35.",
        f"- Stochastic depth {preset.drop_path_rate}; ATM loss: cross-entropy (no-object weight 0.1) + 20 x focal "
        "+ 1 x dice, summed over stages.",
    ])


def _eval_results(preset, dataset: _DatasetCard | None, measured: Mapping[str, float]) -> list[EvalResult]:
    """
    One model-index metric per figure. The model-index keeps one `source` per task and dataset (huggingface_hub
    merges results on re-saving), so provenance lives in each metric's name: reported by the authors, or measured.
    """
    if dataset is None:
        return []
    common = dict(
        task_type="image-segmentation",
        task_name="Semantic Segmentation",
        dataset_type=dataset.hub_id,
        dataset_name=dataset.name,
        dataset_split=dataset.split,
        metric_type="mean_iou",
    )
    results = [
        EvalResult(**common, metric_value=value, metric_name=f"mIoU ({_SCALE_NAMES[scale]}, reported by the authors)")
        for scale, value in (preset.reported_miou if preset is not None else {}).items()
    ]
    results += [
        EvalResult(
            **common, metric_value=float(value), metric_name=f"mIoU ({_SCALE_NAMES[scale]}, measured with segvit-hf)"
        )
        for scale, value in measured.items()
    ]
    return results


def _evaluation_section(preset, dataset, measured, measured_with) -> str:
    reported = preset.reported_miou if preset is not None else {}
    if not reported and not measured:
        return "No evaluation results yet."
    lines = ["| Protocol | mIoU (%) | Source |", "|---|---|---|"]
    for scale, value in reported.items():
        sources = f"[paper]({PAPER_URL}), [official release]({OFFICIAL_CODE_URL})"
        lines.append(f"| {_SCALE_NAMES[scale]} | {value} | reported ({sources}) |")
    for scale, value in measured.items():
        how = f" ({measured_with})" if measured_with else ""
        lines.append(f"| {_SCALE_NAMES[scale]} | {float(value):.2f} | measured{how} |")
    if dataset is not None:
        lines.append("")
        lines.append(f"Evaluated on {dataset.name} ({dataset.split} split), mIoU from a dataset-wide confusion matrix.")
    if preset is not None:
        lines.append(
            f"Sliding-window inference with {preset.crop_size} x {preset.crop_size} windows and stride "
            f"{preset.slide_stride}, scores of overlapping windows averaged."
        )
    if preset is not None and preset.dataset == "pascal-context":
        lines.append("PASCAL-Context figures are averaged over its 59 classes (no background).")
    return "\n".join(lines)


def _validated_scales(measured: Mapping[str, float] | None) -> dict[str, float]:
    measured = dict(measured or {})
    unknown = set(measured) - set(_SCALE_NAMES)
    if unknown:
        raise ValueError(f"`measured_miou` keys must be 'ss' and/or 'ms', got {sorted(unknown)}.")
    for scale, value in measured.items():
        if not 0 <= float(value) <= 100:
            raise ValueError(f"`measured_miou[{scale!r}]` must be a percentage in [0, 100], got {value}.")
    return measured


def model_card(
    save_directory: str | os.PathLike | None = None,
    *,
    preset: str | None = None,
    config: SegViTConfig | None = None,
    model_id: str | None = None,
    measured_miou: Mapping[str, float] | None = None,
    measured_with: str | None = None,
    license: str | None = None,
    base_model: str | None = None,
    dataset: str | None = None,
    num_parameters: int | None = None,
) -> ModelCard:
    """
    The model card of a SegViT checkpoint, written to `save_directory/README.md` when a directory is given.

    Args:
        save_directory (*optional*): the checkpoint directory to write README.md into.
        preset (`str`, *optional*): a released model (`segvit_hf.PRESETS`): its dataset, GFLOPs, training recipe,
            evaluation protocol, the mIoU reported by the paper and the official license come with it.
        config (`SegViTConfig`, *optional*): the checkpoint's configuration (architecture and classes); defaults to
            the preset's. One of `preset` and `config` is required.
        model_id (`str`, *optional*): the Hub id used in the usage snippet and as the model-index name.
        measured_miou (`dict`, *optional*): mIoU in percent measured with this package, keys `"ss"` (single scale)
            and/or `"ms"` (multi-scale); recorded as measured, next to the reported figures.
        measured_with (`str`, *optional*): how the measurement was made, e.g. `"segvit-hf 0.1.0, 2000 val images"`.
        license (`str`, *optional*): a Hub license id. Released presets default to the official terms
            (non-commercial, `license: other` with a link); otherwise no license is stated unless given.
        base_model (`str`, *optional*): Hub id of the pretrained encoder the model was trained from.
        dataset (`str`, *optional*): for models without a preset, the Hub id of the training dataset.
        num_parameters (`int`, *optional*): parameter count; computed from the configuration when omitted.

    Returns:
        The `huggingface_hub.ModelCard`; its metadata has been parsed back by `ModelCard`, so it is valid YAML with a
        well-formed model-index.
    """
    chosen = get_preset(preset) if preset is not None else None
    if config is None:
        if chosen is None:
            raise ValueError("Give a `preset` or a `config` to describe.")
        config = chosen.config()
    if not isinstance(config, SegViTConfig) and getattr(config, "model_type", None) != SegViTConfig.model_type:
        raise TypeError(f"`config` must be a SegViTConfig, got {type(config).__name__}.")
    measured = _validated_scales(measured_miou)
    dataset_card = _DATASET_CARDS[chosen.dataset] if chosen is not None else None
    if dataset_card is None and dataset is not None:
        dataset_card = _DatasetCard(dataset, dataset, "validation")
    name = model_id or (f"segvit-{chosen.name}" if chosen is not None else "segvit")
    if num_parameters is None:
        num_parameters = _count_parameters(config)

    license_fields: dict[str, Any] = {}
    if license is not None:
        license_fields["license"] = license
    elif chosen is not None:
        license_fields = {
            "license": "other",
            "license_name": "segvit-non-commercial",
            "license_link": OFFICIAL_LICENSE_URL,
        }
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-segmentation",
        tags=["segvit", "vision", "image-segmentation", "semantic-segmentation", "vit", "custom_code"],
        datasets=[dataset_card.hub_id] if dataset_card is not None else None,
        base_model=base_model,
        model_name=name,
        eval_results=_eval_results(chosen, dataset_card, measured) or None,
        **license_fields,
    )

    title = f"SegViT {config.num_labels}-class semantic segmentation"
    if chosen is not None:
        title = f"SegViT {'ViT-L' if chosen.encoder['hidden_size'] == 1024 else 'ViT-B'}"
        title += f"{' Shrunk' if chosen.shrink_index is not None else ''} on {dataset_card.name}"
    usage_id = model_id or "path/to/this/checkpoint"
    provenance = (
        f"Weights converted from the official release (`{chosen.official_checkpoint}`) of [SegViT]({PAPER_URL}) "
        "(NeurIPS 2022) with `segvit-hf`; the converted model reproduces the official predictions."
        if chosen is not None and chosen.official_checkpoint
        else f"A [SegViT]({PAPER_URL}) model (NeurIPS 2022) trained with `segvit-hf`."
    )
    sections = [
        f"# {title}",
        provenance,
        "SegViT segments images with a plain Vision Transformer and an Attention-to-Mask (ATM) decoder: one learnable "
        "query per class attends to the ViT's tokens, and the query-token similarity of that attention, passed "
        "through a sigmoid, is the class's mask.",
        "## Intended use",
        f"Semantic segmentation of natural images into the {config.num_labels} classes listed in `config.json` "
        f"(`id2label`){f', as annotated in {dataset_card.name}' if dataset_card else ''}. It is a research model: "
        "predictions on images unlike its training data (medical, aerial, drawings) are unreliable, and it has not "
        "been assessed for decisions about people.",
        "## How to use",
        "With transformers alone (the model code ships with the checkpoint):",
        "```python\n"
        "from transformers import pipeline\n"
        f"segmenter = pipeline(\"image-segmentation\", model=\"{usage_id}\", trust_remote_code=True)\n"
        "segments = segmenter(\"image.jpg\")  # one {\"label\", \"mask\"} per class present\n"
        "```",
        "With `segvit-hf` installed (`pip install segvit-hf`):",
        "```python\n"
        "from segvit_hf import SegViTForSemanticSegmentation, SegViTImageProcessor\n"
        f"model = SegViTForSemanticSegmentation.from_pretrained(\"{usage_id}\")\n"
        f"processor = SegViTImageProcessor.from_pretrained(\"{usage_id}\")\n"
        "```",
        "## Architecture",
        _architecture_table(config, chosen, num_parameters),
        "## Evaluation",
        _evaluation_section(chosen, dataset_card, measured, measured_with),
    ]
    if chosen is not None:
        sections += [
            "## Preprocessing",
            f"Images are resized as in the official test pipeline, normalised with mean {list(chosen.image_mean)} "
            f"and std {list(chosen.image_std)} (on [0, 1] pixels); `preprocessor_config.json` holds these settings.",
            "## Training recipe (as published)",
            _training_recipe(chosen),
            "## License",
            f"The official weights are released for non-commercial (academic) use under the terms of the "
            f"[official repository's license]({OFFICIAL_LICENSE_URL}); commercial use needs the authors' permission.",
        ]
    sections += ["## Citation", f"```bibtex\n{CITATION}\n```"]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"
    card = ModelCard(content)  # parses the YAML back, raising on a malformed model-index
    if save_directory is not None:
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        card.save(Path(save_directory) / "README.md")
    return card


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str = "Upload SegViT checkpoint",
    revision: str | None = None,
    create_pr: bool = False,
    api: HfApi | None = None,
):
    """
    Uploads a checkpoint directory to the Hub model repository `repo_id` (created if missing) in one commit.

    `api` is the `huggingface_hub.HfApi` to use (one with your endpoint or token; a stand-in in tests).
    Returns the commit information from `upload_folder`.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json: not a checkpoint directory.")
    api = api if api is not None else HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True, repo_type="model").repo_id
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        commit_message=commit_message,
        revision=revision,
        create_pr=create_pr,
        token=token,
        repo_type="model",
    )


def push_to_hub(
    repo_id: str,
    model,
    image_processor=None,
    *,
    card: ModelCard | None = None,
    with_code: bool = True,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str = "Upload SegViT checkpoint",
    revision: str | None = None,
    create_pr: bool = False,
    api: HfApi | None = None,
):
    """
    Saves `model` and `image_processor` (with the source code when `with_code`, see [`save_pretrained_with_code`])
    and a model card (`card`, else one built from the model's configuration with [`model_card`]), then uploads them to
    `repo_id` in one commit. Returns the commit information.
    """
    with tempfile.TemporaryDirectory() as folder:
        if with_code:
            save_pretrained_with_code(model, folder, image_processor)
        else:
            model.save_pretrained(folder)
            if image_processor is not None:
                image_processor.save_pretrained(folder)
        if card is None:
            card = model_card(config=model.config, model_id=repo_id, num_parameters=model.num_parameters())
        card.save(Path(folder) / "README.md")
        return push_folder_to_hub(
            folder,
            repo_id,
            private=private,
            token=token,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
            api=api,
        )


__all__ = [
    "HubUnreachableError",
    "download_hub_file",
    "model_card",
    "push_folder_to_hub",
    "push_to_hub",
    "save_pretrained_with_code",
]
