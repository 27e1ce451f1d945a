"""Test accuracy after every slider move, fast: keep what a change cannot touch, and update what it can.

**Cut the graph at the change.** Masking layer L changes what L and everything after it computes; every value
computed before L stays the same. ``LiveAccuracy`` traces the model (``torch.fx``, ``prunelab.graph``) and, for
the first layer that changed, keeps the values the rest of the graph reads from before L (``graph.frontier``)
for every image. The next change at L or after runs only the rest of the graph. This works for any traceable
model: a chain, a ResNet's residual blocks (the frontier then holds the block's input too), a ViT whose encoder
fx keeps whole (a change inside it runs from the encoder on). The most recently used cuts are kept while they
fit in ``max_cache_bytes``.

**Update a Linear by what changed.** When the first changed layer is a Linear (y = x Wᵀ + b, x [n, in]) whose
output y₀ for weights W₀ is kept from the last call, its output for the new effective weights W is

    y = y₀ + x ΔWᵀ,   ΔW = W − W₀,

and ΔW is sparse: a slider step flips a few masks. With nnz(ΔW) entries this costs nnz · n multiply-adds instead
of in · out · n (LeNet-300-100's fc1 at a step of 0.01 of sparsity: 2,352 instead of 235,200 per image). The new
y and W are the next call's y₀ and W₀. The sum runs in another order than x Wᵀ, so a logit can differ from a
fresh computation in its last bits (as it does between two CPUs), and each update adds at most one rounding: after
``refresh_every`` updates, or when more than ``dense_fraction`` of the weights changed at once (a jump of the
slider), the layer is computed whole again.

Say which layers changed (``changed=``) on each call; ``changed=None`` means "anything may have changed" and
runs the whole model. A model fx cannot trace (or with several inputs) is always run whole.

**Copies share what no weight touches.** Copies of one model that differ only in weights or masks (the granularity
explorer prunes three) compute the same values up to their first layer with parameters: the flattened images of
an MLP, and the transposed input xᵀ of its first Linear. The first are not kept (the images are: the few
operations before the first weights, a Flatten, cost nothing to redo), and ``LiveAccuracy(copy, data, like=other)``
keeps the second once for all copies (LeNet-300-100's fc1 on 10,000 images: 31 MB).
"""

from __future__ import annotations

import operator
import time
import warnings
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, fx, nn

from . import graph, masks
from ._helpers import in_mode
from .data import Data, as_image_set
from .training import eval_batch_size, model_device

__all__ = ["LiveAccuracy"]

_INPLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.iand, operator.ior}


@dataclass
class _Part:
    """A part of the graph (``graph.subgraph``) and which of its inputs it changes in place: it runs on copies of
    those, so that kept values stay as they were."""
    module: fx.GraphModule
    cloned: list[int]

    def __call__(self, values: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return self.module(*(v.clone() if i in self.cloned else v for i, v in enumerate(values)))


@dataclass
class _Cut:
    """The values the graph after node ``at`` reads (``inputs``, the frontier), for every batch (``values``), and
    the part of the graph that maps them to the logits (``rest``). For a Linear ``at`` with ``weight``/``bias``
    recorded, the cut is also the base y₀ of that layer's incremental update."""
    at: fx.Node
    inputs: list[fx.Node]
    rest: _Part
    values: list[tuple[Tensor, ...]] = field(default_factory=list)
    weight: Tensor | None = None               # W₀ and b₀, when this cut is the base of the Linear ``at``
    bias: Tensor | None = None
    x_t: list[Tensor] = field(default_factory=list)   # ... and its input per batch, transposed: xᵀ [in, n]
    updates: int = 0                           # ... and how many updates y₀ has had since it was computed whole

    @property
    def bytes(self) -> int:
        kept = [t for batch in self.values for t in batch] + self.x_t
        return sum(t.numel() * t.element_size() for t in kept)

    def run(self, batch: int, replace: dict[int, Tensor] | None = None) -> Tensor:
        values = list(self.values[batch])
        for i, value in (replace or {}).items():
            values[i] = value
        return self.rest(tuple(values))[0]


class LiveAccuracy:
    """Accuracy of ``model`` on every image of ``data``, recomputed from the first changed layer on.

    ``accuracy(changed)`` returns the fraction correct in [0, 1]; ``changed`` names the layers whose weights
    or masks changed since the last call (qualified names such as ``"fc2"`` or ``"layer1.0.conv1"``).
    ``seconds`` is the time the last call took, ``path`` how it ran (``"whole model"``, ``"from 'fc2'"``,
    ``"fc1 updated by ΔW (2352 weights)"``, ``"unchanged"``).

    ``like``: the LiveAccuracy of another copy of the same model on the same ``data`` (the copies may differ in
    weights and masks only): the values that depend on no parameter are kept once for both.
    """

    def __init__(self, model: nn.Module, data: Data, *, max_cache_bytes: float = 512e6,
                 dense_fraction: float = 0.05, refresh_every: int = 50, like: LiveAccuracy | None = None):
        self.model = model
        self.data = data = as_image_set(data, "LiveAccuracy")
        self.labels = data.labels.to(model_device(model))
        self.batch_size = eval_batch_size(model)
        self.max_cache_bytes = max_cache_bytes
        self.dense_fraction, self.refresh_every = dense_fraction, refresh_every
        self.gm = _traceable(model)
        self.position = {node: i for i, node in enumerate(self.gm.graph.nodes)} if self.gm is not None else {}
        self._cuts: dict[fx.Node, _Cut] = {}        # kept frontiers, least recently used first
        self._parts: dict[tuple, _Part] = {}
        self._correct: int | None = None
        self.seconds = 0.0
        self.path = ""
        # the nodes that depend on no parameter, and the xᵀ of those kept, for every copy that shares them
        # ({(node, batch): xᵀ}, an entry gone once no cut holds it)
        self._free = _parameter_free(self.gm) if self.gm is not None else set()
        self._shared: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        if like is not None:
            if like.data is not data or _signature(like.gm) != _signature(self.gm):
                raise ValueError("like= takes the LiveAccuracy of a copy of the same model (prunelab.masks.copy_model) "
                                 "on the same data object; this model or data differs. Leave like out to keep "
                                 "this model's values on their own.")
            self._shared = like._shared

    # ------------------------------------------------------------------ public
    @torch.inference_mode()
    def accuracy(self, changed: Iterable[str] | None = None) -> float:
        start = time.perf_counter()
        with in_mode(self.model, training=False):
            self._correct = self._count(None if changed is None else list(changed))
        self.seconds = time.perf_counter() - start
        return self._correct / len(self.labels)

    def layer_node(self, name: str) -> fx.Node | None:
        """The first node that runs layer ``name``: the call of the layer itself, or of the module fx kept whole
        around it (``encoder`` for ``encoder.layers.0.linear1``); None when the graph never calls it."""
        for node in self.position:
            if node.op == "call_module" and (node.target == name or name.startswith(node.target + ".")):
                return node
        return None

    # ------------------------------------------------------------------ how a call runs
    def _count(self, changed: list[str] | None) -> int:
        if self.gm is None:
            self.path = "whole model"
            return self._run_whole()
        if changed is not None and not changed and self._correct is not None:
            self.path = "unchanged"
            return self._correct
        first = self._first_node(changed)
        self._forget_stale(first)
        if first is None or self._correct is None:
            self.path = "whole model"
            return self._run_from(None, first)
        if isinstance(self._module(first), nn.Linear) and first.target in (changed or ()):
            correct = self._update_linear(first)
            if correct is not None:
                return correct
        self.path = f"from {first.target!r}"
        return self._run_from(self._latest_cut_before(first), first)

    def _first_node(self, changed: list[str] | None) -> fx.Node | None:
        """The earliest node that runs a changed layer; None: run everything (unknown layer, or changed=None)."""
        if changed is None:
            return None
        nodes = [self.layer_node(name) for name in changed]
        if any(node is None for node in nodes):
            return None
        return min(nodes, key=self.position.__getitem__)

    def _forget_stale(self, first: fx.Node | None) -> None:
        """Drop the cuts whose values a change at ``first`` can alter: those at ``first`` or after it. The base of
        a changed Linear at ``first`` stays: its update accounts for the change (y₀ depends on nothing later)."""
        limit = self.position[first] if first is not None else -1
        for at, cut in list(self._cuts.items()):
            if self.position[at] >= limit and not (at is first and cut.weight is not None):
                del self._cuts[at]

    def _latest_cut_before(self, node: fx.Node) -> _Cut | None:
        before = [cut for at, cut in self._cuts.items() if self.position[at] < self.position[node]]
        return max(before, key=lambda cut: self.position[cut.at], default=None)

    def _module(self, node: fx.Node) -> nn.Module | None:
        return self.gm.get_submodule(node.target) if node.op == "call_module" else None

    # ------------------------------------------------------------------ running the graph in parts
    def _run_whole(self) -> int:
        x = self.data.normalized(model_device(self.model))
        return sum(int((self.model(x[i:i + self.batch_size]).argmax(1) == self.labels[i:i + self.batch_size]).sum())
                   for i in range(0, len(x), self.batch_size))

    def _run_from(self, source: _Cut | None, first: fx.Node | None) -> int:
        """Run from ``source``'s values (or the images) to the logits; on the way keep the cut just before
        ``first`` (and, for a Linear ``first``, the base of its update) if they fit in the cache."""
        wanted = self._new_cuts(first)
        inputs = source.inputs if source is not None else [graph.input_and_output(self.gm)[0]]
        bases = [cut for cut in wanted if cut.weight is not None]
        read = [cut for cut in bases if cut.at.args[0] not in self._free]    # the others' xᵀ: ``_free_transposed``
        outputs = [node for cut in wanted for node in cut.inputs] + [c.at.args[0] for c in read] + [self._result]
        part = self._part(inputs, outputs)
        x = self.data.normalized(model_device(self.model))
        for cut in bases:
            if cut not in read:
                cut.x_t = [self._free_transposed(cut.at.args[0], b, x[start:start + self.batch_size])
                           for b, start in enumerate(range(0, len(self.labels), self.batch_size))]
        correct = 0
        for b, start in enumerate(range(0, len(self.labels), self.batch_size)):
            values = part(source.values[b] if source is not None else (x[start:start + self.batch_size],))
            at = 0
            for cut in wanted:
                cut.values.append(tuple(values[at:at + len(cut.inputs)]))
                at += len(cut.inputs)
            for cut, x_in in zip(read, values[at:-1]):
                cut.x_t.append(x_in.reshape(-1, x_in.shape[-1]).T.contiguous())
            correct += self._correct_in(values[-1], b)
        if source is not None:
            self._touch(source)
        self._keep(wanted)
        return correct

    def _new_cuts(self, first: fx.Node | None) -> list[_Cut]:
        """The cuts worth keeping for changes at ``first``: just before it, and after it for a Linear. A cut before
        any parameter is not kept: it would hold the images again (flattened, say), and they are kept already."""
        if first is None or self.max_cache_bytes <= 0:
            return []
        before = list(self.position)[self.position[first] - 1]
        cuts = [] if set(graph.frontier(self.gm, before)) <= self._free else [self._make_cut(before)]
        layer = self._module(first)
        if isinstance(layer, nn.Linear) and len(first.args) == 1 and not first.kwargs:
            cut = self._make_cut(first)
            cut.weight, cut.bias = _weights(layer)
            cuts.append(cut)
        return [cut for cut in cuts if cut.at not in self._cuts]

    def _make_cut(self, at: fx.Node) -> _Cut:
        inputs = graph.frontier(self.gm, at)
        return _Cut(at, inputs, self._part(inputs, [self._result]))

    def _keep(self, cuts: list[_Cut]) -> None:
        """Keep ``cuts`` (most recently used), dropping the least recently used ones while over the budget."""
        for cut in cuts:
            if cut.bytes > self.max_cache_bytes:
                continue
            self._cuts[cut.at] = cut
            while sum(c.bytes for c in self._cuts.values()) > self.max_cache_bytes:
                del self._cuts[next(iter(self._cuts))]

    def _free_transposed(self, node: fx.Node, batch: int, images: Tensor) -> Tensor:
        """xᵀ [in, n]: the value of ``node``, a Linear's input that depends on no parameter, for ``batch`` (its
        ``images``), transposed. The one kept by this LiveAccuracy or one that shares with it (``like``) if there
        is one (kept values are never written to), else computed from the images."""
        key = (node.name, batch)
        x_t = self._shared.get(key)
        if x_t is None:
            (x,) = self._part([graph.input_and_output(self.gm)[0]], [node])((images,))
            x_t = self._shared[key] = x.reshape(-1, x.shape[-1]).T.contiguous()
        return x_t

    def _touch(self, cut: _Cut) -> None:
        self._cuts[cut.at] = self._cuts.pop(cut.at)

    @property
    def _result(self) -> fx.Node:
        return graph.input_and_output(self.gm)[1]

    def _part(self, inputs: list[fx.Node], outputs: list[fx.Node]) -> _Part:
        key = (tuple(inputs), tuple(outputs))
        if key not in self._parts:
            module = graph.subgraph(self.gm, inputs, outputs)
            placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
            cloned = [i for i, p in enumerate(placeholders) if any(_changes_in_place(module, u, p) for u in p.users)]
            self._parts[key] = _Part(module, cloned)
        return self._parts[key]

    def _correct_in(self, logits: Tensor, batch: int) -> int:
        labels = self.labels[batch * self.batch_size:(batch + 1) * self.batch_size]
        return int((logits.argmax(1) == labels).sum())

    # ------------------------------------------------------------------ y = y₀ + x ΔWᵀ
    def _update_linear(self, first: fx.Node) -> int | None:
        """Accuracy after a change of the Linear at ``first`` (and maybe of layers after it), from its base; None
        when there is no base or too many weights changed (the caller then computes it whole)."""
        base = self._cuts.get(first)
        if base is None or base.weight is None:
            return None
        layer = self._module(first)
        W, b = _weights(layer)
        dW = W - base.weight
        nnz = int(torch.count_nonzero(dW))
        if nnz > self.dense_fraction * dW.numel() or base.updates >= self.refresh_every:
            del self._cuts[first]
            return None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
            dW_sparse = dW.to_sparse_csr()
        db = None if b is None or base.bias is None else b - base.bias
        y_at = base.inputs.index(first)
        correct = 0
        for batch, x_t in enumerate(base.x_t):
            y0 = base.values[batch][y_at]                                          # [n, out] (or [B, T, out])
            y = y0 + torch.sparse.mm(dW_sparse, x_t).T.reshape(y0.shape)          # (ΔW xᵀ)ᵀ = x ΔWᵀ
            if db is not None:
                y = y + db
            correct += self._correct_in(base.run(batch, {y_at: y}), batch)
            base.values[batch] = (*base.values[batch][:y_at], y, *base.values[batch][y_at + 1:])
        base.weight, base.bias, base.updates = W, b, base.updates + 1     # y is the next event's y₀
        self._touch(base)
        self.path = f"{first.target} updated by ΔW ({nnz} weights)"
        return correct


def _weights(layer: nn.Linear) -> tuple[Tensor, Tensor | None]:
    """The effective W and b of ``layer`` now (masks applied), detached copies."""
    W, b = masks.effective(layer), masks.effective(layer, "bias")
    return W.detach().clone(), None if b is None else b.detach().clone()


def _parameter_free(gm: fx.GraphModule) -> set[fx.Node]:
    """The nodes whose value depends on the input alone: no parameter or buffer on the way (the input, a Flatten
    before the first layer); equal in every copy of the model, whatever its weights and masks."""
    free: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op in ("get_attr", "output"):
            continue
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if next(module.parameters(), None) is not None or next(module.buffers(), None) is not None:
                continue
        if all(n in free for n in node.all_input_nodes):
            free.add(node)
    return free


def _signature(gm: fx.GraphModule | None) -> list[tuple] | None:
    """The graph's nodes as (name, op, target, inputs): equal for copies of one model."""
    if gm is None:
        return None
    return [(n.name, n.op, str(n.target), tuple(a.name for a in n.all_input_nodes)) for n in gm.graph.nodes]


def _traceable(model: nn.Module) -> fx.GraphModule | None:
    """The model's fx graph, or None when it cannot be traced or does not map one tensor to logits."""
    try:
        gm = graph.trace(model, "LiveAccuracy")
        graph.input_and_output(gm)
    except TypeError:
        return None
    return gm


def _changes_in_place(gm: fx.GraphModule, node: fx.Node, value: fx.Node) -> bool:
    """Whether ``node`` writes into ``value`` (its first argument): ReLU(inplace=True), ``x += y``, ``x.relu_()``."""
    if not node.args or node.args[0] is not value:
        return False
    if node.op == "call_module":
        return bool(getattr(gm.get_submodule(node.target), "inplace", False))
    if node.op == "call_function":
        return node.target in _INPLACE_FUNCTIONS or getattr(node.target, "__name__", "").endswith("_")
    if node.op == "call_method":
        return node.target.endswith("_")
    return False
