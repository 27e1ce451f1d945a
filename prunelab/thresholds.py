"""Thresholds: from scores to a mask, M = scores > v_thr.

- fixed: the user picks v_thr;
- adaptive, from a target sparsity s: v_thr is the k-th smallest score, k = round(s · n)
  (``threshold_for_sparsity``), so a fraction s of the scores fall at or below it;
- adaptive, from a quality parameter q: v_thr = q · σ(W), σ the standard deviation of the layer's weights
  (Han et al. 2015, ``threshold_from_std``).

``mask_for_sparsity`` removes exactly k = round(s · n) entries: the same as M = scores > v_thr when no two
scores tie at v_thr, and ties (common for discrete scores such as APoZ) are broken by position.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["check_sparsity", "threshold_for_sparsity", "threshold_from_std", "mask_from_threshold",
           "mask_for_sparsity"]


def check_sparsity(s: float, what: str = "sparsity") -> float:
    """``s`` as a float in [0, 1), or ``ValueError`` saying why not."""
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not (0 <= s < 1):
        raise ValueError(f"{what} must be a number in [0, 1) (the fraction to remove; 1 would remove "
                         f"everything), got {s!r}")
    return float(s)


def threshold_for_sparsity(scores: Tensor, s: float) -> float:
    """v_thr such that ``scores > v_thr`` keeps all but the k = round(s · n) smallest scores.

    scores: any shape, n elements. s = 0 gives -inf (keep everything).
    """
    s = check_sparsity(s)
    k = round(s * scores.numel())
    if k == 0:
        return -math.inf
    return float(torch.kthvalue(scores.flatten().float().cpu(), k).values)


def threshold_from_std(W: Tensor, quality: float) -> float:
    """v_thr = q · σ(W): Han et al.'s per-layer threshold ("quality parameter times standard deviation")."""
    if not (quality >= 0 and math.isfinite(quality)):
        raise ValueError(f"quality must be a finite number >= 0, got {quality!r}")
    return quality * float(W.float().std())


def mask_from_threshold(scores: Tensor, v_thr: float) -> Tensor:
    """M = scores > v_thr: True where the entry (or unit) is kept."""
    return scores > v_thr


def mask_for_sparsity(scores: Tensor, s: float) -> Tensor:
    """Keep-mask removing exactly k = round(s · n) entries, the lowest scores (ties broken by position)."""
    s = check_sparsity(s)
    k = round(s * scores.numel())
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    keep[torch.argsort(scores.flatten(), stable=True)[:k]] = False
    return keep.view(scores.shape)
