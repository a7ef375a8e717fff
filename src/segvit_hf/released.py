"""The authors' released SegViT weights, ready for transformers in one call.

```python
from segvit_hf.released import load_released
from transformers import pipeline

model, processor = load_released("ade20k-vit-b")
segments = pipeline("image-segmentation", model=model, image_processor=processor)("street.jpg")
```

The official files live in the Hub repository `Akide/SegViTv1` under the names of the release
(`PRESETS[name].official_checkpoint`). The first call downloads one through huggingface_hub (so its cache, `revision`,
`token` and offline mode apply), converts it with `segvit_hf.conversion`, and saves the converted model and image
processor in huggingface_hub's assets cache, keyed by the commit of the downloaded file; later calls load that
directory, offline too.

[`convert_released_checkpoints`] converts (and optionally pushes) all released files found in a local directory, as
`segvit-convert --all` does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import cached_assets_path

from .conversion import convert_official_checkpoint
from .hub import download_hub_file, model_card, push_folder_to_hub, save_pretrained_with_code
from .image_processing_segvit import SegViTImageProcessor
from .modeling_segvit import SegViTForSemanticSegmentation
from .presets import PRESETS, get_preset

RELEASED_REPO_ID = "Akide/SegViTv1"

# The assets cache's library folder for converted models.
_LIBRARY_NAME = "segvit-hf"


def download_released(
    name: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> Path:
    """
    The directory of the converted released model `name`, downloaded and converted on first use.

    Args:
        name (`str`):
            A preset with a released file (`segvit_hf.PRESETS`), e.g. `"ade20k-vit-b"`.
        revision (`str`, *optional*):
            Branch, tag or commit of `Akide/SegViTv1`; the latest by default.
        token (`str` or `bool`, *optional*):
            Hub token, as for `huggingface_hub.hf_hub_download`.
        cache_dir (`str` or `os.PathLike`, *optional*):
            Where to keep the download (Hub cache layout) and the converted model (under `segvit-hf/`); by default
            huggingface_hub's cache (`HF_HUB_CACHE`) and assets cache (`HF_ASSETS_CACHE`).
        local_files_only (`bool`, *optional*, defaults to `False`):
            Use the cached file only, as `HF_HUB_OFFLINE=1` does.

    Returns:
        A directory with `config.json`, `model.safetensors` and `preprocessor_config.json`.

    Raises:
        ValueError: for a name that is not a preset with a released file.
        segvit_hf.hub.HubUnreachableError: when the file is neither cached nor downloadable.
    """
    preset = get_preset(name)
    if preset.official_checkpoint is None:
        raise ValueError(f"The preset {name!r} has no released checkpoint.")
    checkpoint = Path(
        download_hub_file(
            RELEASED_REPO_ID,
            preset.official_checkpoint,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
        )
    )
    # The Hub cache keeps each file under snapshots/<commit>/: the commit names the conversion, so a new revision of
    # the file is converted again while an unchanged one is loaded from the assets cache.
    commit = checkpoint.parent.name
    converted = cached_assets_path(_LIBRARY_NAME, RELEASED_REPO_ID, name, assets_dir=cache_dir) / commit
    if not (converted / "config.json").is_file():
        _convert_into(checkpoint, name, converted)
    return converted


def _convert_into(checkpoint: Path, name: str, destination: Path) -> None:
    """Converts into a temporary sibling renamed at the end, so that an interrupted run leaves no half directory."""
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    try:
        model = convert_official_checkpoint(checkpoint, preset=name)
        model.save_pretrained(staging)
        get_preset(name).image_processor_for(model.config.num_labels).save_pretrained(staging)
        try:
            staging.rename(destination)
        except OSError:
            if not (destination / "config.json").is_file():  # not a concurrent run that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_released(
    name: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> tuple[SegViTForSemanticSegmentation, SegViTImageProcessor]:
    """
    The released model `name` and its image processor, ready for `pipeline("image-segmentation", model=model,
    image_processor=processor)`: the authors' file from `Akide/SegViTv1`, downloaded, converted and cached on first
    use (see [`download_released`] for the arguments). The model is in eval mode.
    """
    directory = download_released(
        name, revision=revision, token=token, cache_dir=cache_dir, local_files_only=local_files_only
    )
    return SegViTForSemanticSegmentation.from_pretrained(directory), SegViTImageProcessor.from_pretrained(directory)


@dataclass
class ReleasedCheckpointConversion:
    """
    What `--all` did with one released file: `status` is `"converted"`, `"missing"` (not in the source directory)
    or `"failed"` (with the error in `message`).
    """

    file_name: str
    preset: str
    status: str
    output_dir: str | None = None
    num_labels: int | None = None
    repo_id: str | None = None
    message: str = ""


def convert_released_checkpoints(
    source_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    push_to_hub: str | None = None,
    api=None,
) -> list[ReleasedCheckpointConversion]:
    """
    Converts each of the seven released checkpoints found in `source_dir` (recognised by the file names of the
    release, `PRESETS[name].official_checkpoint`) into `output_dir/segvit-<preset>`: weights, configuration (class
    count read from the tensors: PASCAL-Context files may hold 59 or 60 classes), the preset's image-processor
    settings, a model card, and the model code so the directory loads with transformers alone. With `push_to_hub`
    (an organisation or user name) each result is uploaded to `<push_to_hub>/segvit-<preset>` (`api`: the
    `huggingface_hub.HfApi` to use). One file's failure is reported and the others go on; a line per file is printed.
    """
    source_dir, output_dir = Path(source_dir), Path(output_dir)
    if not source_dir.is_dir():
        raise FileNotFoundError(f"{source_dir} is not a directory of released checkpoints.")
    results = []
    for preset in PRESETS.values():
        if preset.official_checkpoint is None:
            continue
        result = ReleasedCheckpointConversion(preset.official_checkpoint, preset.name, "missing")
        results.append(result)
        path = source_dir / preset.official_checkpoint
        if not path.is_file():
            print(f"{preset.official_checkpoint}: missing from {source_dir}")
            continue
        try:
            model = convert_official_checkpoint(path, preset=preset.name)
            destination = output_dir / f"segvit-{preset.name}"
            repo_id = f"{push_to_hub}/segvit-{preset.name}" if push_to_hub else None
            save_pretrained_with_code(model, destination, preset.image_processor_for(model.config.num_labels))
            model_card(
                destination,
                preset=preset.name,
                config=model.config,
                model_id=repo_id,
                num_parameters=model.num_parameters(),
            )
            result.output_dir, result.num_labels = str(destination), model.config.num_labels
            del model
            if repo_id is not None:
                message = f"Convert {preset.official_checkpoint}"
                push_folder_to_hub(destination, repo_id, commit_message=message, api=api)
                result.repo_id = repo_id
            result.status = "converted"
            print(f"{preset.official_checkpoint}: {preset.name}, {result.num_labels} classes -> {destination}"
                  + (f" -> {repo_id}" if repo_id else ""))
        except Exception as error:  # one bad file must not stop the others; the error is reported and fails the run
            result.status, result.message = "failed", f"{type(error).__name__}: {error}"
            print(f"{preset.official_checkpoint}: FAILED ({result.message})")
    return results


__all__ = [
    "RELEASED_REPO_ID",
    "ReleasedCheckpointConversion",
    "convert_released_checkpoints",
    "download_released",
    "load_released",
]
