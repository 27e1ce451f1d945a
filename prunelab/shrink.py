"""Structured pruning that really shrinks: delete neurons and channels, get a physically smaller model.

A masked unit (a row of a Linear's W [out, in], or a filter W[c] of a Conv2d's W [C_out, C_in, kH, kW])
outputs 0 but costs as much as before. ``shrink`` removes it instead, and slices everything that reads it:

    conv_k  W[keep]  ->  BatchNorm  gamma, beta, mean, var [keep]  ->  ReLU / pool  ->  conv_k+1  W[:, keep]
    conv_k  W[keep]  ->  ...  ->  Flatten  ->  Linear  W[:, cols],  cols = c*S .. c*S + S-1 for each kept c,
                                                      S = H*W positions per channel of the flattened map

The dataflow is read from ``torch.fx.symbolic_trace``, not from the model's class, so nn.Sequential models
and torchvision's ResNet-18 work alike. fx turns ``forward`` into a graph of nodes (``call_module 'conv1'``,
``call_function add``, ...). From the node of a kept layer, ``_walk`` visits every user of its output:

- a Conv2d or Linear reads the units: slice its inputs, and this path ends;
- a BatchNorm is sliced like the layer, and the walk goes on;
- ReLU-like activations, pooling, Dropout and Flatten pass the units on (Flatten makes each channel S features);
- a residual ``add`` ties the units to the other input of the sum, and the model's output means the classifier:
  both stop with a ValueError; anything else is refused rather than guessed.

``shrinkable_layers`` lists the layers whose walks end only at readers (ResNet-18: each BasicBlock's conv1).

``channels_to_keep`` turns a masked model into ``keep``: ``small = shrink(masked, channels_to_keep(masked))``
computes the same function as ``masked`` with fewer parameters and MACs.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.nn.utils import parametrize

from . import masks

__all__ = ["shrink", "channels_to_keep", "shrinkable_layers", "fold_batchnorm"]

Keep = Mapping[str, "Tensor | Sequence[int]"]

# What the walk may pass through. Elementwise ops keep each unit separate and are recorded, because
# ``channels_to_keep`` needs to know what a constant unit becomes (ReLU(-3) = 0, Sigmoid(0) = 0.5).
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Hardtanh,
                nn.Hardswish)
_ELEMENTWISE_FNS = {torch.relu, F.relu, torch.tanh, torch.sigmoid, F.gelu, F.silu}
_SPATIAL = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)   # per channel: map only
_IDENTITY = (nn.Dropout, nn.Identity)
_ADDS = {operator.add, operator.iadd, torch.add}


class _Blocked(Exception):
    """Internal: the walk from a layer met something that stops its units from being removed."""


@dataclass(frozen=True)
class _Path:
    """One route from a layer's output to a layer that reads it.

    consumer: name of the Conv2d (reads channels) or Linear (reads features) at the end;
    flat: True when the units arrive flattened, each as S consecutive features of the Linear's input;
    chain: the per-unit modules met on the way, in order: ``(name, BatchNorm)`` or ``(None, elementwise fn)``.
    """
    consumer: str
    flat: bool
    chain: tuple[tuple[str | None, Callable[[Tensor], Tensor]], ...]


def _units(layer: nn.Module) -> int:
    """Number of removable units: output features of a Linear, output channels of a Conv2d."""
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _effective(module: nn.Module, name: str) -> Tensor | None:
    """The value a forward pass uses: ``<name>_orig * <name>_mask`` for a masked tensor, else the tensor."""
    if hasattr(module, name + "_mask"):
        return getattr(module, name + "_orig") * getattr(module, name + "_mask")
    return getattr(module, name, None)


def _is_flatten(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """True for a Flatten of [B, C, H, W] to [B, C*H*W]: nn.Flatten(), torch.flatten(x, 1), x.flatten(1)."""
    if node.op == "call_module" and isinstance(modules[node.target], nn.Flatten):
        m = modules[node.target]
        return m.start_dim == 1 and m.end_dim == -1
    if (node.op == "call_function" and node.target is torch.flatten) or (
            node.op == "call_method" and node.target == "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    return False


def _walk(node: fx.Node, modules: dict[str, nn.Module], n: int, flat: bool, chain: tuple,
          paths: list[_Path]) -> None:
    """Follow the tensor made by ``node`` (n units, as channels of a map or features when ``flat``) to
    every layer that reads it, appending one ``_Path`` per reader; raise ``_Blocked`` where it can't go."""
    for user in node.users:
        m = modules.get(user.target) if user.op == "call_module" else None
        where = f"{user.op} {getattr(user.target, '__name__', user.target)!r}"
        if user.op == "output":
            raise _Blocked("its outputs are outputs of the model (the classes of the classifier); they "
                           "cannot be removed")
        if user.op == "call_function" and user.target in _ADDS or user.op == "call_method" and user.target in (
                "add", "add_"):
            others = ", ".join(repr(a.target if a.op == "call_module" else a.name)
                               for a in user.args if isinstance(a, fx.Node) and a is not node)
            raise _Blocked(f"its output channels are tied by a residual connection: they reach the `add` node "
                           f"{user.name!r} together with {others}, so removing one channel would need the same "
                           "channel removed from every layer that feeds that sum (the whole stage)")
        if isinstance(m, (nn.Conv2d, nn.Linear)):                       # a reader: the walk ends here
            if isinstance(m, nn.Conv2d) and (flat or m.groups != 1):
                raise _Blocked(f"{user.target!r} reads it as a {'flattened vector' if flat else 'grouped conv'}")
            if isinstance(m, nn.Linear) and not flat:
                raise _Blocked(f"Linear {user.target!r} is applied to its last (width) dimension, not channels")
            paths.append(_Path(user.target, flat, chain))
            continue
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):             # per unit: slice it, go on
            if isinstance(m, nn.BatchNorm2d) == flat or m.num_features != n:
                raise _Blocked(f"{type(m).__name__} {user.target!r} does not normalise its {n} units one by one")
            _walk(user, modules, n, flat, chain + ((user.target, m),), paths)
        elif isinstance(m, _ELEMENTWISE):
            _walk(user, modules, n, flat, chain + ((None, m),), paths)
        elif user.op == "call_function" and user.target in _ELEMENTWISE_FNS:
            _walk(user, modules, n, flat, chain + ((None, user.target),), paths)
        elif user.op == "call_method" and user.target == "relu":
            _walk(user, modules, n, flat, chain + ((None, torch.relu),), paths)
        elif isinstance(m, _IDENTITY) or (isinstance(m, _SPATIAL) and not flat):   # pooling keeps channels
            _walk(user, modules, n, flat, chain, paths)
        elif _is_flatten(user, modules):                                 # channel c -> S consecutive features
            _walk(user, modules, n, True, chain, paths)
        else:
            raise _Blocked(f"shrink cannot follow its output through {where} (node {user.name!r})")


def _paths(graph: fx.Graph, modules: dict[str, nn.Module], name: str) -> list[_Path]:
    """Every route from layer ``name``'s output to its readers; raises ``_Blocked`` if its units are tied."""
    calls = [node for node in graph.nodes if node.op == "call_module" and node.target == name]
    if len(calls) != 1:
        raise _Blocked("it is not called in forward" if not calls else f"it is called {len(calls)} times "
                       "in forward (a shared layer)")
    layer = modules[name]
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        raise _Blocked("it is a grouped convolution (groups > 1)")
    paths: list[_Path] = []
    _walk(calls[0], modules, _units(layer), isinstance(layer, nn.Linear), (), paths)
    return paths


def _trace(model: nn.Module) -> tuple[fx.Graph, dict[str, nn.Module]]:
    """The fx graph of ``model.forward`` and its modules by qualified name (a graph node's ``target``)."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as e:  # fx raises many kinds of errors on untraceable code
        raise TypeError(f"shrink follows the dataflow with torch.fx.symbolic_trace, which failed on "
                        f"{type(model).__name__}: {e}. Use a model whose forward has no data-dependent "
                        "control flow.") from e
    return graph, dict(model.named_modules())


def _prunable(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def _free(graph: fx.Graph, modules: dict[str, nn.Module]) -> list[str]:
    def ok(name):
        try:
            return bool(_paths(graph, modules, name))
        except _Blocked:
            return False
    return [name for name, m in modules.items() if isinstance(m, (nn.Linear, nn.Conv2d)) and ok(name)]


def shrinkable_layers(model: nn.Module) -> list[str]:
    """Names of the Linear/Conv2d layers whose units ``shrink`` can remove (not tied by a residual ``add``,
    not the model's outputs), in model order."""
    return _free(*_trace(model))


def _check_indices(model: nn.Module, name: str, idx) -> Tensor:
    """``idx`` as a sorted int64 tensor of distinct unit indices of layer ``name``, or ValueError/TypeError."""
    layers = _prunable(model)
    if name not in layers:
        kind = dict(model.named_modules()).get(name)
        if kind is not None:
            raise ValueError(f"{name!r} is a {type(kind).__name__}; shrink removes units of nn.Linear and "
                             f"nn.Conv2d layers (a following BatchNorm is sliced with its layer). Name one of "
                             f"{', '.join(layers)}.")
        close = difflib.get_close_matches(str(name), layers, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{type(model).__name__} has no layer {name!r}.{hint} Its Linear/Conv2d layers are "
                         f"{', '.join(layers)}.")
    n = _units(layers[name])
    if isinstance(idx, Tensor):
        if idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex() or idx.dim() != 1:
            raise TypeError(f"keep[{name!r}] must be a 1-D integer tensor of unit indices, got a "
                            f"{idx.dim()}-D {idx.dtype} tensor. For a boolean mask use mask.nonzero().flatten().")
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


def _set(plan: dict, name: str, value, source: str) -> None:
    if name in plan and not all(torch.equal(a, b) if isinstance(a, Tensor) else a == b
                                for a, b in zip(plan[name], value)):
        raise ValueError(f"{name!r} would be sliced two different ways (once for {source!r}); shrink these "
                         "layers separately or keep the same indices.")
    plan[name] = value


def shrink(model: nn.Module, keep: Keep) -> nn.Module:
    """A new, physically smaller copy of ``model`` that keeps only the units ``keep[name]`` of each named layer.

    ``keep`` maps a Linear's name to the indices of output neurons (rows of W [out, in]) to keep, or a Conv2d's
    name to the output channels (filters of W [C_out, C_in, kH, kW]); indices are sorted, so unit order is kept.
    Biases, following BatchNorms and the inputs of the next Conv2d/Linear (across Flatten) are sliced to match.
    A masked model is accepted: the copy holds the effective weights ``orig * mask`` as plain parameters.
    ``model`` itself is never changed; bad input raises ValueError/TypeError before anything is built.
    """
    if not isinstance(keep, Mapping):
        raise TypeError(f"keep must be a dict {{layer name: indices}}, got {type(keep).__name__}")
    indices = {name: _check_indices(model, name, idx) for name, idx in keep.items()}
    small = _plain_copy(model)
    graph, modules = _trace(small)

    outputs: dict[str, tuple[Tensor]] = {}            # module -> (kept output units,)
    inputs: dict[str, tuple[Tensor, int | None]] = {}   # module -> (kept input units, S features per unit or None)
    for name, i in indices.items():
        try:
            paths = _paths(graph, modules, name)
        except _Blocked as e:
            free = _free(graph, modules)
            raise ValueError(f"Cannot shrink {name!r}: {e}. Layers whose units shrink can remove here: "
                             f"{', '.join(free) if free else 'none'}.") from None
        _set(outputs, name, (i,), name)
        for p in paths:
            for bn, _ in p.chain:
                if bn is not None:
                    _set(outputs, bn, (i,), name)
            n, reader = _units(modules[name]), modules[p.consumer]
            if p.flat and reader.in_features % n:
                raise ValueError(f"Cannot shrink {name!r}: {p.consumer!r} reads {reader.in_features} features, "
                                 f"not a multiple of its {n} units.")
            _set(inputs, p.consumer, (i, reader.in_features // n if p.flat else None), name)

    with torch.no_grad():
        for name, (i,) in outputs.items():
            m = modules[name]
            for attr in ("weight", "bias", "running_mean", "running_var"):
                _select(m, attr, 0, i)
            attr = {nn.Linear: "out_features", nn.Conv2d: "out_channels"}.get(type(m), "num_features")
            setattr(m, attr, len(i))
        for name, (i, S) in inputs.items():
            m = modules[name]
            cols = i if S is None else (i[:, None] * S + torch.arange(S)).flatten()   # channel c -> c*S .. c*S+S-1
            _select(m, "weight", 1, cols)
            setattr(m, "in_features" if isinstance(m, nn.Linear) else "in_channels", len(cols) if S else len(i))
    return small


def _constant_output(layer: nn.Module, paths: list[_Path], threshold: float) -> Tensor:
    """Per unit [n]: the value it hands to every reader if that value is the same constant for all inputs
    (its weights all |w| <= threshold), else nan. BatchNorm with gamma = 0 outputs beta whatever comes in."""
    W, b = _effective(layer, "weight"), _effective(layer, "bias")
    dead = W.detach().flatten(1).abs().amax(1) <= threshold
    v0 = torch.where(dead, b.detach() if b is not None else torch.zeros_like(dead, dtype=W.dtype), torch.nan)
    out = []
    for p in paths:
        v = v0.clone()                     # clone: an in-place ReLU (ResNet's) would change v0 for the next path
        for name, op in p.chain:
            if name is None:
                v = op(v)
                continue
            gamma, beta = _effective(op, "weight"), _effective(op, "bias")
            gamma = torch.ones_like(v) if gamma is None else gamma.detach()
            beta = torch.zeros_like(v) if beta is None else beta.detach()
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
    graph, modules = _trace(model)
    keep = {}
    for name in _free(graph, modules):
        zero = _constant_output(modules[name], _paths(graph, modules, name), threshold) == 0
        if zero.any():
            keep[name] = (~zero).nonzero().flatten() if not zero.all() else torch.zeros(1, dtype=torch.int64)
    return keep


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference with every Conv2d -> BatchNorm2d pair folded into one Conv2d.

    With s = γ / √(σ² + ε) per channel, BN(conv(x)) = conv'(x) where W' = W · s and b' = (b − μ) · s + β;
    the BatchNorm becomes ``nn.Identity``. Uses the running statistics, so it matches the model in eval mode.
    """
    from .pruning import following_batchnorm

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
