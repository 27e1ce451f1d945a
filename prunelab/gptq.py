"""GPTQ (Frantar, Ashkboos, Hoefler & Alistarh 2023, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers"): round every weight of a Linear to its k-bit grid, and let the weights not yet rounded
absorb the rounding error.

Round-to-nearest (RTN, ``quantization.fake_quantize_groups``; ``rtn`` here for a whole model) rounds every weight
on its own. GPTQ asks, as SparseGPT does for removing weights, which Ŵ on the same grids keeps the layer's outputs
W X [out, n] closest, with H = 2 X Xᵀ + λI and U = chol(H⁻¹) upper (``one_shot.inverse_hessian_cholesky``): going
left to right over the columns, column j is rounded, w_j -> q_j, and its error e = (w_j − q_j) / U_jj moves the
columns not yet rounded by −e · U_{j, j+1:}, the Optimal Brain Surgeon update (``one_shot.obs_sweep``). With
uncorrelated inputs (H ∝ I) nothing moves and GPTQ is RTN.

Grids: one per row (``group_size=None``), or one per row for every ``group_size`` consecutive input columns, its
S and Z fixed from the group's weights as they are when its first column is reached (after the updates of the
columns before it). ``gptq`` goes layer by layer in forward order (``one_shot.layer_by_layer``), each Linear from
its inputs as the layers before it, already quantized, compute them, and returns a quantized copy.

A pipeline, like ``deep_compression``: it uses pruning's one-shot machinery (``one_shot``: calibration statistics,
H and the OBS sweep) and compression's formulas (``quantization``: S, Z, q and r̂ = S (q − Z)) on purpose.

Differences from the reference code, on purpose: statistics and updates in float64; the columns in their own
order (no ``act_order``); a group's S, Z come from its weights with every update of the columns before it (the
reference reads them before the updates of the current block of 128 columns), so ``blocksize`` must be a multiple
of ``group_size``; a masked (pruned) weight stays exactly 0 and its error is compensated like any other.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import masks as M
from .data import Data
from .one_shot import (InputStats, calibration_inputs, check_blocksize, check_damp, check_gram,
                       inverse_hessian_cholesky, layer_by_layer, linear_layers, obs_sweep)
from .quantization import Scheme, check_group_size, dequantize, fake_quantize_groups, qrange, quantize, quantize_tensor

__all__ = ["check_gptq", "group_grid", "gptq_layer", "gptq", "rtn"]


def check_gptq(bits: int, scheme: Scheme, group_size: int | None, blocksize: int) -> None:
    """``ValueError`` for bits outside 2 … 8 (1 bit only with ``scheme="affine"``), an unknown scheme, a bad
    ``group_size`` or a ``blocksize`` that is not a multiple of it."""
    qrange(bits, scheme)                                           # checks bits (1 … 8) and the scheme
    if scheme == "symmetric" and bits == 1:
        raise ValueError("GPTQ rounds to a grid that holds 0, and 1-bit symmetric is sign quantization {−S, +S} "
                         "without one: use bits >= 2, or scheme='affine' for 2 levels with 0 among them.")
    check_group_size(group_size)
    check_blocksize(blocksize)
    if group_size is not None and blocksize % group_size:
        raise ValueError(f"blocksize ({blocksize}) must be a multiple of group_size ({group_size}), so that a group's "
                         f"weights have every update when its scale is chosen; e.g. blocksize="
                         f"{group_size * max(1, round(blocksize / group_size))}.")


def group_grid(W_group: Tensor, bits: int, scheme: Scheme = "symmetric") -> tuple[Tensor, Tensor]:
    """(S, Z) of every row of a group of columns W_group [out, g], from the row's own range (as
    ``quantize_tensor(..., per_channel=True)`` computes them): S float32 [out, 1], Z int32 [out, 1]."""
    grid = quantize_tensor(W_group, bits, scheme=scheme, per_channel=True)
    return grid.S, grid.Z


def gptq_layer(W: Tensor, gram: Tensor, bits: int, *, group_size: int | None = None, scheme: Scheme = "symmetric",
               damp: float = 0.01, blocksize: int = 128, keep: Tensor | None = None) -> Tensor:
    """GPTQ on one weight W [out, in] whose inputs X [in, n] have the Gram matrix X Xᵀ [in, in]: returns Ŵ
    [out, in] (W's dtype), every row of every group on its own grid of at most 2^bits levels.

    H = 2 X Xᵀ + λI (λ = ``damp`` · mean of its diagonal), H⁻¹ = Uᵀ U. Column by column (``obs_sweep``, in blocks
    of ``blocksize``): at a group's first column its grid (S, Z) per row is fixed from the group's current weights;
    q_j = S (clamp(round(w_j / S) + Z) − Z), e = (w_j − q_j) / U_jj [out], and the columns after j move by
    −e · U_{j, j+1:}. Inputs that were always 0 (H_jj = 0) change nothing on the data: their weights become 0, as in
    the reference. ``keep`` [out, in] bool (a pruned layer's mask): where False, q = 0 exactly.
    """
    check_gptq(bits, scheme, group_size, blocksize)
    check_damp(damp)
    out, cols = W.shape
    check_gram(gram, cols)
    keep = torch.ones(out, cols, dtype=torch.bool, device=W.device) if keep is None else keep.bool()
    if keep.shape != W.shape:
        raise ValueError(f"keep must be a mask shaped like W {list(W.shape)}, got {list(keep.shape)}.")
    U, dead = inverse_hessian_cholesky(gram, damp)                          # H⁻¹ = Uᵀ U, [in, in]
    W_new = (W.detach().double() * keep).masked_fill(dead, 0)               # [out, in], updated by the sweep
    g = cols if group_size is None else group_size
    q_min, q_max = qrange(bits, scheme)
    grid: dict[str, Tensor] = {}

    def round_column(j: int, j1: int, j2: int) -> Tensor:                  # e [out]
        if j % g == 0:                                                      # a group starts: fix its grids
            grid["S"], grid["Z"] = group_grid(W_new[:, j:j + g] * keep[:, j:j + g], bits, scheme)   # [out, 1]
        S, Z = grid["S"], grid["Z"]
        w = W_new[:, j].clone()                                             # [out]
        q = dequantize(quantize(w.float()[:, None], S, Z, q_min, q_max), S, Z)[:, 0].double() * keep[:, j]
        W_new[:, j] = q
        return (w - q) / U[j, j]

    obs_sweep(W_new, U, blocksize, round_column)
    return W_new.to(W.dtype)


def gptq(model: nn.Module, x: Tensor | Data, bits: int, *, group_size: int | None = None,
         scheme: Scheme = "symmetric", blocksize: int = 128, damp: float = 0.01,
         layers: list[str] | None = None) -> nn.Module:
    """A copy of ``model`` whose Linear weights (all, or ``layers``) are quantized by GPTQ (``model`` is left
    untouched): in forward order, each from its inputs on the calibration batch ``x`` (a batch the model takes,
    int64 token ids for ``TinyGPT``, or images with labels) as the layers before it, already quantized, compute them.

    The copy holds Ŵ = dequantized weights in float32 (fake quantization: ``quantization.save_quantized`` stores
    per-row grids, not per-group ones). A masked layer keeps its mask, and its masked weights stay exactly 0.
    Biases, embeddings and activations stay float32. Every argument is checked before any work.
    """
    check_gptq(bits, scheme, group_size, blocksize)
    check_damp(damp)
    chosen = linear_layers(model, layers)
    x = calibration_inputs(model, x)
    quantized = M.copy_model(model)
    masks = M.get_masks(quantized)

    def quantize_layer(name: str, layer: nn.Linear, stats: InputStats) -> None:
        W_hat = gptq_layer(M.effective(layer), stats.gram, bits, group_size=group_size, scheme=scheme, damp=damp,
                           blocksize=blocksize, keep=masks.get(f"{name}.weight"))
        M.set_effective(layer, W_hat)

    layer_by_layer(quantized, x, list(chosen), quantize_layer)
    return quantized


def rtn(model: nn.Module, bits: int, *, group_size: int | None = None, scheme: Scheme = "symmetric",
        layers: list[str] | None = None) -> nn.Module:
    """The baseline GPTQ is measured against: a copy of ``model`` whose Linear weights (all, or ``layers``) are
    rounded to nearest on the same grids (``quantization.fake_quantize_groups``), without data."""
    qrange(bits, scheme)                                           # checks bits and the scheme
    check_group_size(group_size)
    chosen = linear_layers(model, layers)
    quantized = M.copy_model(model)
    for name in chosen:
        layer = quantized.get_submodule(name)
        M.set_effective(layer, fake_quantize_groups(M.effective(layer), bits, group_size=group_size, scheme=scheme))
    return quantized
