"""Regularisers that push weights to zero during training, so that pruning afterwards costs little.

- L1: L = L0 + λ‖θ‖₁ = L0 + λ Σ|w|. Its corner-shaped level sets make exact zeros likely (L2 only shrinks).
- Group lasso: L = L0 + λ Σ_j ‖W_j‖₂ over units j (rows of a Linear's W, filters of a Conv2d's W):
  whole units go to zero together, ready for structured pruning.
Use them as ``train(..., loss_fn=with_penalty(l1_penalty, model, lam))``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from .masks import prunable_layers

__all__ = ["l1_penalty", "l2_penalty", "group_lasso_penalty", "with_penalty"]


def _weights(model: nn.Module) -> list[Tensor]:
    return [layer.weight for layer in prunable_layers(model).values()]


def l1_penalty(model: nn.Module) -> Tensor:
    """‖θ‖₁ = Σ|w| over the weights of every Linear and Conv2d layer."""
    return sum(w.abs().sum() for w in _weights(model))


def l2_penalty(model: nn.Module) -> Tensor:
    """‖θ‖₂² = Σw² over the same weights (for comparison: shrinks, rarely zeroes)."""
    return sum(w.pow(2).sum() for w in _weights(model))


def group_lasso_penalty(model: nn.Module) -> Tensor:
    """Σ_j ‖W_j‖₂ over the units j (rows or filters) of every Linear and Conv2d layer."""
    return sum(w.flatten(1).norm(dim=1).sum() for w in _weights(model))


def with_penalty(penalty: Callable[[nn.Module], Tensor], model: nn.Module, lam: float):
    """A ``loss_fn`` for ``prunelab.train``: cross-entropy + λ · penalty(model)."""
    if not lam >= 0:
        raise ValueError(f"lam (λ) must be >= 0, got {lam}")

    def loss_fn(logits: Tensor, y: Tensor, x: Tensor) -> Tensor:
        return F.cross_entropy(logits, y) + lam * penalty(model)

    return loss_fn
