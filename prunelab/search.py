"""Automated pruning: per-layer sparsities found by measuring the pruned model, not by predicting it.

Choosing one sparsity per layer under a size budget is the keep-vector problem

    max_s  a(s)   s.t.   Σ_L k_L(s_L) ≤ K,        k_L(s) = n_L − round(s · n_L) weights kept of layer L's n_L,

where a(s) is the accuracy of the model with every layer pruned at once. ``sensitivity.allocate_sparsity``
solves it for a *predicted* a(s) = a_0 − Σ_L (a_0 − a_L(s_L)), summed from curves measured one layer at a time;
the drops do not add up (pruning fc1 changes what fc2 receives): for LeNet-300-100 at 10% of the weights it
predicts 71.2% and its allocation measures 67.7% on validation, below one global magnitude threshold (68.6%).
``search_sparsity`` measures a(s) instead, for the whole pruned model on validation images, in a local search that
never leaves the budget:

1. start from an allocation that keeps exactly K weights: the same sparsity in every layer (``uniform``), or
   any other, e.g. ``allocate_sparsity``'s;
2. propose a move: a random donor layer i and receiver layer j, and Δ = max(1, round(δ · k_i)) weights moved
   from i to j (k_i − Δ, k_j + Δ; the total stays K). i loses its Δ lowest-scoring kept weights, j gets back its
   Δ highest-scoring removed ones (the masks of ``sensitivity.RankedLayer``: the same as ``prunelab.prune``);
3. measure the accuracy (``LiveAccuracy``: only the layers from the first changed one on are recomputed) and keep
   the move if it is not worse, else undo it;
4. after ``patience`` rejected moves in a row, halve the step δ (from ``step``); stop after ``evaluations``
   measured moves, or when δ · max_L k_L < 1 (no layer's step is a whole weight any more).

A hill climb on the measured objective: the result is never worse than the start on the data it searched
(``accuracy`` ≥ ``start_accuracy``). It is judged on that data, so report it on other images (the test set).
Its limits: a local optimum near the start; noise in a(s) on few images lets moves in that only fit them;
weights only (a unit or latency budget needs structured masks and a measured speed per candidate); no
fine-tuning, which changes which allocation is best.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from . import masks as M
from .data import Data, as_image_set
from .live_accuracy import LiveAccuracy
from .pruning import Criterion
from .sensitivity import RankedLayer, _budget_weights, ranked_layers

__all__ = ["SearchResult", "uniform", "search_sparsity"]


@dataclass(frozen=True)
class SearchResult:
    """What ``search_sparsity`` found: ``sparsity[L]`` for each searched layer; ``kept`` weights of ``total``
    (= ``budget``); ``accuracy``: measured on the searched data with every layer pruned at once (the objective);
    ``start_accuracy``: the same for the start; ``history``: the accuracy after each measured move (kept or
    not: the objective never goes down); ``accepted``: moves kept, of ``evaluations``; ``seconds``: time taken."""
    sparsity: dict[str, float]
    kept: int
    budget: int
    total: int
    accuracy: float
    start_accuracy: float
    history: tuple[float, ...]
    accepted: int
    evaluations: int
    seconds: float


def _kept_counts(ranked: Mapping[str, RankedLayer], budget: int) -> dict[str, int]:
    """k_L for the same sparsity in every layer, Σ k_L = budget exactly: k_L = n_L · K / N rounded down, the
    weights left over given one each to the layers with the largest remainders (ties: the first layers)."""
    total = sum(r.weights for r in ranked.values())
    share = {name: r.weights * budget / total for name, r in ranked.items()}
    kept = {name: int(s) for name, s in share.items()}
    for name in sorted(share, key=lambda n: kept[n] - share[n])[: budget - sum(kept.values())]:
        kept[name] += 1
    return kept


def uniform(model: nn.Module, budget: int | float, *, layers: list[str] | None = None) -> dict[str, float]:
    """The same sparsity s = 1 − K/N in every layer (every Linear and Conv2d, or ``layers``), keeping K weights of
    their N (``budget``: an int number of weights, or a float fraction kept), split so that exactly K are kept."""
    ranked = ranked_layers(model, layers)
    total = sum(r.weights for r in ranked.values())
    kept = _kept_counts(ranked, _budget_weights(budget, total))
    return {name: 1 - kept[name] / r.weights for name, r in ranked.items()}


def _check_start(start: Mapping[str, float], ranked: Mapping[str, RankedLayer], budget: int) -> dict[str, int]:
    """k_L of the allocation ``start`` (one sparsity per searched layer), which must keep exactly ``budget``."""
    if set(start) != set(ranked):
        raise ValueError(f"start must give a sparsity for each searched layer, {', '.join(ranked)}; it gives "
                         f"{', '.join(start) or 'none'}.")
    kept = {name: r.kept(start[name]) for name, r in ranked.items()}
    if sum(kept.values()) != budget:
        raise ValueError(f"start keeps {sum(kept.values()):,} weights, the budget is {budget:,}: the search moves "
                         "weights between layers and never changes their total, so start from an allocation that "
                         "meets the budget exactly (uniform(model, budget), or allocate_sparsity(...).sparsity "
                         "with exact=True).")
    return kept


def search_sparsity(model: nn.Module, data: Data, budget: int | float, *, layers: list[str] | None = None,
                    start: Mapping[str, float] | None = None, criterion: Criterion = "magnitude",
                    evaluations: int = 200, step: float = 0.5, patience: int = 8, seed: int = 0) -> SearchResult:
    """Per-layer sparsities that keep ``budget`` weights of ``layers`` (an int, or a float fraction of them; default
    every Linear and Conv2d) with the highest accuracy on ``data`` found by the local search of the module
    docstring, from ``start`` (default ``uniform``), scoring weights by ``criterion``.

    ``evaluations``: moves measured at most; ``step``: the first δ, the fraction of the donor's kept weights
    moved; ``patience``: rejected moves in a row before δ halves; ``seed``: the random choice of moves. Masks on
    the model are lifted during the search and put back after (the model ends bit-identical); apply the result
    with ``prunelab.prune(model, result.sparsity)``. Arguments are checked before the model is touched.
    """
    data = as_image_set(data, "search_sparsity")
    if not (isinstance(evaluations, int) and evaluations >= 1 and isinstance(patience, int) and patience >= 1):
        raise ValueError(f"evaluations and patience must be ints >= 1, got {evaluations!r} and {patience!r}")
    if not (isinstance(step, (int, float)) and 0 < step <= 1):
        raise ValueError(f"step must be a fraction in (0, 1] of a layer's kept weights, got {step!r}")
    ranked = ranked_layers(model, layers, criterion=criterion)
    if len(ranked) < 2:
        raise ValueError(f"search_sparsity moves weights between layers; give at least two, got {list(ranked)}")
    total = sum(r.weights for r in ranked.values())
    target = _budget_weights(budget, total)
    if not len(ranked) <= target <= total:
        raise ValueError(f"budget must keep between {len(ranked)} (one weight per layer) and all {total:,} weights "
                         f"of the searched layers, got {target:,}")
    kept = _check_start(start, ranked, target) if start is not None else _kept_counts(ranked, target)
    rng = random.Random(seed)
    began = time.perf_counter()
    saved, added = M.get_masks(model), set()

    def apply(name: str) -> None:                       # layer name's masks for its k_L
        r = ranked[name]
        masks = r.masks((r.weights - kept[name]) / r.weights)
        added.update(p for p in masks if p not in saved)
        M.set_masks(model, masks)

    try:
        if saved:
            M.set_masks(model, {name: torch.ones_like(m) for name, m in saved.items()})
        for name in ranked:
            apply(name)
        live = LiveAccuracy(model, data)
        accuracy = start_accuracy = live.accuracy()
        history, accepted, rejected, delta, changed = [], 0, 0, step, set()
        names = list(ranked)
        while len(history) < evaluations and delta * max(kept.values()) >= 1:
            i, j = rng.sample(names, 2)                                     # donor, receiver
            moved = min(max(1, round(delta * kept[i])), kept[i] - 1, ranked[j].weights - kept[j])
            if moved < 1:
                continue                                                    # i is down to one weight, or j full
            kept[i], kept[j] = kept[i] - moved, kept[j] + moved
            apply(i)
            apply(j)
            measured = live.accuracy(changed | {i, j})                      # with the layers of an undone move
            if measured >= accuracy:
                accuracy, accepted, rejected, changed = measured, accepted + 1, 0, set()
            else:
                kept[i], kept[j] = kept[i] + moved, kept[j] - moved         # undo
                apply(i)
                apply(j)
                changed, rejected = {i, j}, rejected + 1
                if rejected == patience:                                    # nothing near helps: smaller steps
                    delta, rejected = delta / 2, 0
            history.append(accuracy)
    finally:
        M.reset(model, sorted(added))
        if saved:
            M.set_masks(model, saved)
    return SearchResult(sparsity={name: (r.weights - kept[name]) / r.weights for name, r in ranked.items()},
                        kept=sum(kept.values()), budget=target, total=total, accuracy=accuracy,
                        start_accuracy=start_accuracy, history=tuple(history), accepted=accepted,
                        evaluations=len(history), seconds=time.perf_counter() - began)
