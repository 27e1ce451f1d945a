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
from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["check_sparsity", "threshold_for_sparsity", "threshold_from_std", "mask_from_threshold",
           "mask_for_sparsity", "split_by_layer", "RankedScores"]


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
    return RankedScores(scores).mask_for_sparsity(check_sparsity(s))


def split_by_layer(flat: Tensor, shapes: Mapping[str, torch.Size | tuple[int, ...]]) -> dict[str, Tensor]:
    """A mask (or scores) over all layers concatenated, ``[sum of numels]``, back into ``{layer: shape}`` views,
    in the order of ``shapes``: how a global-scope mask becomes per-layer masks."""
    total = sum(math.prod(shape) for shape in shapes.values())
    if flat.numel() != total:
        raise ValueError(f"{flat.numel()} entries cannot be split into layers holding {total}.")
    sizes = [math.prod(shape) for shape in shapes.values()]
    return {name: part.view(shape) for (name, shape), part in zip(shapes.items(), flat.flatten().split(sizes))}


class RankedScores:
    """Scores sorted once (stable), so that the mask for any s or v_thr is one scatter: what a slider needs.

    ``mask_for_sparsity(s)`` removes the k = round(s · n) lowest scores, ties broken by position;
    ``mask_for_threshold(v_thr)`` is M = scores > v_thr. Masks are bool, shaped like the scores, on their device.
    """

    def __init__(self, scores: Tensor):
        self.shape = scores.shape
        self.sorted, self.order = torch.sort(scores.detach().flatten().float(), stable=True)
        self.n = self.sorted.numel()

    def _keep_all_but(self, k: int) -> Tensor:
        keep = torch.ones(self.n, dtype=torch.bool, device=self.order.device)
        keep[self.order[:k]] = False
        return keep.view(self.shape)

    def mask_for_sparsity(self, s: float) -> Tensor:
        return self._keep_all_but(round(s * self.n))

    def threshold_for_sparsity(self, s: float) -> float:
        """The k-th smallest score, k = round(s · n) (-inf for k = 0)."""
        k = round(s * self.n)
        return float(self.sorted[k - 1]) if k > 0 else -math.inf

    def sparsity_for_threshold(self, v_thr: float) -> float:
        """Fraction of scores ≤ v_thr, i.e. removed by M = scores > v_thr."""
        return self._removed_by(v_thr) / self.n

    def mask_for_threshold(self, v_thr: float) -> Tensor:
        return self._keep_all_but(self._removed_by(v_thr))

    def _removed_by(self, v_thr: float) -> int:
        return int(torch.searchsorted(self.sorted, v_thr, right=True))
