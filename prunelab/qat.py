"""Quantization-aware training (QAT): fine-tune while the forward pass sees k-bit weights, so the network learns
weights that survive rounding (Jacob et al. 2018), with the straight-through estimator (STE, Bengio et al. 2013).

Forward, every step: Ŵ = S (clamp(round(W / S) + Z, q_min, q_max) − Z), the grid of ``prunelab.quantization``
with S, Z from the current W's own range (per tensor or per channel), exactly what ``fake_quantize`` computes.

Backward: round has derivative 0 almost everywhere, which would stop all learning. The STE pretends
round(x) = x, so ∂L/∂W = ∂L/∂Ŵ where the clamp did nothing, q_min ≤ round(W / S) + Z ≤ q_max, and 0 where it
clipped (as ``torch.fake_quantize_per_tensor_affine`` does). S and Z are constants for the gradient (no learned
scale, unlike LSQ). With S from W's own range no weight is ever clipped; the 0 matters only for a fixed S.

The optimizer updates float "shadow" weights W: a layer is wrapped with ``torch.nn.utils.parametrize``, so
``layer.parametrizations.weight.original`` is W and ``layer.weight`` is Ŵ. ``qat_finetune`` wraps a copy,
trains it with ``prunelab.train`` and unwraps it: each weight becomes Ŵ, exactly ``fake_quantize`` of the last
shadow weights, a plain model that ``save_quantized`` stores without loss.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import masks as M
from ._helpers import select_layers
from .data import Data
from .quantization import Scheme, dequantize, qrange, quantize, quantize_tensor
from .training import train

__all__ = ["FakeQuantizeSTE", "ste_mask", "fake_quantize_ste", "check_qat_bits", "WeightFakeQuantizer",
           "wrap_qat", "unwrap_qat", "qat_finetune"]


def ste_mask(W: Tensor, S: Tensor, Z: Tensor, q_min: int, q_max: int) -> Tensor:
    """1[q_min ≤ round(W / S) + Z ≤ q_max]: where the straight-through gradient passes (bool, W's shape)."""
    q = torch.round(W / S) + Z
    return (q >= q_min) & (q <= q_max)


class FakeQuantizeSTE(torch.autograd.Function):
    """Ŵ = dequantize(quantize(W)) forward; ∂L/∂W = ∂L/∂Ŵ · ste_mask(W) backward (S, Z: no gradient).

    ``FakeQuantizeSTE.apply(W, S, Z, q_min, q_max)``: W float [any shape]; S float32 and Z int32, 0-dim or
    broadcasting over W ([C_out, 1, ...] per channel); q_min, q_max the integer range (``qrange``).
    """

    @staticmethod
    def forward(ctx, W: Tensor, S: Tensor, Z: Tensor, q_min: int, q_max: int) -> Tensor:
        ctx.save_for_backward(ste_mask(W, S, Z, q_min, q_max))
        return dequantize(quantize(W, S, Z, q_min, q_max), S, Z).to(W.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        inside, = ctx.saved_tensors
        return grad * inside, None, None, None, None


def check_qat_bits(bits: int, scheme: Scheme) -> None:
    """``ValueError`` unless the grid has a straight-through form: 1 to 8 bits, but not 1-bit symmetric (that is
    sign quantization, q = sign(r), which has no zero level and no clamp range)."""
    qrange(bits, scheme)                                # bits an integer in 1..8, scheme known
    if scheme == "symmetric" and bits == 1:
        raise ValueError("QAT at 1 bit needs scheme='affine' (2 levels, one of them 0): 1-bit symmetric is sign "
                         "quantization, q = sign(r), whose straight-through gradient is not defined here.")


def fake_quantize_ste(W: Tensor, bits: int, *, scheme: Scheme = "symmetric", per_channel: bool = False) -> Tensor:
    """Ŵ with S, Z from W's own range (detached), bit-identical to ``quantization.fake_quantize``, and with the
    straight-through gradient to W."""
    check_qat_bits(bits, scheme)
    grid = quantize_tensor(W.detach(), bits, scheme=scheme, per_channel=per_channel)
    return FakeQuantizeSTE.apply(W, grid.S.to(W.device), grid.Z.to(W.device), *qrange(bits, scheme))


class WeightFakeQuantizer(nn.Module):
    """The parametrization W ↦ Ŵ = ``fake_quantize_ste(W, bits, ...)`` that ``wrap_qat`` puts on each weight."""

    def __init__(self, bits: int, scheme: Scheme = "symmetric", per_channel: bool = False):
        super().__init__()
        check_qat_bits(bits, scheme)
        self.bits, self.scheme, self.per_channel = bits, scheme, per_channel

    def forward(self, W: Tensor) -> Tensor:
        return fake_quantize_ste(W, self.bits, scheme=self.scheme, per_channel=self.per_channel)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, scheme={self.scheme!r}, per_channel={self.per_channel}"


def wrap_qat(model: nn.Module, bits: int, *, scheme: Scheme = "symmetric", per_channel: bool = False,
             layers: list[str] | None = None) -> nn.Module:
    """Make the Linear / Conv2d weights (all, or ``layers``) of ``model`` compute with Ŵ, in place; returns it.

    The float W stays as ``layer.parametrizations.weight.original`` (a parameter: what the optimizer updates).
    Masked layers are refused (quantize the committed weights: ``prunelab.masks.commit``), and so is a layer
    that is already wrapped. Everything is checked before the model is changed.
    """
    check_qat_bits(bits, scheme)
    chosen = select_layers(model, layers)
    masked = sorted({p.rsplit(".", 1)[0] for p in M.masked_parameters(model)} & set(chosen))
    if masked:
        raise ValueError(f"QAT wraps plain weights, but {', '.join(masked)} carry pruning masks; commit them first "
                         "(prunelab.masks.commit on a copy), or leave those layers out with layers=[...].")
    wrapped = [name for name, layer in chosen.items() if parametrize.is_parametrized(layer, "weight")]
    if wrapped:
        raise ValueError(f"{', '.join(wrapped)} already compute with a parametrized weight; unwrap_qat first.")
    for layer in chosen.values():
        parametrize.register_parametrization(layer, "weight", WeightFakeQuantizer(bits, scheme, per_channel))
    return model


def unwrap_qat(model: nn.Module) -> nn.Module:
    """Remove every ``wrap_qat`` parametrization, in place: each weight becomes Ŵ of its shadow weights, a plain
    parameter exactly on its k-bit grid, back in its place before the bias (state dicts keep their key order).
    Returns ``model``."""
    for layer in model.modules():
        if parametrize.is_parametrized(layer, "weight") and any(
                isinstance(p, WeightFakeQuantizer) for p in layer.parametrizations.weight):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
            layer._parameters = {"weight": layer._parameters.pop("weight"), **layer._parameters}   # torch's order
    return model


def qat_finetune(model: nn.Module, data: Data, bits: int, *, epochs: int = 1, lr: float = 0.01,
                 scheme: Scheme = "symmetric", per_channel: bool = False, layers: list[str] | None = None,
                 **train_kwargs: Any) -> nn.Module:
    """A copy of ``model`` fine-tuned for ``epochs`` on ``data`` with QAT at ``bits``; ``model`` is not changed.

    ``prunelab.train`` does the training (SGD with momentum 0.9 at ``lr``; ``train_kwargs`` such as ``seed``,
    ``batch_size``, ``lr_schedule``, ``progress`` go to it). The copy comes back unwrapped: its weights are
    ``fake_quantize(W, bits, scheme=, per_channel=)`` of the final shadow weights, at most 2^bits values per
    tensor (per row or filter with ``per_channel``), so ``fake_quantize_model`` with the same settings leaves
    them unchanged and ``save_quantized`` stores them exactly.
    """
    check_qat_bits(bits, scheme)
    qat = wrap_qat(M.copy_model(model), bits, scheme=scheme, per_channel=per_channel, layers=layers)
    try:
        train(qat, data, epochs=epochs, lr=lr, **train_kwargs)
    finally:
        unwrap_qat(qat)
    return qat
