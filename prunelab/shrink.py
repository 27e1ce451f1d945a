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

A ``torch.cat`` along the channels puts groups side by side: channel c of its i-th input is channel
offset_i + c of its output (offset_i = the channels of the inputs before it), so a BatchNorm or a layer reading
the cat (DenseNet's ``x = cat([x, f(x)])``, an Inception block's branches) loses feature or column offset_i + c
when input i's group loses channel c; each input keeps its own group.

    conv_a  W[keep_a]  ─┐
                        cat -> BatchNorm [keep_a, n_a + keep_b] -> ReLU -> conv  W[:, [keep_a, n_a + keep_b]]
    conv_b  W[keep_b]  ─┘

A grouped conv (G groups: W [C_out, C_in / G, kH, kW], output channel o reads only the inputs of its group)
stays one tensor only if each of its groups keeps as many channels, at the same positions: channels are removed
in steps of G, position p of every run of C / G at once (``ChannelGroup.blocks``), its rows W[keep] on the
output side and its columns W[:, p] on the input side, as Torch-Pruning does for ResNeXt.

So ``keep`` names any one producer of a group, and its indices apply to the whole group. A group that reaches
the model's output (the classifier) or an operation the graph cannot follow (a product, a cat along another
dimension) is refused with a ValueError saying which node; nothing is guessed. What each layer
keeps is gathered over every group first (a layer reading a cat keeps columns of several groups), then each
module is sliced once by the slicer of its type (Linear, Conv2d, BatchNorm: outputs; Linear, Conv2d: inputs).

``shrink_groups(model, ratio)`` removes a fraction of every group at once, the channels of least group
importance I_c = sum over the producers p of ||W_p[c]||_1: the structured pruning Torch-Pruning's
``MagnitudePruner`` does (see ``tests/test_groups.py`` for the comparison).

``shrinkable_layers`` lists the layers whose units can go alone, tied to no other layer's outputs (ResNet-18:
each BasicBlock's conv1). ``channels_to_keep`` turns a masked model into ``keep`` for every group, residual
streams included: it runs the graph on one number per channel (``graph.channel_op``) and keeps the channels
some reader may see nonzero, so ``small = shrink(masked, channels_to_keep(masked))`` computes the same function
as ``masked`` with fewer parameters and MACs.
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
    """W [C_out, C_in / G, kH, kW] -> [len(idx), C_in / G, kH, kW], b [C_out] -> [len(idx)]. A depthwise conv
    (groups = C_in = C_out, W [C, 1, kH, kW]: filter c reads channel c) loses input channels idx with them; a
    grouped conv keeps its G groups (idx holds as many filters of each: ``ChannelGroup.blocks``)."""
    if m.groups > 1 and m.groups == m.in_channels == m.out_channels:
        m.in_channels = m.groups = len(idx)
    _select(m, "weight", 0, idx)
    _select(m, "bias", 0, idx)
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
    """W [C_out, C_in, kH, kW] -> [C_out, len(cols), kH, kW]. A grouped conv's W [C_out, C_in / G, kH, kW] holds
    each group's inputs at positions 0 .. C_in / G - 1: every group keeps the same positions (``ChannelGroup.blocks``),
    those of the first group's cols, and W keeps those columns."""
    positions = cols.view(m.groups, -1) - torch.arange(m.groups)[:, None] * (m.in_channels // m.groups)
    assert (positions == positions[0]).all(), "a grouped conv's groups must keep the same input positions"
    _select(m, "weight", 1, positions[0])
    m.in_channels = len(cols)


_KEEP_OUTPUTS = {nn.Linear: _keep_linear_outputs, nn.Conv2d: _keep_conv_outputs,
                 nn.BatchNorm1d: _keep_batchnorm_features, nn.BatchNorm2d: _keep_batchnorm_features}
_KEEP_INPUTS = {nn.Linear: _keep_linear_inputs, nn.Conv2d: _keep_conv_inputs}


def _slicer(table: dict[type, Callable[[nn.Module, Tensor], None]], module: nn.Module):
    """The slicer of ``table`` for ``module``'s type."""
    return next(keep for kind, keep in table.items() if isinstance(module, kind))


def _columns(m: nn.Module) -> int:
    """Input columns of a Linear (in_features) or Conv2d (in_channels)."""
    return m.in_features if isinstance(m, nn.Linear) else m.in_channels


def _strike(kept: dict[str, Tensor], name: str, width: int, gone: Tensor) -> None:
    """Mark the entries ``gone`` of layer ``name``'s keep-mask (bool [width], all True when first met) as removed."""
    kept.setdefault(name, torch.ones(width, dtype=torch.bool))[gone] = False


def _kept(cut: dict[ChannelGroup, Tensor], modules: dict[str, nn.Module]) -> tuple[dict[str, Tensor],
                                                                                   dict[str, Tensor]]:
    """``(outputs, inputs)``: for each layer a cut group touches, bool keep-masks over its output units [units]
    and its input columns [columns]. Each group strikes out its removed channels c where they sit: row c of its
    producers, feature offset + c of its BatchNorms, columns (offset + c)*S .. (offset + c)*S + S-1 of its
    readers (``graph.Reader``). A layer reading a torch.cat of several groups loses the columns of each."""
    outputs: dict[str, Tensor] = {}
    inputs: dict[str, Tensor] = {}
    for g, i in cut.items():
        removed = torch.ones(g.channels, dtype=torch.bool)
        removed[i] = False
        gone = removed.nonzero().flatten()                                     # the removed channels [n - len(i)]
        for name in g.producers:
            _strike(outputs, name, g.channels, gone)
        for bn in g.batchnorms:
            _strike(outputs, bn.name, modules[bn.name].num_features, bn.offset + gone)
        for r in g.consumers:
            columns = ((r.offset + gone)[:, None] * r.S + torch.arange(r.S)).flatten()   # [len(gone) * S]
            _strike(inputs, r.name, _columns(modules[r.name]), columns)
    return outputs, inputs


def _check_blocks(gm: fx.GraphModule, name: str, g: ChannelGroup, kept: Tensor) -> None:
    """ValueError unless the kept channels of ``g`` (sorted indices) hold the same positions in each of its blocks."""
    b = g.channels // g.blocks
    mask = torch.zeros(g.channels, dtype=torch.bool)
    mask[kept] = True
    runs = mask.view(g.blocks, b)                                        # [blocks, n / blocks]
    odd = next((j for j in range(1, g.blocks) if not torch.equal(runs[j], runs[0])), None)
    if odd is None:
        return
    layers = {n: gm.get_submodule(n) for n in g.producers + tuple(r.name for r in g.consumers)}
    convs = [n for n, m in layers.items() if isinstance(m, nn.Conv2d) and m.groups > 1
             and not m.groups == m.in_channels == m.out_channels]               # grouped, not depthwise
    raise ValueError(f"Cannot shrink {name!r} with these indices: the grouped convolution(s) {', '.join(convs)} cut "
                     f"its {g.channels} channels into {g.blocks} runs of {b}, and every run must keep the same "
                     f"positions p (channels p, {b} + p, ...), so that each conv group keeps as many channels. keep "
                     f"holds positions {runs[0].nonzero().flatten().tolist()[:8]} of run 0 but "
                     f"{runs[odd].nonzero().flatten().tolist()[:8]} of run {odd}. Give the same positions in every "
                     "run, or let shrink_groups choose them.")


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
        if g.blocks > 1:
            _check_blocks(gm, name, g, i)
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
    (across Flatten, and at the group's offset across a ``torch.cat``) are sliced to match.
    A masked model is accepted: the copy holds the effective weights ``orig * mask`` as plain parameters.
    ``model`` itself is never changed; bad input raises ValueError/TypeError before anything is built.
    """
    if not isinstance(keep, Mapping):
        raise TypeError(f"keep must be a dict {{layer name: indices}}, got {type(keep).__name__}")
    indices = {name: _check_indices(model, name, idx) for name, idx in keep.items()}
    small = _plain_copy(model)
    gm, modules = graph.trace(small, "shrink"), dict(small.named_modules())
    outputs, inputs = _kept(_groups_to_cut(gm, indices), modules)
    with torch.no_grad():
        for table, kept in ((_KEEP_OUTPUTS, outputs), (_KEEP_INPUTS, inputs)):
            for name, mask in kept.items():               # outputs: filters/rows, BatchNorm features; inputs: columns
                _slicer(table, modules[name])(modules[name], mask.nonzero().flatten())
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
    by position), at least one channel staying. Where grouped convs cut a group into B runs
    (``ChannelGroup.blocks``), each run loses the same round(ratio · n / B) positions, those of least mean I_c over
    the runs, as Torch-Pruning does. Groups that reach the model's output (the classifier) or an
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
        I = group_importance(model, g).view(g.blocks, -1).mean(0)   # [n / B]: one score per position of a run
        kept = mask_for_sparsity(I, ratio)              # False for the round(ratio · n / B) lowest
        if not kept.any():                              # all of them: a layer needs one channel
            kept[I.argmax()] = True
        keep[g.producers[0]] = kept.repeat(g.blocks)    # the same positions in every run [n]
    return shrink(model, keep)


def _written(layer: nn.Module, threshold: float) -> Tensor:
    """Per unit [n] of a Conv2d/Linear: its bias (0 without one) where its effective weights are all
    |w| <= threshold, the value it writes whatever comes in; nan where its output depends on the input."""
    W, b = masks.effective(layer), masks.effective(layer, "bias")
    dead = W.flatten(1).abs().amax(1) <= threshold
    return torch.where(dead, b if b is not None else torch.zeros_like(dead, dtype=W.dtype), torch.nan)


def _normalised(bn: nn.Module, v: Tensor | None) -> Tensor:
    """What a BatchNorm makes of per-channel constants v [C] (None: not known): beta where gamma = 0 (it outputs
    beta whatever comes in) or where v equals the running mean (a constant normalises to beta in eval and train
    mode alike); nan elsewhere."""
    gamma, beta = masks.effective(bn), masks.effective(bn, "bias")
    nan = torch.full((bn.num_features,), torch.nan)
    gamma = torch.ones_like(nan) if gamma is None else gamma
    beta = torch.zeros_like(nan) if beta is None else beta
    mean = nan if bn.running_mean is None else bn.running_mean
    return torch.where((gamma == 0) | ((nan if v is None else v) == mean), beta, torch.nan)


def _channel_constants(gm: fx.GraphModule, threshold: float) -> dict[fx.Node, Tensor | None]:
    """Run the graph on one number per channel: for each node, the value [C] each of its channels holds whatever the
    model's input (nan where it depends on it), or None where nothing is known (the model's input, an operation
    ``graph.channel_op`` does not name). A Conv2d/Linear writes its bias where its weights are dead, a BatchNorm
    beta where gamma = 0, an activation maps the number (ReLU(-1) = 0), pooling and Flatten pass it on, an add
    sums, a cat puts the numbers side by side."""
    values: dict[fx.Node, Tensor | None] = {}
    for node in gm.graph.nodes:
        op = graph.channel_op(gm, node)
        x = node.args[0] if node.args else None
        v = values.get(x) if isinstance(x, fx.Node) else None
        if op == "layer":
            values[node] = _written(gm.get_submodule(node.target), threshold)
        elif op == "batchnorm":
            values[node] = _normalised(gm.get_submodule(node.target), v)
        elif op == "elementwise":                   # clone: an in-place ReLU would change the value it read
            values[node] = None if v is None else graph.elementwise_op(gm, node)(v.clone())
        elif op == "pass":
            values[node] = v
        elif op == "add" and not node.kwargs:       # terms: values of nodes, or plain numbers (x + 1)
            terms = [values.get(a) if isinstance(a, fx.Node) else a for a in node.args]
            values[node] = None if any(t is None for t in terms) else sum(terms)
        elif op == "cat" and isinstance(x, (list, tuple)):
            parts = [values.get(t) if isinstance(t, fx.Node) else None for t in x]
            values[node] = None if any(p is None for p in parts) else torch.cat(parts)
        else:
            values[node] = None
    return values


def _reads_zero(gm: fx.GraphModule, values: dict[fx.Node, Tensor | None], group: ChannelGroup) -> Tensor:
    """bool [n]: True for the channels c of ``group`` that every reader reads as exactly 0, whatever the input
    (channel offset + c of the value it reads, ``graph.Reader``)."""
    zero = torch.ones(group.channels, dtype=torch.bool)
    for r in group.consumers:
        v = values.get(graph.layer_node(gm, r.name).args[0])
        if v is None:
            return torch.zeros_like(zero)
        zero &= v[r.offset: r.offset + group.channels] == 0
    return zero


@torch.no_grad()
def channels_to_keep(model: nn.Module, threshold: float = 0.0) -> dict[str, Tensor]:
    """For a masked (or zeroed) model: ``{layer: indices of channels to keep}`` for every channel group with
    channels that hand on exactly 0, keyed by the group's first producer (``graph.channel_groups``; for a layer tied
    to no other, the layer itself), so that ``shrink(model, channels_to_keep(model))`` computes the same function.

    Channel c of a group can go when every layer reading the group reads exactly 0 in it, whatever the input. To
    find out, the graph is run on one number per channel (``_channel_constants``): a producer whose effective
    weights (``orig * mask``) are all ``|w| <= threshold`` writes its bias, a BatchNorm with gamma = 0 writes beta
    (the masking convention zeroes both, so a masked channel writes 0), an activation maps the number
    (ReLU(-1) = 0 goes, Sigmoid(0) = 0.5 stays), an add sums, a cat puts the numbers side by side. So a channel
    of a residual stream (ResNet's) goes only when every layer that adds into it writes 0: one masked conv2 alone
    is kept, and so is a zero row with a nonzero bias (a constant). Blocked groups (the classifier's outputs) are
    left out. If every channel of a group reads 0, channel 0 is kept: a layer cannot have zero units. Where grouped
    convs cut a group into runs (``ChannelGroup.blocks``), a position goes only when it reads 0 in every run.
    Values: sorted int64 tensors.
    """
    if not (isinstance(threshold, (int, float)) and 0 <= threshold < float("inf")):
        raise ValueError(f"threshold must be a finite number >= 0 (weights with |w| <= threshold count as zero), "
                         f"got {threshold!r}")
    gm = graph.trace(model, "channels_to_keep")
    values = _channel_constants(gm, threshold)
    keep = {}
    for g in graph.channel_groups(gm):
        if g.blocked or not g.consumers:
            continue
        zero = _reads_zero(gm, values, g).view(g.blocks, -1).all(0)     # [n / B]: zero in every run
        if zero.any():
            if zero.all():
                zero[0] = False                                         # a layer needs one channel
            keep[g.producers[0]] = (~zero).repeat(g.blocks).nonzero().flatten()
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
