"""Low-rank decomposition by truncated SVD: one wide layer becomes two thin ones.

W [m, n] = U Σ Vᵀ with singular values σ_1 ≥ σ_2 ≥ … ≥ σ_min(m,n) ≥ 0. Keeping the r largest gives the best
rank-r approximation in Frobenius norm (Eckart–Young):

    W_r = U_r Σ_r V_rᵀ = A B,   A = U_r Σ_r^{1/2} [m, r],   B = Σ_r^{1/2} V_rᵀ [r, n]
    ‖W − W_r‖_F / ‖W‖_F = sqrt(Σ_{i>r} σ_i²) / sqrt(Σ_i σ_i²)          (relative error; ‖W‖_F² = Σ_i σ_i²)

- **Linear** y = W x + b, W [out = m, in = n], becomes ``LowRank(B=Linear(n, r, bias=False), A=Linear(r, m))``:
  x -> B x -> A (B x) + b. Parameters r (m + n) (+ m for b) instead of m n (+ m): fewer only while
  r < m n / (m + n) (``break_even_rank``); LeNet-300-100's fc1 (300 x 784) saves parameters up to r = 216.
- **Conv2d** W [C_out, C_in, kH, kW] is the matrix [C_out, C_in·kH·kW] (a filter per row). B becomes a
  Conv2d(C_in, r, (kH, kW)) with the layer's stride, padding, dilation and padding mode (r filters of the same
  size), A a 1x1 Conv2d(r, C_out) with the bias. Grouped convolutions (groups != 1) are refused.
- **Masked layers** (``prunelab.masks``): the effective weights weight_orig * weight_mask are factorised. A B is
  dense in general, so the new layers carry no mask: pruned weights come back as small non-zeros (zero again
  only at full rank, up to float error), and fine-tuning does not keep them at zero. Only a whole pruned column
  (an input) or row (an output) stays zero at every rank, up to float error: it is outside every singular
  vector with σ > 0. The other layers of a decomposed model keep their masks.

``decompose(model, ranks)`` returns a new model (a deep copy) with the chosen layers replaced; the original is
not changed. Fine-tuning is ``prunelab.train`` on the returned model.
"""

from __future__ import annotations

from numbers import Integral, Real

import torch
from torch import Tensor, nn

from . import graph, masks as M
from ._helpers import select_layers

__all__ = ["as_matrix", "singular_values", "check_rank", "truncated_svd", "lowrank_error", "rank_for_energy",
           "break_even_rank", "factorized_parameters", "LowRank", "factorize_linear", "factorize_conv2d",
           "factorize", "decompose", "ranks_for_energy"]


# ---------------------------------------------------------------------------------------------- the formulas

def as_matrix(W: Tensor) -> Tensor:
    """W as the matrix that is factorised: a Linear's [m, n] as it is, a Conv2d's [C_out, C_in, kH, kW] as
    [C_out, C_in·kH·kW] (a view, one filter per row)."""
    if W.dim() < 2:
        raise ValueError(f"A weight to factorise has at least 2 dimensions ([out, in, ...]), "
                         f"got shape {list(W.shape)}.")
    return W.reshape(W.shape[0], -1)


def singular_values(W: Tensor) -> Tensor:
    """σ of ``as_matrix(W)``, descending, float64 [min(m, n)]."""
    return torch.linalg.svdvals(as_matrix(W.detach()).double())


def check_rank(r: int, W: Tensor) -> None:
    """``ValueError`` unless r is an integer from 1 to min(m, n) of ``as_matrix(W)`` [m, n]."""
    m, n = as_matrix(W).shape
    if isinstance(r, bool) or not isinstance(r, Integral) or not 1 <= r <= min(m, n):
        raise ValueError(f"rank must be an integer from 1 to min(m, n) = {min(m, n)} for a weight of shape "
                         f"{list(W.shape)} (a [{m}, {n}] matrix), got {r!r}.")


def truncated_svd(W: Tensor, r: int) -> tuple[Tensor, Tensor]:
    """(A, B) with A = U_r Σ_r^{1/2} [m, r] and B = Σ_r^{1/2} V_rᵀ [r, n], so A @ B is the best rank-r
    approximation of ``as_matrix(W)``. Computed in float64, returned in W's dtype and device."""
    check_rank(r, W)
    U, S, Vh = torch.linalg.svd(as_matrix(W.detach()).double(), full_matrices=False)
    root = S[:r].sqrt()
    A, B = U[:, :r] * root, root[:, None] * Vh[:r]
    return A.to(W.dtype), B.to(W.dtype)


def lowrank_error(W: Tensor, r: int) -> float:
    """‖W − A B‖_F / ‖W‖_F for the rank-r factors of ``truncated_svd``, which equals
    sqrt(Σ_{i>r} σ_i²) / ‖W‖_F. 0.0 for an all-zero W (then A B = W)."""
    A, B = truncated_svd(W.double(), r)
    W2 = as_matrix(W.detach()).double()
    norm = float(torch.linalg.matrix_norm(W2))
    return 0.0 if norm == 0 else float(torch.linalg.matrix_norm(W2 - A @ B)) / norm


def rank_for_energy(W: Tensor, energy: float) -> int:
    """The smallest r with Σ_{i≤r} σ_i² ≥ energy · Σ_i σ_i², for ``energy`` in (0, 1]; its relative error is
    then at most sqrt(1 − energy). An all-zero W gives 1."""
    if isinstance(energy, bool) or not isinstance(energy, Real) or not 0 < energy <= 1:
        raise ValueError(f"energy must be a fraction in (0, 1] of Σσ² to keep (e.g. 0.9), got {energy!r}.")
    kept = singular_values(W).square().cumsum(0)
    r = int((kept < energy * kept[-1]).sum()) + 1
    return min(r, kept.numel())


def break_even_rank(m: int, n: int) -> int:
    """The largest r with r (m + n) < m n: the highest rank at which a [m, n] weight gets fewer parameters."""
    return (m * n - 1) // (m + n)


def factorized_parameters(m: int, n: int, r: int, *, bias: bool = True) -> int:
    """Parameters of the rank-r replacement of a [m, n] weight: r (m + n), plus m for a bias."""
    return r * (m + n) + (m if bias else 0)


# ---------------------------------------------------------------------------------------------- the layers

class LowRank(nn.Sequential):
    """W x + b computed as A (B x) + b: ``B`` maps the input to r values, ``A`` (with the bias) maps them to
    the outputs. For a Linear both are Linear; for a Conv2d, B is a conv of the original kernel size and A a
    1x1 conv. ``rank`` is r."""

    def __init__(self, B: nn.Module, A: nn.Module):
        super().__init__()
        self.B, self.A = B, A

    @property
    def rank(self) -> int:
        return graph.units(self.B)


def _check_layer(layer: nn.Module) -> None:
    if not isinstance(layer, (nn.Linear, nn.Conv2d)):
        raise TypeError(f"Low-rank factorisation handles nn.Linear and nn.Conv2d, got {type(layer).__name__}.")
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        raise ValueError(f"A grouped Conv2d (groups={layer.groups}) is not one [C_out, C_in·kH·kW] matrix; "
                         "factorise only convolutions with groups=1.")


def factorize_linear(layer: nn.Linear, r: int) -> LowRank:
    """``LowRank(B=Linear(n, r, bias=False), A=Linear(r, m))`` with A, B from ``truncated_svd(W, r)`` and the
    layer's bias; at r = min(m, n) it computes the same outputs up to float error."""
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"factorize_linear takes an nn.Linear, got {type(layer).__name__}; use factorize.")
    W, b = M.effective(layer), M.effective(layer, "bias")
    A, Bm = truncated_svd(W, r)
    m, n = W.shape
    kw = {"device": W.device, "dtype": W.dtype}
    first, second = nn.Linear(n, r, bias=False, **kw), nn.Linear(r, m, bias=b is not None, **kw)
    with torch.no_grad():
        first.weight.copy_(Bm)
        second.weight.copy_(A)
        if b is not None:
            second.bias.copy_(b)
    return LowRank(first, second).train(layer.training)


def factorize_conv2d(layer: nn.Conv2d, r: int) -> LowRank:
    """``LowRank(B=Conv2d(C_in, r, (kH, kW), same stride/padding/dilation, bias=False), A=Conv2d(r, C_out, 1))``
    from ``truncated_svd`` of W as [C_out, C_in·kH·kW]; at full rank it computes the same outputs."""
    if not isinstance(layer, nn.Conv2d):
        raise TypeError(f"factorize_conv2d takes an nn.Conv2d, got {type(layer).__name__}; use factorize.")
    _check_layer(layer)
    W, b = M.effective(layer), M.effective(layer, "bias")
    A, Bm = truncated_svd(W, r)
    c_out, c_in, kh, kw_ = W.shape
    kw = {"device": W.device, "dtype": W.dtype}
    first = nn.Conv2d(c_in, r, (kh, kw_), stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                      padding_mode=layer.padding_mode, bias=False, **kw)
    second = nn.Conv2d(r, c_out, 1, bias=b is not None, **kw)
    with torch.no_grad():
        first.weight.copy_(Bm.reshape(r, c_in, kh, kw_))
        second.weight.copy_(A.reshape(c_out, r, 1, 1))
        if b is not None:
            second.bias.copy_(b)
    return LowRank(first, second).train(layer.training)


def factorize(layer: nn.Module, r: int) -> LowRank:
    """``factorize_linear`` or ``factorize_conv2d``, by the layer's type."""
    _check_layer(layer)
    return factorize_linear(layer, r) if isinstance(layer, nn.Linear) else factorize_conv2d(layer, r)


# ---------------------------------------------------------------------------------------------- whole models

def _select(model: nn.Module, names: list[str] | None) -> dict[str, nn.Module]:
    """The named Linear / Conv2d layers (all when ``names`` is None), with a clear error for any other module."""
    modules = dict(model.named_modules())
    for name in names or []:
        if name in modules and not isinstance(modules[name], (nn.Linear, nn.Conv2d)):
            layers = ", ".join(M.prunable_layers(model))
            raise TypeError(f"{name!r} is a {type(modules[name]).__name__}; decompose factorises nn.Linear and "
                            f"nn.Conv2d layers only. Those of {type(model).__name__}: {layers}.")
    return select_layers(model, names)


def decompose(model: nn.Module, ranks: dict[str, int] | int, *, layers: list[str] | None = None) -> nn.Module:
    """A copy of ``model`` whose chosen Linear / Conv2d layers are replaced by their rank-r ``LowRank`` factors.

    ``ranks``: ``{"fc1": 20, ...}``, or one integer for every layer of ``layers`` (default: every Linear and
    Conv2d; a rank larger than a layer allows is an error naming the layer). The factors come from the effective
    (masked) weights. Every argument is checked before anything is computed, and ``model`` is not changed.
    """
    if isinstance(ranks, dict):
        if layers is not None:
            raise ValueError("Give ranks as a dict {layer: rank} or as one integer with layers=[...], not both.")
        if not ranks:
            raise ValueError("ranks is empty; name at least one layer, e.g. {'fc1': 20}.")
        chosen = _select(model, list(ranks))
        wanted = dict(ranks)
    else:
        chosen = _select(model, layers)
        wanted = {name: ranks for name in chosen}
    for name, layer in chosen.items():
        _check_layer(layer)
        try:
            check_rank(wanted[name], M.effective(layer))
        except ValueError as e:
            raise ValueError(f"Layer {name!r}: {e}") from None
    factored = {name: factorize(layer, wanted[name]) for name, layer in chosen.items()}
    decomposed = M.copy_model(model)
    for name, new in factored.items():
        parent, _, child = name.rpartition(".")
        setattr(decomposed.get_submodule(parent), child, new)
    return decomposed


def ranks_for_energy(model: nn.Module, energy: float, *, layers: list[str] | None = None) -> dict[str, int]:
    """``{layer: rank_for_energy(W_layer, energy)}`` for every Linear / Conv2d (or ``layers``): a ``ranks``
    argument for ``decompose`` that keeps the same fraction of Σσ² in each layer."""
    return {name: rank_for_energy(M.effective(layer), energy) for name, layer in _select(model, layers).items()}
