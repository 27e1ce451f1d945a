"""Structured pruning that really shrinks: delete neurons and channels, get a physically smaller model.

A masked unit (a row of a Linear's W [out, in], or a filter W[c] of a Conv2d's W [C_out, C_in, kH, kW])
outputs 0 but costs as much as before. ``shrink`` removes it instead, and slices everything that reads it:

    conv_k  W[keep]  ->  BatchNorm  gamma, beta, mean, var [keep]  ->  ReLU / pool  ->  conv_k+1  W[:, keep]
    conv_k  W[keep]  ->  ...  ->  Flatten  ->  Linear  W[:, cols],  cols = c*S .. c*S + S-1 for each kept c,
                                                      S = H*W positions per channel of the flattened map

The dataflow is read from the model's ``torch.fx`` graph (``prunelab.graph``), not from its class, so
nn.Sequential models and torchvision's ResNet-18 work alike. Channels tied together form one group
(``graph.channel_groups``), and removing channel c of one layer removes it from the whole group:

- the producers: every Conv2d/Linear whose outputs meet at a residual ``add`` (ResNet-18: the stem conv, each
  block's conv2 and the downsample conv of a stage), and a depthwise conv after them (filter c reads channel c);
  their filters W[c] and bias entries go;
- the BatchNorms on the way: gamma, beta, mean and var [c] go; ReLU-like activations, pooling and Dropout pass
  channel c on, and Flatten makes it S features;
- the consumers, every Conv2d/Linear that reads the group: their input columns of c go.

So ``keep`` names any one producer of a group, and its indices apply to the whole group. A group that reaches
the model's output (the classifier) or an operation the graph cannot follow (``torch.cat``, a product, a grouped
conv) is refused with a ValueError saying which node; nothing is guessed. Each module is sliced by the slicer of
its type (Linear, Conv2d, BatchNorm: outputs; Linear, Conv2d: inputs).

``shrink_groups(model, ratio)`` removes a fraction of every group at once, the channels of least group
importance I_c = sum over the producers p of ||W_p[c]||_1: the structured pruning Torch-Pruning's
``MagnitudePruner`` does (see ``tests/test_groups.py`` for the comparison).

``shrinkable_layers`` lists the layers whose units can go alone, tied to no other layer's outputs (ResNet-18:
each BasicBlock's conv1). ``channels_to_keep`` turns a masked model into ``keep`` for those layers:
``small = shrink(masked, channels_to_keep(masked))`` computes the same function as ``masked`` with fewer
parameters and MACs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, fx, nn
from torch.nn.utils import parametrize

from . import graph, masks
from ._helpers import did_you_mean, select_layers
from .graph import ChannelGroup, GraphError, Route, following_batchnorm
from .thresholds import check_sparsity, mask_for_sparsity

__all__ = ["shrink", "shrink_groups", "shrink_heads", "group_importance", "channels_to_keep", "shrinkable_layers",
           "fold_batchnorm"]

Keep = Mapping[str, "Tensor | Sequence[int]"]


def _prunable(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def _free_routes(model: nn.Module, gm: fx.GraphModule) -> dict[str, list[Route]]:
    """``{layer: its routes}`` for each Linear/Conv2d whose units can be removed (routes end only at readers),
    in model order; ``gm`` is the traced ``model``."""
    free = {}
    for name in _prunable(model):
        try:
            found = graph.routes(gm, name)
        except GraphError:
            continue
        if found:
            free[name] = found
    return free


def shrinkable_layers(model: nn.Module) -> list[str]:
    """Names of the Linear/Conv2d layers whose units can be removed alone: no other layer writes the same
    channels (no residual ``add``, no depthwise conv after it) and they are not the model's outputs. In model
    order. ``shrink`` also removes tied channels, a whole ``graph.channel_groups`` group at a time."""
    return list(_free_routes(model, graph.trace(model, "shrinkable_layers")))


def _check_indices(model: nn.Module, name: str, idx) -> Tensor:
    """``idx`` as a sorted int64 tensor of distinct unit indices of layer ``name``, or ValueError/TypeError."""
    layers = _prunable(model)
    if name not in layers:
        kind = dict(model.named_modules()).get(name)
        if kind is not None:
            raise ValueError(f"{name!r} is a {type(kind).__name__}; shrink removes units of nn.Linear and "
                             f"nn.Conv2d layers (a following BatchNorm is sliced with its layer). Name one of "
                             f"{', '.join(layers)}.")
        raise ValueError(f"{type(model).__name__} has no layer {name!r}.{did_you_mean(name, layers)} Its "
                         f"Linear/Conv2d layers are {', '.join(layers)}.")
    n = graph.units(layers[name])
    if isinstance(idx, Tensor) and idx.dtype == torch.bool:   # a keep-mask [u], as pruning returns it
        if idx.shape != (n,):
            raise ValueError(f"keep[{name!r}] is a boolean keep-mask of shape {list(idx.shape)}; {name!r} has {n} "
                             f"units, so it must have shape [{n}] (or give the indices of the units to keep).")
        idx = idx.nonzero().flatten()
    if isinstance(idx, Tensor):
        if idx.is_floating_point() or idx.is_complex() or idx.dim() != 1:
            raise TypeError(f"keep[{name!r}] must be a 1-D integer tensor of unit indices or a boolean keep-mask, "
                            f"got a {idx.dim()}-D {idx.dtype} tensor.")
        t = idx.detach().to("cpu", torch.int64)
    else:
        if isinstance(idx, (str, bytes)) or not isinstance(idx, Sequence) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in idx):
            raise TypeError(f"keep[{name!r}] must be a list of ints or an integer tensor, got {idx!r:.80}")
        t = torch.tensor(list(idx), dtype=torch.int64)
    if t.numel() == 0:
        raise ValueError(f"keep[{name!r}] is empty: a layer needs at least one unit, or the network is cut. "
                         f"Keep at least one of its {n} units (or leave {name!r} out of keep to keep all).")
    bad = t[(t < 0) | (t >= n)]
    if bad.numel():
        raise ValueError(f"keep[{name!r}] has indices out of range: {bad.tolist()[:5]}; {name!r} has {n} units, "
                         f"indices 0..{n - 1}.")
    t = t.sort().values
    if (t[1:] == t[:-1]).any():
        raise ValueError(f"keep[{name!r}] lists unit(s) {t[1:][t[1:] == t[:-1]].unique().tolist()[:5]} more "
                         "than once; give each index once.")
    return t


def _plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy with every mask committed: ``weight = weight_orig * weight_mask`` as a plain parameter."""
    for m in model.modules():
        if parametrize.is_parametrized(m):
            raise TypeError(f"{type(m).__name__} carries a torch.nn.utils.parametrize parametrization; remove it "
                            "(parametrize.remove_parametrizations) before shrinking.")
    return masks.commit(masks.copy_model(model))


def _select(module: nn.Module, name: str, dim: int, idx: Tensor) -> None:
    """Replace ``module.<name>`` (a parameter or buffer) by its entries ``idx`` along ``dim``."""
    t = getattr(module, name, None)
    if t is None:
        return
    new = t.index_select(dim, idx.to(t.device)).clone()
    setattr(module, name, nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new)


# One slicer per layer type and side, chosen by type from the tables below (the pattern of Torch-Pruning's
# LinearPruner / BatchnormPruner): keep the output units idx (rows of W, entries of b, a BatchNorm's features),
# or the input columns cols (dim 1 of W).

def _keep_linear_outputs(m: nn.Linear, idx: Tensor) -> None:
    """W [out, in] -> [len(idx), in], b [out] -> [len(idx)]."""
    _select(m, "weight", 0, idx)
    _select(m, "bias", 0, idx)
    m.out_features = len(idx)


def _keep_conv_outputs(m: nn.Conv2d, idx: Tensor) -> None:
    """W [C_out, C_in, kH, kW] -> [len(idx), C_in, kH, kW], b [C_out] -> [len(idx)]. A depthwise conv
    (groups = C_in = C_out, W [C, 1, kH, kW]: filter c reads channel c) loses input channels idx with them."""
    _select(m, "weight", 0, idx)
    _select(m, "bias", 0, idx)
    if m.groups > 1:
        m.in_channels = m.groups = len(idx)
    m.out_channels = len(idx)


def _keep_batchnorm_features(m: nn.BatchNorm2d, idx: Tensor) -> None:
    """gamma, beta, running mean and running var [C] -> [len(idx)]."""
    for name in ("weight", "bias", "running_mean", "running_var"):
        _select(m, name, 0, idx)
    m.num_features = len(idx)


def _keep_linear_inputs(m: nn.Linear, cols: Tensor) -> None:
    """W [out, in] -> [out, len(cols)]."""
    _select(m, "weight", 1, cols)
    m.in_features = len(cols)


def _keep_conv_inputs(m: nn.Conv2d, cols: Tensor) -> None:
    """W [C_out, C_in, kH, kW] -> [C_out, len(cols), kH, kW]."""
    _select(m, "weight", 1, cols)
    m.in_channels = len(cols)


_KEEP_OUTPUTS = {nn.Linear: _keep_linear_outputs, nn.Conv2d: _keep_conv_outputs,
                 nn.BatchNorm1d: _keep_batchnorm_features, nn.BatchNorm2d: _keep_batchnorm_features}
_KEEP_INPUTS = {nn.Linear: _keep_linear_inputs, nn.Conv2d: _keep_conv_inputs}


def _slicer(table: dict[type, Callable[[nn.Module, Tensor], None]], module: nn.Module):
    """The slicer of ``table`` for ``module``'s type."""
    return next(keep for kind, keep in table.items() if isinstance(module, kind))


def _reader_columns(n: int, idx: Tensor, reader: graph.Reader, modules: dict[str, nn.Module]) -> Tensor:
    """The input columns of ``reader`` that carry the kept channels ``idx`` of a group of n: ``idx`` itself, or
    when they arrive flat the S = in_features / n features c*S .. c*S + S-1 of each kept c: [len(idx) * S]."""
    if not reader.flat:
        return idx
    S = modules[reader.name].in_features // n
    return (idx[:, None] * S + torch.arange(S)).flatten()


def _groups_to_cut(gm: fx.GraphModule, indices: dict[str, Tensor]) -> dict[ChannelGroup, Tensor]:
    """``{group: kept channels}`` for the groups of the layers named in ``indices``; ValueError if a group cannot
    be cut or two of its producers are given different indices."""
    groups = graph.channel_groups(gm)
    group_of = {p: g for g in groups for p in g.producers}
    chosen: dict[ChannelGroup, tuple[str, Tensor]] = {}
    for name, i in indices.items():
        try:
            graph.layer_node(gm, name)                  # called once: else GraphError saying why
        except GraphError as e:
            raise ValueError(f"Cannot shrink {name!r}: {e}.") from None
        g = group_of[name]
        if g.blocked:
            free = [p for other in groups if not other.blocked for p in other.producers]
            shared = [p for p in g.producers if p != name]
            raise ValueError(f"Cannot shrink {name!r}: "
                             + (f"its channels are shared with {', '.join(shared)} (one group), and " if shared else "")
                             + f"{g.blocked}. Layers whose units shrink can remove here: "
                             f"{', '.join(free) if free else 'none'}.") from None
        if g in chosen and not torch.equal(chosen[g][1], i):
            raise ValueError(f"{chosen[g][0]!r} and {name!r} write the same channels (one group: "
                             f"{', '.join(g.producers)}), so they keep the same ones, but keep gives them different "
                             "indices; give the indices for one of them (they apply to the whole group).")
        chosen[g] = (name, i)
    return {g: i for g, (_, i) in chosen.items()}


def shrink(model: nn.Module, keep: Keep) -> nn.Module:
    """A new, physically smaller copy of ``model`` that keeps only the units ``keep[name]`` of each named layer.

    ``keep`` maps a Linear's name to the indices of output neurons (rows of W [out, in]) to keep, or a Conv2d's
    name to the output channels (filters of W [C_out, C_in, kH, kW]); indices are sorted, so unit order is kept.
    A boolean keep-mask ``[units]`` (True = keep, as ``pruning`` makes them) is accepted in place of indices.
    The indices apply to the layer's whole channel group (``graph.channel_groups``): every layer that writes the
    same channels through a residual ``add`` or a depthwise conv keeps them too (name one of them, or give them
    all the same indices). Biases, the group's BatchNorms and the inputs of every Conv2d/Linear reading the group
    (across Flatten) are sliced to match.
    A masked model is accepted: the copy holds the effective weights ``orig * mask`` as plain parameters.
    ``model`` itself is never changed; bad input raises ValueError/TypeError before anything is built.
    """
    if not isinstance(keep, Mapping):
        raise TypeError(f"keep must be a dict {{layer name: indices}}, got {type(keep).__name__}")
    indices = {name: _check_indices(model, name, idx) for name, idx in keep.items()}
    small = _plain_copy(model)
    gm, modules = graph.trace(small, "shrink"), dict(small.named_modules())
    cut = _groups_to_cut(gm, indices)
    with torch.no_grad():
        for g, i in cut.items():
            for name in (*g.producers, *g.batchnorms):    # output units: filters/rows, BatchNorm features
                _slicer(_KEEP_OUTPUTS, modules[name])(modules[name], i)
            for reader in g.consumers:                    # input columns: channels, or features after Flatten
                _slicer(_KEEP_INPUTS, modules[reader.name])(modules[reader.name], _reader_columns(
                    g.channels, i, reader, modules))
    return small


def group_importance(model: nn.Module, group: ChannelGroup) -> Tensor:
    """I_c = sum over the group's producers p of ||W_p[c]||_1 = sum_p sum_j |W_p[c, j]|: one score per channel
    [n] (W_p flattened to [n, fan_in]; effective weights ``orig * mask`` of a masked model)."""
    return sum(masks.effective(model.get_submodule(p)).detach().flatten(1).abs().sum(1) for p in group.producers)


def shrink_groups(model: nn.Module, ratio: float, *, importance: Literal["l1"] = "l1",
                  ignore: Sequence[str] | None = None) -> nn.Module:
    """A new, smaller copy of ``model`` with k = round(ratio · n) channels removed from every group of n.

    Every group of ``graph.channel_groups`` that can be cut loses the k channels of lowest group importance
    (``importance="l1"``: I_c = sum_p ||W_p[c]||_1 over the group's producers p, ``group_importance``; ties go
    by position), at least one channel staying. Groups that reach the model's output (the classifier) or an
    operation the graph cannot follow are left whole, and so are the groups of the layers named in ``ignore``.
    Torch-Pruning removes n - floor(n · (1 - ratio)) instead (ceil(ratio · n) up to float rounding): the same k
    whenever ratio · n is a whole number, as for every ResNet-18 width at ratios 0.25, 0.5 and 0.75.
    ``model`` itself is never changed; bad input raises ValueError before anything is built.
    """
    ratio = check_sparsity(ratio, "ratio")
    if importance != "l1":
        raise ValueError(f"importance must be 'l1' (the sum over a group's producers of each channel's L1 norm), "
                         f"got {importance!r}")
    if isinstance(ignore, str):
        raise TypeError(f"ignore must be a list of layer names, got the string {ignore!r}; write [{ignore!r}]")
    ignored = set(select_layers(model, list(ignore))) if ignore else set()
    keep = {}
    for g in graph.channel_groups(model):
        if g.blocked or ignored & set(g.producers):
            continue
        I = group_importance(model, g)                  # [n]
        kept = mask_for_sparsity(I, ratio)              # False for the round(ratio · n) lowest I_c
        if not kept.any():                              # round(ratio · n) = n: a layer needs one channel
            kept[I.argmax()] = True
        keep[g.producers[0]] = kept
    return shrink(model, keep)


def _constant_output(layer: nn.Module, routes: list[Route], threshold: float) -> Tensor:
    """Per unit [n]: the value it hands to every reader if that value is the same constant for all inputs
    (its weights all |w| <= threshold), else nan. BatchNorm with gamma = 0 outputs beta whatever comes in."""
    W, b = masks.effective(layer), masks.effective(layer, "bias")
    dead = W.flatten(1).abs().amax(1) <= threshold
    v0 = torch.where(dead, b if b is not None else torch.zeros_like(dead, dtype=W.dtype), torch.nan)
    out = []
    for route in routes:
        v = v0.clone()                     # clone: an in-place ReLU (ResNet's) would change v0 for the next path
        for name, op in route.chain:
            if name is None:
                v = op(v)
                continue
            gamma, beta = masks.effective(op), masks.effective(op, "bias")
            gamma = torch.ones_like(v) if gamma is None else gamma
            beta = torch.zeros_like(v) if beta is None else beta
            # a constant equal to the running mean gives beta in eval and train mode alike
            mean = op.running_mean if op.running_mean is not None else torch.full_like(v, torch.nan)
            v = torch.where((gamma == 0) | (v == mean), beta, torch.nan)
        out.append(v)
    return torch.where(torch.stack(out).eq(out[0]).all(0), out[0], torch.nan)


@torch.no_grad()
def channels_to_keep(model: nn.Module, threshold: float = 0.0) -> dict[str, Tensor]:
    """For a masked (or zeroed) model: ``{layer: indices of units to keep}`` for every shrinkable layer that has
    units outputting exactly 0, so that ``shrink(model, channels_to_keep(model))`` computes the same function.

    A unit is removable when what it hands on is always 0: its effective weights (``orig * mask``) are all
    ``|w| <= threshold`` and its bias is 0, or its following BatchNorm has gamma = beta = 0 (the masking
    convention). A zero row with a nonzero bias outputs a constant and is kept. Layers tied by a residual
    connection and the classifier are left out (see ``shrinkable_layers``). If every unit of a layer outputs
    0, unit 0 is kept: a layer cannot have zero units. Values: sorted int64 tensors.
    """
    if not (isinstance(threshold, (int, float)) and 0 <= threshold < float("inf")):
        raise ValueError(f"threshold must be a finite number >= 0 (weights with |w| <= threshold count as zero), "
                         f"got {threshold!r}")
    keep = {}
    for name, routes in _free_routes(model, graph.trace(model, "channels_to_keep")).items():
        zero = _constant_output(model.get_submodule(name), routes, threshold) == 0
        if zero.any():
            keep[name] = (~zero).nonzero().flatten() if not zero.all() else torch.zeros(1, dtype=torch.int64)
    return keep


def _head_indices(name: str, keep, heads: int) -> Tensor:
    """The kept heads of one attention as sorted int64 indices, from indices or a bool [H] mask; checked."""
    k = torch.as_tensor(keep)
    if k.dtype == torch.bool:
        if k.shape != (heads,):
            raise ValueError(f"the head mask of {name!r} must be bool [{heads}] (one entry per head), got "
                             f"{list(k.shape)}.")
        k = k.nonzero().flatten()
    k = k.flatten().long()
    if len(k) == 0 or len(set(k.tolist())) != len(k) or int(k.min()) < 0 or int(k.max()) >= heads:
        raise ValueError(f"keep[{name!r}] must name distinct heads in 0..{heads - 1}, at least one, got "
                         f"{k.tolist()}.")
    return k.sort().values


def shrink_heads(model: nn.Module, keep: Mapping[str, "Tensor | Sequence[int]"]) -> nn.Module:
    """A new, smaller copy of ``model`` without the attention heads it does not keep: ``keep`` maps an attention
    (a written-out one, ``graph.head_layout``: Linears ``qkv`` and ``proj`` and an int ``heads``, as nanoGPT and
    ``models.CausalSelfAttention`` write it) to the heads to keep, as indices or a bool [H] mask (``pruning``'s head
    masks). Head h owns rows h·d … (h+1)·d − 1 of each of W_q, W_k, W_v in W_in [3·H·d, E] and the same columns
    of W_o [E, H·d]: W_in keeps 3·H'·d rows (and its bias those entries), W_o H'·d columns, ``heads`` becomes H'.
    The copy computes what the model with those heads masked computes, with H'/H of the attention's projection
    and product MACs. A masked model is accepted (its effective weights are used); ``model`` is never changed.

    ``nn.MultiheadAttention`` is refused: torch requires its heads to fill the embedding (H · d = E).
    """
    if not isinstance(keep, Mapping):
        raise TypeError(f"keep must be a dict {{attention name: heads to keep}}, got {type(keep).__name__}")
    modules = dict(model.named_modules())
    plan = {}
    for name, k in keep.items():
        module = modules.get(name)
        if isinstance(module, nn.MultiheadAttention):
            raise ValueError(f"{name!r} is an nn.MultiheadAttention, whose heads must fill the embedding (H · d = E), "
                             "so its heads cannot be removed for real; mask them (prune(granularity='head')) or "
                             "write the attention out with qkv and proj Linears (models.CausalSelfAttention).")
        layout = None if module is None else graph.head_layout(model, name, module)
        if layout is None:
            raise ValueError(f"{name!r} is not a written-out attention of {type(model).__name__} (Linears qkv and "
                             f"proj and an int heads).{did_you_mean(name, modules)}")
        plan[name] = (layout, _head_indices(name, k, layout.heads))
    small = _plain_copy(model)
    with torch.no_grad():
        for name, (layout, heads) in plan.items():
            module, d = small.get_submodule(name), layout.head_dim
            cols = (heads[:, None] * d + torch.arange(d)).flatten()                # [H'·d] of the H·d features
            rows = torch.cat([cols + j * layout.embed_dim for j in range(3)])       # the same in q, k and v
            _keep_linear_outputs(module.qkv, rows)
            _keep_linear_inputs(module.proj, cols)
            module.heads = len(heads)
    return small


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference with every Conv2d -> BatchNorm2d pair folded into one Conv2d.

    With s = γ / √(σ² + ε) per channel, BN(conv(x)) = conv'(x) where W' = W · s and b' = (b − μ) · s + β;
    the BatchNorm becomes ``nn.Identity``. Uses the running statistics, so it matches the model in eval mode.
    """
    folded = masks.commit(masks.copy_model(model)).eval()
    for conv_name, bn_name in following_batchnorm(folded).items():
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
        with torch.no_grad():
            conv.weight.mul_(s.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter((b - bn.running_mean) * s + bn.bias.detach())
        parent, _, child = bn_name.rpartition(".")
        setattr(folded.get_submodule(parent), child, nn.Identity())
    return folded
