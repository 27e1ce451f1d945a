"""From scores to masks, at every granularity and scope; and ``prune``, which does it all in one call.

Granularity:
- ``"weight"``: individual weights, M = scores > v_thr elementwise;
- ``"n:m"``: in every group of m consecutive weights along a row of W.flatten(1), keep the n largest scores
  (layers whose rows do not split into groups of m are skipped unless named, then refused);
- ``"neuron"`` / ``"channel"``: whole units (rows of a Linear's W, filters of a Conv2d's W), scored per unit;
  a removed unit's bias and the following BatchNorm's weight and bias are masked too, so its output is 0;
- ``"head"``: whole attention heads of ``nn.MultiheadAttention`` or of a written-out attention with ``qkv`` and
  ``proj`` Linears (``graph.HeadLayout``): head h owns rows h·d … (h+1)·d − 1 of W_q, W_k and W_v (d = E / H) and the
  same columns of W_o; masking all of them (and the q, k, v biases) makes the head add exactly 0 to the output.
  Scored by the L1 norm of those weights (``"magnitude"``, ``"l1"``), at random, or by the importance I_h measured
  on data (``"head_importance"``, Michel et al. 2019: ``prunelab.heads``).
Scope: ``"layer"`` (each layer to its own sparsity, from one number or a per-layer dict), ``"global"``
(one threshold over all layers' scores together) or ``"row"`` (each output row of W.flatten(1) its own comparison
group, as Wanda prunes: ``prunelab.one_shot``).

Scores are always computed from the original weights, so pruning again replaces the mask: never compounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from . import masks as M
from ._helpers import did_you_mean, in_mode, select_layers
from .data import Data, as_image_set
from .graph import HeadLayout, following_batchnorm, head_layout
from .scores import CALIBRATION_EXAMPLE
from .scores import gradient_magnitude, loss_gradients, magnitude, random_scores, taylor, taylor_batches, unit_norm
from .thresholds import check_sparsity, mask_for_sparsity, mask_from_threshold, split_by_layer, threshold_from_std

__all__ = ["Granularity", "Criterion", "Scope", "UNIT_CRITERIA", "weight_scores", "unit_scores", "layer_masks_for_sparsity",
           "keep_per_row", "nm_masks", "unit_layers", "expand_units", "attention_layers", "head_scores",
           "head_criterion_scores",
           "head_masks_to_parameters", "unit_masks_to_parameters", "quality_masks", "prune", "following_batchnorm",
           "replace_with_identity", "unmasked"]

Granularity = Literal["weight", "n:m", "neuron", "channel", "head"]
Criterion = Literal["magnitude", "l1", "l2", "gradient", "taylor", "taylor_batches", "random", "wanda",
                    "mean_activation", "max_activation", "apoz", "loss_change", "gradient_change", "head_importance"]
Scope = Literal["layer", "global", "row"]
DATA_UNIT_CRITERIA = ("mean_activation", "max_activation", "apoz", "loss_change", "taylor_batches", "gradient_change")
UNIT_CRITERIA = ("l1", "l2", "magnitude", "gradient", "taylor", "random", *DATA_UNIT_CRITERIA)
_HEAD_CRITERIA = ("magnitude", "l1", "random", "head_importance")


def _check_choice(value, allowed, what):
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, allowed))}, got {value!r}."
                         f"{did_you_mean(value, allowed)}")


@contextmanager
def unmasked(model: nn.Module):
    """Temporarily lift every mask (set it to all ones) so the model computes with its original weights."""
    saved = M.get_masks(model)
    M.set_masks(model, {name: torch.ones_like(m) for name, m in saved.items()})
    try:
        yield model
    finally:
        M.set_masks(model, saved)


def weight_scores(model: nn.Module, layers: dict[str, nn.Module], criterion: Criterion,
                  data: Data | None = None, seed: int = 0, *, batch_size: int = 1) -> dict[str, Tensor]:
    """Per-weight scores of each layer's original weights: ``{layer_name: scores shaped like W}``. ``"wanda"``:
    |W_ij| · ‖X_j‖₂ from the layer's inputs on ``data`` (Linear layers only; ``one_shot.wanda_scores``).
    ``"taylor"``: |W ⊙ g|, g the gradient over all of ``data``; ``"taylor_batches"``: (1/B) Σ_b |W ⊙ g_b| over
    batches of ``batch_size`` images (1 = per example; ``scores.taylor_batches``)."""
    _check_choice(criterion, ("magnitude", "gradient", "taylor", "taylor_batches", "random", "wanda"),
                  "criterion for weights")
    if criterion == "wanda":
        from .one_shot import wanda_scores  # here, not at the top: one_shot imports this module
        with unmasked(model):  # the inputs each layer sees with the original weights
            return wanda_scores(model, data, list(layers))
    W = {name: M.original(model, f"{name}.weight").detach() for name in layers}
    if criterion == "magnitude":
        return {name: magnitude(w) for name, w in W.items()}
    if criterion == "random":
        return {name: random_scores(w.shape, seed=seed + i).to(w.device) for i, (name, w) in enumerate(W.items())}
    if data is None:
        raise ValueError(f"The {criterion!r} criterion needs data to compute gradients: pass data=, e.g. "
                         f"{CALIBRATION_EXAMPLE}.")
    data = as_image_set(data, f"The {criterion!r} criterion", CALIBRATION_EXAMPLE)
    if criterion == "taylor_batches":
        with unmasked(model):
            I = taylor_batches(model, data, batch_size=batch_size)
        return {name: I[f"{name}.weight"] for name in W}
    with unmasked(model):
        g = loss_gradients(model, data)
    if criterion == "gradient":
        return {name: gradient_magnitude(g[f"{name}.weight"]) for name in W}
    return {name: taylor(w, g[f"{name}.weight"]) for name, w in W.items()}


def unit_scores(model: nn.Module, layers: dict[str, nn.Module], criterion: Criterion,
                data: Data | None = None, seed: int = 0, n_images: int = 2048, *,
                batch_size: int = 1) -> dict[str, Tensor]:
    """Per-unit scores ``{layer_name: [units]}``: the L1 or L2 norm of each row/filter, the sum over the
    unit of a per-weight score (``"magnitude"`` = L1, ``"gradient"``, ``"taylor"``), random, or from the
    first ``n_images`` of ``data``: mean or max activation, 1 − APoZ, the measured loss change ΔL_j,
    ``"taylor_batches"``: (1/B) Σ_b |T_j(b)| over batches of ``batch_size`` images (1 = per example;
    ``data_criteria.unit_taylor_batches``), or ``"gradient_change"``: ΔG_j (``data_criteria.gradient_change``)."""
    _check_choice(criterion, UNIT_CRITERIA, "criterion for neurons/channels")
    if criterion in ("l1", "l2"):
        p = 1 if criterion == "l1" else 2
        return {name: unit_norm(M.original(model, f"{name}.weight").detach(), p) for name in layers}
    if criterion == "random":
        return {name: random_scores((layer.weight.shape[0],), seed=seed + i)
                for i, (name, layer) in enumerate(layers.items())}
    if criterion in DATA_UNIT_CRITERIA:
        return _data_unit_scores(model, layers, criterion, data, n_images, batch_size)
    per_weight = weight_scores(model, layers, criterion, data, seed)
    return {name: s.flatten(1).sum(1) for name, s in per_weight.items()}


def _data_unit_scores(model, layers, criterion, data, n_images, batch_size) -> dict[str, Tensor]:
    from . import data_criteria as D

    if data is None:
        raise ValueError(f"The {criterion!r} criterion needs data: pass data=, e.g. {CALIBRATION_EXAMPLE}.")
    data = as_image_set(data, f"The {criterion!r} criterion", CALIBRATION_EXAMPLE)
    n = min(n_images, len(data))
    with unmasked(model):  # scores from the original weights
        if criterion == "loss_change":
            return {name: D.measured_loss_change(model, name, data, n_images=n) for name in layers}
        if criterion == "taylor_batches":
            return {name: D.unit_taylor_batches(model, name, data, batch_size=batch_size, n_images=n)
                    for name in layers}
        if criterion == "gradient_change":
            return {name: D.gradient_change(model, name, data, n_images=n) for name in layers}
        x = data.normalized(next(model.parameters()).device)[:n]
        activations = D.collect_activations(model, x, list(layers))
    score = {"mean_activation": D.mean_activation, "max_activation": D.max_activation,
             "apoz": D.apoz_score}[criterion]
    return {name: score(a) for name, a in activations.items()}


def layer_masks_for_sparsity(scores: Mapping[str, Tensor], sparsity: float | Mapping[str, float],
                       scope: Scope = "layer") -> dict[str, Tensor]:
    """Keep-masks ``{name: bool, shaped like scores}``: M = scores > v_thr, v_thr the k-th smallest score,
    removing exactly k = round(s · n) (ties broken by position; see ``thresholds.mask_for_sparsity``).

    ``scope="layer"``: each layer's own k-th value, with ``sparsity`` one number or ``{layer: s}`` (layers
    not in the dict are left dense). ``scope="global"``: one v_thr over all scores together. ``scope="row"``: as
    ``"layer"``, but every row of ``scores.flatten(1)`` removes its own k = round(s · in) (``keep_per_row``).
    """
    _check_choice(scope, ("layer", "global", "row"), "scope")
    if scope == "global":
        if isinstance(sparsity, Mapping):
            raise ValueError("Global scope takes one sparsity for all layers; a per-layer dict needs scope='layer'.")
        keep = mask_for_sparsity(torch.cat([s.flatten().float().cpu() for s in scores.values()]), sparsity)
        return {name: k.to(scores[name].device)
                for name, k in split_by_layer(keep, {name: s.shape for name, s in scores.items()}).items()}
    per_layer = dict(sparsity) if isinstance(sparsity, Mapping) else {name: sparsity for name in scores}
    unknown = set(per_layer) - set(scores)
    if unknown:
        raise ValueError(f"Sparsity given for unknown layer(s) {sorted(unknown)}; layers: {', '.join(scores)}.")
    for name, s in per_layer.items():
        check_sparsity(s, f"sparsity of {name!r}")
        if scope == "row" and scores[name].dim() < 2:
            raise ValueError(f"scope='row' compares the weights of each output row, but the scores of {name!r} "
                             f"are one per unit {list(scores[name].shape)}; use scope='layer' or 'global'.")
    if scope == "row":
        return {name: keep_per_row(s.flatten(1), round(per_layer[name] * s[0].numel())).view(s.shape)
                if name in per_layer else torch.ones_like(s, dtype=torch.bool) for name, s in scores.items()}
    return {name: mask_for_sparsity(s, per_layer[name]) if name in per_layer
            else torch.ones_like(s, dtype=torch.bool) for name, s in scores.items()}


def keep_per_row(scores: Tensor, k: int) -> Tensor:
    """Keep-mask of ``scores`` [rows, cols] removing the k lowest scores of every row (ties broken by position)."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    return keep.scatter_(1, scores.argsort(dim=1, stable=True)[:, :k], False)


def nm_masks(scores: Mapping[str, Tensor], n: int, m: int) -> dict[str, Tensor]:
    """N:M keep-masks: in every group of ``m`` consecutive entries along each row of ``scores.flatten(1)``,
    keep the ``n`` highest scores (e.g. 2:4, which sparse tensor cores run fast). Sparsity is 1 - n/m."""
    if not (isinstance(n, int) and isinstance(m, int) and 0 < n < m):
        raise ValueError(f"N:M needs integers 0 < N < M (e.g. 2:4), got {n}:{m}.")
    out = {}
    for name, s in scores.items():
        rows = s.flatten(1)
        if rows.shape[1] % m:
            raise ValueError(f"Layer {name!r} has {rows.shape[1]} inputs per unit, not divisible by M={m}; "
                             f"choose an M that divides it or leave this layer out (layers=...).")
        groups = rows.reshape(rows.shape[0], -1, m)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(2, groups.topk(n, dim=2).indices, True)
        out[name] = keep.reshape(s.shape)
    return out


def expand_units(keep: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """A per-unit keep vector ``[u]`` broadcast to a parameter of ``shape`` ``[u, ...]`` (each unit's row, filter
    or scalar); a view, no copy."""
    return keep.view(-1, *[1] * (len(shape) - 1)).expand(shape)


def unit_masks_to_parameters(model: nn.Module, unit_masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Expand per-unit keep-masks ``{layer: [units]}`` to parameter masks: the layer's weight rows/filters, its
    bias, and the weight and bias of a BatchNorm that follows it (so a removed unit outputs exactly 0)."""
    bn_after = following_batchnorm(model) if any(
        isinstance(m, nn.Conv2d) for m in M.prunable_layers(model).values()) else {}
    out = {}
    for name, keep in unit_masks.items():
        layer = model.get_submodule(name)
        params = [f"{name}.weight"] + ([f"{name}.bias"] if layer.bias is not None or hasattr(layer, "bias_orig")
                                       else [])
        if name in bn_after:
            params += [f"{bn_after[name]}.weight", f"{bn_after[name]}.bias"]
        out.update({p: expand_units(keep, M.original(model, p).shape).clone() for p in params})
    return out


def attention_layers(model: nn.Module, layers: list[str] | None = None) -> dict[str, HeadLayout]:
    """The attention modules to prune by head, ``{name: HeadLayout}``: ``layers`` by name, or all of them
    (``nn.MultiheadAttention``, and written-out attention with a ``qkv`` and a ``proj`` Linear, see
    ``graph.HeadLayout``)."""
    modules = dict(model.named_modules())
    available = {name: layout for name, m in modules.items() if (layout := head_layout(model, name, m))}
    if not available:
        raise ValueError(f"{type(model).__name__} has no attention whose heads prunelab can find (an "
                         "nn.MultiheadAttention, or a module with Linear layers qkv (E -> 3E) and proj (E -> E) and "
                         "an int `heads`), so no heads to prune; use granularity='weight' or 'neuron' for its Linear "
                         "layers.")
    names = list(available) if layers is None else list(layers)
    for name in names:
        if isinstance(modules.get(name), nn.MultiheadAttention) and name not in available:
            raise ValueError(f"{name!r} has separate q/k/v projections (kdim or vdim differ from embed_dim); "
                             "head pruning supports the packed in_proj_weight.")
        if name not in available:
            raise ValueError(f"{name!r} is not an attention module of {type(model).__name__} (an "
                             f"nn.MultiheadAttention or a qkv/proj attention).{did_you_mean(name, available)} Its "
                             f"attention modules: {', '.join(available)}.")
    return {name: available[name] for name in names}


def _head_parameters(model: nn.Module, layout: HeadLayout) -> dict[str, tuple[Tensor, int]]:
    """``{param_name: (original tensor, dim along which its slices belong to heads)}`` of one attention."""
    dims = {layout.qkv: 0, layout.out: 1, **({layout.qkv_bias: 0} if layout.qkv_bias else {})}
    return {p: (M.original(model, p), dim) for p, dim in dims.items()}


def head_scores(model: nn.Module, layers: dict[str, HeadLayout]) -> dict[str, Tensor]:
    """Per-head scores ``{attention: [H]}``: the L1 norm of the head's rows of W_q, W_k, W_v and columns of W_o."""
    out = {}
    for name, layout in layers.items():
        score = torch.zeros(layout.heads, dtype=torch.float64)
        for param, (W, dim) in _head_parameters(model, layout).items():
            if param == layout.qkv_bias:
                continue
            per_index = W.detach().abs().sum(1 - dim).double().cpu()       # [3E] rows or [E] columns
            score.index_add_(0, layout.head_of(len(per_index)), per_index)
        out[name] = score.float()
    return out


def head_criterion_scores(model: nn.Module, layers: dict[str, HeadLayout], criterion: Criterion,
                          data=None, seed: int = 0) -> dict[str, Tensor]:
    """Per-head scores ``{attention: [H]}`` by ``criterion``: ``"magnitude"`` / ``"l1"`` (``head_scores``),
    ``"random"``, or ``"head_importance"``: I_h = E_x |∂L(x)/∂ξ_h| on ``data`` (images with labels or a
    ``text.TextSet``; ``heads.head_importance``), with the original weights. Not normalised per layer, so
    ``scope="global"`` compares the heads' own importance (see ``heads.normalize_per_layer``)."""
    _check_choice(criterion, _HEAD_CRITERIA, "criterion for heads")
    if criterion == "random":
        return {name: random_scores((layout.heads,), seed=seed + i) for i, (name, layout) in enumerate(layers.items())}
    if criterion == "head_importance":
        from .heads import head_importance  # here, not at the top: heads imports this module
        with unmasked(model):
            return head_importance(model, data, layers=list(layers))
    return head_scores(model, layers)


def head_masks_to_parameters(model: nn.Module, head_masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per-head keep-masks ``{attention: [H]}`` as parameter masks: the head's rows of W_in (q, k and v) and of its
    bias, and its columns of W_o."""
    layouts = attention_layers(model, list(head_masks))
    out = {}
    for name, keep in head_masks.items():
        for param, (W, dim) in _head_parameters(model, layouts[name]).items():
            per_index = keep.cpu()[layouts[name].head_of(W.shape[dim])].to(W.device)
            out[param] = (per_index.view(-1, 1) if dim == 0 and W.dim() == 2 else per_index).expand(W.shape).clone()
    return out


def quality_masks(model: nn.Module, quality: float | Mapping[str, float],
                  layers: list[str] | None = None) -> dict[str, Tensor]:
    """Han et al.'s masks: M = |W| > q · σ(W) per layer, with one q or ``{layer: q}``."""
    chosen = select_layers(model, list(quality) if isinstance(quality, Mapping) else layers)
    out = {}
    for name in chosen:
        W = M.original(model, f"{name}.weight").detach()
        q = quality[name] if isinstance(quality, Mapping) else quality
        out[f"{name}.weight"] = mask_from_threshold(magnitude(W), threshold_from_std(W, q))
    return out


def prune(model: nn.Module, sparsity: float | Mapping[str, float], *, granularity: Granularity = "weight",
          criterion: Criterion = "magnitude", scope: Scope | None = None, layers: list[str] | None = None,
          n: int = 2, m: int = 4, data: Data | None = None, seed: int = 0,
          keep_pruned: bool = False, batch_size: int | None = None) -> dict[str, Tensor]:
    """Mask ``model`` in place and return the parameter masks ``{param_name: bool}``.

    ``sparsity``: the fraction of weights (or units) to remove, in [0, 1), or ``{layer: s}``; ignored for
    ``"n:m"`` (which removes 1 - n/m). Each call defines all the masks: it replaces earlier ones (never
    compounds) and lifts earlier masks on parameters it does not prune. With ``keep_pruned`` (iterative and
    gradual schedules) what is masked now stays masked: its score counts as -inf, so masks only shrink.
    ``prunelab.masks.reset(model)`` restores the original weights exactly. ``data``: images with labels (an
    ImageSet, an ``(x, y)`` pair, a Dataset or a DataLoader: ``data.as_image_set``), needed by the
    ``"gradient"``, ``"taylor"``, ``"taylor_batches"``, activation, ``"loss_change"`` and ``"gradient_change"``
    (neurons and channels only) criteria; ``batch_size``: the batches ``"taylor_batches"`` accumulates over (default
    1: per example; no other criterion takes it). ``"wanda"`` (Linear layers only;
    ``prunelab.one_shot``) takes that or a tensor the model takes; ``"head_importance"`` (heads only;
    ``prunelab.heads``) takes that or a ``text.TextSet``. ``scope`` defaults to ``"row"`` for Wanda (each
    output row removes its own fraction), else ``"layer"``. Every argument is checked before the model is touched.
    """
    _check_choice(granularity, ("weight", "n:m", "neuron", "channel", "head"), "granularity")
    if batch_size is not None and criterion != "taylor_batches":
        raise ValueError(f"batch_size is the batch size of the 'taylor_batches' criterion; {criterion!r} takes none.")
    batch_size = 1 if batch_size is None else batch_size
    scope = ("row" if criterion == "wanda" else "layer") if scope is None else scope
    _check_choice(scope, ("layer", "global", "row"), "scope")
    if granularity != "n:m":
        for s in (sparsity.values() if isinstance(sparsity, Mapping) else [sparsity]):
            check_sparsity(s)
    if isinstance(sparsity, Mapping) and layers is None:
        layers = list(sparsity)
    units, heads = granularity in ("neuron", "channel"), granularity == "head"
    if heads:
        _check_choice(criterion, _HEAD_CRITERIA, "criterion for heads")
        chosen = attention_layers(model, layers)
    else:
        chosen = select_layers(model, layers, units=units)
    if criterion == "wanda" and not units:  # ‖X_j‖ of a Linear's inputs: Linear layers only, convs stay dense
        from .one_shot import linear_layers
        chosen = linear_layers(model, layers)
    if units:
        chosen = unit_layers(model, chosen, granularity, explicit=layers is not None)
    elif granularity == "n:m" and layers is None:  # by default, skip layers whose rows do not split into M
        chosen = {name: layer for name, layer in chosen.items() if layer.weight[0].numel() % m == 0}

    # 1. scores: per head [H], per unit [u] or per weight (shaped like W); what is masked now sinks with keep_pruned
    if heads:
        scores = head_criterion_scores(model, chosen, criterion, data, seed)
    elif units:
        scores = unit_scores(model, chosen, criterion, data, seed, batch_size=batch_size)
    else:
        scores = weight_scores(model, chosen, "magnitude" if criterion in ("l1", "l2") else criterion, data, seed,
                               batch_size=batch_size)
    alive = _alive(model, scores, granularity) if keep_pruned else {}
    scores = _sink_masked(scores, alive)
    # 2. keep-masks from the scores
    keep = nm_masks(scores, n, m) if granularity == "n:m" else layer_masks_for_sparsity(scores, sparsity, scope)
    keep = _keep_pruned(keep, alive)
    if units or heads:
        for name, k in keep.items():
            if not k.any():
                raise ValueError(f"This would remove every {'head' if heads else 'unit'} of {name!r}; choose a "
                                 "lower sparsity.")
    # 3. parameter masks; this call defines the whole masking state: earlier masks it does not set go back to ones
    param_masks = (head_masks_to_parameters(model, keep) if heads else unit_masks_to_parameters(model, keep) if units
                   else {f"{name}.weight": k for name, k in keep.items()})
    full = {name: torch.ones_like(mask) for name, mask in M.get_masks(model).items()}
    full.update(param_masks)
    M.set_masks(model, full)
    return param_masks


def unit_layers(model: nn.Module, chosen: dict[str, nn.Module], granularity: str, *,
                 explicit: bool) -> dict[str, nn.Module]:
    """The chosen layers that ``granularity`` prunes by unit (Linear for "neuron", Conv2d for "channel"), or a
    ValueError that names the other granularity. ``explicit``: the user named the layers (a wrong one is an error)."""
    wanted = nn.Linear if granularity == "neuron" else nn.Conv2d
    other = "channel" if granularity == "neuron" else "neuron"
    wrong = [name for name, layer in chosen.items() if not isinstance(layer, wanted)]
    if wrong and explicit:
        raise ValueError(f"{granularity} pruning applies to {wanted.__name__} layers; {wrong} are not. "
                         f"Use granularity={other!r} for them.")
    kept = {name: layer for name, layer in chosen.items() if isinstance(layer, wanted)}
    if not kept:
        listed = ", ".join(wrong[:4]) + (f" and {len(wrong) - 4} more" if len(wrong) > 4 else "")
        hint = (f" Its {'Conv2d' if other == 'channel' else 'Linear'} layers ({listed}) are pruned by unit "
                f"with granularity={other!r}." if wrong else "")
        last = list(M.prunable_layers(model).values())[-1]
        why = (" (the last layer, whose outputs are the classes, is never pruned by unit)"
               if not explicit and isinstance(last, wanted) else "")
        raise ValueError(f"{type(model).__name__} has no {wanted.__name__} layer for {granularity} "
                         f"pruning{why}.{hint}")
    return kept


def _alive(model: nn.Module, names, granularity: str) -> dict[str, Tensor]:
    """What is unmasked now, per layer: entries of W, units (rows) or heads (columns of W_o); layers without a
    mask omitted."""
    current = M.get_masks(model)
    if granularity == "head":
        layouts = attention_layers(model, list(names))
        return {name: current[layout.out].any(0).view(layout.heads, layout.head_dim).any(1)
                for name, layout in layouts.items() if layout.out in current}
    units = granularity in ("neuron", "channel")
    return {name: current[f"{name}.weight"].flatten(1).any(1) if units else current[f"{name}.weight"]
            for name in names if f"{name}.weight" in current}


def _sink_masked(scores: dict[str, Tensor], alive: dict[str, Tensor]) -> dict[str, Tensor]:
    """What is masked now scores -inf, so it goes first."""
    return {name: s.float().masked_fill(~alive[name].to(s.device), -math.inf) if name in alive else s
            for name, s in scores.items()}


def _keep_pruned(keep: dict[str, Tensor], alive: dict[str, Tensor]) -> dict[str, Tensor]:
    """Masks only shrink: what is masked now stays masked, even when the new target is lower."""
    return {name: k & alive[name].to(k.device) if name in alive else k for name, k in keep.items()}


def replace_with_identity(model: nn.Module, name: str, *, example: Tensor | None = None) -> nn.Module:
    """Layer pruning: a copy of ``model`` with the submodule ``name`` (a layer or a residual block) replaced by
    ``nn.Identity``. Allowed only where the output keeps its shape without it; otherwise ``ValueError`` says why.
    ``example``: an input batch to check shapes with (default one [1, 1, 28, 28] image)."""
    try:
        target = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{type(model).__name__} has no submodule {name!r}."
                         f"{did_you_mean(name, [n for n, _ in model.named_modules() if n])}") from None
    example = torch.zeros(1, 1, 28, 28) if example is None else example
    shapes = {}
    hook = target.register_forward_hook(lambda mod, args, out: shapes.update(i=args[0].shape, o=out.shape))
    try:
        with torch.no_grad(), in_mode(model, training=False):
            model(example)
    finally:
        hook.remove()
    if shapes["i"] != shapes["o"]:
        raise ValueError(f"Cannot replace {name!r} by identity: it maps {list(shapes['i'][1:])} to "
                         f"{list(shapes['o'][1:])}, so the next layer would get the wrong shape. Only layers "
                         "and blocks whose input and output shapes match (e.g. a residual block without "
                         "downsampling, or a square Linear) can be removed whole.")
    pruned = M.copy_model(model)
    parent_name, _, child = name.rpartition(".")
    setattr(pruned.get_submodule(parent_name), child, nn.Identity())
    return pruned
