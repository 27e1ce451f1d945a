"""One-shot pruning from calibration data, no retraining: Wanda and SparseGPT, for the ``nn.Linear`` layers.

A Linear computes Y = W X with W [out, in] and X [in, n]: its calibration inputs as columns, n rows of inputs
(images, or images × tokens: a transformer's [B, T, in] inputs are flattened to B·T rows). Both methods ask
which weights the outputs W X can spare, from three statistics of X (``input_statistics``): n, ‖X_j‖₂ of every
input feature j, and the Gram matrix X Xᵀ [in, in], collected by forward hooks in one pass.

- **Wanda** (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models"):
  S_ij = |W_ij| · ‖X_j‖₂, and every output row i removes its own lowest-scoring fraction s (or keeps N of every
  M).
  A weight is small *for this data* when the weight or its input is. Masks only, the weights stay:
  ``prunelab.prune(model, 0.5, criterion="wanda", data=x)``, which uses ``scope="row"`` by default.
- **SparseGPT** (Frantar & Alistarh 2023, "Massive Language Models Can Be Accurately Pruned in One-Shot"):
  layer by layer, in forward order, it chooses the mask and *updates the weights left* to keep ‖W X − Ŵ X‖_F
  small, with H = 2 X Xᵀ + λI (the Hessian of that error for each row) and the Optimal Brain Surgeon update:
  removing w_j moves the weights not yet processed by −e · [H⁻¹]_{j,:}, e = w_j / [H⁻¹]_jj. ``sparsegpt``
  returns a pruned copy.

The machinery both share with GPTQ (``prunelab.gptq``, which rounds each weight instead of removing it) is here,
one function per idea: ``inverse_hessian_cholesky`` (H, its damping, dead inputs, U = chol(H⁻¹)), ``obs_sweep``
(column by column, the error of the fixed column moves the columns after it) and ``layer_by_layer`` (every Linear
in forward order, each from the inputs that the layers before it, already changed, give it).

Calibration data is a batch the model takes (normalised images, or int64 token ids [N, T] for ``TinyGPT``) or
images with labels.

Layers that are never called: ``nn.MultiheadAttention`` computes with ``out_proj.weight`` without calling
``out_proj`` (``masks.READERS``), so its input is recomputed from the attention itself (``out_proj`` replaced by
the identity). Any other Linear whose forward never runs on the calibration data is an error that names it (its
‖X_j‖ would all be 0, and every weight would look unimportant): leave it out with ``layers=``.

Differences from the papers' code, on purpose: statistics in float64; Wanda's statistics come from one pass of
the original model (the reference code feeds each transformer block the outputs of the pruned blocks before
it); SparseGPT chooses its mask per block *per row* (the reference compares a whole block [out, 128] at once),
so every row reaches exactly the asked sparsity, and it runs the whole model again for each layer's inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import masks as M
from ._helpers import did_you_mean, in_mode
from .data import Data, as_image_set
from .pruning import keep_per_row, nm_masks
from .thresholds import check_sparsity
from .training import eval_batch_size, model_device

__all__ = ["InputStats", "linear_layers", "calibration_inputs", "input_statistics", "wanda_score", "wanda_scores",
           "check_damp", "check_blocksize", "inverse_hessian_cholesky", "obs_sweep", "layer_by_layer",
           "check_gram", "sparsegpt_layer", "sparsegpt", "out_proj_input", "output_error"]

CALIBRATION_EXAMPLE = "prunelab.load_fashion_mnist('validation').subset(512)"


@dataclass(frozen=True)
class InputStats:
    """What one Linear saw: ``n`` rows of inputs and the Gram matrix ``gram`` = X Xᵀ [in, in] (float64),
    X [in, n] its inputs as columns. ``norm`` = ‖X_j‖₂ [in] is the square root of its diagonal."""
    n: int
    gram: Tensor

    @property
    def norm(self) -> Tensor:
        """‖X_j‖₂ of every input feature j, [in] float64."""
        return self.gram.diagonal().sqrt()


def linear_layers(model: nn.Module, layers: list[str] | None = None) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` layers to prune: ``layers`` by name, or all of them; a clear error for anything else."""
    available = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    if not available:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer: Wanda and SparseGPT prune the weights of "
                         "Linear layers (use criterion='magnitude' for convolutions).")
    if layers is None:
        return available
    if isinstance(layers, str):
        raise TypeError(f"layers must be a list of layer names, e.g. [{layers!r}], not a string.")
    for name in layers:
        if name not in available:
            kind = (f"a {type(model.get_submodule(name)).__name__}, not an nn.Linear"
                    if name in dict(model.named_modules()) else "not a layer of the model")
            raise ValueError(f"{name!r} is {kind}: Wanda and SparseGPT prune Linear layers."
                             f"{did_you_mean(name, available)} Linear layers: {', '.join(available)}.")
    return {name: available[name] for name in layers}


def calibration_inputs(model: nn.Module, data: Tensor | Data | None) -> Tensor:
    """The calibration batch as the model takes it, on the model's device: a floating-point tensor or int64 token
    ids [N, T] as they are, or the normalised images of images with labels in any form ``data.as_image_set`` takes
    (the labels unused)."""
    if data is None:
        raise ValueError(f"One-shot methods need calibration data: pass a batch the model takes, or images with "
                         f"labels, e.g. {CALIBRATION_EXAMPLE}.")
    if isinstance(data, Tensor):
        if not (data.is_floating_point() or data.dtype == torch.int64) or data.dim() < 2 or len(data) == 0:
            raise ValueError(f"Calibration data as a tensor must be a non-empty batch the model takes: floating-point "
                             f"(e.g. normalised images [N, 1, 28, 28]) or int64 token ids [N, T]; got {data.dtype} "
                             f"{list(data.shape)}. Pass uint8 pixels with their labels, or an ImageSet, to have them "
                             "normalised.")
        return data.to(model_device(model))
    return as_image_set(data, "Calibration", CALIBRATION_EXAMPLE).normalized(model_device(model))


def _hook_inputs(model: nn.Module, names: list[str], record: Callable[[str, Tensor], None]) -> list:
    """Forward hooks that call ``record(name, X)`` with each named Linear's input X [..., in]; returns handles.
    A MultiheadAttention's ``out_proj`` is never called, so its input is recomputed by a hook on the attention."""
    attention = {f"{name}.out_proj" if name else "out_proj": mha for name, mha in model.named_modules()
                 if isinstance(mha, nn.MultiheadAttention)}
    handles = []
    for name in names:
        if name in attention:
            handles.append(attention[name].register_forward_hook(
                lambda mha, args, kwargs, output, name=name: record(name, out_proj_input(mha, args, kwargs)),
                with_kwargs=True))
        else:
            handles.append(model.get_submodule(name).register_forward_pre_hook(
                lambda layer, args, name=name: record(name, args[0])))
    return handles


def out_proj_input(mha: nn.MultiheadAttention, args, kwargs) -> Tensor:
    """What ``mha`` feeds ``out_proj`` (the heads' outputs, concatenated: [B, T, E], or [T, B, E] without
    ``batch_first``): the same attention with ``out_proj`` replaced by the identity, differentiable with respect
    to the inputs. ``forward`` is called directly, so no hook runs again."""
    E, out_proj = mha.embed_dim, mha.out_proj
    identity = nn.utils.skip_init(nn.Linear, E, E, device=out_proj.weight.device, dtype=out_proj.weight.dtype)
    identity.requires_grad_(False)
    nn.init.eye_(identity.weight)
    nn.init.zeros_(identity.bias)
    mha.out_proj = identity
    try:
        return type(mha).forward(mha, *args, **kwargs)[0]
    finally:
        mha.out_proj = out_proj


def _run(model: nn.Module, x: Tensor, names: list[str], record: Callable[[str, Tensor], None]) -> list[str]:
    """Run ``model`` on ``x`` (eval mode, no grad, in batches) with ``record`` hooked to the named Linears; returns
    the names in the order their layers first ran, or a ValueError for one that never ran. Leaves no trace."""
    order: dict[str, None] = {}

    def seen(name: str, inputs: Tensor) -> None:
        order.setdefault(name)
        record(name, inputs.detach())

    handles = _hook_inputs(model, names, seen)
    try:
        with torch.no_grad(), in_mode(model, training=False):
            for xb in x.split(eval_batch_size(model)):
                model(xb)
    finally:
        for handle in handles:
            handle.remove()
    never = [name for name in names if name not in order]
    if never:
        raise ValueError(f"The forward of {', '.join(map(repr, never))} never ran on the calibration data (nothing "
                         f"called it), so there are no inputs to weigh its weights by. Leave it out: layers="
                         f"{list(order)}.")
    return list(order)


def input_statistics(model: nn.Module, x: Tensor | Data, layers: list[str] | None = None) -> dict[str, InputStats]:
    """``{layer: InputStats}`` of every Linear (or of ``layers``), in forward order, from one pass over the
    calibration batch ``x`` (a tensor the model takes, or images with labels: ``calibration_inputs``). Each
    layer's inputs [..., in] are flattened to rows; X Xᵀ is accumulated in float64. The model is run in eval
    mode without gradients and left as it was (its mode, its weights, no hooks)."""
    names = list(linear_layers(model, layers))
    x = calibration_inputs(model, x)
    n = dict.fromkeys(names, 0)
    gram = {name: torch.zeros(model.get_submodule(name).in_features, model.get_submodule(name).in_features,
                              dtype=torch.float64, device=x.device) for name in names}

    def accumulate(name: str, inputs: Tensor) -> None:
        X = inputs.reshape(-1, inputs.shape[-1]).double()        # [rows, in]: Xᵀ in the papers' orientation
        n[name] += X.shape[0]
        gram[name] += X.T @ X                                    # X Xᵀ [in, in]

    order = _run(model, x, names, accumulate)
    return {name: InputStats(n[name], gram[name]) for name in order}


def wanda_score(W: Tensor, norm: Tensor) -> Tensor:
    """S_ij = |W_ij| · ‖X_j‖₂: W [out, in], ‖X_j‖₂ [in] -> S [out, in] (low = prune first)."""
    return W.detach().abs() * norm.to(W.dtype).view(1, -1)


def wanda_scores(model: nn.Module, data: Tensor | Data | None, layers: list[str] | None = None) -> dict[str, Tensor]:
    """Wanda's scores ``{layer: S [out, in]}`` of every Linear (or of ``layers``), from the original weights and
    one pass of the model over ``data``. Compare them per output row (``pruning.prune`` does by default)."""
    stats = input_statistics(model, data, layers)
    return {name: wanda_score(M.original(model, f"{name}.weight"), s.norm) for name, s in stats.items()}


def check_blocksize(blocksize: int) -> None:
    """``ValueError`` unless ``blocksize`` (columns per block of the OBS sweep) is a positive integer."""
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError(f"blocksize must be a positive integer (columns per block), got {blocksize!r}.")


def check_damp(damp: float) -> None:
    """``ValueError`` unless ``damp`` is a finite number >= 0."""
    if isinstance(damp, bool) or not (isinstance(damp, (int, float)) and math.isfinite(damp) and damp >= 0):
        raise ValueError(f"damp must be a finite number >= 0 (λ = damp · mean of H's diagonal), got {damp!r}.")


def check_gram(gram: Tensor, cols: int) -> None:
    """``ValueError`` unless ``gram`` is the [in, in] Gram matrix of a weight with ``cols`` = in inputs."""
    if gram.shape != (cols, cols):
        raise ValueError(f"The Gram matrix of W's {cols} inputs must be [{cols}, {cols}], got {list(gram.shape)}.")


def inverse_hessian_cholesky(gram: Tensor, damp: float = 0.01) -> tuple[Tensor, Tensor]:
    """``(U, dead)`` for one layer whose inputs X [in, n] have the Gram matrix X Xᵀ [in, in].

    H = 2 X Xᵀ + λI is the Hessian of ‖W X − Ŵ X‖²_F for each row, λ = ``damp`` · mean of H's diagonal (scaling H
    changes nothing). Inputs that were always 0 (``dead`` [in] bool: H_jj = 0) get H_jj = 1 first, so H is
    invertible; their weights change nothing on the data. H⁻¹ = Uᵀ U by Cholesky, U [in, in] upper, float64: row j
    of U is what the OBS update needs once the columns before j are fixed (Frantar & Alistarh 2022, §3.3).
    """
    check_damp(damp)
    H = 2 * gram.detach().double()                                           # [in, in]
    dead = H.diagonal() == 0
    H.diagonal()[dead] = 1
    H.diagonal().add_(damp * float(H.diagonal().mean()))
    try:
        return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True), dead
    except torch.linalg.LinAlgError:
        raise ValueError(f"H = 2 X Xᵀ + λI is not positive definite (its inputs are linearly dependent); raise "
                         f"damp (now {damp}), e.g. to 0.1.") from None


def obs_sweep(W: Tensor, U: Tensor, blocksize: int, fix: Callable[[int, int, int], Tensor]) -> None:
    """The Optimal Brain Surgeon sweep over the columns of W [out, in] (float64, updated in place), left to right.

    ``fix(j, j1, j2)`` fixes column j (it may write W[:, j]; j1 … j2 − 1 is its block) and returns its error
    e = (w_j − ŵ_j) / U_jj [out], w_j the column as the sweep has updated it. The columns not yet fixed then move
    by −e · U_{j, j+1:}, which keeps ‖W X − Ŵ X‖ least: at once inside the block, and for the columns after it
    once per block (the same result, with one matrix product instead of blocksize outer products).
    """
    out, cols = W.shape
    for j1 in range(0, cols, blocksize):
        j2 = min(j1 + blocksize, cols)
        errors = torch.zeros(out, j2 - j1, dtype=W.dtype, device=W.device)   # [out, j2 − j1]
        for j in range(j1, j2):
            e = fix(j, j1, j2)                                               # [out]
            W[:, j + 1:j2] -= e[:, None] * U[j, j + 1:j2]                    # OBS update inside the block
            errors[:, j - j1] = e
        W[:, j2:] -= errors @ U[j1:j2, j2:]                                  # ... and after it, all at once


def layer_by_layer(model: nn.Module, x: Tensor | Data, layers: list[str],
                   change: Callable[[str, nn.Linear, InputStats], None]) -> None:
    """Call ``change(name, layer, stats)`` for each named Linear of ``model`` in forward order, ``stats`` its
    inputs on the calibration batch ``x`` as the layers before it, already changed, compute them. The model is
    run once more for every layer (simple, and exact for any architecture)."""
    x = calibration_inputs(model, x)
    for name in _run(model, x, layers, lambda name, inputs: None):           # forward order
        change(name, model.get_submodule(name), input_statistics(model, x, [name])[name])


def _check_nm(n: int | None, m: int | None, blocksize: int) -> bool:
    """Whether N:M is asked (both given), or a ValueError for half of it, a bad pair or a blocksize it splits."""
    if (n is None) != (m is None):
        raise ValueError(f"N:M needs both n and m (e.g. n=2, m=4), got n={n}, m={m}.")
    if n is not None and not (isinstance(n, int) and isinstance(m, int) and 0 < n < m):
        raise ValueError(f"N:M needs integers 0 < N < M (e.g. 2:4), got {n}:{m}.")
    check_blocksize(blocksize)
    if m is not None and blocksize % m:
        raise ValueError(f"blocksize must be a multiple of M={m}, so that no group of M straddles two blocks; "
                         f"got {blocksize}.")
    return n is not None


def sparsegpt_layer(W: Tensor, gram: Tensor, sparsity: float = 0.5, *, n: int | None = None, m: int | None = None,
                    blocksize: int = 128, damp: float = 0.01) -> tuple[Tensor, Tensor]:
    """SparseGPT on one weight W [out, in] whose inputs X [in, n] have the Gram matrix X Xᵀ: returns
    ``(W_new, keep)``, the updated weights and the keep-mask, both [out, in]; Ŵ = W_new · keep is the pruned layer.

    H = 2 X Xᵀ + λI, λ = ``damp`` · mean of the diagonal, and H⁻¹ = Uᵀ U, U upper (``inverse_hessian_cholesky``).
    ``obs_sweep`` runs over the columns in blocks of ``blocksize``; at the start of each block every row removes its
    lowest w² / [U]_jj² (k = round(s · j₂) − round(s · j₁) of the block's columns j₁ … j₂ − 1, so each row removes
    round(s · in) in all), or keeps the N highest of every M when ``n`` and ``m`` are given (chosen when the group
    is reached). Column j then gives the error e = w_j / [U]_jj of its removed weights (0 for its kept ones), and
    the columns after it move by −e · U_{j,j+1:}. A removed weight keeps, in W_new, the value it had when removed;
    a kept one, its final value.
    Inputs that were always 0 (H_jj = 0) change nothing on the data: their weights are removed first.
    """
    check_sparsity(sparsity)
    nm = _check_nm(n, m, blocksize)
    check_damp(damp)
    out, cols = W.shape
    check_gram(gram, cols)
    if nm and cols % m:
        raise ValueError(f"W has {cols} inputs per row, not divisible by M={m}.")
    W_new = W.detach().double().clone()                                      # [out, in]
    U, dead = inverse_hessian_cholesky(gram, damp)                           # H⁻¹ = Uᵀ U, [in, in]
    keep = torch.ones(out, cols, dtype=torch.bool, device=W.device)

    def scores(j1: int, j2: int) -> Tensor:                                  # w² / [U]_jj², [out, j2 − j1]
        return (W_new[:, j1:j2] ** 2 / U.diagonal()[j1:j2] ** 2).masked_fill(dead[j1:j2], 0)

    def remove(j: int, j1: int, j2: int) -> Tensor:                          # e [out]: 0 where the weight is kept
        if not nm and j == j1:
            keep[:, j1:j2] = keep_per_row(scores(j1, j2), round(sparsity * j2) - round(sparsity * j1))
        if nm and (j - j1) % m == 0:
            keep[:, j:j + m] = nm_masks({"group": scores(j, j + m)}, n, m)["group"]
        return W_new[:, j] * ~keep[:, j] / U[j, j]

    obs_sweep(W_new, U, blocksize, remove)
    return W_new.to(W.dtype), keep


def sparsegpt(model: nn.Module, x: Tensor | Data, sparsity: float, *, n: int | None = None, m: int | None = None,
              blocksize: int = 128, damp: float = 0.01, layers: list[str] | None = None) -> nn.Module:
    """A copy of ``model`` pruned by SparseGPT (``model`` is left untouched): every Linear (or ``layers``), in
    forward order, each from its inputs on the calibration batch ``x`` as the layers before it, already pruned,
    compute them (``sparsegpt_layer``). ``sparsity`` in [0, 1) per row, or N:M with ``n`` and ``m`` (then
    ``sparsity`` is ignored; layers whose inputs do not split into groups of M are skipped unless named).

    The copy is masked in the package's format, so every tool of the kit works on it: ``weight_mask`` the mask,
    ``weight_orig`` SparseGPT's UPDATED weights. So ``prunelab.masks.reset(copy)`` gives those updated dense
    weights, not the originals (they are in ``model``). Masks ``model`` had are lifted in the copy first: SparseGPT
    starts from the original weights, as ``prune`` does. Every argument is checked before any work.
    """
    check_sparsity(sparsity)
    nm = _check_nm(n, m, blocksize)
    check_damp(damp)
    chosen = linear_layers(model, layers)
    if nm:
        uneven = [name for name, layer in chosen.items() if layer.in_features % m]
        if uneven and layers is not None:
            raise ValueError(f"{uneven} have inputs not divisible by M={m}; leave them out of layers=.")
        chosen = {name: layer for name, layer in chosen.items() if name not in uneven}
        if not chosen:
            raise ValueError(f"No Linear layer of {type(model).__name__} has inputs divisible by M={m}.")
    x = calibration_inputs(model, x)
    pruned = M.copy_model(model)
    if M.masked_parameters(pruned):
        M.reset(pruned)

    def prune_layer(name: str, layer: nn.Linear, stats: InputStats) -> None:
        W_new, keep = sparsegpt_layer(layer.weight, stats.gram, sparsity, n=n, m=m, blocksize=blocksize, damp=damp)
        M.set_masks(pruned, {f"{name}.weight": keep})
        M.set_effective(layer, W_new)                                        # weight_orig = W_new, weight = Ŵ

    layer_by_layer(pruned, x, list(chosen), prune_layer)
    return pruned


def output_error(W: Tensor, W_hat: Tensor, stats: InputStats) -> float:
    """‖W X − Ŵ X‖_F from the Gram matrix: with D = W − Ŵ, ‖D X‖²_F = Σ (D · X Xᵀ) ⊙ D."""
    D = (W.detach() - W_hat.detach()).double()
    return float(((D @ stats.gram) * D).sum().clamp_min(0).sqrt())
