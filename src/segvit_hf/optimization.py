"""The paper's optimiser and learning-rate schedule, for the Trainer (`optimizers=`), Accelerate or plain PyTorch.

Recipe (paper section 4.2 and the official configurations):

* AdamW, betas (0.9, 0.999), weight decay 0.01 (ADE20K; the official COCO-Stuff-10K / PASCAL-Context files use 0.02 /
  0.03), base learning rate 6e-5 (ViT-B) or 2e-5 (ViT-L);
* the decode head (everything outside the ViT encoder) learns 10x faster;
* no weight decay on normalisation layers, biases, position embeddings and class queries
  ([`parameter_groups`] documents exactly which tensors);
* polynomial decay (power 1) to 0 over the run, after a linear warm-up of 1500 iterations that starts from
  1e-6 x the scheduled rate (mmcv's `warmup='linear'`, `warmup_ratio=1e-6`);
* gradient clipping at global L2 norm 35. That is not part of the optimiser: with the Trainer set
  `TrainingArguments(max_grad_norm=35.0)`; with Accelerate call `accelerator.clip_grad_norm_(model.parameters(), 35.0)`
  (only when `accelerator.sync_gradients`); in plain PyTorch `torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)`
  between `backward()` and `step()`.

Example with the Trainer:

```python
>>> optimizer = create_segvit_optimizer(model, learning_rate=6e-5, weight_decay=0.01)  # doctest: +SKIP
>>> scheduler = get_poly_schedule_with_warmup(optimizer, num_warmup_steps=1500, num_training_steps=160_000)  # doctest: +SKIP
>>> trainer = Trainer(model, TrainingArguments(..., max_grad_norm=35.0), optimizers=(optimizer, scheduler))  # doctest: +SKIP
```
"""

from __future__ import annotations

import torch
from torch import nn

# Module types whose parameters are normalisation scales and shifts: never decayed.
_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
# Parameter names (last component) that are learned tables of positions or queries rather than weights of a map.
_NO_DECAY_NAMES = ("position_embeddings", "cls_token", "mask_token", "relative_position_bias_table")


def _owner_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Maps each parameter's full name to the module that registers it."""
    owners = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            owners[f"{module_name}.{param_name}" if module_name else param_name] = module
    return owners


def _is_no_decay(name: str, module: nn.Module) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return (
        isinstance(module, _NORM_TYPES)
        or leaf.endswith("bias")  # also nn.MultiheadAttention's `in_proj_bias`
        or leaf in _NO_DECAY_NAMES
        # Learnable query tables (the ATM class queries, the Shrunk variant's QU queries) are embeddings.
        or isinstance(module, nn.Embedding)
    )


def parameter_groups(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float = 0.01,
    head_lr_multiplier: float = 10.0,
    backbone_prefix: str | None = None,
) -> list[dict]:
    """
    The four AdamW parameter groups of the recipe, each `{"name", "params", "param_names", "lr", "weight_decay"}`:

    | group | parameters | lr | weight decay |
    |---|---|---|---|
    | `backbone` | encoder weights | `learning_rate` | `weight_decay` |
    | `backbone_no_decay` | encoder norms, biases, position embeddings | `learning_rate` | 0 |
    | `head` | decode-head weights | `learning_rate * head_lr_multiplier` | `weight_decay` |
    | `head_no_decay` | head norms, biases, class queries (`nn.Embedding` tables) | `learning_rate * head_lr_multiplier` | 0 |

    The encoder is the submodule named `backbone_prefix` (default: the model's `base_model_prefix`, `"segvit"`);
    everything else is the head. Norms are recognised by module type (LayerNorm, GroupNorm, BatchNorm, InstanceNorm),
    biases by name (`*bias`), position tables by name (`position_embeddings`, `cls_token`, `mask_token`, and Swin's
    `relative_position_bias_table` in a transformers backbone) and query tables as `nn.Embedding` weights. Frozen
    parameters (`requires_grad=False`) are left out; empty groups are dropped.
    """
    if learning_rate <= 0:
        raise ValueError(f"`learning_rate` must be positive, got {learning_rate}.")
    if weight_decay < 0 or head_lr_multiplier <= 0:
        raise ValueError(
            f"`weight_decay` must be >= 0 and `head_lr_multiplier` > 0, got {weight_decay} and {head_lr_multiplier}."
        )
    # DDP / compiled wrappers hide the model under `.module` / `._orig_mod`; group by the model's own names.
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    model = getattr(model, "_orig_mod", model)
    prefix = backbone_prefix if backbone_prefix is not None else getattr(model, "base_model_prefix", "")
    if not prefix or not isinstance(getattr(model, prefix, None), nn.Module):
        raise ValueError(
            f"Cannot find the encoder submodule {prefix!r} in {type(model).__name__}; pass `backbone_prefix`."
        )
    owners = _owner_modules(model)
    groups = {
        "backbone": (learning_rate, weight_decay),
        "backbone_no_decay": (learning_rate, 0.0),
        "head": (learning_rate * head_lr_multiplier, weight_decay),
        "head_no_decay": (learning_rate * head_lr_multiplier, 0.0),
    }
    members: dict[str, list[tuple[str, nn.Parameter]]] = {name: [] for name in groups}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = "backbone" if name.startswith(prefix + ".") else "head"
        if _is_no_decay(name, owners[name]):
            part += "_no_decay"
        members[part].append((name, parameter))
    return [
        {
            "name": group,
            "params": [parameter for _, parameter in members[group]],
            "param_names": [name for name, _ in members[group]],
            "lr": lr,
            "weight_decay": decay,
        }
        for group, (lr, decay) in groups.items()
        if members[group]
    ]


def create_segvit_optimizer(
    model: nn.Module,
    learning_rate: float = 6e-5,
    weight_decay: float = 0.01,
    head_lr_multiplier: float = 10.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    backbone_prefix: str | None = None,
) -> torch.optim.AdamW:
    """AdamW over [`parameter_groups`]: the paper's optimiser. Clip gradients at 35 separately (module docstring)."""
    groups = parameter_groups(model, learning_rate, weight_decay, head_lr_multiplier, backbone_prefix)
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps)


def poly_warmup_factor(
    step: int, num_warmup_steps: int, num_training_steps: int, power: float = 1.0, warmup_ratio: float = 1e-6
) -> float:
    """
    The multiplier of each group's base learning rate at optimiser step `step` (0-based), as mmcv's `poly` policy
    with linear warm-up: `(1 - step / num_training_steps) ** power`, further scaled during the first
    `num_warmup_steps` steps by `warmup_ratio + (1 - warmup_ratio) * step / num_warmup_steps`. Reaches 0 at the end.
    """
    progress = min(step, num_training_steps) / num_training_steps
    factor = (1.0 - progress) ** power
    if step < num_warmup_steps:
        factor *= warmup_ratio + (1.0 - warmup_ratio) * step / num_warmup_steps
    return factor


def get_poly_schedule_with_warmup(
    optimizer: torch.optim.Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    power: float = 1.0,
    warmup_ratio: float = 1e-6,
    last_epoch: int = -1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """
    A `LambdaLR` applying [`poly_warmup_factor`] to every parameter group (so the head keeps its 10x ratio).
    Step it once per optimiser step, as the Trainer and Accelerate loops do.
    """
    if num_training_steps <= 0:
        raise ValueError(f"`num_training_steps` must be positive, got {num_training_steps}.")
    if num_warmup_steps < 0:
        raise ValueError(f"`num_warmup_steps` must be >= 0, got {num_warmup_steps}.")
    if not 0 < warmup_ratio <= 1:
        raise ValueError(f"`warmup_ratio` must be in (0, 1], got {warmup_ratio}.")
    arguments = (num_warmup_steps, num_training_steps, power, warmup_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _PolyWarmup(*arguments), last_epoch=last_epoch)


class _PolyWarmup:
    """The schedule as a callable object rather than a closure, so that `LambdaLR.state_dict()` records its settings."""

    def __init__(self, num_warmup_steps, num_training_steps, power, warmup_ratio):
        self.arguments = (num_warmup_steps, num_training_steps, power, warmup_ratio)

    def __call__(self, step: int) -> float:
        return poly_warmup_factor(step, *self.arguments)


def group_learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Current learning rate of each named group (for logging)."""
    return {group.get("name", str(index)): group["lr"] for index, group in enumerate(optimizer.param_groups)}


__all__ = [
    "create_segvit_optimizer",
    "get_poly_schedule_with_warmup",
    "group_learning_rates",
    "parameter_groups",
    "poly_warmup_factor",
]
