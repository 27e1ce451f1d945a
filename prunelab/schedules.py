"""When to prune: one-shot, iterative prune -> fine-tune cycles, and gradual pruning during training.

Gradual pruning follows Zhu & Gupta (2017): at step t the target sparsity is

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * Δt))^3,   for t0 <= t <= t0 + n·Δt,

s_i before t0 and s_f after, with the mask updated every Δt steps: fast at first, while many redundant
weights remain, then slowly. Masks only shrink (``keep_pruned``), and fine-tuning cannot revive a pruned
weight (see ``prunelab.masks``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from .data import Data, as_image_set
from .masks import get_masks, mask_sparsity
from .pruning import prune
from .thresholds import check_sparsity
from .training import evaluate, train

__all__ = ["cubic_sparsity", "iterative_sparsities", "PruneStep", "iterative_pruning", "gradual_pruning"]


def cubic_sparsity(t: int, s_initial: float, s_final: float, t0: int, n: int, dt: int) -> float:
    """Zhu & Gupta's s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³ (s_i = ``s_initial``, s_f = ``s_final``),
    held at s_i before t0 and s_f after."""
    if n < 1 or dt < 1:
        raise ValueError(f"n and dt must be positive integers, got n={n}, dt={dt}")
    progress = min(max((t - t0) / (n * dt), 0.0), 1.0)
    return s_final + (s_initial - s_final) * (1 - progress) ** 3


def iterative_sparsities(s_final: float, rounds: int) -> list[float]:
    """Sparsities of ``rounds`` prune rounds that each remove the same fraction of the remaining weights,
    ending at ``s_final``: s_k = 1 − (1 − s_final)^(k / rounds)."""
    check_sparsity(s_final, "s_final")
    if rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds}")
    return [1 - (1 - s_final) ** (k / rounds) for k in range(1, rounds + 1)]


@dataclass(frozen=True)
class PruneStep:
    """One prune round: the sparsity asked for, the sparsity reached over the masked weights, the test accuracy
    right after pruning and after fine-tuning (fractions in [0, 1])."""
    target_sparsity: float
    sparsity: float
    accuracy_pruned: float
    accuracy_tuned: float


def iterative_pruning(model: nn.Module, train_data: Data, test_data: Data,
                      sparsities: list[float] | list[Mapping[str, float]], *, epochs_per_round: int | list[int] = 2,
                      lr: float = 0.005, weight_decay: float = 5e-4, batch_size: int = 128, seed: int = 0,
                      progress: bool = False, **prune_kwargs) -> list[PruneStep]:
    """Prune to each sparsity in turn and fine-tune after each round. One round (one sparsity) is one-shot
    pruning with fine-tuning. ``prune_kwargs`` go to ``prunelab.pruning.prune`` (granularity, criterion,
    scope, layers, ...). ``epochs_per_round``: one number, or one per round. Each round fine-tunes with SGD +
    momentum and a cosine learning rate from ``lr`` to 0 (a trained model needs a much smaller rate than training
    from scratch). Returns one ``PruneStep`` per round."""
    epochs = [epochs_per_round] * len(sparsities) if isinstance(epochs_per_round, int) else list(epochs_per_round)
    if len(epochs) != len(sparsities) or min(epochs) < 0:
        raise ValueError(f"epochs_per_round must be an integer >= 0 or one per round ({len(sparsities)}), "
                         f"got {epochs_per_round!r}")
    train_data = as_image_set(train_data, "iterative_pruning's train_data", "prunelab.load_fashion_mnist('train')")
    test_data = as_image_set(test_data, "iterative_pruning's test_data")
    history = []
    for round_index, sparsity in enumerate(sparsities):
        masks = prune(model, sparsity, keep_pruned=True, **prune_kwargs)
        pruned = evaluate(model, test_data).accuracy
        if epochs[round_index]:
            train(model, train_data, epochs=epochs[round_index], lr=lr, batch_size=batch_size,
                  weight_decay=weight_decay, lr_schedule="cosine", seed=seed + round_index, progress=progress)
        weight_masks = {k: v for k, v in masks.items() if k.endswith(".weight") and k in get_masks(model)}
        history.append(PruneStep(sparsity if not isinstance(sparsity, Mapping) else mask_sparsity(weight_masks),
                                 mask_sparsity(weight_masks), pruned, evaluate(model, test_data).accuracy))
    return history


def gradual_pruning(model: nn.Module, train_data: Data, s_final: float, *, epochs: int,
                    s_initial: float = 0.0, start_epoch: int = 0, end_epoch: int | None = None,
                    prune_every: int = 50, lr: float = 0.01, batch_size: int = 128, seed: int = 0,
                    test_data: Data | None = None, progress: bool = False, **prune_kwargs):
    """Train for ``epochs`` while raising the sparsity along Zhu & Gupta's cubic from ``s_initial`` at
    ``start_epoch`` to ``s_final`` at ``end_epoch`` (default: 3/4 of the way), updating the mask every
    ``prune_every`` steps (Δt). Returns ``(epoch_logs, [(step, target sparsity)])``."""
    check_sparsity(s_final, "s_final")
    check_sparsity(s_initial, "s_initial")
    train_data = as_image_set(train_data, "gradual_pruning's train_data", "prunelab.load_fashion_mnist('train')")
    test_data = None if test_data is None else as_image_set(test_data, "gradual_pruning's test_data")
    steps_per_epoch = -(-len(train_data) // batch_size)
    end_epoch = end_epoch if end_epoch is not None else max(start_epoch + 1, (3 * epochs) // 4)
    t0, dt = start_epoch * steps_per_epoch, prune_every
    n = max(1, (end_epoch * steps_per_epoch - t0) // dt)
    trace: list[tuple[int, float]] = []
    step = 0

    def after_step(m: nn.Module) -> None:
        nonlocal step
        step += 1
        if step >= t0 and (step - t0) % dt == 0 and step <= t0 + n * dt:
            s_t = cubic_sparsity(step, s_initial, s_final, t0, n, dt)
            prune(m, s_t, keep_pruned=True, **prune_kwargs)
            trace.append((step, s_t))

    if s_initial > 0:
        prune(model, s_initial, **prune_kwargs)
    logs = train(model, train_data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                 after_step=after_step, test_data=test_data, progress=progress)
    return logs, trace
