"""Importance criteria that need data: activations on a calibration batch, and the measured loss change.

A low score means "prune me first", as in ``prunelab.scores``.

- ``collect_activations(model, x, layers)``: A, the output of each layer's units after the nonlinearity
  that follows the layer, on a calibration batch x.
- From A ([N, C] or [N, C, H, W], units along dim 1) to one score per unit [C]: ``mean_activation``,
  ``max_activation``, and ``apoz_score`` = 1 − ``apoz``. APoZ itself (Hu et al. 2016) is HIGH for an
  unimportant unit, so rank units by ``apoz_score``, never by ``apoz``.
- ``measured_loss_change``: ΔL_j = L_j − L for every unit j of a layer, where L is the mean cross-entropy of
  the intact model on the data and L_j the same with unit j removed. Positive = removing j hurts = important.
- ``layer_loss_change``: ΔL_l = L_l − L for removing whole layers.

"The nonlinearity that follows" is found in the model's ``torch.fx`` graph (``prunelab.graph``): a layer's
output, then the BatchNorm that alone reads it (if any), then the nonlinearity (ReLU, GELU, ...) that alone reads
that (if any).
Removing a unit sets that post-nonlinearity output to zero, which is what zeroing the unit's weights and bias
(and its BatchNorm's weight and bias) gives with a ReLU. Nothing is hooked or written into the model.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from . import graph
from ._helpers import did_you_mean, in_mode
from .data import Data, as_image_set
from .masks import effective, prunable_layers
from .training import eval_batch_size, model_device

__all__ = ["collect_activations", "mean_activation", "max_activation", "apoz", "apoz_score",
           "measured_loss_change", "layer_loss_change"]


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


def layer_loss_change(model: nn.Module, data: Data, *, n_images: int | None = None,
                      batch_size: int | None = None) -> dict[str, float]:
    """ΔL_l = L_l − L for removing each whole prunable layer l that can be removed: ``{name: ΔL}``.

    Removing l replaces it, together with the BatchNorm and nonlinearity that follow it (as in
    ``collect_activations``), by identity: the next layer reads l's input. That needs l's input and output
    shapes to be equal (a square Linear; a Conv2d keeping channels and size, as VGGSmall's conv2, conv4 and
    conv6); other layers are skipped and absent from the dict. LeNet-300-100 has none, so it gives ``{}``.
    L, ``n_images`` and ``batch_size`` as in ``measured_loss_change``. The model is left as it was.
    """
    device = model_device(model)
    gm = graph.trace(model, "layer_loss_change")
    nodes = _layer_nodes(model, gm, list(prunable_layers(model)))
    x, y = _tensors(data, n_images, device)
    batch_size = _batch_size(model, batch_size)
    source, result = graph.input_and_output(gm)
    sites = {name: (node.args[0], graph.activation_node(gm, node)) for name, node in nodes.items()}

    def mean_loss(logits_of) -> float:
        total = 0.0
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            total += float(F.cross_entropy(logits_of(xb), yb, reduction="sum"))
        return total / len(x)

    with in_mode(model, training=False), torch.no_grad():
        probe = _run(graph.subgraph(gm, [source], [n for pair in sites.values() for n in pair]), model, x[:1])
        full = graph.subgraph(gm, [source], [result])
        L = mean_loss(lambda xb: _run(full, model, xb)[0])
        out = {}
        for (name, (h_in, act)), a_in, a_out in zip(sites.items(), probe[0::2], probe[1::2]):
            if a_in.shape == a_out.shape:
                out[name] = mean_loss(_bypassing(gm, source, result, h_in, act)) - L
    return out


def _bypassing(gm: fx.GraphModule, source: fx.Node, result: fx.Node, h_in: fx.Node, act: fx.Node):
    """x -> logits with the value of ``act`` replaced by that of ``h_in`` (the layer's output := its input)."""
    needed = graph.frontier(gm, act)
    below, rest = graph.subgraph(gm, [source], needed + [h_in]), graph.subgraph(gm, needed, [result])
    i = needed.index(act)

    def logits_of(xb: Tensor) -> Tensor:
        *values, value_in = below(xb)
        values[i] = value_in
        return rest(*values)[0]
    return logits_of
