"""Importance criteria that need data: activations on a calibration batch, and the measured loss change.

A low score means "prune me first", as in ``prunelab.scores``.

- ``collect_activations(model, x, layers)``: A, the output of each layer's units after the nonlinearity
  that follows the layer, on a calibration batch x.
- From A ([N, C] or [N, C, H, W], units along dim 1) to one score per unit [C]: ``mean_activation``,
  ``max_activation``, and ``apoz_score`` = 1 − ``apoz``. APoZ itself (Hu et al. 2016) is HIGH for an
  unimportant unit, so rank units by ``apoz_score``, never by ``apoz``.
- ``measured_loss_change``: ΔL_j = L_j − L for every unit j of a layer, where L is the mean cross-entropy of
  the intact model on the data and L_j the same with unit j removed. Positive = removing j hurts = important.
- ``layer_loss_change``: ΔL_l = L_l − L for removing whole layers (replaced by identity, or their output zeroed).
- ``taylor_unit_terms`` / ``unit_taylor_batches``: Molchanov et al.'s first-order estimate of ΔL_j, accumulated over
  batches, I_j = (1/B) Σ_b |T_j(b)|^p.
- ``gradient_change``: ΔG_j = ‖∇_θ L_j − ∇_θ L‖₂, how much removing unit j changes the gradient of the loss.
- ``layer_importance``: per layer, activations, ΔL, accuracy and ΔG when the whole layer is removed (a table).

"The nonlinearity that follows" is found in the model's ``torch.fx`` graph (``prunelab.graph``): a layer's
output, then the BatchNorm that alone reads it (if any), then the nonlinearity (ReLU, GELU, ...) that alone reads
that (if any).
Removing a unit sets that post-nonlinearity output to zero, which is what zeroing the unit's weights and bias
(and its BatchNorm's weight and bias) gives with a ReLU. Nothing is hooked or written into the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from . import graph
from ._helpers import did_you_mean, in_mode
from .data import Data, as_image_set
from .masks import effective, get_masks, prunable_layers
from .scores import _check_batch_size, _check_power, accumulated_taylor, batch_means, loss_gradients
from .training import eval_batch_size, model_device

__all__ = ["collect_activations", "mean_activation", "max_activation", "apoz", "apoz_score",
           "measured_loss_change", "layer_loss_change", "Removal", "taylor_unit_terms", "unit_taylor_batches",
           "gradient_change", "LayerRemoval", "LayerImportance", "layer_importance"]

Removal = Literal["identity", "zero"]   # how a whole layer is removed (``layer_loss_change``)


_CHUNK_ELEMENTS = 1 << 20  # numbers sent through the rest of the network per call (4 MB)


# ---------------------------------------------------------------- scores from activations A -> [C]

def _batch_and_positions(A: Tensor) -> tuple[int, ...]:
    if not isinstance(A, Tensor) or A.dim() < 2:
        got = list(A.shape) if isinstance(A, Tensor) else type(A).__name__
        raise ValueError(f"A must be activations [N, C] or [N, C, H, W] with units along dim 1, got {got}.")
    return (0, *range(2, A.dim()))


def mean_activation(A: Tensor) -> Tensor:
    """Mean of each unit's activation over the batch (and positions): A [N, C] or [N, C, H, W] -> [C]."""
    return A.float().mean(dim=_batch_and_positions(A))


def max_activation(A: Tensor) -> Tensor:
    """Largest activation of each unit over the batch (and positions): [N, C, ...] -> [C]."""
    return A.amax(dim=_batch_and_positions(A))


def apoz(A: Tensor) -> Tensor:
    """Average Percentage of Zeros (Hu et al. 2016), as a fraction in [0, 1]: [N, C, ...] -> [C].

    HIGH APoZ = the unit is mostly off = prune it first. To rank with "low score = prune first", use
    ``apoz_score``.
    """
    return (A == 0).float().mean(dim=_batch_and_positions(A))


def apoz_score(A: Tensor) -> Tensor:
    """1 − APoZ, the fraction of non-zero activations of each unit: [N, C, ...] -> [C]. Low = prune first."""
    return 1 - apoz(A)


# ---------------------------------------------------------------- the model's graph

def _layer_nodes(model: nn.Module, gm: fx.GraphModule, names: list[str]) -> dict[str, fx.Node]:
    """The graph node calling each named prunable layer; ``ValueError`` for an unknown or unused name."""
    known = prunable_layers(model)
    for name in names:
        if name not in known:
            raise ValueError(f"{type(model).__name__} has no prunable layer {name!r}.{did_you_mean(name, known)} "
                             f"Its prunable layers (nn.Linear and nn.Conv2d): {', '.join(known)}.")
    return graph.layer_nodes(gm, names)


# ---------------------------------------------------------------- running it

def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor batch [N, ...], got {type(x).__name__}.")
    if not x.is_floating_point():
        raise ValueError(f"x must be a float batch, got {x.dtype}: normalise images first, e.g. "
                         "data.normalized()[:256] for an ImageSet.")
    if x.dim() < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch [N, ...], got shape {list(x.shape)}.")


def _run(module: nn.Module, model: nn.Module, x: Tensor) -> tuple:
    """``module(x)``, with a shape mismatch reported as ``ValueError``."""
    try:
        return module(x)
    except RuntimeError as e:
        raise ValueError(f"{type(model).__name__} cannot take a batch of shape {list(x.shape)}: {e}. Pass "
                         "inputs shaped like its training images, e.g. data.normalized()[:256] "
                         "([256, 1, 28, 28] for Fashion-MNIST).") from e


def _tensors(data: Data, n_images: int | None, device: torch.device) -> tuple[Tensor, Tensor]:
    """The first ``n_images`` of ``data`` (all if None) as (x float [n, ...], y int64 [n]) on ``device``."""
    data = as_image_set(data, "The loss change", "prunelab.load_fashion_mnist('test').subset(2048)")
    x, y = data.normalized(device), data.labels.to(device)
    _check_x(x)
    if n_images is not None and not (isinstance(n_images, int) and n_images >= 1):
        raise ValueError(f"n_images must be a positive integer or None (all of data), got {n_images!r}.")
    return x[:n_images], y[:n_images]


def _batch_size(model: nn.Module, batch_size: int | None) -> int:
    if batch_size is None:
        return eval_batch_size(model)
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return batch_size


def collect_activations(model: nn.Module, x: Tensor, layers: list[str] | None = None) -> dict[str, Tensor]:
    """A of each named prunable layer on the batch ``x``, from one forward pass: ``{name: A}``.

    A is the output of the layer's units after the BatchNorm and nonlinearity that follow it: relu(fc(x))
    [N, out] for Linear -> ReLU, relu(bn(conv(x))) [N, C, H, W] for Conv2d -> BatchNorm -> ReLU. A layer that
    no nonlinearity follows (the classifier, or a conv whose BatchNorm output is added to a skip connection)
    gives its raw (or BatchNorm) output. ``layers`` defaults to every prunable layer. Runs in eval mode without
    autograd and leaves the model as it was.
    """
    if isinstance(layers, str):
        raise TypeError(f"layers must be a list of layer names, e.g. [{layers!r}], not a string.")
    _check_x(x)
    names = list(prunable_layers(model)) if layers is None else list(layers)
    gm = graph.trace(model, "collect_activations")
    nodes = _layer_nodes(model, gm, names)
    source, _ = graph.input_and_output(gm)
    run = graph.subgraph(gm, [source], [graph.activation_node(gm, nodes[name]) for name in names])
    with in_mode(model, training=False), torch.no_grad():
        values = _run(run, model, x.to(model_device(model)))
    return dict(zip(names, values))


def measured_loss_change(model: nn.Module, layer: str, data: Data, *, n_images: int | None = None,
                         batch_size: int | None = None) -> Tensor:
    """ΔL_j = L_j − L for every unit j of ``layer`` (neurons of a Linear, channels of a Conv2d): [units].

    ``data``: images with labels: an ImageSet, an ``(x, y)`` pair, a Dataset or a DataLoader (``as_image_set``).
    L: mean cross-entropy of the intact model over the first ``n_images`` of ``data`` (all of it if None);
    L_j: the same with unit j removed, i.e. its output after its nonlinearity set to zero. A large positive
    ΔL_j means the unit is important; ΔL_j can be negative (removing j helps on this data). A unit that is 0
    on every image (dead, or already pruned) gets exactly 0. For the classifier, removing j sets logit j to 0.

    Exact, and fast: the network below the layer runs once per batch of ``batch_size`` images. An image on
    which unit j is already 0 keeps its loss, so only the (image, unit) pairs with a non-zero activation run
    the rest of the network, many pairs per call. When a Linear alone reads the layer's output, removing unit
    j changes that Linear's output by a rank-1 term, z_j = z − h[:, j] W[:, j]ᵀ, so only what follows it runs.
    Eval mode, no autograd; the model is left as it was.
    """
    device = model_device(model)
    gm = graph.trace(model, "measured_loss_change")
    node = _layer_nodes(model, gm, [layer])[layer]
    x, y = _tensors(data, n_images, device)
    batch_size = _batch_size(model, batch_size)
    module = gm.get_submodule(layer)
    units, unit_dim = graph.units(module), -1 if isinstance(module, nn.Linear) else 1
    source, result = graph.input_and_output(gm)
    act = graph.activation_node(gm, node)
    nxt = graph.sole_linear_reader(gm, act) if isinstance(module, nn.Linear) else None
    if nxt is not None:     # rank-1: the rest of the network starts after the Linear that alone reads h
        cut, without_unit = graph.sole_user(act), partial(_linear_output_without_unit, effective(nxt))
    else:                   # general: the rest of the network starts at h itself
        cut, without_unit = act, partial(_activations_without_unit, unit_dim)
    needed = graph.frontier(gm, cut)
    below, rest = graph.subgraph(gm, [source], needed + [act]), graph.subgraph(gm, needed, [result])
    i = needed.index(cut)

    dL_sums = torch.zeros(units, dtype=torch.float64, device=device)       # Σ_n (ℓ_j(n) − ℓ(n)) per unit j
    with in_mode(model, training=False), torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            *values, h = _run(below, model, xb)                             # h: [B, units, ...] or [B, ..., units]
            if not all(isinstance(v, Tensor) and v.dim() >= 1 and len(v) == len(xb) for v in values):
                raise TypeError(f"measured_loss_change needs the values passed across {layer!r} to the rest of "
                                f"{type(model).__name__} to be batch-first tensors; some of {needed} are not.")
            loss = F.cross_entropy(rest(*[v.clone() for v in values])[0], yb, reduction="none")   # ℓ(n): [B]
            on = h.movedim(unit_dim, -1).reshape(len(xb), -1, units).ne(0).any(1)   # [B, units]
            n_idx, j_idx = on.nonzero(as_tuple=True)                                # pairs where j is not 0
            per_pair = sum(v[0].numel() for v in values)
            step = max(1, _CHUNK_ELEMENTS // per_pair)
            for p in range(0, len(n_idx), step):
                n, j = n_idx[p:p + step], j_idx[p:p + step]                         # P pairs (image n, unit j)
                inputs = [without_unit(v, h, n, j) if m == i else v[n] for m, v in enumerate(values)]
                loss_j = F.cross_entropy(rest(*inputs)[0], yb[n], reduction="none")
                dL_sums.index_add_(0, j, (loss_j - loss[n]).double())
    return (dL_sums / len(x)).float().cpu()


def _linear_output_without_unit(W: Tensor, z: Tensor, h: Tensor, n: Tensor, j: Tensor) -> Tensor:
    """Rank-1 path: z, the output of the Linear (W [out_next, units]) that alone reads h, for images n with
    unit j[p] removed from image n[p]: z_j = z[n] − h[n, ..., j] W[:, j]ᵀ: [P, ..., out_next]."""
    h_nj = h[n, ..., j].unsqueeze(-1)                                 # [P, ..., 1]
    W_j = W.T[j].view(len(j), *[1] * (h.dim() - 2), -1)               # [P, 1.., out_next]
    return torch.addcmul(z[n], h_nj, W_j, value=-1)


def _activations_without_unit(unit_dim: int, z: Tensor, h: Tensor, n: Tensor, j: Tensor) -> Tensor:
    """General path: the activations h (= z, the value the rest of the network starts from) for images n with
    unit j[p] of image n[p] set to 0: [P, units, ...] or [P, ..., units], units along ``unit_dim``."""
    units = h.shape[unit_dim]
    keep = torch.ones(len(j), units, dtype=h.dtype, device=h.device)
    keep[torch.arange(len(j), device=h.device), j] = 0
    shape = [len(j)] + [1] * (h.dim() - 1)
    shape[unit_dim] = units
    return h[n] * keep.view(shape)


def _unit_dim(module: nn.Module) -> int:
    """Where a layer's units are in its activations: last for a Linear ([N, ..., units]), 1 for a Conv2d."""
    return -1 if isinstance(module, nn.Linear) else 1


def _per_unit_sum(v: Tensor, unit_dim: int) -> Tensor:
    """Σ over positions of every image's unit values: [N, units, ...] or [N, ..., units] -> [N, units]."""
    units = v.shape[unit_dim]
    return v.movedim(unit_dim, -1).reshape(len(v), -1, units).sum(1)


def _replacing(gm: fx.GraphModule, act: fx.Node, h_in: fx.Node | None = None) -> Callable[..., Tensor]:
    """(x, change) -> logits with the value v of ``act`` replaced by ``change(v, value of h_in)`` (None without
    ``h_in``); the graph is cut once, the function runs with autograd if enabled."""
    source, result = graph.input_and_output(gm)
    needed = graph.frontier(gm, act)
    extra = [] if h_in is None else [h_in]
    below, rest = graph.subgraph(gm, [source], needed + extra), graph.subgraph(gm, needed, [result])
    i = needed.index(act)

    def logits_of(xb: Tensor, change: Callable[[Tensor, Tensor | None], Tensor]) -> Tensor:
        values = list(below(xb))
        value_in = values.pop() if h_in is not None else None
        values[i] = change(values[i], value_in)
        return rest(*values)[0]
    return logits_of


def _without_unit(v: Tensor, _: Tensor | None, *, j: int, unit_dim: int) -> Tensor:
    """Activations v with unit j set to 0 on every image (and position)."""
    keep = torch.ones(v.shape[unit_dim], dtype=v.dtype, device=v.device)
    keep[j] = 0
    shape = [1] * v.dim()
    shape[unit_dim] = len(keep)
    return v * keep.view(shape)


def _removed_layer(v: Tensor, v_in: Tensor | None, *, removal: Removal) -> Tensor:
    """A removed layer's output: its input (identity) or zeros."""
    return v_in if removal == "identity" else torch.zeros_like(v)


def _loss_and_accuracy(logits_of: Callable[[Tensor], Tensor], x: Tensor, y: Tensor,
                       batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy (nats) and fraction correct of ``logits_of`` on (x, y), batch by batch, no autograd."""
    total, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            logits = logits_of(xb)
            total += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    return total / len(x), correct / len(x)


def _gradient_distance(g_new: dict[str, Tensor], g: dict[str, Tensor], removed: dict[str, int | None],
                       alive: dict[str, Tensor]) -> float:
    """‖g_new − g‖₂ over the weight entries that remain: not ``removed`` ({param: row j, or None for all of it}),
    not masked now (``alive``: {param: keep-mask})."""
    total = 0.0
    for name, g_p in g.items():
        d = (g_new[name] - g_p).double()
        if name in alive:
            d = d * alive[name]
        if name in removed:
            if removed[name] is None:
                continue
            d[removed[name]] = 0
        total += float(d.pow(2).sum())
    return math.sqrt(total)


def taylor_unit_terms(model: nn.Module, layer: str, data: Data, *, n_images: int | None = None) -> Tensor:
    """The first-order term of every image n and unit j of ``layer``: t_nj = Σ_pos ∂ℓ_n/∂h_nj · h_nj, [N, units].

    h_nj: unit j's output after its BatchNorm and nonlinearity (as in ``collect_activations``; summed over the
    positions of a channel's map), ℓ_n the cross-entropy of image n. t_nj = ∂ℓ_n/∂α_j at α_j = 1 for a gate α_j
    multiplying h_j, so ℓ_n(unit j removed) ≈ ℓ_n − t_nj to first order. For a Linear followed by a ReLU,
    t_nj = Σ_i g_ji W_ji + g_bj b_j with g = ∂ℓ_n/∂W, ∂ℓ_n/∂b (the sum over the unit's weights and bias); with a
    BatchNorm after the layer, the same over its γ_j, β_j (Molchanov et al. 2019's gate after BatchNorm). In eval
    mode each image's loss depends on that image alone, so one backward pass of Σ_n ℓ_n gives every t_nj.
    """
    device = model_device(model)
    gm = graph.trace(model, "taylor_unit_terms")
    node = _layer_nodes(model, gm, [layer])[layer]
    x, y = _tensors(data, n_images, device)
    unit_dim = _unit_dim(gm.get_submodule(layer))
    act = graph.activation_node(gm, node)
    source, result = graph.input_and_output(gm)
    needed = graph.frontier(gm, act)
    below, rest = graph.subgraph(gm, [source], needed), graph.subgraph(gm, needed, [result])
    i = needed.index(act)
    batch_size, terms = eval_batch_size(model), []
    with in_mode(model, training=False):
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            with torch.no_grad():
                values = list(_run(below, model, xb))
            h = values[i].requires_grad_()                                   # [B, units, ...] or [B, ..., units]
            values[i] = h.clone()                                           # in-place ops after it keep h intact
            loss = F.cross_entropy(rest(*values)[0], yb, reduction="sum")   # Σ_n ℓ_n: ∂/∂h_n is ∂ℓ_n/∂h_n
            (dh,) = torch.autograd.grad(loss, h)
            terms.append(_per_unit_sum(dh * h.detach(), unit_dim))         # t: [B, units]
    return torch.cat(terms).cpu()


def unit_taylor_batches(model: nn.Module, layer: str, data: Data, *, batch_size: int = 1,
                        n_images: int | None = None, power: Literal[1, 2] = 1) -> Tensor:
    """Molchanov et al.'s Taylor importance of every unit j of ``layer``, accumulated over batches: [units],

        I_j = (1/B) Σ_b |T_j(b)|^p,   T_j(b) = (1/|b|) Σ_{n∈b} t_nj  (``taylor_unit_terms``),

    b the consecutive batches of ``batch_size`` images (1 = per example; the last may be smaller) among the first
    ``n_images`` of ``data`` (all if None). T_j(b) = Σ over the unit's weights and bias of g_b·θ, g_b the gradient
    of batch b's mean loss: the sum is inside the absolute value (p = 1, 2017) or square (p = 2, 2019), per batch.
    One batch of all images gives |Σ_i g_ji W_ji + g_bj b_j| with the whole set's gradient g, which is small at a
    trained minimum: the per-example terms cancel out in it, not in the accumulated I_j.
    """
    _check_batch_size(batch_size)
    _check_power(power)
    t = taylor_unit_terms(model, layer, data, n_images=n_images)                     # [N, units]
    return accumulated_taylor(batch_means(t, batch_size), power)


def gradient_change(model: nn.Module, layer: str, data: Data, *, n_images: int | None = None,
                    batch_size: int | None = None) -> Tensor:
    """ΔG_j = ‖∇_θ L_j − ∇_θ L‖₂ for every unit j of ``layer``: [units].

    θ: the weights of every Linear and Conv2d (``scores.loss_gradients``), over the entries that remain after
    removing j: all but unit j's own row or filter, and all but the entries masked now. L: the mean cross-entropy
    over the first ``n_images`` of ``data`` (all if None); L_j: the same with unit j removed, i.e. its output after
    its BatchNorm and nonlinearity set to 0 (as ``measured_loss_change``). The next layer's weights reading unit j
    remain: their gradient becomes 0, so they add their gradient in the intact model to ΔG_j. Low ΔG_j: removing j
    barely changes how training would move the other weights. One forward and backward pass per unit and batch
    of ``batch_size`` images; eval mode; the model is left as it was.
    """
    data = as_image_set(data, "The gradient change", "prunelab.load_fashion_mnist('train').subset(512)")
    device = model_device(model)
    gm = graph.trace(model, "gradient_change")
    node = _layer_nodes(model, gm, [layer])[layer]
    x, _ = _tensors(data, n_images, device)
    batch_size = _batch_size(model, batch_size)
    module = gm.get_submodule(layer)
    units, unit_dim = graph.units(module), _unit_dim(module)
    logits_with = _replacing(gm, graph.activation_node(gm, node))
    alive = {name: mask.to(torch.float64) for name, mask in get_masks(model).items()}

    def gradients(logits_of=None) -> dict[str, Tensor]:
        return loss_gradients(model, data, n_images=len(x), batch_size=batch_size, logits_of=logits_of)
    g = gradients()
    dG = torch.zeros(units)
    for j in range(units):
        g_j = gradients(partial(logits_with, change=partial(_without_unit, j=j, unit_dim=unit_dim)))
        dG[j] = _gradient_distance(g_j, g, {f"{layer}.weight": j}, alive)
    return dG


def _layer_sites(model: nn.Module, gm: fx.GraphModule, x: Tensor) -> dict[str, tuple[fx.Node, fx.Node, bool]]:
    """``{layer: (its input node, its activation node, whether both have the same shape)}`` for every prunable
    layer, the shapes from one image of x."""
    nodes = _layer_nodes(model, gm, list(prunable_layers(model)))
    source, _ = graph.input_and_output(gm)
    sites = {name: (node.args[0], graph.activation_node(gm, node)) for name, node in nodes.items()}
    with in_mode(model, training=False), torch.no_grad():
        probe = _run(graph.subgraph(gm, [source], [n for pair in sites.values() for n in pair]), model, x[:1])
    return {name: (h_in, act, a_in.shape == a_out.shape)
            for (name, (h_in, act)), a_in, a_out in zip(sites.items(), probe[0::2], probe[1::2])}


def layer_loss_change(model: nn.Module, data: Data, *, n_images: int | None = None,
                      batch_size: int | None = None, removal: Removal = "identity") -> dict[str, float]:
    """ΔL_l = L_l − L for removing each whole prunable layer l that can be removed: ``{name: ΔL}``.

    ``removal="identity"``: l, together with the BatchNorm and nonlinearity that follow it (as in
    ``collect_activations``), is replaced by identity: the next layer reads l's input. That needs l's input and
    output shapes to be equal (a square Linear; a Conv2d keeping channels and size, as VGGSmall's conv2, conv4 and
    conv6); other layers are skipped and absent from the dict. LeNet-300-100 has none, so it gives ``{}``.
    ``removal="zero"``: l's output after its BatchNorm and nonlinearity is set to 0 (all its units removed at
    once); every layer can be. L, ``n_images`` and ``batch_size`` as in ``measured_loss_change``. The model is
    left as it was.
    """
    if removal not in ("identity", "zero"):
        raise ValueError(f"removal must be 'identity' or 'zero', got {removal!r}."
                         f"{did_you_mean(removal, ['identity', 'zero'])}")
    gm = graph.trace(model, "layer_loss_change")
    x, y = _tensors(data, n_images, model_device(model))
    batch_size = _batch_size(model, batch_size)
    sites = _layer_sites(model, gm, x)
    source, result = graph.input_and_output(gm)
    full = graph.subgraph(gm, [source], [result])
    with in_mode(model, training=False):
        L, _ = _loss_and_accuracy(lambda xb: _run(full, model, xb)[0], x, y, batch_size)
        return {name: _loss_and_accuracy(partial(_replacing(gm, act, h_in if removal == "identity" else None),
                                                 change=partial(_removed_layer, removal=removal)),
                                         x, y, batch_size)[0] - L
                for name, (h_in, act, same_shape) in sites.items() if same_shape or removal == "zero"}


@dataclass(frozen=True)
class LayerRemoval:
    """What removing one whole layer does (one row of ``LayerImportance``). Activations as in
    ``collect_activations`` (after the BatchNorm and nonlinearity), over all images, units and positions."""
    layer: str
    removal: Removal            # "identity" where input and output shapes match, else "zero" (output set to 0)
    mean_activation: float
    max_activation: float
    loss_change: float          # ΔL_l = L_l − L (nats), as ``layer_loss_change`` with this removal
    accuracy: float             # fraction correct without the layer
    gradient_change: float      # ΔG_l = ‖∇_θ L_l − ∇_θ L‖₂ over the other layers' weights (as ``gradient_change``)


@dataclass(frozen=True)
class LayerImportance:
    """``layer_importance``'s table: the intact model's loss L and accuracy, and one ``LayerRemoval`` per layer."""
    L: float
    accuracy: float
    rows: tuple[LayerRemoval, ...]

    def __getitem__(self, layer: str) -> LayerRemoval:
        for row in self.rows:
            if row.layer == layer:
                return row
        names = [row.layer for row in self.rows]
        raise KeyError(f"No layer {layer!r} in this table.{did_you_mean(layer, names)} Layers: {', '.join(names)}.")

    def __str__(self) -> str:
        lines = [f"intact: L = {self.L:.4f}, accuracy {self.accuracy:.1%}",
                 f"{'layer':14s} {'removal':8s} {'mean A':>8s} {'max A':>8s} {'ΔL':>9s} {'accuracy':>9s} {'ΔG':>9s}"]
        lines += [f"{r.layer:14s} {r.removal:8s} {r.mean_activation:8.3f} {r.max_activation:8.2f} "
                  f"{r.loss_change:+9.4f} {r.accuracy:9.1%} {r.gradient_change:9.2e}" for r in self.rows]
        return "\n".join(lines)


def _activation_stats(model: nn.Module, x: Tensor, layers: list[str], batch_size: int) -> dict[str, tuple]:
    """``{layer: (mean, max)}`` of its activations A over all of x, units and positions, batch by batch."""
    sums, peaks, counts = dict.fromkeys(layers, 0.0), dict.fromkeys(layers, -math.inf), dict.fromkeys(layers, 0)
    for start in range(0, len(x), batch_size):
        for name, A in collect_activations(model, x[start:start + batch_size], layers).items():
            sums[name] += float(A.double().sum())
            peaks[name] = max(peaks[name], float(A.max()))
            counts[name] += A.numel()
    return {name: (sums[name] / counts[name], peaks[name]) for name in layers}


def layer_importance(model: nn.Module, data: Data, *, n_images: int | None = None,
                     batch_size: int | None = None) -> LayerImportance:
    """Per prunable layer l, what removing the whole layer does, as a table (``LayerImportance``; print it).

    Removal as in ``layer_loss_change``: replaced by identity where its input and output shapes match, else its
    output (after BatchNorm and nonlinearity) set to 0. Per layer: the mean and max activation, ΔL_l = L_l − L,
    the accuracy without l, and ΔG_l = ‖∇_θ L_l − ∇_θ L‖₂ over the weights of every other Linear and Conv2d (the
    entries not masked now). L over the first ``n_images`` of ``data`` (all if None), ``batch_size`` images at a
    time. Eval mode; the model is left as it was.
    """
    data = as_image_set(data, "layer_importance", "prunelab.load_fashion_mnist('validation')")
    gm = graph.trace(model, "layer_importance")
    x, y = _tensors(data, n_images, model_device(model))
    batch_size = _batch_size(model, batch_size)
    sites = _layer_sites(model, gm, x)
    source, result = graph.input_and_output(gm)
    full = graph.subgraph(gm, [source], [result])
    alive = {name: mask.to(torch.float64) for name, mask in get_masks(model).items()}
    stats = _activation_stats(model, x, list(sites), batch_size)

    def gradients(logits_of=None) -> dict[str, Tensor]:
        return loss_gradients(model, data, n_images=len(x), batch_size=batch_size, logits_of=logits_of)
    with in_mode(model, training=False):
        L, accuracy = _loss_and_accuracy(lambda xb: _run(full, model, xb)[0], x, y, batch_size)
        g, rows = gradients(), []
        for name, (h_in, act, same_shape) in sites.items():
            removal = "identity" if same_shape else "zero"
            logits_of = partial(_replacing(gm, act, h_in if same_shape else None),
                                change=partial(_removed_layer, removal=removal))
            L_l, accuracy_l = _loss_and_accuracy(logits_of, x, y, batch_size)
            dG = _gradient_distance(gradients(logits_of), g, {f"{name}.weight": None}, alive)
            rows.append(LayerRemoval(name, removal, *stats[name], L_l - L, accuracy_l, dG))
    return LayerImportance(L, accuracy, tuple(rows))
