"""Layer sensitivity: how much accuracy each layer loses when it alone is pruned, and a per-layer sparsity
allocation built from those curves.

``sensitivity_scan`` prunes one layer at a time to each sparsity s of a grid, the other layers dense, and
measures accuracy: the curve a_L(s), a_L(0) = a_0 (the dense model). Masks come from ``prunelab.masks``;
the model ends exactly as it started. The activations before the pruned layer are reused (``LiveAccuracy``,
for any model torch.fx can trace): LeNet-300-100 with 19 sparsities per layer on all 10,000 test images
takes a few seconds on a 2-core CPU (benches/bench_explorer_sensitivity.py).

``allocate_sparsity`` chooses one sparsity per layer so that the weights kept fit a budget, losing as
little accuracy as the curves predict. Greedy on the curves' lower convex hulls: while too many weights
are kept, move the one layer, to the one further grid point, that costs the least predicted drop per
weight removed, (a_L(s_i) − a_L(s_j)) / (kept_L(s_i) − kept_L(s_j)); the last move stops part way, so
the budget is met exactly. Its limits:

- the curves are measured one layer at a time, and the prediction a_0 − Σ_L (a_0 − a_L(s_L)) assumes the
  drops add up. They do not: pruning fc1 changes what fc2 and fc3 receive. For LeNet-300-100 at 10% of the
  weights the measured accuracy is 3.5 points below the prediction (at 2%, above it), and the allocation
  does worse than one global magnitude threshold (notebook 06). Measure the combined accuracy
  (``prunelab.prune(model, allocation.sparsity)``, then ``prunelab.evaluate``) before trusting it, or search
  on it (``prunelab.search``);
- the greedy is optimal only for convex drop curves; on a curve with a plateau after a cliff it follows
  the hull, which can jump over a cheap point;
- sparsities between grid points use linearly interpolated curves; accuracy noise near s = 0 can make a
  drop negative (the greedy then takes those weights first);
- no fine-tuning: after fine-tuning the layers' sensitivities change again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from . import masks as M
from .data import Data, as_image_set
from .live_accuracy import LiveAccuracy
from ._helpers import select_layers
from .pruning import Criterion, unit_layers, unit_masks_to_parameters, unit_scores, weight_scores
from .thresholds import RankedScores, check_sparsity

__all__ = ["DEFAULT_SPARSITIES", "ScanGranularity", "RankedLayer", "ranked_layers", "SensitivityCurves",
           "sensitivity_scan", "Allocation", "allocate_sparsity"]

ScanGranularity = Literal["weight", "neuron", "channel"]

# 20 points, denser where LeNet-300-100's curves bend (s ≥ 0.8)
DEFAULT_SPARSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.95,
                      0.96, 0.97, 0.98, 0.99)


class RankedLayer:
    """One layer's scores sorted once, so that its parameter masks for any sparsity s are one scatter.

    ``masks(s)`` removes the k = round(s · u) lowest-scoring units (u = weights, or rows / filters for
    ``"neuron"`` / ``"channel"``; ties broken by position): the same masks as ``prunelab.prune(model,
    {L: s_L for the same layers}, granularity=..., criterion=...)``. ``kept(s)`` counts the weights kept.
    """

    def __init__(self, model: nn.Module, name: str, scores: Tensor, granularity: ScanGranularity):
        self.model, self.name, self.granularity = model, name, granularity
        self.ranked = RankedScores(scores)                         # W's shape, or [units]
        self.units = scores.numel()
        self.weights = M.original(model, f"{name}.weight").numel()
        self.weights_per_unit = self.weights // self.units

    def removed_units(self, s: float) -> int:
        return round(check_sparsity(s, f"sparsity of {self.name!r}") * self.units)

    def kept(self, s: float) -> int:
        """Weights of this layer kept at sparsity s."""
        return (self.units - self.removed_units(s)) * self.weights_per_unit

    def keep(self, s: float) -> Tensor:
        """Keep-mask of the scores (bool, shaped like W or [units])."""
        k = self.removed_units(s)
        if self.granularity != "weight" and k == self.units:
            raise ValueError(f"Sparsity {s} removes every unit of {self.name!r} ({self.units}); choose a "
                             f"sparsity below {1 - 0.5 / self.units:.4f}.")
        return self.ranked.mask_for_sparsity(s)

    def masks(self, s: float) -> dict[str, Tensor]:
        """Parameter masks ``{param_name: bool}`` for sparsity s: the weight (and, for units, the bias and a
        following BatchNorm)."""
        keep = self.keep(s)
        if self.granularity == "weight":
            return {f"{self.name}.weight": keep}
        return unit_masks_to_parameters(self.model, {self.name: keep})


def ranked_layers(model: nn.Module, layers: list[str] | None = None, *, criterion: Criterion = "magnitude",
                  granularity: ScanGranularity = "weight", calibration_data: Data | None = None,
                  seed: int = 0) -> dict[str, RankedLayer]:
    """``{layer: RankedLayer}`` from the scores of the original weights (``calibration_data`` for the
    gradient, Taylor and activation criteria). ``"n:m"`` has no sparsity to sweep and is refused."""
    if granularity not in ("weight", "neuron", "channel"):
        raise ValueError(f"granularity must be 'weight', 'neuron' or 'channel' (a sparsity sweep; N:M "
                         f"pruning has one fixed sparsity 1 − N/M), got {granularity!r}")
    units = granularity != "weight"
    chosen = select_layers(model, layers, units=units)
    if units:
        chosen = unit_layers(model, chosen, granularity, explicit=layers is not None)
        scores = unit_scores(model, chosen, criterion, calibration_data, seed)
    else:
        scores = weight_scores(model, chosen, "magnitude" if criterion in ("l1", "l2") else criterion,
                               calibration_data, seed)
    return {name: RankedLayer(model, name, s, granularity) for name, s in scores.items()}


@dataclass(frozen=True)
class SensitivityCurves:
    """Accuracy against sparsity, one layer pruned at a time (the others dense).

    ``sparsities``: the grid s_0 = 0 < s_1 < … (fractions removed, at ``granularity``); ``accuracy[L][i]``:
    accuracy in [0, 1] with only layer L pruned to ``sparsities[i]``; ``baseline``: a_0, all dense;
    ``units[L]``: weights (or rows / filters) of L; ``weights[L]``: its weights; ``n_images``: images
    measured; ``seconds``: time the scan took.
    """
    sparsities: tuple[float, ...]
    accuracy: dict[str, tuple[float, ...]]
    baseline: float
    units: dict[str, int]
    weights: dict[str, int]
    criterion: str
    granularity: str
    n_images: int
    seconds: float

    @property
    def layers(self) -> list[str]:
        return list(self.accuracy)

    def _check(self, layer: str, s: float) -> None:
        if layer not in self.accuracy:
            raise ValueError(f"No curve for layer {layer!r}; layers scanned: {', '.join(self.accuracy)}.")
        if not 0 <= s <= self.sparsities[-1]:
            raise ValueError(f"Sparsity {s!r} of {layer!r} is outside the scanned range [0, "
                             f"{self.sparsities[-1]}]; scan more sparsities to go further.")

    def accuracy_at(self, layer: str, s: float) -> float:
        """a_L(s): measured on the grid, linearly interpolated between grid points."""
        self._check(layer, s)
        return float(np.interp(s, self.sparsities, self.accuracy[layer]))

    def drop(self, layer: str, s: float) -> float:
        """a_0 − a_L(s): accuracy lost when layer L alone is pruned to s (negative if it went up)."""
        return self.baseline - self.accuracy_at(layer, s)

    def predicted_accuracy(self, sparsity: Mapping[str, float]) -> float:
        """The sum-of-drops prediction a_0 − Σ_L (a_0 − a_L(s_L)); layers not named stay dense."""
        return self.baseline - sum(self.drop(layer, s) for layer, s in sparsity.items())

    def kept_in(self, layer: str, s: float) -> int:
        """Weights of ``layer`` kept at sparsity s: (u − round(s · u)) · weights per unit."""
        self._check(layer, s)
        u = self.units[layer]
        return (u - round(s * u)) * (self.weights[layer] // u)

    def kept(self, sparsity: Mapping[str, float]) -> int:
        """Weights kept over all scanned layers (layers not named stay dense)."""
        return sum(self.kept_in(layer, sparsity.get(layer, 0.0)) for layer in self.accuracy)

    @property
    def total(self) -> int:
        """Weights of the scanned layers."""
        return sum(self.weights.values())


def _grid(sparsities: Sequence[float]) -> tuple[float, ...]:
    if isinstance(sparsities, (int, float)) or not len(sparsities):
        raise ValueError(f"sparsities must be a non-empty list of fractions in [0, 1), got {sparsities!r}")
    for s in sparsities:
        check_sparsity(s, "each sparsity")
    return tuple(sorted({0.0, *map(float, sparsities)}))


def sensitivity_scan(model: nn.Module, data: Data, sparsities: Sequence[float] = DEFAULT_SPARSITIES, *,
                     layers: list[str] | None = None, criterion: Criterion = "magnitude",
                     granularity: ScanGranularity = "weight", calibration_data: Data | None = None,
                     seed: int = 0) -> SensitivityCurves:
    """Accuracy on every image of ``data`` with each layer alone pruned to each of ``sparsities``.

    The grid always includes s = 0 (the dense model, ``baseline``). Masks on the model when called are
    lifted during the scan ("the others dense") and put back after; masks the scan added are removed, so the
    model's state dict ends bit-identical. ``layers``: default every Linear and Conv2d (for neuron/channel,
    every one but the last). Arguments are checked before the model is touched.
    """
    data = as_image_set(data, "sensitivity_scan")
    grid = _grid(sparsities)
    ranked = ranked_layers(model, layers, criterion=criterion, granularity=granularity,
                           calibration_data=calibration_data, seed=seed)
    for r in ranked.values():
        r.keep(grid[-1])                                        # refuse "every unit removed" up front
    start = time.perf_counter()
    saved = M.get_masks(model)
    added: set[str] = set()
    live = LiveAccuracy(model, data)
    curves: dict[str, list[float]] = {}
    try:
        if saved:   # the others dense: lift every mask while scanning
            M.set_masks(model, {name: torch.ones_like(m) for name, m in saved.items()})
        baseline = live.accuracy()
        previous: list[str] = []
        # last layer first: a change then never invalidates the cached inputs of a layer still to come
        for name in reversed(list(ranked)):
            r = ranked[name]
            points = []
            for s in grid[1:]:
                masks = r.masks(s)
                added.update(p for p in masks if p not in saved)
                M.set_masks(model, masks)
                points.append(live.accuracy([*previous, name]))
                previous = []
            M.set_masks(model, {p: torch.ones_like(m) for p, m in masks.items()})   # dense again
            previous = [name]
            curves[name] = [baseline, *points]
    finally:
        M.reset(model, sorted(added))
        if saved:
            M.set_masks(model, saved)
    return SensitivityCurves(
        sparsities=grid, accuracy={name: tuple(curves[name]) for name in ranked}, baseline=baseline,
        units={name: r.units for name, r in ranked.items()},
        weights={name: r.weights for name, r in ranked.items()}, criterion=criterion, granularity=granularity,
        n_images=len(data), seconds=time.perf_counter() - start)


@dataclass(frozen=True)
class Allocation:
    """Per-layer sparsities meeting a size budget: ``sparsity[L]``; ``kept``: weights kept in the scanned
    layers (≤ ``budget``; equal for weight granularity), of ``total``; ``predicted_accuracy``: the
    sum-of-drops prediction from one-layer curves (measure the real, combined accuracy)."""
    sparsity: dict[str, float]
    kept: int
    budget: int
    total: int
    predicted_accuracy: float


def _budget_weights(budget: int | float, total: int) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget):
        raise TypeError(f"budget must be a number of weights to keep (int) or a fraction kept (float in "
                        f"(0, 1]), got {budget!r}")
    if isinstance(budget, int):
        if budget < 0:
            raise ValueError(f"budget must be >= 0 weights, got {budget}")
        return budget
    if not 0 < budget <= 1:
        raise ValueError(f"A float budget is the fraction of weights kept, in (0, 1], got {budget}; pass an "
                         "int for a number of weights.")
    return round(budget * total)


def allocate_sparsity(curves: SensitivityCurves, budget: int | float, *, exact: bool = True) -> Allocation:
    """Per-layer sparsities that keep at most ``budget`` weights of the scanned layers (an int: a number of
    weights; a float in (0, 1]: a fraction, round(f · total) weights), losing the least predicted accuracy.

    Greedy on the lower convex hull of each curve (see the module docstring). With ``exact`` the last move
    stops part way (a sparsity between grid points, its drop interpolated), so the weights kept equal the
    budget for weight granularity (for units: the fewest whole units that meet it); without, every
    sparsity is a grid point and the weights kept may fall below the budget. ``ValueError`` if even the
    highest scanned sparsity in every layer keeps more than the budget.
    """
    target = _budget_weights(budget, curves.total)
    grid, layers = curves.sparsities, curves.layers
    index = {layer: 0 for layer in layers}
    sparsity = {layer: 0.0 for layer in layers}
    kept = curves.total
    while kept > target:
        best = None   # (cost per weight, -weights removed, layer position, layer, grid index)
        for position, layer in enumerate(layers):
            i = index[layer]
            for j in range(i + 1, len(grid)):
                removed = curves.kept_in(layer, grid[i]) - curves.kept_in(layer, grid[j])
                if removed <= 0:
                    continue
                cost = curves.accuracy[layer][i] - curves.accuracy[layer][j]
                candidate = (cost / removed, -removed, position, layer, j)
                best = candidate if best is None or candidate < best else best
        if best is None:
            floor = curves.kept({layer: grid[-1] for layer in layers})
            raise ValueError(f"A budget of {target:,} weights is below the {floor:,} kept when every layer is "
                             f"at the highest scanned sparsity {grid[-1]}; scan higher sparsities "
                             "(sparsities=...) or allow more weights.")
        _, minus_removed, _, layer, j = best
        if exact and kept + minus_removed < target:     # this move overshoots: stop part way
            u = curves.units[layer]
            per_unit = curves.weights[layer] // u
            units_removed = round(sparsity[layer] * u) + math.ceil((kept - target) / per_unit)
            sparsity[layer] = units_removed / u
            kept = curves.kept(sparsity)
            break
        index[layer], sparsity[layer] = j, grid[j]
        kept += minus_removed
    return Allocation(sparsity=sparsity, kept=kept, budget=target, total=curves.total,
                      predicted_accuracy=curves.predicted_accuracy(sparsity))
