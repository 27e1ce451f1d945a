"""Mixed precision: a bit width per layer under a byte budget, chosen from per-layer accuracy-vs-bits curves.

``bit_curves`` quantizes one layer at a time to each width b of ``bits`` (``fake_quantize``; the other layers
float) and measures accuracy on ``data``: the curve a_L(b), next to a_0, the float model.

The bytes of layer L at b bits are what ``save_quantized`` stores for its weights: the packed codes, ⌈n_L b / 8⌉,
plus S (float32) and Z (int16) for each of its c_L scales (c_L = 1 per tensor, C_out per channel):

    B_L(b) = ⌈n_L b / 8⌉ + 6 c_L.

``allocate_bits`` picks b = (b_L) ∈ bits^L to solve, approximately,

    max_b  a_0 − Σ_L (a_0 − a_L(b_L))     s.t.  Σ_L B_L(b_L) ≤ budget,

the bit-vector analogue of ``sensitivity.allocate_sparsity``'s keep-vector problem (there: keep k_L weights of
each layer, Σ k_L ≤ budget; here: store n_L weights at b_L bits, Σ ≈ Σ b_L n_L / 8 ≤ budget). Equivalently,
min Σ_L b_L n_L s.t. the predicted accuracy ≥ a target, swept over targets. A multiple-choice knapsack, solved
greedily as ``allocate_sparsity`` does: start with every layer at its most accurate width (the widest, unless noise
puts a narrower one higher: ties go to the narrower); while over budget, move the
one layer, to the one narrower width, that costs the least predicted drop per byte saved,
(a_L(b_i) − a_L(b_j)) / (B_L(b_i) − B_L(b_j)). Bits do not stop part way, so the last move can save far more than
needed (LeNet-300-100 at the bytes of 3 bits everywhere: fc1 3 → 2 bits, predicted 0.17, instead of fc3 4 → 3,
0.76). So at every step the greedy also finishes at once with the single move of least drop that meets the budget,
each finished allocation spends the bytes left on the widenings of most gain per byte, and the best one is kept.
``allocate_bits_exact`` solves the same problem exactly (dynamic programming on the Pareto front), to check it.
Its limits are those of ``allocate_sparsity``: the drops are measured one layer at a time and do
not add up exactly (measure the combined model: ``fake_quantize_mixed``, then ``prunelab.evaluate``), and the
greedy is exact when the budget falls on a point of its path and the curves are convex in bytes, not always in
between. The curves are measured without fine-tuning; QAT (``prunelab.qat``) changes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from . import masks as M
from ._helpers import select_layers
from .data import Data, as_image_set
from .quantization import Scheme, check_bits, fake_quantize
from .training import evaluate

__all__ = ["DEFAULT_BITS", "BYTES_PER_SCALE", "layer_bytes", "BitCurves", "bit_curves", "BitAllocation",
           "allocate_bits_from_curves", "allocate_bits_exact", "allocate_bits", "fake_quantize_mixed"]

DEFAULT_BITS = (2, 3, 4, 6, 8)
BYTES_PER_SCALE = 6          # S float32 + Z int16, as save_quantized stores them


def layer_bytes(n: int, bits: int, scales: int) -> int:
    """B_L(b) = ⌈n b / 8⌉ + 6 c: n weights packed at ``bits`` bits each, and c = ``scales`` pairs (S, Z)."""
    return math.ceil(n * bits / 8) + BYTES_PER_SCALE * scales


@dataclass(frozen=True)
class BitCurves:
    """Accuracy against bit width, one layer quantized at a time (the others float).

    ``bits``: the widths b_0 < b_1 < …; ``accuracy[L][i]``: accuracy in [0, 1] with only L at ``bits[i]``;
    ``baseline``: a_0, all float; ``weights[L]``: n_L; ``scales[L]``: c_L; ``scheme``, ``per_channel``: the grid;
    ``n_images``: images measured.
    """
    bits: tuple[int, ...]
    accuracy: dict[str, tuple[float, ...]]
    baseline: float
    weights: dict[str, int]
    scales: dict[str, int]
    scheme: str
    per_channel: bool
    n_images: int

    @property
    def layers(self) -> list[str]:
        return list(self.accuracy)

    def bytes_of(self, layer: str, b: int) -> int:
        """B_L(b), bytes of ``layer``'s weights at b bits."""
        return layer_bytes(self.weights[layer], b, self.scales[layer])

    def total_bytes(self, bits: Mapping[str, int]) -> int:
        """Σ_L B_L(b_L) over every layer of the curves (each must be named)."""
        return sum(self.bytes_of(layer, bits[layer]) for layer in self.layers)

    def predicted_accuracy(self, bits: Mapping[str, int]) -> float:
        """The sum-of-drops prediction a_0 − Σ_L (a_0 − a_L(b_L)); every b_L must be one of ``self.bits``."""
        return self.baseline - sum(self.baseline - self.accuracy[L][self.bits.index(b)] for L, b in bits.items())


def _widths(bits: Sequence[int]) -> tuple[int, ...]:
    if isinstance(bits, int) or not len(bits):
        raise ValueError(f"bits must be a non-empty list of widths from 1 to 8, e.g. (2, 3, 4, 6, 8), got {bits!r}.")
    for b in bits:
        check_bits(b)
    return tuple(sorted(set(bits)))


def bit_curves(model: nn.Module, data: Data, bits: Sequence[int] = DEFAULT_BITS, *, scheme: Scheme = "symmetric",
               per_channel: bool = False, layers: list[str] | None = None) -> BitCurves:
    """a_L(b) on every image of ``data``: each layer (all Linear / Conv2d, or ``layers``) alone fake-quantized
    to each width of ``bits``. Works on a copy; ``model`` is not changed. Arguments are checked first."""
    widths = _widths(bits)
    data = as_image_set(data, "bit_curves")
    work = M.copy_model(model)
    chosen = select_layers(work, layers)
    baseline = evaluate(work, data).accuracy
    accuracy = {}
    for name, layer in chosen.items():
        W = M.effective(layer).clone()                                       # the float weights, put back after
        points = []
        for b in widths:
            M.set_effective(layer, fake_quantize(W, b, scheme=scheme, per_channel=per_channel))
            points.append(evaluate(work, data).accuracy)
        M.set_effective(layer, W)
        accuracy[name] = tuple(points)
    shapes = {name: M.effective(layer).shape for name, layer in chosen.items()}           # W [C_out, ...]
    return BitCurves(bits=widths, accuracy=accuracy, baseline=baseline,
                     weights={name: shape.numel() for name, shape in shapes.items()},
                     scales={name: shape[0] if per_channel else 1 for name, shape in shapes.items()},
                     scheme=scheme, per_channel=per_channel, n_images=len(data))


@dataclass(frozen=True)
class BitAllocation:
    """A width per layer meeting a byte budget: ``bits[L]``; ``bytes``: Σ_L B_L(b_L) ≤ ``budget``;
    ``predicted_accuracy``: the sum-of-drops prediction (measure the real, combined accuracy)."""
    bits: dict[str, int]
    bytes: int
    budget: int
    predicted_accuracy: float


def _cheapest_drop(curves: BitCurves, index: dict[str, int]) -> tuple[str, int] | None:
    """(layer, narrower index) with the least predicted drop per byte saved, or None when all are narrowest."""
    best = None   # (drop per byte, -bytes saved, layer position, layer, width index)
    for position, layer in enumerate(curves.layers):
        i = index[layer]
        for j in range(i):
            saved = curves.bytes_of(layer, curves.bits[i]) - curves.bytes_of(layer, curves.bits[j])
            drop = curves.accuracy[layer][i] - curves.accuracy[layer][j]
            candidate = (drop / saved, -saved, position, layer, j)
            best = candidate if best is None or candidate < best else best
    return None if best is None else best[3:]


def _best_widening(curves: BitCurves, index: dict[str, int], spare: int) -> tuple[str, int] | None:
    """(layer, wider index) with the most predicted gain per byte that fits in ``spare`` bytes and gains > 0."""
    best = None   # (-gain per byte, bytes added, layer position, layer, width index)
    for position, layer in enumerate(curves.layers):
        i = index[layer]
        for j in range(i + 1, len(curves.bits)):
            added = curves.bytes_of(layer, curves.bits[j]) - curves.bytes_of(layer, curves.bits[i])
            gain = curves.accuracy[layer][j] - curves.accuracy[layer][i]
            if added <= spare and gain > 0:
                candidate = (-gain / added, added, position, layer, j)
                best = candidate if best is None or candidate < best else best
    return None if best is None else best[3:]


def _check_budget(budget_bytes: int) -> int:
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes < 0:
        raise ValueError(f"budget_bytes must be a non-negative integer number of bytes for the quantized weights, "
                         f"got {budget_bytes!r}.")
    return budget_bytes


def _finishing_move(curves: BitCurves, index: dict[str, int], excess: int) -> tuple[str, int] | None:
    """(layer, narrower index): of the single moves that save at least ``excess`` bytes, the one with the least
    predicted drop (ties: fewer bytes saved), or None when no single move saves enough."""
    best = None   # (drop, bytes saved, layer position, layer, width index)
    for position, layer in enumerate(curves.layers):
        i = index[layer]
        for j in range(i):
            saved = curves.bytes_of(layer, curves.bits[i]) - curves.bytes_of(layer, curves.bits[j])
            if saved >= excess:
                candidate = (curves.accuracy[layer][i] - curves.accuracy[layer][j], saved, position, layer, j)
                best = candidate if best is None or candidate < best else best
    return None if best is None else best[3:]


def _widened(curves: BitCurves, index: dict[str, int], budget: int) -> dict[str, int]:
    """``index`` after spending the bytes left under ``budget`` on the widenings with the most gain per byte."""
    index = dict(index)
    while (move := _best_widening(curves, index, budget - curves.total_bytes(_bits(curves, index)))) is not None:
        layer, j = move
        index[layer] = j
    return index


def _bits(curves: BitCurves, index: dict[str, int]) -> dict[str, int]:
    return {layer: curves.bits[i] for layer, i in index.items()}


def allocate_bits_from_curves(curves: BitCurves, budget_bytes: int) -> BitAllocation:
    """Widths b_L ∈ ``curves.bits`` with Σ_L B_L(b_L) ≤ ``budget_bytes``, losing the least predicted accuracy,
    greedily: from each layer's most accurate width, narrow the layer with the least drop per byte saved while over
    budget; at every step also finish at once with the single move of least drop that meets the budget; widen each
    finished allocation with the bytes left; keep the best (see the module docstring). ``ValueError`` when even
    the narrowest width everywhere needs more bytes."""
    budget = _check_budget(budget_bytes)
    narrowest = curves.total_bytes({layer: curves.bits[0] for layer in curves.layers})
    if narrowest > budget:
        raise ValueError(f"A budget of {budget:,} bytes is below the {narrowest:,} bytes of every layer at "
                         f"{curves.bits[0]} bits; offer narrower widths or allow more bytes.")
    index = {layer: max(range(len(curves.bits)), key=lambda i: (curves.accuracy[layer][i], -i))
             for layer in curves.layers}                                  # most accurate (ties: the narrowest)
    finished: list[dict[str, int]] = []
    while (excess := curves.total_bytes(_bits(curves, index)) - budget) > 0:
        if (finish := _finishing_move(curves, index, excess)) is not None:
            finished.append(_widened(curves, {**index, finish[0]: finish[1]}, budget))
        layer, j = _cheapest_drop(curves, index)
        index[layer] = j
    finished.append(_widened(curves, index, budget))
    bits = max((_bits(curves, i) for i in finished),
               key=lambda b: (curves.predicted_accuracy(b), -curves.total_bytes(b)))
    return BitAllocation(bits=bits, bytes=curves.total_bytes(bits), budget=budget,
                         predicted_accuracy=curves.predicted_accuracy(bits))


def allocate_bits_exact(curves: BitCurves, budget_bytes: int) -> BitAllocation:
    """The optimum of the same problem, for comparison with the greedy: dynamic programming over the layers on
    the Pareto front of (bytes, predicted drop), keeping for each byte total only the allocations that no other
    beats with fewer or equal bytes. Ties go to fewer bytes. Exact for the predicted accuracy; the front can grow
    to one entry per reachable byte total, so it is meant for models of a few dozen layers."""
    budget = _check_budget(budget_bytes)
    front: list[tuple[int, float, dict[str, int]]] = [(0, 0.0, {})]       # (bytes, Σ drops, bits), bytes ascending
    for layer in curves.layers:
        options = [(B + curves.bytes_of(layer, b), d + curves.baseline - a, {**bits, layer: b})
                   for B, d, bits in front for b, a in zip(curves.bits, curves.accuracy[layer])]
        front, best = [], math.inf
        for B, d, bits in sorted((o for o in options if o[0] <= budget), key=lambda o: (o[0], o[1])):
            if d < best:                                                    # fewer bytes and a smaller drop
                front.append((B, d, bits))
                best = d
        if not front:
            narrowest = curves.total_bytes({L: curves.bits[0] for L in curves.layers})
            raise ValueError(f"A budget of {budget:,} bytes is below the {narrowest:,} bytes of every layer at "
                             f"{curves.bits[0]} bits; offer narrower widths or allow more bytes.")
    _, _, bits = min(front, key=lambda entry: (entry[1], entry[0]))
    return BitAllocation(bits=bits, bytes=curves.total_bytes(bits), budget=budget,
                         predicted_accuracy=curves.predicted_accuracy(bits))


def allocate_bits(model: nn.Module, data: Data, budget_bytes: int, *, bits: Sequence[int] = DEFAULT_BITS,
                  scheme: Scheme = "symmetric", per_channel: bool = False,
                  layers: list[str] | None = None) -> BitAllocation:
    """``allocate_bits_from_curves(bit_curves(model, data, bits, ...), budget_bytes)``: a width per layer
    (all Linear / Conv2d, or ``layers``) whose quantized weights take at most ``budget_bytes`` bytes, the curves
    measured on ``data`` (use validation images, not the test set). ``model`` is not changed."""
    _check_budget(budget_bytes)
    curves = bit_curves(model, data, bits, scheme=scheme, per_channel=per_channel, layers=layers)
    return allocate_bits_from_curves(curves, budget_bytes)


def fake_quantize_mixed(model: nn.Module, bits: Mapping[str, int], *, scheme: Scheme = "symmetric",
                        per_channel: bool = False) -> nn.Module:
    """A copy of ``model`` with each named layer's weights fake-quantized to its own width ``bits[L]`` (e.g. a
    ``BitAllocation.bits``); layers not named stay float. ``model`` is not changed."""
    chosen = select_layers(model, list(bits))
    for b in bits.values():
        check_bits(b)
    quantized = M.copy_model(model)
    for name in chosen:
        layer = quantized.get_submodule(name)
        M.set_effective(layer, fake_quantize(M.effective(layer), bits[name], scheme=scheme, per_channel=per_channel))
    return quantized
