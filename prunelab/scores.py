"""Importance scores that need no data: tensors in, scores out. A low score means "prune me first".

Per weight (same shape as W): ``magnitude`` |W|, ``gradient_magnitude`` |g|, ``taylor`` |W·g|, ``random_scores``.
Per unit (one score per neuron = row of a Linear's W [out, in], or per filter W[c] of a Conv2d's
W [C_out, C_in, kH, kW]): ``unit_norm`` with p = 1 or 2. Criteria from activations and the measured loss
change live in ``prunelab.data_criteria``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._helpers import in_mode
from .data import Data, as_image_set
from .training import model_device

__all__ = ["magnitude", "gradient_magnitude", "taylor", "unit_norm", "random_scores", "loss_gradients"]

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


def loss_gradients(model: nn.Module, data: Data | None, *, n_images: int = 2048,
                   batch_size: int = 512) -> dict[str, Tensor]:
    """∂L/∂W of every Linear and Conv2d weight, L the mean cross-entropy over the first ``n_images`` of ``data``.

    Returns ``{param_name: g}``, g the shape of the weight; for a masked weight, the gradient with respect to
    its effective value (``orig * mask``). The model's weights, gradients and mode are left as they were.
    """
    if data is None:
        raise ValueError(f"Gradient-based scores need data: pass images with labels, e.g. {CALIBRATION_EXAMPLE}.")
    data = as_image_set(data, "Gradient-based scores", CALIBRATION_EXAMPLE)
    from .masks import prunable_layers

    layers = prunable_layers(model)
    device = model_device(model)
    n = min(n_images, len(data))
    grads = {f"{name}.weight": torch.zeros_like(layer.weight) for name, layer in layers.items()}
    with in_mode(model, training=False):  # BatchNorm uses its running statistics, as at inference
        x_all, y_all = data.normalized(device)[:n], data.labels[:n].to(device)
        for start in range(0, n, batch_size):
            x, y = x_all[start:start + batch_size], y_all[start:start + batch_size]
            loss = F.cross_entropy(model(x), y, reduction="sum") / n
            # read after the forward: a masked layer's pre-hook has just made the weight it used
            effective = [layer.weight for layer in layers.values()]
            for (name, _), g in zip(layers.items(), torch.autograd.grad(loss, effective, allow_unused=True)):
                if g is not None:
                    grads[f"{name}.weight"] += g
    return grads  # torch.autograd.grad leaves every .grad untouched
