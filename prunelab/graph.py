"""The model's traced graph: every structural question about a model is answered from it.

``torch.fx.symbolic_trace`` turns ``forward`` into a graph of nodes (``call_module 'conv1'``,
``call_function relu``, ``call_method 'flatten'``, ...); ``node.users`` are the nodes that read a node's value.
What the rest of prunelab asks of that graph is here, once:

- ``trace``: the graph, or a TypeError naming what needed it;
- ``layer_node`` / ``layer_nodes``: the one node calling a named layer;
- ``units``: a layer's number of units (rows of a Linear's W [out, in], filters of a Conv2d's W [C_out, ...]);
- ``elementwise_op`` / ``is_elementwise``: activations that act on each unit alone (ReLU, GELU, ...);
- ``sole_user``: the one node reading a value, when only one does;
- ``following_batchnorm``: ``{conv: bn}`` for each Conv2d whose output only a BatchNorm2d reads;
- ``routes``: every way from a layer's output to the Conv2d/Linear layers that read its units, through
  BatchNorm, activations, pooling and Flatten; a residual ``add``, a ``torch.cat`` or the model's output stops it;
- ``channel_groups``: the channels that must go together (``ChannelGroup``): the outputs of every layer that
  meets at a residual ``add`` or passes through a depthwise conv, found by union-find over the graph's values,
  with every BatchNorm (``Norm``) and layer (``Reader``) that reads them, at an offset after a ``torch.cat``,
  and the blocks a grouped conv cuts them into;
- ``channel_op``: what a node computes channel by channel, to run the graph on one number per channel;
- ``activation_node`` / ``sole_linear_reader``: where a layer's units have their value (after BatchNorm and
  the activation) and the Linear that alone reads them;
- ``input_and_output`` / ``frontier`` / ``subgraph``: cut the graph and run a part of it, e.g. everything after a
  layer's activations with those activations changed;
- ``head_layout`` / ``HeadLayout``: where an attention module's heads live in its weights (rows of W_q, W_k,
  W_v and columns of W_o), for ``nn.MultiheadAttention`` and for attention written out with ``qkv``/``proj``.

``shrink`` slices along the groups, ``data_criteria`` runs the parts around a layer's activations, ``pruning`` masks the
BatchNorm that follows a conv. Own models (and, later, transformers) extend this module.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

__all__ = ["GraphError", "Route", "Reader", "Norm", "ChannelGroup", "trace", "layer_node", "layer_nodes", "units",
           "ELEMENTWISE_MODULES", "ELEMENTWISE_FUNCTIONS", "ELEMENTWISE_METHODS", "elementwise_op", "is_elementwise",
           "sole_user", "following_batchnorm", "routes", "channel_groups", "channel_op", "activation_node",
           "sole_linear_reader", "frontier", "subgraph", "input_and_output", "HeadLayout", "head_layout"]

# Operations that act on each unit alone. Each can be applied to a tensor of unit values [n]: shrink feeds it
# the constant a dead unit outputs (ReLU(-3) = 0, Sigmoid(0) = 0.5).
ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Hardtanh,
                       nn.Hardswish)
ELEMENTWISE_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, torch.tanh,
                         torch.sigmoid)
ELEMENTWISE_METHODS = ("relu", "relu_", "tanh", "sigmoid")

_SPATIAL = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)   # per channel: map only
_SPATIAL_FUNCTIONS = (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d)   # ... as functions
_IDENTITY = (nn.Dropout, nn.Identity)
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_")
_SHAPE_METHODS = ("size", "dim")                                                   # read the shape, not the values


class GraphError(ValueError):
    """The graph gives no answer for a layer: forward never calls it, calls it twice, or its units are tied to
    others. The message is a clause about the layer ("layer 'x' is ...", "its output channels are ...")."""


def trace(model: nn.Module, what: str) -> fx.GraphModule:
    """``fx.symbolic_trace(model)``: the graph of ``model.forward``, sharing the model's layers.

    ``what`` names what needs the graph ("shrink", "Data criteria", ...), for the TypeError raised when the
    model cannot be traced.
    """
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # fx raises many kinds of errors on untraceable code
        raise TypeError(f"{what} follows the dataflow of {type(model).__name__} in its torch.fx graph, and "
                        f"torch.fx.symbolic_trace failed on it: {e}. Use a model whose forward has no "
                        "data-dependent control flow (no Python `if` or loop on tensor values).") from e


def layer_nodes(gm: fx.GraphModule, names: list[str]) -> dict[str, fx.Node]:
    """``{name: the node calling layer name}``; GraphError if forward never calls one or calls it twice."""
    calls: dict[str, list[fx.Node]] = {name: [] for name in names}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in calls:
            calls[node.target].append(node)
    forward = f"{type(gm).__name__}.forward"
    opaque = {node.target for node in gm.graph.nodes if node.op == "call_module"}   # modules fx did not enter
    for name, nodes in calls.items():
        inside = next((m for m in opaque if name.startswith(m + ".")), None)
        if not nodes and inside is not None:
            raise GraphError(f"layer {name!r} runs inside {inside!r} (a {type(gm.get_submodule(inside)).__name__}), "
                             "which torch.fx keeps as one opaque call, so its units cannot be followed; score it "
                             "by weight (granularity='weight', or criteria without data), or name layers outside "
                             f"{inside!r}")
        if not nodes:
            raise GraphError(f"layer {name!r} is never called in {forward}, so nothing reads its units; name a "
                             "layer that forward uses")
        if len(nodes) > 1:
            raise GraphError(f"layer {name!r} is called {len(nodes)} times in {forward} (a shared layer), so its "
                             "units have no single output; give each use its own layer")
    return {name: nodes[0] for name, nodes in calls.items()}


def layer_node(gm: fx.GraphModule, name: str) -> fx.Node:
    """The node calling layer ``name``; GraphError if forward never calls it or calls it more than once."""
    return layer_nodes(gm, [name])[name]


def units(layer: nn.Module) -> int:
    """Number of removable units: output features of a Linear, output channels of a Conv2d."""
    if isinstance(layer, nn.Linear):
        return layer.out_features
    if isinstance(layer, nn.Conv2d):
        return layer.out_channels
    raise TypeError(f"units are the outputs of an nn.Linear or nn.Conv2d, not of a {type(layer).__name__}")


def elementwise_op(gm: fx.GraphModule, node: fx.Node) -> Callable[[Tensor], Tensor] | None:
    """What ``node`` does to each unit, as a function of a tensor of unit values (keeping the node's other
    arguments, e.g. F.leaky_relu's slope), when it applies one of the ELEMENTWISE operations to one tensor;
    else None."""
    if not (node.args and isinstance(node.args[0], fx.Node)) or any(
            isinstance(a, fx.Node) for a in (*node.args[1:], *node.kwargs.values())):
        return None                                     # no tensor input, or a second one: not per unit
    rest, kwargs = node.args[1:], node.kwargs
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return module if isinstance(module, ELEMENTWISE_MODULES) else None
    if node.op == "call_function" and node.target in ELEMENTWISE_FUNCTIONS:
        return lambda v: node.target(v, *rest, **kwargs)
    if node.op == "call_method" and node.target in ELEMENTWISE_METHODS:
        return lambda v: getattr(v, node.target)(*rest, **kwargs)
    return None


def is_elementwise(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True when ``node`` applies an activation to each unit alone (see ``elementwise_op``)."""
    return elementwise_op(gm, node) is not None


def sole_user(node: fx.Node) -> fx.Node | None:
    """The one node reading ``node``, if it reads it as its first argument and nothing else reads it."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    return user if user.args[:1] == (node,) else None


def following_batchnorm(model: nn.Module) -> dict[str, str]:
    """``{conv_name: bn_name}`` for every Conv2d whose output goes straight (and only) into a BatchNorm2d."""
    gm = trace(model, "following_batchnorm")
    pairs = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Conv2d):
            user = sole_user(node)
            if user is not None and user.op == "call_module" and isinstance(gm.get_submodule(user.target),
                                                                            nn.BatchNorm2d):
                pairs[node.target] = user.target
    return pairs


@dataclass(frozen=True)
class Route:
    """One way from a layer's output to a layer that reads its units.

    reader: name of the Conv2d (reads channels) or Linear (reads features) at the end;
    flat: True when the units arrive flattened, each as S consecutive features of the Linear's input;
    chain: the per-unit modules met on the way, in order: ``(name, BatchNorm)`` or ``(None, elementwise op)``.
    """
    reader: str
    flat: bool
    chain: tuple[tuple[str | None, Callable[[Tensor], Tensor]], ...]


def routes(gm: fx.GraphModule, name: str) -> list[Route]:
    """Every route from the output of layer ``name`` (a Linear or Conv2d) to the layers that read its units.

    BatchNorm, elementwise activations, pooling, Dropout and Flatten are passed through. GraphError (a
    ValueError) where the units cannot be followed one by one: a grouped conv (its blocks lose the same positions:
    ``channel_groups``), a residual ``add`` (the
    units are tied to the sum's other input), the model's output, or an operation the walk does not know.
    """
    node = layer_node(gm, name)                 # first: a layer forward never calls is not in gm
    layer = gm.get_submodule(name)
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        raise GraphError(_grouped(name, layer))
    found: list[Route] = []
    _walk(gm, node, units(layer), isinstance(layer, nn.Linear), (), found)
    return found


def _is_flatten(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True for a Flatten of [B, C, H, W] to [B, C*H*W]: nn.Flatten(), torch.flatten(x, 1), x.flatten(1)."""
    if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Flatten):
        m = gm.get_submodule(node.target)
        return m.start_dim == 1 and m.end_dim == -1
    if (node.op == "call_function" and node.target is torch.flatten) or (
            node.op == "call_method" and node.target == "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    return False


def _is_pooling(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True for pooling over H and W of [B, C, H, W], channel by channel: nn.MaxPool2d, F.avg_pool2d(x, 2), ..."""
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), _SPATIAL)
    return (node.op == "call_function" and node.target in _SPATIAL_FUNCTIONS
            and len(node.all_input_nodes) == 1 and node.args[:1] == tuple(node.all_input_nodes))


def _is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _ADD_FUNCTIONS
            or node.op == "call_method" and node.target in _ADD_METHODS)


def _is_spatial_mean(node: fx.Node) -> bool:
    """True for the mean over H and W of [B, C, H, W] to [B, C] (global average pooling written as
    ``x.mean((2, 3))`` or ``torch.mean(x, dim=(-2, -1))``): channel c becomes feature c, like a Flatten of 1 × 1."""
    if not ((node.op == "call_method" and node.target == "mean")
            or (node.op == "call_function" and node.target is torch.mean)):
        return False
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    return (isinstance(dims, (tuple, list)) and not keepdim
            and {d % 4 if isinstance(d, int) else d for d in dims} == {2, 3})


def _where(node: fx.Node) -> str:
    """``call_function 'mul' (node 'mul')``: a node as the messages name it."""
    return f"{node.op} {getattr(node.target, '__name__', node.target)!r} (node {node.name!r})"


def _is_cat(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in (torch.cat, torch.concat)


def _is_shape(node: fx.Node) -> bool:
    """True for ``x.size()``, ``x.dim()``, ``x.shape``: they read a tensor's shape, not its channels."""
    return (node.op == "call_method" and node.target in _SHAPE_METHODS
            or node.op == "call_function" and node.target is getattr and node.args[1] in ("shape", "ndim"))


def _grouped(name: str, m: nn.Conv2d) -> str:
    return (f"{name!r} is a grouped convolution (groups={m.groups}, {m.in_channels} -> {m.out_channels} channels), "
            "whose groups must all lose the same positions (see channel_groups)")


def _follow(gm: fx.GraphModule, user: fx.Node, flat: bool) -> str:
    """What ``user`` does with the channels of a tensor it reads (features of [B, F] when ``flat``, else the C of
    [B, C, H, W]): one of

    'output' (the model returns them), 'add' (a sum ties them to its other inputs), 'read' (a Conv2d or Linear
    reads them: a consumer), 'grouped' (a grouped Conv2d reads them, G blocks of C_in / G, each block by its own
    filters: a consumer), 'depthwise' (a conv whose filter c reads channel c alone: channel c in is channel c
    out), 'batchnorm', 'elementwise' (an activation), 'pass' (pooling, Dropout, Identity: channel by channel),
    'flatten' (channel c becomes S consecutive features), 'shape' (reads only the shape), 'cat' (a ``torch.cat``
    puts them side by side with other tensors; channel_groups checks along which dimension);
    GraphError (a clause about the layer, as everywhere here) for anything else.
    """
    m = gm.get_submodule(user.target) if user.op == "call_module" else None
    if user.op == "output":
        return "output"
    if _is_add(user):
        return "add"
    if isinstance(m, nn.Conv2d):
        if flat:
            raise GraphError(f"{user.target!r} reads it as a flattened vector")
        if m.groups == 1:
            return "read"
        if m.groups == m.in_channels == m.out_channels:
            return "depthwise"
        return "grouped"
    if isinstance(m, nn.Linear):
        if not flat:
            raise GraphError(f"Linear {user.target!r} is applied to its last (width) dimension, not channels")
        return "read"
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if isinstance(m, nn.BatchNorm2d) == flat:
            raise GraphError(f"{type(m).__name__} {user.target!r} does not normalise its units one by one")
        return "batchnorm"
    if is_elementwise(gm, user):
        return "elementwise"
    if isinstance(m, _IDENTITY) or (_is_pooling(gm, user) and not flat):    # pooling keeps channels
        return "pass"
    if _is_flatten(gm, user) or (_is_spatial_mean(user) and not flat):
        return "flatten"
    if _is_shape(user):
        return "shape"
    if _is_cat(user):
        return "cat"
    raise GraphError(f"its output cannot be followed through {_where(user)}")


def _walk(gm: fx.GraphModule, node: fx.Node, n: int, flat: bool, chain: tuple, found: list[Route]) -> None:
    """Follow the tensor made by ``node`` (n units, as channels of a map or features when ``flat``) to
    every layer that reads it, appending one ``Route`` per reader; raise GraphError where it can't go."""
    for user in node.users:
        step = _follow(gm, user, flat)
        if step == "output":
            raise GraphError("its outputs are outputs of the model (the classes of the classifier); they "
                             "cannot be removed")
        if step == "add":
            others = ", ".join(repr(a.target if a.op == "call_module" else a.name)
                               for a in user.args if isinstance(a, fx.Node) and a is not node)
            raise GraphError(f"its output channels are tied by a residual connection: they reach the `add` node "
                             f"{user.name!r} together with {others}, so removing one channel would need the same "
                             "channel removed from every layer that feeds that sum (the whole stage; "
                             "see channel_groups)")
        if step == "depthwise":
            raise GraphError(f"its output channels are tied to those of the depthwise conv {user.target!r} "
                             "(see channel_groups)")
        if step == "grouped":
            g = gm.get_submodule(user.target).groups
            raise GraphError(f"its output channels are read by the grouped convolution {user.target!r} (groups={g}), "
                             "whose groups must all lose the same positions (see channel_groups)")
        if step == "cat":
            raise GraphError(f"it is concatenated with other tensors by node {user.name!r} (torch.cat), so its "
                             "channels sit at an offset among others, which a route does not follow (channel_groups "
                             "does)")
        m = gm.get_submodule(user.target) if user.op == "call_module" else None
        if step == "read":                                              # a reader: the route ends here
            found.append(Route(user.target, flat, chain))
        elif step == "batchnorm":                                       # per unit: sliced with it, go on
            if m.num_features != n:
                raise GraphError(f"{type(m).__name__} {user.target!r} does not normalise its {n} units one by one")
            _walk(gm, user, n, flat, chain + ((user.target, m),), found)
        elif step == "elementwise":
            _walk(gm, user, n, flat, chain + ((None, elementwise_op(gm, user)),), found)
        elif step in ("pass", "flatten"):                               # Flatten: channel c -> S features
            _walk(gm, user, n, flat or step == "flatten", chain, found)


# ---------------------------------------------------------------------- channel groups

class Reader(NamedTuple):
    """A Conv2d or Linear that reads a group's channels: its input columns are removed with them.

    flat: the channels arrive as features (a Linear reads them), else as the C of maps [B, C, H, W] (a Conv2d);
    offset: channel c of the group is channel offset + c of the value the reader reads (offset > 0 when a
        ``torch.cat`` puts other channels before them);
    S: features per channel: channel k of that value is features k*S .. k*S + S-1 (S = H*W after a Flatten of
        [B, C, H, W], 1 after a Linear, a global pooling, or for a Conv2d).
    So channel c of the group is input columns (offset + c)*S .. (offset + c)*S + S-1 of the reader.
    """
    name: str
    flat: bool
    offset: int = 0
    S: int = 1


class Norm(NamedTuple):
    """A BatchNorm that normalises a group's channels: its feature offset + c (gamma, beta, running mean and var)
    goes with channel c; offset > 0 when it normalises a ``torch.cat`` (DenseNet's BatchNorm after each one)."""
    name: str
    offset: int = 0


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must keep the same indices everywhere: removing channel c removes it from every layer here.

    channels: n, how many there are;
    producers: the Conv2d/Linear layers that write them (filter or row c of W goes), in graph order; a depthwise
        conv is one too (its filter c reads channel c and writes channel c);
    batchnorms: the BatchNorms that normalise them (``Norm``: gamma, beta, running mean and var [offset + c] go);
    consumers: the Conv2d/Linear layers that read them (``Reader``: the input channel offset + c, or its S
        features, goes);
    blocked: None when the group can be removed from, else why not: a clause ("its channels reach the model's
        output ...", "node 'cat' concatenates it along dim 3 ...") that follows "Cannot shrink 'layer': ";
    blocks: 1, or B when grouped convs write or read the channels: they fall into B runs of n / B (B the least
        common multiple of those convs' groups, so each conv group holds whole runs), and every run must keep the
        same positions p (channels p, n/B + p, 2n/B + p, ...), so that each conv group keeps as many channels and
        its filters [C_out, C_in / G, kH, kW] stay one tensor; removal is in steps of B channels.
    """
    channels: int
    producers: tuple[str, ...]
    batchnorms: tuple[Norm, ...]
    consumers: tuple[Reader, ...]
    blocked: str | None = None
    blocks: int = 1


Layout = tuple[tuple[fx.Node, int], ...]      # the channel spaces a value holds side by side: (a node of it, offset)


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """Every group of channels of ``model`` that has a producer, ordered by its first producer in the graph.

    Each value of the traced graph (a node) is a channel space. Union-find ties two spaces when a channel of one
    is the same channel of the other: BatchNorm, activations, pooling, Flatten and a depthwise conv pass channel
    c on as channel c, and a residual ``add`` makes channel c of its inputs and its output one channel. A
    Conv2d/Linear (not depthwise) starts a new space with its outputs.

    A ``torch.cat`` along the channels is not a space of its own: its output holds its inputs' spaces side by
    side, channel c of input i at offset_i + c (offset_i: the channels of the inputs before it; a cat of a cat
    adds the offsets). What reads the cat's output (a BatchNorm, a ReLU, pooling, a further cat) holds the same
    layout, and a BatchNorm or a layer reading it joins each input's group at that input's offset (``Norm``,
    ``Reader``). Each input keeps its own group, its own producers.

    A grouped conv (G groups, not depthwise) starts a new space like any conv and reads its input as a consumer;
    both spaces are then cut in G blocks (``ChannelGroup.blocks``).

    Each group is one space's layers; it is blocked when the space reaches the model's input or output, or an
    operation the graph cannot follow (a product, a cat along another dimension, a cat's output added to
    something or read by a grouped conv, ...). A layer that forward calls twice blocks both its spaces. ``model``
    may be one already traced (``trace``).
    """
    gm = model if isinstance(model, fx.GraphModule) else trace(model, "channel_groups")
    parent: dict[fx.Node, fx.Node] = {}

    def find(v: fx.Node) -> fx.Node:                      # the representative of v's space
        while parent[v] is not v:
            parent[v] = parent[parent[v]]                 # path halving keeps the trees flat
            v = parent[v]
        return v

    def tie(a: fx.Node, b: fx.Node) -> None:
        parent[find(a)] = find(b)

    cats: dict[fx.Node, Layout] = {}          # a value made by torch.cat (or read from one): its spaces side by side

    def spaces(v: fx.Node) -> Layout:         # the spaces v holds, each with the offset of its channel 0
        return cats.get(v, ((v, 0),))

    flat: dict[fx.Node, bool] = {}            # the node's channels are features [B, F] rather than maps [B, C, H, W]
    flattened: set[fx.Node] = set()           # ... features made by flattening a map: S per channel
    size: dict[fx.Node, int | None] = {}      # how many channels the node's value has; None where no layer says
    facts: list[tuple[fx.Node, str, object]] = []   # (a node of the space, kind, layer name / Norm / Reader / clause)
    calls = Counter(node.target for node in gm.graph.nodes if node.op == "call_module")
    for node in gm.graph.nodes:
        parent[node] = node
        inputs = node.all_input_nodes
        x = inputs[0] if inputs else None                                   # the tensor it reads first
        flat[node], size[node] = flat.get(x, False), None
        read = [a for t in inputs for a, _ in spaces(t)]                    # every space it reads from
        if node.op == "output":
            reason = (f"its channels reach the model's output (node {node.name!r}): they are outputs of the model "
                      "(the classes of the classifier) and cannot be removed")
            facts += [(a, "blocked", reason) for a in read]
            continue
        if x is None:                                   # the model's input, a constant: no layer writes them
            facts.append((node, "blocked", f"its channels are the model's input (node {node.name!r})"
                          if node.op == "placeholder" else f"its channels come from {_where(node)}, not a layer"))
            continue
        m = gm.get_submodule(node.target) if node.op == "call_module" else None
        try:
            step = _follow(gm, node, flat[x])
            if step in ("read", "grouped", "batchnorm", "depthwise"):
                _check_width(node, m, x, size[x], flat[x])
            if step == "cat":
                layout, channels = _concatenation(node, size, flat, flattened, spaces)
            if step in ("add", "depthwise") and any(a in cats for a in inputs):
                raise GraphError(f"node {node.name!r} reads a torch.cat's output, whose channels belong to several "
                                 f"groups, in {_where(node)}: not supported yet")
            if step == "grouped" and x in cats:
                raise GraphError(f"the grouped convolution {node.target!r} reads a torch.cat's output, whose "
                                 "channels belong to several groups, so its blocks would tie them: not supported yet")
        except GraphError as e:
            step = str(e)                                                   # a clause: why the channels stop
        new_space = isinstance(m, (nn.Conv2d, nn.Linear)) and step != "depthwise"
        if isinstance(m, (nn.Conv2d, nn.Linear)) and calls[node.target] > 1:
            new_space = False
            step = f"layer {node.target!r} is called {calls[node.target]} times in forward (a shared layer)"
        if new_space:                                                       # its outputs: a new channel space
            facts.append((node, "producer", node.target))
            flat[node], size[node] = isinstance(m, nn.Linear), units(m)
            if isinstance(m, nn.Conv2d) and m.groups > 1:                   # grouped, not depthwise: G blocks
                facts.append((node, "blocks", m.groups))
        if step in ("read", "grouped"):
            S = m.in_features // size[x] if flat[x] and size[x] else 1      # features per channel
            facts += [(a, "consumer", Reader(node.target, flat[x], offset, S)) for a, offset in spaces(x)]
            if step == "grouped":                                           # its input: G blocks too
                facts += [(a, "blocks", m.groups) for a, _ in spaces(x)]
        elif step == "cat":                                                 # side by side: no space of its own
            cats[node], size[node] = layout, channels
        elif step in ("depthwise", "batchnorm", "elementwise", "pass", "flatten", "add"):
            size[node] = size[x]                                            # channel c in is channel c out:
            if x in cats:
                cats[node] = cats[x]                                        # ... the cat's layout, passed on
            else:
                for a in inputs:                                            # ... or one space with its inputs
                    tie(node, a)
            if (step == "flatten" and not flat[x]) or x in flattened:
                flattened.add(node)
            flat[node] = flat[x] or step == "flatten"
            if step == "depthwise":
                facts.append((node, "producer", node.target))
            if step == "batchnorm":
                facts += [(a, "batchnorm", Norm(node.target, offset)) for a, offset in spaces(x)]
            if step == "add" and (len({flat[a] for a in inputs}) > 1 or flattened & set(inputs)):
                facts.append((node, "blocked", f"node {node.name!r} adds its channels, flattened, to other values"))
        elif step != "shape":
            facts += [(a, "blocked", step) for a in read]
            if not new_space:
                facts.append((node, "blocked", f"its channels come from {_where(node)}, which cannot be "
                                               "followed channel by channel"))
    return _collect(gm, find, facts)


def _check_width(node: fx.Node, m: nn.Module, x: fx.Node, n: int | None, flat: bool) -> None:
    """GraphError unless layer ``m`` (called by ``node``) fits the n channels of the value ``x`` it reads: a
    Conv2d's in_channels or a BatchNorm's num_features is n, a Linear's in_features a multiple of n (S per channel)."""
    if n is None:                                       # no layer writes x: its space has no group to check
        return
    k = m.in_features if isinstance(m, nn.Linear) else m.in_channels if isinstance(m, nn.Conv2d) else m.num_features
    if (k % n if flat and isinstance(m, nn.Linear) else k != n):
        what = "features" if isinstance(m, nn.Linear) else "channels"
        raise GraphError(f"its layers disagree on how many channels there are: node {x.name!r} carries {n}, and "
                         f"{node.target!r} reads {k} {what}")


def _concatenation(node: fx.Node, size: dict[fx.Node, int | None], flat: dict[fx.Node, bool],
                   flattened: set[fx.Node], spaces: Callable[[fx.Node], Layout]) -> tuple[Layout, int]:
    """The spaces a ``torch.cat(tensors, dim)`` puts side by side, each with the offset of its channel 0 in the
    output (input i starts at offset_i = size_0 + ... + size_{i-1}, and its own spaces at offset_i + theirs), and
    the output's number of channels.
    GraphError (a clause naming the node) where the channels cannot be followed: a cat along another dimension
    than the channels (dim 1 or -3 of maps [B, C, H, W], dim -1 of features), of maps with features, of
    flattened maps, or with a tensor whose number of channels no layer says (the model's input)."""
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not (isinstance(tensors, (list, tuple)) and all(isinstance(t, fx.Node) for t in tensors)):
        raise GraphError(f"node {node.name!r} concatenates it with values that are not tensors of the graph")
    if len({flat[t] for t in tensors}) > 1:
        raise GraphError(f"node {node.name!r} concatenates maps [B, C, H, W] with features [B, F]")
    channels = "dim -1 of features" if flat[tensors[0]] else "dim 1 of maps [B, C, H, W]"
    if dim not in ((-1,) if flat[tensors[0]] else (1, -3)):
        raise GraphError(f"node {node.name!r} concatenates it along dim {dim}, not along its channels ({channels}), "
                         f"so its channels stay whole but hold other values: not supported; write torch.cat(..., "
                         f"dim={-1 if flat[tensors[0]] else 1}) if the channels were meant")
    if flattened & set(tensors):
        raise GraphError(f"node {node.name!r} concatenates flattened maps, whose channels are S features each for an "
                         "S the graph does not know; concatenate the maps before flattening them")
    unknown = next((t for t in tensors if size[t] is None), None)
    if unknown is not None:
        what = f"the model's input (node {unknown.name!r})" if unknown.op == "placeholder" else _where(unknown)
        raise GraphError(f"node {node.name!r} concatenates it with {what}, whose number of channels no layer says, "
                         "so the offsets of the channels after it are not known")
    layout, offset = [], 0
    for t in tensors:
        layout += [(a, offset + inner) for a, inner in spaces(t)]
        offset += size[t]
    return tuple(layout), offset


def channel_op(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """What ``node`` computes channel by channel, for running the graph on one number per channel (as
    ``shrink.channels_to_keep`` does): 'layer' (a Conv2d or Linear, depthwise too), 'batchnorm', 'elementwise'
    (``elementwise_op``), 'pass' (pooling, Dropout, Identity, Flatten, a spatial mean: channel c stays c), 'add',
    'cat' (its first argument, side by side); None for anything else. Unlike ``channel_groups`` it checks nothing
    (which dimension a cat joins, whether a layer reads maps or features): ask it only about the nodes of a group
    that ``channel_groups`` found unblocked."""
    m = gm.get_submodule(node.target) if node.op == "call_module" else None
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        return "layer"
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return "batchnorm"
    if is_elementwise(gm, node):
        return "elementwise"
    if isinstance(m, _IDENTITY) or _is_pooling(gm, node) or _is_flatten(gm, node) or _is_spatial_mean(node):
        return "pass"
    if _is_add(node):
        return "add"
    return "cat" if _is_cat(node) else None


def _collect(gm: fx.GraphModule, find: Callable[[fx.Node], fx.Node],
             facts: list[tuple[fx.Node, str, object]]) -> list[ChannelGroup]:
    """One ChannelGroup per space with a producer; its producers must agree on n (the readers and BatchNorms were
    checked against the value they read)."""
    spaces: dict[fx.Node, dict[str, list]] = {}
    for node, kind, what in facts:
        space = spaces.setdefault(find(node), {"producer": [], "batchnorm": [], "consumer": [], "blocked": [],
                                               "blocks": []})
        if what not in space[kind]:
            space[kind].append(what)
    groups = []
    for space in spaces.values():
        if not space["producer"]:
            continue
        sizes = {name: units(gm.get_submodule(name)) for name in space["producer"]}
        n = sizes[space["producer"][0]]
        wrong = [f"{name!r} writes {k}" for name, k in sizes.items() if k != n]
        if wrong:
            space["blocked"].append(f"its layers disagree on how many channels there are: {space['producer'][0]!r} "
                                    f"writes {n}, {', '.join(wrong)}")
        blocks = math.lcm(*space["blocks"])          # 1 without a grouped conv; n splits: torch makes G divide n
        groups.append(ChannelGroup(n, tuple(space["producer"]), tuple(space["batchnorm"]),
                                   tuple(space["consumer"]), "; ".join(space["blocked"]) or None, blocks))
    order = {node.target: i for i, node in enumerate(gm.graph.nodes) if node.op == "call_module"}
    return sorted(groups, key=lambda g: order[g.producers[0]])


# ---------------------------------------------------------------------- running parts of the graph

def activation_node(gm: fx.GraphModule, layer: fx.Node) -> fx.Node:
    """The node whose value is the layer's units: layer -> [BatchNorm] -> [nonlinearity], each taken if present."""
    node, user = layer, sole_user(layer)
    if (user is not None and user.op == "call_module"
            and isinstance(gm.get_submodule(user.target), nn.modules.batchnorm._BatchNorm)):
        node, user = user, sole_user(user)
    return user if user is not None and is_elementwise(gm, user) else node


def sole_linear_reader(gm: fx.GraphModule, act: fx.Node) -> nn.Linear | None:
    """The Linear that alone reads ``act``, if any: then removing a unit is a rank-1 change of its output."""
    user = sole_user(act)
    if user is None or user.op != "call_module" or len(user.args) != 1 or user.kwargs:
        return None
    module = gm.get_submodule(user.target)
    return module if isinstance(module, nn.Linear) else None


def frontier(gm: fx.GraphModule, cut: fx.Node) -> list[fx.Node]:
    """The values computed up to ``cut`` (inclusive) that later nodes read: all the rest of the graph needs."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    return [n for n in gm.graph.nodes if order[n] <= order[cut] and n.op != "get_attr"
            and any(order[u] > order[cut] for u in n.users)]


def subgraph(gm: fx.GraphModule, inputs: list[fx.Node], outputs: list[fx.Node]) -> fx.GraphModule:
    """A module mapping the values of ``inputs`` to a tuple of the values of ``outputs``, sharing gm's layers.

    Each output is cloned as soon as it is computed, so in-place operations after it (ReLU(inplace=True),
    ``out += identity``) cannot change what is returned.
    """
    needed, stack = set(), list(outputs)
    while stack:
        node = stack.pop()
        if node not in needed and node not in inputs:
            needed.add(node)
            stack.extend(node.all_input_nodes)
    new = fx.Graph()
    env = {node: new.placeholder(f"in_{i}") for i, node in enumerate(inputs)}
    returned = {node: env[node] for node in outputs if node in env}
    for node in gm.graph.nodes:
        if node in needed:
            if node.op == "placeholder":
                raise ValueError(f"Internal: input {node.name!r} is needed but not given.")
            env[node] = new.node_copy(node, lambda n: env[n])
            if node in outputs:
                returned[node] = new.call_method("clone", (env[node],))
    new.output(tuple(returned[node] for node in outputs))
    return fx.GraphModule(gm, new)


def input_and_output(gm: fx.GraphModule) -> tuple[fx.Node, fx.Node]:
    """The graph's one input node and the node it returns; ``TypeError`` for more inputs or a non-tensor result."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    result = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if len(placeholders) != 1 or not isinstance(result, fx.Node):
        raise TypeError("This needs a model taking one input tensor and returning one tensor of logits.")
    return placeholders[0], result


# ---------------------------------------------------------------------- attention heads

class HeadLayout(NamedTuple):
    """Where the heads of one attention module live: ``qkv`` the packed [3E, E] projection W_in = [W_q; W_k; W_v]
    (and its bias ``qkv_bias``, or None), ``out`` the [E, E] output projection W_o, ``heads`` H, ``embed_dim`` E:
    the width of the heads side by side, H · d (the model's width, unless heads were removed for real: then W_in
    is [3·H·d, E] and W_o [E, H·d]). Head h owns rows h·d … (h+1)·d − 1 of each of W_q, W_k, W_v (d = E / H) and
    the same columns of W_o."""
    qkv: str
    qkv_bias: str | None
    out: str
    heads: int
    embed_dim: int

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.heads

    def head_of(self, length: int) -> Tensor:
        """For each of ``length`` rows of W_in (3E) or columns of W_o (E): the head it belongs to, int64 [length]."""
        return (torch.arange(length) % self.embed_dim) // self.head_dim


def head_layout(model: nn.Module, name: str, module: nn.Module) -> HeadLayout | None:
    """The HeadLayout of ``module``: an ``nn.MultiheadAttention`` with a packed ``in_proj_weight``, or a written-out
    attention (nanoGPT's) with a Linear ``qkv`` (E -> 3·H·d), a Linear ``proj`` (H·d -> E; H·d = E unless heads
    were removed) and an int ``heads`` / ``n_head`` / ``num_heads``; None for any other module."""
    def masked_or_present(param: str) -> bool:
        owner, _, tensor = param.rpartition(".")
        m = model.get_submodule(owner)
        return getattr(m, tensor, None) is not None or hasattr(m, tensor + "_orig")

    if isinstance(module, nn.MultiheadAttention) and module._qkv_same_embed_dim:
        bias = f"{name}.in_proj_bias"
        return HeadLayout(f"{name}.in_proj_weight", bias if masked_or_present(bias) else None,
                          f"{name}.out_proj.weight", module.num_heads, module.embed_dim)
    counts = [getattr(module, attr, None) for attr in ("heads", "n_head", "num_heads")]
    heads = next((h for h in counts if isinstance(h, int) and not isinstance(h, bool) and h > 0), None)
    qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
    if (heads and isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear) and qkv.in_features == proj.out_features
            and qkv.out_features == 3 * proj.in_features and proj.in_features % heads == 0):
        bias = f"{name}.qkv.bias"
        return HeadLayout(f"{name}.qkv.weight", bias if masked_or_present(bias) else None, f"{name}.proj.weight",
                          heads, proj.in_features)
    return None
