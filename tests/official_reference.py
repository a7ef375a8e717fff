"""Functional reference for what the official SegViT code computes.

The authors' implementation (github zbwxp/SegVit, on top of mmseg 0.24 / mmcv 1.4) can no longer be
installed. This module restates its arithmetic, in our own words, as plain functions over a state
dict that uses the *official* key layout (``backbone.*`` / ``decode_head.*``). It exists only so
that the tests can check our transformers port for numerical parity against an independent
statement of the official semantics; nothing here is used by the package itself.

Covered: the plain mmseg ``VisionTransformer`` backbone as configured by SegViT, the cascaded
``ATMHead`` (eval-mode forward and its training-mode outputs) and ``ATMLoss`` / ``SetCriterion``
(single process), and the shrunk variant: the ``vit_shrink`` backbone (query down-sampling, "QD")
with the ``TPNATMHead`` (query up-sampling decoders, "QU", feeding a one-stage ``ATMSingleHead``).

Public entry points:

* :func:`official_forward` - prediction scores and (optionally) the total ATM loss;
* :func:`official_backbone`, :func:`official_head`, :func:`official_atm_loss` - the pieces;
* :func:`make_random_official_state_dict` - a random checkpoint in the official layout;
* :func:`official_shrunk_forward`, :func:`official_shrunk_backbone`, :func:`official_shrunk_head`,
  :func:`make_random_official_shrunk_state_dict` - the same for the shrunk variant.
"""

from __future__ import annotations

import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
StateDict = Dict[str, Tensor]

# LayerNorm epsilons. The backbone is configured with norm_cfg eps=1e-6; the head uses plain
# torch defaults: ``nn.LayerNorm(dim)`` for proj_norm_k and ``nn.TransformerDecoderLayer``'s
# norm1/2/3 (layer_norm_eps default), i.e. 1e-5.
BACKBONE_LN_EPS = 1e-6
HEAD_LN_EPS = 1e-5

# ATMLoss weights (cls_weight, mask_weight, dice_weight) and SetCriterion's no-object weight.
CE_WEIGHT = 1.0
FOCAL_WEIGHT = 20.0
DICE_WEIGHT = 1.0
NO_OBJECT_WEIGHT = 0.1
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


# --------------------------------------------------------------------------------------------
# small building blocks
# --------------------------------------------------------------------------------------------


def _linear(x: Tensor, sd: StateDict, prefix: str) -> Tensor:
    """``nn.Linear`` with weight/bias stored under ``prefix``."""
    return F.linear(x, sd[prefix + ".weight"], sd.get(prefix + ".bias"))


def _layer_norm(x: Tensor, sd: StateDict, prefix: str, eps: float) -> Tensor:
    """``nn.LayerNorm`` over the last dim, affine parameters under ``prefix``."""
    weight = sd[prefix + ".weight"]
    return F.layer_norm(x, weight.shape, weight, sd[prefix + ".bias"], eps)


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, L, D) -> (B, heads, L, D // heads)."""
    b, n, d = x.shape
    return x.reshape(b, n, num_heads, d // num_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """(B, heads, L, hd) -> (B, L, heads * hd)."""
    b, h, n, hd = x.shape
    return x.transpose(1, 2).reshape(b, n, h * hd)


def fused_multihead_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    in_proj_weight: Tensor,
    in_proj_bias: Optional[Tensor],
    out_proj_weight: Tensor,
    out_proj_bias: Optional[Tensor],
    num_heads: int,
) -> Tensor:
    """Eval-mode ``torch.nn.MultiheadAttention`` output (no masks), batch-first tensors.

    The stored (3D, D) ``in_proj_weight`` holds the q, k and v projections stacked in that
    order. Each head computes softmax(q k^T / sqrt(head_dim)) v; the heads are concatenated and
    sent through ``out_proj``. Used for the backbone's attention (mmcv ``MultiheadAttention`` wraps
    exactly this module, ``batch_first=True`` only transposes around it) and for the ATM decoder's
    self-attention (``nn.TransformerDecoderLayer.self_attn``).
    """
    d = query.shape[-1]
    w_q, w_k, w_v = in_proj_weight.split(d, dim=0)
    if in_proj_bias is None:
        b_q = b_k = b_v = None
    else:
        b_q, b_k, b_v = in_proj_bias.split(d, dim=0)
    q = _split_heads(F.linear(query, w_q, b_q), num_heads)
    k = _split_heads(F.linear(key, w_k, b_k), num_heads)
    v = _split_heads(F.linear(value, w_v, b_v), num_heads)
    scale = (d // num_heads) ** -0.5
    weights = torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)
    return F.linear(_merge_heads(weights @ v), out_proj_weight, out_proj_bias)


# --------------------------------------------------------------------------------------------
# backbone: mmseg 0.24 VisionTransformer with SegViT's settings
# --------------------------------------------------------------------------------------------


def stored_attention(query: Tensor, key: Tensor, value: Tensor, sd: StateDict, prefix: str,
                     num_heads: int) -> Tensor:
    """:func:`fused_multihead_attention` with the weights of the ``nn.MultiheadAttention`` stored
    under ``prefix`` (``in_proj_weight``/``in_proj_bias``/``out_proj.weight``/``out_proj.bias``)."""
    p = prefix + "."
    return fused_multihead_attention(
        query, key, value,
        sd[p + "in_proj_weight"], sd.get(p + "in_proj_bias"),
        sd[p + "out_proj.weight"], sd.get(p + "out_proj.bias"),
        num_heads,
    )


def _post_norm_mlp(q: Tensor, sd: StateDict, p: str) -> Tensor:
    """``norm3(q + linear2(relu(linear1(q))))`` of a post-norm decoder layer (eps 1e-5)."""
    q2 = _linear(F.relu(_linear(q, sd, p + "linear1")), sd, p + "linear2")
    return _layer_norm(q + q2, sd, p + "norm3", HEAD_LN_EPS)


def _count_indexed(sd: StateDict, pattern: str) -> int:
    """Number of distinct integers ``i`` for which some key matches ``pattern`` (one group)."""
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in sd for m in [rx.fullmatch(k)] if m}
    if found and found != set(range(len(found))) and found != set(range(1, len(found) + 1)):
        raise ValueError(f"non-contiguous indices for {pattern}: {sorted(found)}")
    return len(found)


def patch_embed(sd: StateDict, pixel_values: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
    """mmseg ``PatchEmbed`` (Conv2d, kernel = stride = patch size, padding='corner', no norm).

    'corner' adaptive padding zero-pads the bottom/right so that every pixel is covered, i.e. to
    the next multiple of the patch size (a no-op for sizes divisible by 16). Returns the tokens
    (B, h*w, C) in row-major grid order and the grid shape (h, w).
    """
    weight = sd["backbone.patch_embed.projection.weight"]
    ph, pw = weight.shape[-2:]
    height, width = pixel_values.shape[-2:]
    pad_h = -height % ph
    pad_w = -width % pw
    if pad_h or pad_w:
        pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h))
    x = F.conv2d(pixel_values, weight, sd["backbone.patch_embed.projection.bias"], stride=(ph, pw))
    hw = (x.shape[-2], x.shape[-1])
    return x.flatten(2).transpose(1, 2), hw


def position_embedding_for_grid(sd: StateDict, hw: Tuple[int, int]) -> Tensor:
    """The position embeddings the official backbone adds to the patch tokens, (1, h*w, C).

    The stored table is (1, 1 + g*g, C): slot 0 belongs to the CLS token, the rest is a g x g grid.
    Officially the CLS token is concatenated in front of the patch tokens, the table is added and
    the CLS position is then dropped again (``with_cls_token=False``), so the CLS token and the
    CLS slot of the table never reach the encoder. When the token count differs from the stored
    one, the grid part is resized with bicubic interpolation (align_corners=False) to (h, w); the
    CLS slot is kept aside unchanged (and then dropped as well). Equal counts: used as stored.
    """
    table = sd["backbone.pos_embed"]
    n_grid = table.shape[1] - 1
    if hw[0] * hw[1] == n_grid:
        return table[:, 1:]
    g = int(round(math.sqrt(n_grid)))
    if g * g != n_grid:
        raise ValueError(f"pos_embed grid of {n_grid} tokens is not square")
    grid = table[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=hw, mode="bicubic", align_corners=False)
    return grid.flatten(2).transpose(1, 2)


def encoder_layer(x: Tensor, sd: StateDict, index: int, num_heads: int, shrink: bool = False) -> Tensor:
    """One mmseg ``TransformerEncoderLayer`` in eval mode (pre-norm); with ``shrink`` the
    query-down-sampling layer of ``vit_shrink`` (same weights).

    x = x + attn(ln1(x))   (mmcv MultiheadAttention: identity + dropout_layer(proj_drop(out)),
                            the drop path / dropouts are identities in eval mode)
    x = x + fc2(gelu(fc1(ln2(x))))   (mmcv FFN with exact GELU, identity added back)
    LayerNorm eps 1e-6.

    With ``shrink`` the (B, g*g, C) tokens are viewed as their g x g row-major grid and the tokens
    at even rows and even columns are kept (2x2 nearest down-sampling, top-left of each 2x2 cell),
    giving ``down`` (B, (g/2)^2, C); the attention step becomes
        x = down + attn(query=ln1(down), key=ln1(x), value=ln1(x))
    i.e. queries are the down-sampled tokens, keys/values all tokens, all three normalised by the
    same ln1, and the residual is the down-sampled (un-normalised) tokens.
    """
    p = f"backbone.layers.{index}."
    if shrink:
        b, length, c = x.shape
        side = _square_side(length, "vit_shrink")
        residual = x.reshape(b, side, side, c)[:, ::2, ::2].reshape(b, -1, c)
    else:
        residual = x
    h_q = _layer_norm(residual, sd, p + "ln1", BACKBONE_LN_EPS)
    h_kv = _layer_norm(x, sd, p + "ln1", BACKBONE_LN_EPS)
    x = residual + stored_attention(h_q, h_kv, h_kv, sd, p + "attn.attn", num_heads)
    h = _layer_norm(x, sd, p + "ln2", BACKBONE_LN_EPS)
    h = F.gelu(_linear(h, sd, p + "ffn.layers.0.0"))
    return x + _linear(h, sd, p + "ffn.layers.1")


def official_backbone(
    sd: StateDict, pixel_values: Tensor, *, num_heads: int, out_indices: Sequence[int]
) -> List[Tensor]:
    """mmseg ``VisionTransformer`` forward with SegViT's config, eval mode.

    with_cls_token=False, output_cls_token=False, final_norm=False. Returns the outputs of the
    layers whose 0-based index is *in* ``out_indices``, as (B, C, h, w) maps, in layer order (the
    official loop appends while walking the layers, so the order of ``out_indices`` itself and
    duplicates in it do not matter; negative entries never match).
    """
    num_layers = _count_indexed(sd, r"backbone\.layers\.(\d+)\.ln1\.weight")
    tokens, hw = patch_embed(sd, pixel_values)
    x = tokens + position_embedding_for_grid(sd, hw)
    wanted = set(int(i) for i in out_indices)
    features = []
    for i in range(num_layers):
        x = encoder_layer(x, sd, i, num_heads)
        if i in wanted:
            b, _, c = x.shape
            features.append(x.reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2))
    return features


# --------------------------------------------------------------------------------------------
# decode head: ATMHead (cascade of TPN decoders)
# --------------------------------------------------------------------------------------------


def atm_cross_attention(
    queries: Tensor, memory: Tensor, sd: StateDict, prefix: str, num_heads: int
) -> Tuple[Tensor, Tensor]:
    """SegViT's custom cross ``Attention`` (batch-first inputs), eval mode.

    Separate q/k/v Linear layers (with bias) and an output ``proj``. Per head the similarity is
    S = (q k^T) * head_dim^-0.5. Returns (output, similarity): output = proj(softmax(S) v) with
    heads concatenated (the 0.1 attention dropout is off in eval), and the *pre-softmax* S
    averaged over the heads, (B, Nq, Nk).
    """
    q = _split_heads(_linear(queries, sd, prefix + ".q"), num_heads)
    k = _split_heads(_linear(memory, sd, prefix + ".k"), num_heads)
    v = _split_heads(_linear(memory, sd, prefix + ".v"), num_heads)
    scale = (queries.shape[-1] // num_heads) ** -0.5
    sim = (q @ k.transpose(-2, -1)) * scale
    out = _merge_heads(torch.softmax(sim, dim=-1) @ v)
    return _linear(out, sd, prefix + ".proj"), sim.mean(dim=1)


def atm_decoder_layer(
    queries: Tensor, memory: Tensor, sd: StateDict, prefix: str, num_heads: int
) -> Tuple[Tensor, Tensor]:
    """``TPN_DecoderLayer`` in eval mode: post-norm, batch-first here.

    q = norm1(q + self_attn(q, q, q))           (nn.MultiheadAttention, fused in_proj, no masks,
                                                 no positional embedding)
    q = norm2(q + cross(q, memory))             (see :func:`atm_cross_attention`)
    q = norm3(q + linear2(relu(linear1(q))))
    All norms are torch-default LayerNorms (eps 1e-5). Returns (queries, head-averaged pre-softmax
    cross similarity (B, Nq, L)).
    """
    p = prefix + "."
    q = queries
    q = _layer_norm(q + stored_attention(q, q, q, sd, p + "self_attn", num_heads), sd, p + "norm1", HEAD_LN_EPS)
    q2, sim = atm_cross_attention(q, memory, sd, p + "multihead_attn", num_heads)
    q = _layer_norm(q + q2, sd, p + "norm2", HEAD_LN_EPS)
    return _post_norm_mlp(q, sd, p), sim


def _similarity_to_grid(sim: Tensor) -> Tensor:
    """ATMHead's (B, Nq, L) -> (B, Nq, h, w) with h = w = sqrt(L) (square token grid only).

    Officially the similarity is transposed to (B, L, Nq) and reshaped as a square grid; when L is
    odd the first token is discarded first (a CLS-token heuristic), which for a plain odd g x g
    grid leaves a non-square count and the official reshape fails. We raise instead.
    """
    b, n, length = sim.shape
    side = int(math.sqrt(length))
    if length % 2 != 0 or side * side != length:
        raise ValueError(
            f"official ATMHead cannot reshape {length} tokens into a square grid "
            "(needs an even, square token count)"
        )
    return sim.reshape(b, n, side, side)


def _head_outputs(logits: List[Tensor], grid_masks: List[Tensor], image_size: int) -> Dict[str, object]:
    """The head's training outputs from its supervised (class logits, grid mask logits) pairs, the
    prediction last: ``pred_masks`` = the last masks bilinearly resized to the crop size,
    ``pred`` = einsum(softmax(logits)[..., :-1], sigmoid(pred_masks)), and the earlier pairs as
    ``aux_outputs`` (masks left on the grid)."""
    pred_masks = F.interpolate(
        grid_masks[-1], size=(image_size, image_size), mode="bilinear", align_corners=False
    )
    pred_logits = logits[-1]
    class_probs = torch.softmax(pred_logits, dim=-1)[..., :-1]
    pred = torch.einsum("bnc,bnhw->bchw", class_probs, pred_masks.sigmoid())
    aux = [{"pred_logits": lg, "pred_masks": ms} for lg, ms in zip(logits[:-1], grid_masks[:-1])]
    return {"pred_logits": pred_logits, "pred_masks": pred_masks, "pred": pred, "aux_outputs": aux}


def official_head(
    sd: StateDict,
    features: Sequence[Tensor],
    *,
    decoder_num_heads: int,
    image_size: Optional[int] = None,
) -> Dict[str, object]:
    """``ATMHead.forward`` (use_proj=True, crop_train=False), computed without dropout.

    * Takes the first ``num_stages`` backbone outputs (layer order) and reverses them: stage 1
      consumes the deepest. Each is flattened to tokens and projected: lateral_k =
      proj_norm_k(input_proj_k(x)) (lateral_k is NOT summed with earlier laterals).
    * The class query table (num_classes, d) is the initial query set for every image; the
      queries are carried from one stage into the next (not reset per stage).
    * Each stage runs its decoder layers; the stage's mask logits are the cross similarity of its
      LAST layer, reshaped to the token grid.
    * class logits per stage = class_embed(queries after that stage), (B, N, num_classes + 1).
    * Accumulation: masks_1 = resize(sim_1), masks_k = masks_{k-1} + resize(sim_k), resize =
      bilinear (align_corners=False) to the last stage's grid.
    * pred_masks = bilinear resize of the last accumulated masks to (image_size, image_size),
      where image_size is the head's configured crop size (not the input size).
    * pred = einsum(softmax(class logits)[..., :-1], sigmoid(pred_masks)) -> (B, K, S, S).

    Returns a dict with "pred_logits", "pred_masks", "pred" and "aux_outputs" (list of dicts with
    the earlier stages' "pred_logits" and accumulated grid "pred_masks": the training outputs).
    """
    num_stages = _count_indexed(sd, r"decode_head\.input_proj_(\d+)\.weight")
    num_dec_layers = _count_indexed(sd, r"decode_head\.decoder_1\.layers\.(\d+)\.norm1\.weight")
    if len(features) < num_stages:
        raise ValueError(f"head has {num_stages} stages but got {len(features)} features")
    if image_size is None:
        image_size = infer_crop_size(sd)
    feats = [f.flatten(2).transpose(1, 2) if f.dim() == 4 else f for f in features[:num_stages]]
    feats = feats[::-1]

    class_queries = sd["decode_head.q.weight"]
    batch = feats[0].shape[0]
    q = class_queries.unsqueeze(0).expand(batch, -1, -1)

    stage_logits: List[Tensor] = []
    stage_masks: List[Tensor] = []
    for k, x in enumerate(feats, start=1):
        lateral = _layer_norm(
            _linear(x, sd, f"decode_head.input_proj_{k}"), sd, f"decode_head.proj_norm_{k}",
            HEAD_LN_EPS,
        )
        sim = None
        for j in range(num_dec_layers):
            q, sim = atm_decoder_layer(
                q, lateral, sd, f"decode_head.decoder_{k}.layers.{j}", decoder_num_heads
            )
        stage_masks.append(_similarity_to_grid(sim))
        stage_logits.append(_linear(q, sd, "decode_head.class_embed"))

    grid = stage_masks[-1].shape[-2:]
    accumulated: List[Tensor] = []
    for m in stage_masks:
        m = F.interpolate(m, size=grid, mode="bilinear", align_corners=False)
        accumulated.append(m if not accumulated else accumulated[-1] + m)

    return _head_outputs(stage_logits, accumulated, image_size)


# --------------------------------------------------------------------------------------------
# loss: ATMLoss + SetCriterion (single process)
# --------------------------------------------------------------------------------------------


def _present_classes(labels: Tensor, ignore_index: int, num_classes: int) -> List[Tensor]:
    """``ATMLoss.prepare_targets``: per image the sorted unique label values except ignore."""
    present = []
    for lab in labels:
        cls = torch.unique(lab)
        cls = cls[cls != ignore_index]
        if cls.numel() and (cls.min() < 0 or cls.max() >= num_classes):
            raise ValueError(
                f"label values {cls.tolist()} outside [0, {num_classes}) and not ignore_index "
                "(the official criterion would index out of range)"
            )
        present.append(cls)
    return present


def _set_losses(
    logits: Tensor,
    masks: Tensor,
    labels: Tensor,
    present: List[Tensor],
    num_masks: float,
) -> Tuple[Tensor, Tensor, Tensor]:
    """SetCriterion's three terms for one output (query i <-> class i, no matching).

    * CE: every query gets target = its class if that class is present in the image, else the
      no-object slot (index num_classes). ``F.cross_entropy`` with class weights (1 ... 1, 0.1),
      reduction 'mean' -> sum(w_t * ce) / sum(w_t) over all B*N queries.
    * Masks: for every present (image, class) pair, the query's mask logits are resized
      bilinearly (align_corners=False) to the label size; target = (label == class) as float,
      so ignored pixels are negatives. Sigmoid focal loss (alpha 0.25, gamma 2), mean over pixels,
      summed over masks, / num_masks. Dice: 1 - (2*sum(p t) + 1) / (sum(p) + sum(t) + 1) per mask,
      summed, / num_masks.
    """
    batch, n_queries, n_slots = logits.shape
    num_classes = n_slots - 1
    target_classes = torch.full((batch, n_queries), num_classes, dtype=torch.long,
                                device=logits.device)
    for b, cls in enumerate(present):
        target_classes[b, cls] = cls
    class_weight = torch.ones(n_slots, dtype=logits.dtype, device=logits.device)
    class_weight[-1] = NO_OBJECT_WEIGHT
    loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, weight=class_weight)

    src, tgt = [], []
    for b, cls in enumerate(present):
        for c in cls.tolist():
            src.append(masks[b, c])
            tgt.append(labels[b] == c)
    if not src:
        zero = logits.sum() * 0.0 + masks.sum() * 0.0
        return loss_ce, zero, zero
    src_masks = torch.stack(src)[:, None]
    src_masks = F.interpolate(src_masks, size=labels.shape[-2:], mode="bilinear",
                              align_corners=False)[:, 0].flatten(1)
    tgt_masks = torch.stack(tgt).to(src_masks.dtype).flatten(1)

    prob = src_masks.sigmoid()
    bce = F.binary_cross_entropy_with_logits(src_masks, tgt_masks, reduction="none")
    p_t = prob * tgt_masks + (1 - prob) * (1 - tgt_masks)
    alpha_t = FOCAL_ALPHA * tgt_masks + (1 - FOCAL_ALPHA) * (1 - tgt_masks)
    focal = (alpha_t * bce * (1 - p_t) ** FOCAL_GAMMA).mean(1).sum() / num_masks

    numerator = 2 * (prob * tgt_masks).sum(-1)
    denominator = prob.sum(-1) + tgt_masks.sum(-1)
    dice = (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks
    return loss_ce, focal, dice


def official_atm_loss(
    outputs: Dict[str, object],
    labels: Tensor,
    *,
    ignore_index: int = 255,
    return_terms: bool = False,
):
    """Total ATM loss as mmseg would sum it: every key containing 'loss' added up.

    The final output uses the crop-size ``pred_masks`` (resized to the label size, an identity
    when labels are crop-sized); the auxiliary outputs use the accumulated token-grid masks of the
    earlier stages resized straight to the label size, with the earlier stages' class logits.
    num_masks = number of present classes over the whole batch, clamped at 1 (single process,
    no all-reduce), shared by all stages. Each stage contributes 1*CE + 20*focal + 1*dice.
    With ``return_terms`` also returns a dict of the weighted terms keyed like the official
    (loss_ce, loss_mask, loss_dice, loss_ce_0, ...).
    """
    pred_logits: Tensor = outputs["pred_logits"]  # type: ignore[assignment]
    num_classes = pred_logits.shape[-1] - 1
    labels = labels.long()
    if labels.dim() == 4:
        labels = labels.squeeze(1)
    present = _present_classes(labels, ignore_index, num_classes)
    num_masks = max(float(sum(int(c.numel()) for c in present)), 1.0)

    stages = [("", outputs)] + [
        (f"_{i}", aux) for i, aux in enumerate(outputs.get("aux_outputs", []))  # type: ignore
    ]
    terms: Dict[str, Tensor] = {}
    for suffix, out in stages:
        ce, focal, dice = _set_losses(out["pred_logits"], out["pred_masks"], labels, present,
                                      num_masks)
        terms["loss_ce" + suffix] = CE_WEIGHT * ce
        terms["loss_mask" + suffix] = FOCAL_WEIGHT * focal
        terms["loss_dice" + suffix] = DICE_WEIGHT * dice
    total = sum(terms.values())
    return (total, terms) if return_terms else total


# --------------------------------------------------------------------------------------------
# the whole model
# --------------------------------------------------------------------------------------------


def infer_crop_size(sd: StateDict) -> int:
    """Crop size = (stored position grid side) * patch size (the table is stored at the crop)."""
    n_grid = sd["backbone.pos_embed"].shape[1] - 1
    g = int(round(math.sqrt(n_grid)))
    if g * g != n_grid:
        raise ValueError(f"pos_embed grid of {n_grid} tokens is not square")
    return g * sd["backbone.patch_embed.projection.weight"].shape[-1]


def official_forward(state_dict, pixel_values, *, num_heads, decoder_num_heads, out_indices,
                     labels=None, ignore_index=255, num_classes=None):
    """returns (pred, loss): pred = the official decode head's `pred` (B, num_classes, S, S) for a
    square input of S = crop size (S x S, S divisible by 16), in eval mode (no dropout, no drop path);
    loss = float tensor, the total ATM loss (sum over stages of 1*CE + 20*focal + 1*dice, see SPEC.md)
    when labels (B, S, S) int64 are given, else None.

    All sizes (depth, widths, class count, stages, decoder layers, crop) are read from the state
    dict; ``num_classes``, when given, is only checked against ``decode_head.q.weight``. The
    state dict is used in ``pixel_values``' dtype and device (so float64 runs are possible).
    Keys not used by the model (e.g. ``decode_head.loss_decode.criterion.empty_weight``) are
    ignored.
    """
    sd = {k: v.to(device=pixel_values.device, dtype=pixel_values.dtype)
          if torch.is_floating_point(v) else v
          for k, v in state_dict.items()}
    k_classes = sd["decode_head.q.weight"].shape[0]
    if num_classes is not None and num_classes != k_classes:
        raise ValueError(f"num_classes={num_classes} but the state dict has {k_classes} queries")
    crop = infer_crop_size(sd)
    features = official_backbone(sd, pixel_values, num_heads=num_heads, out_indices=out_indices)
    outputs = official_head(sd, features, decoder_num_heads=decoder_num_heads, image_size=crop)
    loss = None
    if labels is not None:
        loss = official_atm_loss(outputs, labels.to(pixel_values.device),
                                 ignore_index=ignore_index)
    return outputs["pred"], loss


# --------------------------------------------------------------------------------------------
# random checkpoints in the official layout
# --------------------------------------------------------------------------------------------


class _RandomParameters:
    """Fills a state dict with random tensors at the scales documented in
    :func:`make_random_official_state_dict`, drawn from one seeded generator in call order."""

    def __init__(self, sd: StateDict, seed: int):
        self.sd = sd
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape, std=1.0, mean=0.0):
        return torch.randn(*shape, generator=self.gen) * std + mean

    def linear(self, prefix, n_out, n_in):
        self.sd[prefix + ".weight"] = self.randn(n_out, n_in, std=n_in ** -0.5)
        self.sd[prefix + ".bias"] = self.randn(n_out, std=0.05)

    def norm(self, prefix, n):
        self.sd[prefix + ".weight"] = self.randn(n, std=0.1, mean=1.0)
        self.sd[prefix + ".bias"] = self.randn(n, std=0.1)

    def fused_attention(self, prefix, n):
        self.sd[prefix + ".in_proj_weight"] = self.randn(3 * n, n, std=n ** -0.5)
        self.sd[prefix + ".in_proj_bias"] = self.randn(3 * n, std=0.05)
        self.linear(prefix + ".out_proj", n, n)

    def decoder_layer(self, prefix, d, atm):
        """A post-norm decoder layer: the ATM layer's q/k/v/proj cross attention (``atm``) or a
        stock ``nn.TransformerDecoderLayer``'s fused one."""
        self.fused_attention(prefix + "self_attn", d)
        if atm:
            for name in ("q", "k", "v", "proj"):
                self.linear(prefix + "multihead_attn." + name, d, d)
        else:
            self.fused_attention(prefix + "multihead_attn", d)
        self.linear(prefix + "linear1", 4 * d, d)
        self.linear(prefix + "linear2", d, 4 * d)
        for name in ("norm1", "norm2", "norm3"):
            self.norm(prefix + name, d)


def _loss_buffer(num_classes: int) -> Tensor:
    empty_weight = torch.ones(num_classes + 1)
    empty_weight[-1] = NO_OBJECT_WEIGHT
    return empty_weight


def make_random_official_state_dict(*, hidden_size, num_layers, num_heads, decoder_dim,
                                    decoder_num_heads, num_classes, crop, num_stages, seed,
                                    decoder_layers=3, patch_size=16, mlp_ratio=4,
                                    with_loss_buffer=False):
    """A random state dict with exactly the official key layout and shapes.

    Scales are chosen so that every parameter visibly matters: Linear/conv weights ~ N(0, 1/fan_in)
    (activations stay O(1)), Linear biases ~ N(0, 0.05^2), LayerNorm weights ~ 1 + N(0, 0.1^2) and
    biases ~ N(0, 0.1^2), position table ~ N(0, 0.2^2) (CLS slot included), cls token ~
    N(0, 0.02^2), class query table ~ N(0, 1). ``num_heads`` / ``decoder_num_heads`` are only
    checked for divisibility (the layout does not depend on them). ``with_loss_buffer`` adds
    ``decode_head.loss_decode.criterion.empty_weight`` as found in released checkpoints.
    """
    if hidden_size % num_heads or decoder_dim % decoder_num_heads:
        raise ValueError("widths must be divisible by the head counts")
    if crop % patch_size:
        raise ValueError("crop must be a multiple of the patch size")
    sd: StateDict = {}
    rand = _RandomParameters(sd, int(seed))
    c, d, g = hidden_size, decoder_dim, crop // patch_size
    fan_in = 3 * patch_size * patch_size
    sd["backbone.patch_embed.projection.weight"] = rand.randn(c, 3, patch_size, patch_size,
                                                              std=fan_in ** -0.5)
    sd["backbone.patch_embed.projection.bias"] = rand.randn(c, std=0.05)
    sd["backbone.cls_token"] = rand.randn(1, 1, c, std=0.02)
    sd["backbone.pos_embed"] = rand.randn(1, 1 + g * g, c, std=0.2)
    for i in range(num_layers):
        p = f"backbone.layers.{i}."
        rand.norm(p + "ln1", c)
        rand.fused_attention(p + "attn.attn", c)
        rand.norm(p + "ln2", c)
        rand.linear(p + "ffn.layers.0.0", mlp_ratio * c, c)
        rand.linear(p + "ffn.layers.1", c, mlp_ratio * c)

    for k in range(1, num_stages + 1):
        rand.linear(f"decode_head.input_proj_{k}", d, c)
        rand.norm(f"decode_head.proj_norm_{k}", d)
        for j in range(decoder_layers):
            rand.decoder_layer(f"decode_head.decoder_{k}.layers.{j}.", d, atm=True)
    sd["decode_head.q.weight"] = rand.randn(num_classes, d)
    rand.linear("decode_head.class_embed", num_classes + 1, d)
    if with_loss_buffer:
        sd["decode_head.loss_decode.criterion.empty_weight"] = _loss_buffer(num_classes)
    return sd


# --------------------------------------------------------------------------------------------
# shrunk variant: vit_shrink backbone (QD) + TPNATMHead (QU decoders + one-stage ATM)
# --------------------------------------------------------------------------------------------

# Every LayerNorm of the shrunk head is a torch-default one (eps 1e-5): proj_norm_k is
# ``nn.LayerNorm(d)``, the QU decoders are stock ``nn.TransformerDecoderLayer`` (layer_norm_eps
# default) and the ATM layers inherit that default as well. The backbone keeps the base config's
# ``norm_cfg`` (LN, eps 1e-6): the shrunk configs only override the backbone's type, shrink index
# and out_indices, and ``vit_shrink`` builds its layers from that merged ``norm_cfg``.


def _square_side(length: int, what: str) -> int:
    """Side of the square grid behind ``length`` tokens, as the official code would accept it.

    The official reshapes (in ``vit_shrink`` and in the heads' ``d3_to_d4``) drop the first token
    when the count is odd (a CLS heuristic) but still take the side from the *original* count, so
    an odd count (odd side) can never be reshaped; a non-square count fails as well. We raise.
    """
    side = int(math.sqrt(length))
    if length % 2 != 0 or side * side != length:
        raise ValueError(
            f"official {what} cannot reshape {length} tokens into a square grid "
            "(needs an even, square token count, i.e. an even grid side)"
        )
    return side


def official_shrunk_backbone(
    sd: StateDict,
    pixel_values: Tensor,
    *,
    num_heads: int,
    out_indices: Sequence[int],
    shrink_index: int,
) -> List[Tensor]:
    """``vit_shrink`` forward with SegViT's shrunk configs, eval mode.

    Patch embedding and position embeddings exactly as the plain backbone (CLS token dropped,
    bicubic resize when the grid differs from the stored one). Layer ``shrink_index`` (0-based) is
    :func:`encoder_layer` with ``shrink=True``, every other layer a plain one; layers after it run on the
    halved grid. An index outside [0, num_layers) simply never matches (no shrinking).

    Unlike the plain backbone the features are returned as token sequences (B, L, C), NOT reshaped
    to maps: (B, (h*w), C) before the shrink layer, (B, (h/2*w/2), C) from it on. Output selection
    as in :func:`official_backbone` (membership in ``out_indices``, layer order).

    The input grid must be square with an even side (input side divisible by 32 after the
    corner padding to a multiple of 16) whenever the shrink layer is reached; else ValueError.
    """
    num_layers = _count_indexed(sd, r"backbone\.layers\.(\d+)\.ln1\.weight")
    tokens, hw = patch_embed(sd, pixel_values)
    x = tokens + position_embedding_for_grid(sd, hw)
    wanted = set(int(i) for i in out_indices)
    features = []
    for i in range(num_layers):
        x = encoder_layer(x, sd, i, num_heads, shrink=i == shrink_index)
        if i in wanted:
            features.append(x)
    return features


def qu_decoder_layer(
    queries: Tensor, memory: Tensor, sd: StateDict, prefix: str, num_heads: int
) -> Tensor:
    """A stock ``nn.TransformerDecoderLayer(d, heads, 4d)`` in eval mode, batch-first here.

    Post-norm (norm_first=False), ReLU, no masks:
    q = norm1(q + self_attn(q, q, q))
    q = norm2(q + multihead_attn(q, memory, memory))   (standard fused-in_proj attention)
    q = norm3(q + linear2(relu(linear1(q))))
    LayerNorm eps 1e-5; the 0.1 dropouts are identities in eval mode.
    """
    p = prefix + "."
    q = queries
    q = _layer_norm(q + stored_attention(q, q, q, sd, p + "self_attn", num_heads), sd, p + "norm1", HEAD_LN_EPS)
    q2 = stored_attention(q, memory, memory, sd, p + "multihead_attn", num_heads)
    q = _layer_norm(q + q2, sd, p + "norm2", HEAD_LN_EPS)
    return _post_norm_mlp(q, sd, p)


def qu_decoder_stage(
    queries: Tensor, memory: Tensor, sd: StateDict, prefix: str, num_heads: int
) -> Tensor:
    """An ``nn.TransformerDecoder`` (no final norm) under ``prefix``: its layers in sequence."""
    num_layers = _count_indexed(sd, re.escape(prefix) + r"\.layers\.(\d+)\.norm1\.weight")
    for j in range(num_layers):
        queries = qu_decoder_layer(queries, memory, sd, f"{prefix}.layers.{j}", num_heads)
    return queries


def official_shrunk_head(
    sd: StateDict,
    features: Sequence[Tensor],
    *,
    decoder_num_heads: int,
    image_size: Optional[int] = None,
) -> Dict[str, object]:
    """``TPNATMHead.forward`` (use_proj=True, shrink_ratio=16), computed without dropout.

    * QU: the first ``num_stages`` (= number of ``decode_head.decoder_k``) features are used in the
      given (layer) order, NOT reversed: stage 1 reads the early 1/16 feature, stage 2 the 1/32
      one. lateral_k = proj_norm_k(input_proj_k(x)) (no summing of laterals). The learned table
      ``decode_head.q.weight`` ((crop/16)^2, d) is the initial query set of every image; it goes
      through ``decoder_1`` with memory lateral_1, then through ``decoder_2`` with memory
      lateral_2 (see :func:`qu_decoder_layer`).
    * The QU output tokens are viewed as the (crop/16) x (crop/16) grid (even square count
      required, else the official reshape fails) and flattened back: they are the single lateral
      of ``atm`` (an ``ATMSingleHead`` with use_stages=1, Identity projection and norm, so no
      ``atm.input_proj_1`` / ``atm.proj_norm_1`` parameters).
    * ATM: class queries ``decode_head.atm.q.weight`` (num_classes, d) go through the layers of
      ``atm.decoder_1`` (:func:`atm_decoder_layer`). EVERY layer yields an output: class logits =
      ``atm.class_embed``(its queries), mask logits = its head-averaged pre-softmax cross
      similarity on the grid. Masks are NOT accumulated (each is only bilinearly resized to the
      last layer's grid, the same grid, i.e. unchanged).
    * Last layer = prediction: pred_masks = bilinear resize (align_corners=False) to
      (image_size, image_size) with image_size the configured crop; pred =
      einsum(softmax(logits)[..., :-1], sigmoid(pred_masks)). The earlier layers are the
      auxiliary outputs (logits, grid masks).

    Returns the dict of :func:`official_head` ("pred_logits", "pred_masks", "pred",
    "aux_outputs"), usable as is by :func:`official_atm_loss`.
    """
    num_stages = _count_indexed(sd, r"decode_head\.decoder_(\d+)\.layers\.0\.norm1\.weight")
    if len(features) < num_stages:
        raise ValueError(f"head has {num_stages} QU stages but got {len(features)} features")
    atm_stages = _count_indexed(sd, r"decode_head\.atm\.decoder_(\d+)\.layers\.0\.norm1\.weight")
    if atm_stages != 1:
        raise ValueError(f"the shrunk head's ATM has exactly one stage, found {atm_stages}")
    if image_size is None:
        image_size = infer_crop_size(sd)
    feats = [f.flatten(2).transpose(1, 2) if f.dim() == 4 else f for f in features[:num_stages]]

    batch = feats[0].shape[0]
    q = sd["decode_head.q.weight"].unsqueeze(0).expand(batch, -1, -1)
    for k, x in enumerate(feats, start=1):
        lateral = x
        if f"decode_head.input_proj_{k}.weight" in sd:  # use_proj=True (always, officially)
            lateral = _linear(lateral, sd, f"decode_head.input_proj_{k}")
        if f"decode_head.proj_norm_{k}.weight" in sd:
            lateral = _layer_norm(lateral, sd, f"decode_head.proj_norm_{k}", HEAD_LN_EPS)
        q = qu_decoder_stage(q, lateral, sd, f"decode_head.decoder_{k}", decoder_num_heads)

    _square_side(q.shape[1], "TPNATMHead")  # the grid round trip only checks the shape
    memory = q

    num_atm_layers = _count_indexed(
        sd, r"decode_head\.atm\.decoder_1\.layers\.(\d+)\.norm1\.weight"
    )
    cls_q = sd["decode_head.atm.q.weight"].unsqueeze(0).expand(batch, -1, -1)
    layer_logits: List[Tensor] = []
    layer_masks: List[Tensor] = []
    for j in range(num_atm_layers):
        cls_q, sim = atm_decoder_layer(
            cls_q, memory, sd, f"decode_head.atm.decoder_1.layers.{j}", decoder_num_heads
        )
        layer_masks.append(_similarity_to_grid(sim))
        layer_logits.append(_linear(cls_q, sd, "decode_head.atm.class_embed"))

    grid = layer_masks[-1].shape[-2:]
    layer_masks = [F.interpolate(m, size=grid, mode="bilinear", align_corners=False)
                   for m in layer_masks]
    return _head_outputs(layer_logits, layer_masks, image_size)


def official_shrunk_forward(state_dict, pixel_values, *, num_heads, decoder_num_heads, out_indices,
                            shrink_index, labels=None, ignore_index=255):
    """(pred, loss) of vit_shrink + TPNATMHead, eval mode, square crop-sized input (S divisible by 32).

    pred: the head's ``pred`` (B, num_classes, crop, crop) scores; loss: the total ATM loss (sum
    over the 3 ATM layers' outputs of 1*CE + 20*focal + 1*dice, as :func:`official_atm_loss`)
    when labels (B, S, S) are given, else None. Everything else (depth, widths, classes, crop,
    number of QU stages and of decoder layers) is read from the state dict, which is used in
    ``pixel_values``' dtype and device. Unused keys (the loss buffers) are ignored.

    The crop is read from the stored position table; the QU table must hold (crop/16)^2 queries
    (the official shrink_ratio 16). Other square inputs with an even token-grid side also run (the
    QU/ATM grid stays the crop's, and ``pred`` is crop-sized as officially).
    """
    sd = {k: v.to(device=pixel_values.device, dtype=pixel_values.dtype)
          if torch.is_floating_point(v) else v
          for k, v in state_dict.items()}
    crop = infer_crop_size(sd)
    n_qu = sd["decode_head.q.weight"].shape[0]
    if n_qu != (crop // 16) ** 2:
        raise ValueError(f"QU table has {n_qu} queries, expected (crop/16)^2 = {(crop // 16) ** 2}")
    features = official_shrunk_backbone(sd, pixel_values, num_heads=num_heads,
                                        out_indices=out_indices, shrink_index=shrink_index)
    outputs = official_shrunk_head(sd, features, decoder_num_heads=decoder_num_heads,
                                   image_size=crop)
    loss = None
    if labels is not None:
        loss = official_atm_loss(outputs, labels.to(pixel_values.device),
                                 ignore_index=ignore_index)
    return outputs["pred"], loss


def make_random_official_shrunk_state_dict(*, hidden_size, num_layers, num_heads, decoder_dim,
                                           decoder_num_heads, num_classes, crop, seed,
                                           decoder_layers=3, with_loss_buffer=False,
                                           num_stages=2, patch_size=16, mlp_ratio=4):
    """Random state dict in the official shrunk key layout (2 QU stages).

    The backbone part is exactly :func:`make_random_official_state_dict`'s for the same arguments
    and seed (vit_shrink has the plain layout). The head, from an independent generator, holds:
    ``decode_head.input_proj_{k}`` / ``proj_norm_{k}`` (k = 1..num_stages), the stock
    ``nn.TransformerDecoder`` stages ``decode_head.decoder_{k}.layers.{j}.`` (self_attn and
    multihead_attn with fused ``in_proj_weight|in_proj_bias`` and ``out_proj``, linear1/2,
    norm1/2/3; no decoder-level norm), the QU table ``decode_head.q.weight`` ((crop/16)^2 x d),
    and the ATM: ``decode_head.atm.decoder_1.layers.{j}.`` (ATM layer keys),
    ``decode_head.atm.q.weight`` (num_classes x d), ``decode_head.atm.class_embed``. There is no
    top-level ``decode_head.class_embed`` and no ``atm.input_proj_1`` / ``atm.proj_norm_1``
    (Identity). ``with_loss_buffer`` adds both criterion buffers a released checkpoint holds
    (the TPNATMHead and its inner ATMSingleHead each build an ATMLoss):
    ``decode_head.loss_decode.criterion.empty_weight`` and
    ``decode_head.atm.loss_decode.criterion.empty_weight``. Same scales as the plain maker; the
    QU table ~ N(0, 1).
    """
    if crop % (2 * patch_size):
        raise ValueError("the shrunk model needs a crop divisible by 2 * patch size "
                         "(even token grid)")
    sd = make_random_official_state_dict(
        hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
        decoder_dim=decoder_dim, decoder_num_heads=decoder_num_heads, num_classes=num_classes,
        crop=crop, num_stages=0, seed=seed, decoder_layers=decoder_layers,
        patch_size=patch_size, mlp_ratio=mlp_ratio, with_loss_buffer=False,
    )
    sd = {k: v for k, v in sd.items() if k.startswith("backbone.")}
    rand = _RandomParameters(sd, (int(seed) * 1_000_003 + 7) % (2 ** 62))
    c, d, g = hidden_size, decoder_dim, crop // 16
    for k in range(1, num_stages + 1):
        rand.linear(f"decode_head.input_proj_{k}", d, c)
        rand.norm(f"decode_head.proj_norm_{k}", d)
        for j in range(decoder_layers):
            rand.decoder_layer(f"decode_head.decoder_{k}.layers.{j}.", d, atm=False)
    sd["decode_head.q.weight"] = rand.randn(g * g, d)
    for j in range(decoder_layers):
        rand.decoder_layer(f"decode_head.atm.decoder_1.layers.{j}.", d, atm=True)
    sd["decode_head.atm.q.weight"] = rand.randn(num_classes, d)
    rand.linear("decode_head.atm.class_embed", num_classes + 1, d)
    if with_loss_buffer:
        for prefix in ("decode_head.loss_decode", "decode_head.atm.loss_decode"):
            sd[prefix + ".criterion.empty_weight"] = _loss_buffer(num_classes)
    return sd
