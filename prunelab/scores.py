"""Importance scores that need no data: tensors in, scores out. A low score means "prune me first".

Per weight (same shape as W): ``magnitude`` |W|, ``gradient_magnitude`` |g|, ``taylor`` |W·g|, ``random_scores``.
Per unit (one score per neuron = row of a Linear's W [out, in], or per filter W[c] of a Conv2d's
W [C_out, C_in, kH, kW]): ``unit_norm`` with p = 1 or 2. Criteria from activations and the measured loss
change live in ``prunelab.data_criteria``.

Gradients: ``loss_gradients`` gives g = ∂L/∂W for L over the whole calibration set, which is close to 0 at a trained
minimum. Molchanov et al. (2017, 2019) accumulate the Taylor term over batches instead, I = (1/B) Σ_b |W ⊙ g_b|^p
(``taylor_batches``, from ``batch_gradients``): per example (batch size 1) the terms do not cancel out.
``batch_means`` and ``accumulated_taylor`` are the same two steps for terms already computed per example
(``data_criteria.unit_taylor_batches``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._helpers import in_mode
from .data import Data, as_image_set
from .training import model_device

__all__ = ["magnitude", "gradient_magnitude", "taylor", "unit_norm", "random_scores", "loss_gradients",
           "batch_gradients", "taylor_batches", "batch_means", "accumulated_taylor"]

CALIBRATION_EXAMPLE = "prunelab.load_fashion_mnist('train').subset(2048)"  # data for criteria that need it


def magnitude(W: Tensor) -> Tensor:
    """|W|, elementwise: small weights matter least (Han et al. 2015)."""
    return W.abs()


def gradient_magnitude(g: Tensor) -> Tensor:
    """|g| = |∂L/∂W|, elementwise: how fast the loss moves with each weight."""
    return g.abs()


def taylor(W: Tensor, g: Tensor) -> Tensor:
    """|W · g|, elementwise: the first-order Taylor estimate of the loss change from setting each weight
    to zero, ΔL ≈ |g · (0 − W)| (Molchanov et al. 2017)."""
    if W.shape != g.shape:
        raise ValueError(f"W and g must have the same shape, got {list(W.shape)} and {list(g.shape)}")
    return (W * g).abs()


def unit_norm(W: Tensor, p: Literal[1, 2] = 1) -> Tensor:
    """‖W_j‖_p of every unit j: rows of a Linear's W [out, in] or filters of a Conv2d's W [C_out, ...] -> [out]."""
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    return W.flatten(1).norm(p=p, dim=1)


def random_scores(shape: torch.Size | tuple[int, ...], *, seed: int = 0) -> Tensor:
    """Uniform random scores in [0, 1): the baseline every criterion must beat."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def batch_means(t: Tensor, batch_size: int) -> Tensor:
    """T_b = (1/|b|) Σ_{n∈b} t_n over consecutive batches b of ``batch_size`` rows of t [N, ...] (the last batch
    may be smaller): [N, ...] -> [B, ...], B = ⌈N / batch_size⌉. batch_size = 1 gives t itself."""
    _check_batch_size(batch_size)
    if t.dim() == 0 or len(t) == 0:
        raise ValueError(f"t must hold one term per example [N, ...] with N >= 1, got shape {list(t.shape)}.")
    return torch.stack([chunk.mean(0) for chunk in t.split(batch_size)])


def accumulated_taylor(T: Tensor, power: Literal[1, 2] = 1) -> Tensor:
    """I = (1/B) Σ_b |T_b|^p over the per-batch first-order terms T [B, ...] (signed): [B, ...] -> [...].

    p = 1: Molchanov et al. 2017 (|·|); p = 2: Molchanov et al. 2019 ((·)²). The absolute value (or square) is
    taken per batch, before the mean, so terms of opposite sign do not cancel out."""
    _check_power(power)
    return T.abs().pow(power).mean(0)


def _check_batch_size(batch_size: int) -> None:
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer (1 = per example), got {batch_size!r}.")


def _check_power(power: int) -> None:
    if power not in (1, 2):
        raise ValueError(f"power must be 1 (|W·g|, Molchanov et al. 2017) or 2 ((W·g)², 2019), got {power!r}.")


def _calibration(model: nn.Module, data: Data | None, n_images: int) -> tuple[Tensor, Tensor]:
    """The first ``n_images`` of ``data`` as (x float [n, ...], y int64 [n]) on the model's device."""
    if data is None:
        raise ValueError(f"Gradient-based scores need data: pass images with labels, e.g. {CALIBRATION_EXAMPLE}.")
    data = as_image_set(data, "Gradient-based scores", CALIBRATION_EXAMPLE)
    device = model_device(model)
    n = min(n_images, len(data))
    return data.normalized(device)[:n], data.labels[:n].to(device)


def _gradients(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, *, per_batch: bool,
               logits_of: Callable[[Tensor], Tensor] | None = None) -> Iterator[dict[str, Tensor]]:
    """For each batch b of ``batch_size`` consecutive images of x: ``{param_name: ∂/∂W of Σ_{n∈b} ℓ_n / d}`` for the
    weight of every Linear and Conv2d, ℓ_n the cross-entropy of image n and d = |b| (``per_batch``: the gradient
    g_b of the batch's mean loss L_b) or d = len(x) (the batch's share of the gradient of the mean over x).

    ``logits_of``: images -> logits, default the model itself. Eval mode; the model's mode is restored."""
    from .masks import prunable_layers

    layers = prunable_layers(model)
    with in_mode(model, training=False):  # BatchNorm uses its running statistics, as at inference
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            logits = (model if logits_of is None else logits_of)(xb)
            loss = F.cross_entropy(logits, yb, reduction="sum") / (len(xb) if per_batch else len(x))
            # read after the forward: a masked layer's pre-hook has just made the weight it used
            effective = [layer.weight for layer in layers.values()]
            # leaves every .grad untouched; a loss that depends on no weight (all logits removed) has g = 0
            grads = (torch.autograd.grad(loss, effective, allow_unused=True) if loss.requires_grad
                     else [None] * len(effective))
            yield {f"{name}.weight": torch.zeros_like(w) if g is None else g
                   for name, w, g in zip(layers, effective, grads)}


def loss_gradients(model: nn.Module, data: Data | None, *, n_images: int = 2048, batch_size: int = 512,
                   logits_of: Callable[[Tensor], Tensor] | None = None) -> dict[str, Tensor]:
    """∂L/∂W of every Linear and Conv2d weight, L the mean cross-entropy over the first ``n_images`` of ``data``.

    Returns ``{param_name: g}``, g the shape of the weight; for a masked weight, the gradient with respect to
    its effective value (``orig * mask``). ``batch_size`` only splits the work. ``logits_of``: the function from
    images to logits, default the model itself (``data_criteria`` passes the model with a unit or a layer removed;
    a weight it does not use gets g = 0). The model's weights, gradients and mode are left as they were.
    """
    x, y = _calibration(model, data, n_images)
    grads = None
    for g_part in _gradients(model, x, y, batch_size, per_batch=False, logits_of=logits_of):
        grads = g_part if grads is None else {name: grads[name] + g for name, g in g_part.items()}
    return grads


def batch_gradients(model: nn.Module, data: Data | None, *, batch_size: int = 1,
                    n_images: int = 2048) -> Iterator[dict[str, Tensor]]:
    """g_b = ∂L_b/∂W for each batch b of ``batch_size`` consecutive images among the first ``n_images`` of ``data``
    (1 = per example; the last batch may be smaller), L_b the mean cross-entropy over b: yields ``{param_name:
    g_b}`` for the weight of every Linear and Conv2d, one batch at a time (nothing is stacked in memory)."""
    _check_batch_size(batch_size)
    x, y = _calibration(model, data, n_images)
    yield from _gradients(model, x, y, batch_size, per_batch=True)


def taylor_batches(model: nn.Module, data: Data | None, *, batch_size: int = 1, n_images: int = 2048,
                   power: Literal[1, 2] = 1) -> dict[str, Tensor]:
    """Molchanov et al.'s accumulated Taylor importance of every weight: ``{param_name: I}``, I shaped like W,

        I = (1/B) Σ_b |W ⊙ g_b|^p,

    g_b = ∂L_b/∂W on batch b of ``batch_size`` images (``batch_gradients``; 1 = per example), B batches over the
    first ``n_images`` of ``data``, W the weights the model computes with. p = 1: |g_b·W| (2017); p = 2: (g_b·W)²
    (2019). With one batch of all images, p = 1 gives ``taylor(W, g)`` of the whole set, which is near 0 at a
    trained minimum: the per-batch gradients cancel out in g, not in I (I ≥ |W ⊙ g| for equal batches).
    """
    from .masks import effective, prunable_layers

    _check_power(power)
    W = {f"{name}.weight": effective(layer) for name, layer in prunable_layers(model).items()}
    total, B = {name: torch.zeros_like(w) for name, w in W.items()}, 0
    for g_b in batch_gradients(model, data, batch_size=batch_size, n_images=n_images):
        for name, g in g_b.items():
            total[name] += taylor(W[name], g).pow_(power)                    # |W ⊙ g_b|^p
        B += 1
    return {name: t / B for name, t in total.items()}
