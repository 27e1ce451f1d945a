"""Integer-only inference (Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference": the gemmlowp / TFLite scheme), written out for reading.

``quantization.fake_quantize_model`` rounds the weights and computes in float. Here every layer computes with
integers only: the float input is quantized once, and only the logits are turned back into floats.

Each real tensor is r = S (q − Z) (``quantization``):

- **activations**: uint8, q ∈ [0, 255], S and Z from ``quantization.affine_params`` on a range (r_min, r_max)
  measured by running the float model on calibration images (``calibrate``: ``"minmax"`` or ``"percentile"``).
  uint8 because it is the paper's (and gemmlowp's) choice, because ``affine_params`` gives exactly that grid, and
  because x86's 8-bit dot-product instructions (AVX2 ``vpmaddubsw``, AVX-512 VNNI ``vpdpbusd``) multiply uint8 by
  int8, which is why ONNX Runtime's x86 kernels also prefer uint8 activations with int8 weights;
- **weights**: int8, symmetric per output channel, q ∈ [−127, 127], Z_w = 0 (``quantization.quantize_tensor``);
- **bias**: int32 with S_b = S_w S_x and Z_b = 0, so it adds straight onto the accumulator.

A Linear or Conv2d, y = Σ_k w_k x_k + b per output channel c (k runs over its inputs), in those terms::

    S_y (q_y − Z_y) = Σ_k S_w q_w[k] · S_x (q_x[k] − Z_x) + S_w S_x q_b
    q_y = Z_y + M · acc,   M = S_w S_x / S_y,
    acc = Σ_k q_w[k] (q_x[k] − Z_x) + q_b = Σ_k q_w[k] q_x[k] − Z_x Σ_k q_w[k] + q_b      (int32)

The expanded form is the one computed: Σ_k q_w q_x is the 8-bit × 8-bit product sum that integer hardware does,
and Z_x Σ_k q_w[k] (``zero_point_term``) is one int32 per output channel, computed once from the weights. (With
Z_w = 0, the paper's other two terms, Z_w Σ_k q_x[k] and K Z_w Z_x, vanish.) A Conv2d's zero padding is padding
with Z_x, the integer that means r = 0, so the expansion holds at the borders too.

M is a real number; integer hardware multiplies by M = M0 · 2^(−n), M0 ∈ [0.5, 1) stored as the int32
M0_q31 = round(M0 · 2^31), and shifts: q_y = Z_y + ((acc · M0_q31) >> (31 + n)), the shift rounding to nearest
(``requantize``; ``requantize_float`` is the same with the float M, for comparison). The result is clamped to
[q_min, 255]; a ReLU after the layer is folded into that clamp as q_min = Z_y (the integer of r = 0).

Supported: ``nn.Sequential`` models of Conv2d, Linear, BatchNorm2d after a Conv2d (folded into it first with
``shrink.fold_batchnorm``), ReLU, MaxPool2d (max of integers on one grid = the integer of the max), Flatten,
Dropout and Identity: LeNet-300-100, LeNet-5 and VGGSmall. MaxPool, Flatten and a ReLU on its own keep S and Z.

How the int32 sums are computed: torch has int32 conv2d and matmul on the CPU only in some versions (2.14 has
them, and the tests use them as the reference where present), so Σ_k q_w q_x is computed in float64 BLAS instead.
That is exact: each product (|q_w q_x| ≤ 127 · 255) and each partial sum is an integer of magnitude below
K · 127 · 255 < 2^31 < 2^53 (checked when a layer is built), which float64 represents exactly, in any order of
summation. The result is stored as int32. Requantization runs in int64, as the 32 × 32 → 64-bit multiply of the
hardware.

A pipeline, like ``gptq``: it uses pruning's ``shrink.fold_batchnorm`` and compression's ``quantization`` on purpose.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._helpers import in_mode
from .data import Data, as_image_set
from .quantization import affine_params, dequantize, qrange, quantize, quantize_tensor
from .shrink import fold_batchnorm

__all__ = ["Method", "ActivationRange", "minmax_range", "percentile_range", "activation_range", "calibrate",
           "multiplier", "fixed_point", "rounding_right_shift", "fixed_point_multiply", "requantize",
           "requantize_float", "quantize_bias", "IntegerLinear", "IntegerConv2d", "IntegerMaxPool2d", "IntegerFlatten",
           "IntegerReLU", "IntegerModel", "integer_model", "Agreement"]

Method = Literal["minmax", "percentile"]
Q_MIN, Q_MAX = qrange(8, "affine")          # uint8 activations: [0, 255]
W_MAX = qrange(8, "symmetric")[1]           # int8 weights: [−127, 127]
INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1
SUPPORTED = "Conv2d, Linear, BatchNorm2d after a Conv2d (folded), ReLU, MaxPool2d, Flatten, Dropout, Identity"


# ---------------------------------------------------------------------------------------------- calibration

class ActivationRange(NamedTuple):
    """A tensor's measured range (r_min, r_max) and the uint8 grid from it: S float32, Z int32 (0-dim)."""
    r_min: float
    r_max: float
    S: Tensor
    Z: Tensor


def minmax_range(r: Tensor) -> tuple[float, float]:
    """(min r, max r) over all the values seen."""
    return float(r.min()), float(r.max())


def percentile_range(r: Tensor, p: float = 99.99) -> tuple[float, float]:
    """(the (100 − p)-th, the p-th percentile) of the values of r, each end clipped on its own (uint8 activations
    are affine, so their two ends need not be alike; after a ReLU r_min is 0 anyway). Nearest rank: the p-th
    percentile is the k-th smallest value, k = ceil(p/100 · N)."""
    if not 50 < p <= 100:
        raise ValueError(f"p must be a percentile in (50, 100], e.g. 99.99 (clip the 0.01% most extreme values at "
                         f"each end), got {p!r}.")
    flat, N = r.flatten(), r.numel()
    return float(flat.kthvalue(_rank(100 - p, N)).values), float(flat.kthvalue(_rank(p, N)).values)


def _rank(p: float, N: int) -> int:
    """k = ceil(p/100 · N), at least 1 (rounded to 6 decimals first: 99.9% of 10,000 is 9,990, not 9,991)."""
    return max(math.ceil(round(p / 100 * N, 6)), 1)


def activation_range(r_min: float, r_max: float) -> ActivationRange:
    """The uint8 grid of a measured range: S, Z = ``quantization.affine_params(r_min, r_max, 8)`` (the range widened
    to contain 0, so r = 0 is exactly q = Z)."""
    S, Z = affine_params(r_min, r_max, 8)
    return ActivationRange(r_min, r_max, S, Z)


class _Step(NamedTuple):
    """One step of the integer model: a layer of the BatchNorm-folded copy, and whether a ReLU after it is folded
    into its output clamp (Conv2d / Linear only)."""
    name: str
    layer: nn.Module
    relu: bool


def _leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The layers of a (possibly nested) nn.Sequential, in order."""
    out = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        out += _leaves(child, full + ".") if isinstance(child, nn.Sequential) else [(full, child)]
    return out


def _plan(model: nn.Module, what: str) -> list[_Step]:
    """The steps of ``model`` with its BatchNorms folded, each ReLU after a Conv2d/Linear folded into that layer;
    ``TypeError`` naming the first layer that integer inference does not support."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"{what} takes an nn.Sequential model (LeNet300, LeNet5, VGGSmall), got "
                        f"{type(model).__name__}: its forward is not a plain chain of layers.")
    layers = [(n, m) for n, m in _leaves(fold_batchnorm(model)) if not isinstance(m, (nn.Identity, nn.Dropout))]
    steps: list[_Step] = []
    for name, layer in layers:
        if isinstance(layer, nn.ReLU) and steps and isinstance(steps[-1].layer, (nn.Conv2d, nn.Linear)) \
                and not steps[-1].relu:
            steps[-1] = steps[-1]._replace(relu=True)
        elif isinstance(layer, (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.Flatten, nn.ReLU)):
            steps.append(_Step(name, layer, False))
        else:
            hint = " (a BatchNorm2d is folded only into the Conv2d right before it)" \
                if isinstance(layer, nn.BatchNorm2d) else ""
            raise TypeError(f"{what}: layer {name!r} is a {type(layer).__name__}, which integer-only inference does "
                            f"not support{hint}. Supported: {SUPPORTED}.")
    if not any(_computes(step.layer) for step in steps):
        raise TypeError(f"{what}: {type(model).__name__} has no Conv2d or Linear layer to compute on integers.")
    return steps


def _float_step(step: _Step, r: Tensor) -> Tensor:
    y = step.layer(r)
    return F.relu(y) if step.relu else y


def calibrate(model: nn.Module, data: Data, *, method: Method = "minmax", p: float = 99.99,
              batch_size: int = 500) -> dict[str, ActivationRange]:
    """Run the float model (BatchNorm folded, eval mode) on the images of ``data`` and measure the range of every
    tensor the integer model will quantize: ``"input"`` (the normalised images) and the output of each Conv2d /
    Linear (after its ReLU, when one follows). Returns ``{"input" or layer name: ActivationRange}``.

    ``method``: ``"minmax"`` (the extreme values) or ``"percentile"`` (``percentile_range`` with ``p``: a few
    outliers no longer stretch S for everyone, at the price of clipping them). The input of each layer is the
    output of the layer before it (MaxPool, Flatten and ReLU keep S and Z). Min-max keeps each batch's min and max;
    percentiles keep every value of every layer in memory: a few hundred MB for VGGSmall on 2,000 images.
    """
    if method not in ("minmax", "percentile"):
        raise ValueError(f"method must be 'minmax' or 'percentile', got {method!r}.")
    percentile_range(torch.zeros(1), p)                                  # checks p before anything runs
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    steps = _plan(model, "calibrate")
    x_all = as_image_set(data, "calibrate", "prunelab.load_fashion_mnist('validation').subset(1000)").normalized()
    seen: dict[str, list[Tensor]] = {"input": []} | {s.name: [] for s in steps if _computes(s.layer)}

    def keep(name: str, r: Tensor) -> None:           # min-max of the batches' min-max is the min-max of all
        seen[name].append(r.flatten() if method == "percentile" else torch.tensor(minmax_range(r)))

    with torch.no_grad():
        for start in range(0, len(x_all), batch_size):
            r = x_all[start:start + batch_size]
            keep("input", r)
            for step in steps:
                r = _float_step(step, r)
                if step.name in seen:
                    keep(step.name, r)
    measure = minmax_range if method == "minmax" else (lambda r: percentile_range(r, p))
    return {name: activation_range(*measure(torch.cat(values))) for name, values in seen.items()}


# ---------------------------------------------------------------------------------------------- the formulas

def multiplier(S_w: Tensor, S_x: Tensor, S_y: Tensor) -> Tensor:
    """M = S_w S_x / S_y, float64 (one per output channel when S_w is)."""
    return S_w.double() * S_x.double() / S_y.double()


def fixed_point(M: Tensor) -> tuple[Tensor, Tensor]:
    """M = M0 · 2^(−n) with M0 ∈ [0.5, 1): returns (M0_q31, n), M0_q31 = round(M0 · 2^31) int32 ∈ [2^30, 2^31 − 1]
    and n int64, shaped like M. (When M0 rounds up to 2^31 it becomes 2^30 with n − 1.) M must lie in
    [2^−31, 2^30), so that the shift 31 + n of ``requantize`` is from 1 to 62 bits."""
    M = torch.as_tensor(M, dtype=torch.float64)
    if not (torch.isfinite(M).all() and (M >= 2.0 ** -31).all() and (M < 2.0 ** 30).all()):
        raise ValueError(f"M = S_w S_x / S_y must lie in [2^-31, 2^30), got values from {float(M.min()):.3g} to "
                         f"{float(M.max()):.3g}: an output scale S_y far from the input's. Calibrate on the images "
                         "the model sees (calibrate(model, data)).")
    M0, exponent = torch.frexp(M)                        # M = M0 · 2^exponent, M0 ∈ [0.5, 1)
    M0_q31 = torch.round(M0 * 2 ** 31).to(torch.int64)
    n = -exponent.to(torch.int64)
    carry = M0_q31 == 2 ** 31                            # M0 within 2^−32 of 1: 2^31 · 2^−n = 2^30 · 2^−(n − 1)
    return torch.where(carry, 2 ** 30, M0_q31).to(torch.int32), torch.where(carry, n - 1, n)


def rounding_right_shift(x: Tensor, s: Tensor | int) -> Tensor:
    """round(x / 2^s) for int64 x and shifts s ≥ 1: (x + 2^(s−1)) >> s (ties round up, towards +∞)."""
    s = torch.as_tensor(s, dtype=torch.int64)
    return torch.bitwise_right_shift(x + torch.bitwise_left_shift(torch.ones_like(s), s - 1), s)


def _per_channel(t: Tensor, acc: Tensor) -> Tensor:
    """A per-output-channel tensor [C] viewed to broadcast over acc [B, C] or [B, C, H, W]."""
    return t.view(-1, *[1] * (acc.dim() - 2)) if t.dim() else t


def fixed_point_multiply(acc: Tensor, M0_q31: Tensor, n: Tensor) -> Tensor:
    """round(acc · M) with integers only, M = M0_q31 · 2^−(31 + n): (acc · M0_q31) >> (31 + n), the shift rounding to
    nearest. int64, shaped like acc (int32 [B, C] or [B, C, H, W]); M0_q31 int32 and n per output channel [C] (or
    0-dim). acc · M0_q31 is the 32 × 32 → 64-bit product of the hardware (|acc · M0_q31| < 2^62)."""
    product = acc.to(torch.int64) * _per_channel(M0_q31, acc).to(torch.int64)
    return rounding_right_shift(product, 31 + _per_channel(n, acc))


def requantize(acc: Tensor, M0_q31: Tensor, n: Tensor, Z_y: Tensor | int, q_min: int, q_max: int) -> Tensor:
    """q_y = clamp(Z_y + round(acc · M), q_min, q_max) with ``fixed_point_multiply`` for acc · M: uint8, shaped like
    acc. This is the one the integer model uses."""
    return torch.clamp(fixed_point_multiply(acc, M0_q31, n) + int(Z_y), q_min, q_max).to(torch.uint8)


def requantize_float(acc: Tensor, M: Tensor, Z_y: Tensor | int, q_min: int, q_max: int) -> Tensor:
    """q_y = clamp(Z_y + round(M · acc), q_min, q_max) with the real M (float64): what ``requantize`` computes
    with integers, up to the rounding of M0 to 31 bits and of ties. For comparison; the model uses ``requantize``."""
    return torch.clamp(torch.round(acc.double() * _per_channel(M, acc)) + int(Z_y), q_min, q_max).to(torch.uint8)


def quantize_bias(b: Tensor, S_w: Tensor, S_x: Tensor) -> Tensor:
    """q_b = round(b / (S_w S_x)), int32 [C]: the bias on the accumulator's grid, S_b = S_w S_x, Z_b = 0."""
    q_b = torch.round(b.double() / (S_w.double() * S_x.double()))
    if q_b.abs().max() > INT32_MAX:
        raise OverflowError(f"A bias of up to {float(b.abs().max()):.3g} on the grid S_b = S_w S_x needs more than "
                            "int32; the input scale S_x is too small for it.")
    return q_b.to(torch.int32)


def _exact_int32(acc: Tensor, what: str) -> Tensor:
    """An integer-valued tensor (int64, or float64 holding whole numbers) as int32, or OverflowError."""
    if acc.numel() and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError(f"{what}: an accumulator left int32 ({float(acc.min()):.0f} .. {float(acc.max()):.0f}).")
    return acc.to(torch.int32)


# ---------------------------------------------------------------------------------------------- integer layers

def _computes(layer: nn.Module) -> bool:
    return isinstance(layer, (nn.Linear, nn.Conv2d))


class _IntegerLayer(nn.Module):
    """A Conv2d or Linear on integers: uint8 q_x -> int32 acc -> uint8 q_y. Buffers: ``q_w`` int8 (Z_w = 0),
    ``q_b`` int32, ``zero_point_term`` = Z_x Σ_k q_w[c, k] int32 [C], ``S_w`` float32 [C], ``M`` float64 [C] (shown,
    not used), ``M0_q31`` int32 [C] and ``n`` int64 [C] (used); S_x, Z_x, S_y, Z_y; output clamp [q_min, q_max]."""

    def __init__(self, name: str, layer: nn.Module, relu: bool, x: ActivationRange, y: ActivationRange):
        super().__init__()
        self.name, self.relu = name, relu
        qt = quantize_tensor(layer.weight.detach(), 8, scheme="symmetric", per_channel=True)
        C = qt.q.shape[0]
        b = layer.bias.detach() if layer.bias is not None else torch.zeros(C)
        K = qt.q[0].numel()
        if K * W_MAX * Q_MAX > INT32_MAX:
            raise OverflowError(f"{name}: a sum of {K} products of up to {W_MAX} · {Q_MAX} could leave int32; "
                                f"8-bit layers with int32 accumulators take at most {INT32_MAX // (W_MAX * Q_MAX):,} "
                                "inputs per output.")
        self.register_buffer("q_w", qt.q.to(torch.int8))
        self.register_buffer("S_w", qt.S.flatten())
        self.S_x, self.Z_x, self.S_y, self.Z_y = float(x.S), int(x.Z), float(y.S), int(y.Z)
        self.register_buffer("q_b", quantize_bias(b, self.S_w, x.S))
        self.register_buffer("zero_point_term", (self.Z_x * qt.q.flatten(1).sum(1)).to(torch.int32))
        self.register_buffer("M", multiplier(self.S_w, x.S, y.S))
        M0_q31, n = fixed_point(self.M)
        self.register_buffer("M0_q31", M0_q31)
        self.register_buffer("n", n)
        self.q_min, self.q_max = (self.Z_y if relu else Q_MIN), Q_MAX   # ReLU: r ≥ 0 is q ≥ Z_y

    def products(self, q_x: Tensor) -> Tensor:
        """Σ_k q_w[c, k] q_x[k], the exact integer sums (int32)."""
        raise NotImplementedError

    def accumulate(self, q_x: Tensor) -> Tensor:
        """acc = Σ_k q_w q_x − Z_x Σ_k q_w + q_b, int32 (= Σ_k q_w (q_x − Z_x) + q_b)."""
        acc = self.products(q_x).to(torch.int64)
        acc = acc - _per_channel(self.zero_point_term, acc) + _per_channel(self.q_b, acc)
        return _exact_int32(acc, self.name)

    def forward(self, q_x: Tensor) -> Tensor:
        return requantize(self.accumulate(q_x), self.M0_q31, self.n, self.Z_y, self.q_min, self.q_max)

    def extra_repr(self) -> str:
        return (f"{self.name!r}, S_x={self.S_x:.4g}, Z_x={self.Z_x}, S_y={self.S_y:.4g}, Z_y={self.Z_y}, "
                f"M in [{float(self.M.min()):.3g}, {float(self.M.max()):.3g}], relu={self.relu}")


class IntegerLinear(_IntegerLayer):
    """y = W x + b on integers: uint8 q_x [B, in] -> uint8 q_y [B, out]; q_w int8 [out, in]."""

    def products(self, q_x: Tensor) -> Tensor:
        sums = q_x.double() @ self.q_w.double().T                      # [B, out], exact (module docstring)
        return _exact_int32(sums, self.name)


class IntegerConv2d(_IntegerLayer):
    """A Conv2d on integers: uint8 q_x [B, C_in, H, W] -> uint8 q_y [B, C_out, H', W']; q_w int8 [C_out, C_in / groups,
    kH, kW]. The input is padded with Z_x (r = 0), then convolved without padding."""

    def __init__(self, name: str, layer: nn.Conv2d, relu: bool, x: ActivationRange, y: ActivationRange):
        super().__init__(name, layer, relu, x, y)
        if layer.padding_mode != "zeros":
            raise TypeError(f"{name}: padding_mode={layer.padding_mode!r} is not supported; only 'zeros'.")
        if isinstance(layer.padding, str):                               # 'valid', or 'same' (stride 1)
            total = [0, 0] if layer.padding == "valid" else [d * (k - 1) for d, k in
                                                              zip(layer.dilation, layer.kernel_size)]
            ph, pw = [(t // 2, t - t // 2) for t in total]
        else:
            ph, pw = [(p, p) for p in layer.padding]
        self.pad = (*pw, *ph)                                            # F.pad's order: left, right, top, bottom
        self.stride, self.dilation, self.groups = layer.stride, layer.dilation, layer.groups

    def products(self, q_x: Tensor) -> Tensor:
        x = F.pad(q_x.double(), self.pad, value=float(self.Z_x))        # [B, C_in, H + pads, W + pads]
        sums = F.conv2d(x, self.q_w.double(), None, self.stride, 0, self.dilation, self.groups)   # exact
        return _exact_int32(sums, self.name)


class IntegerMaxPool2d(nn.Module):
    """MaxPool2d on the integers (same S, Z): the grid is increasing in q, so max of q is the q of the max."""

    def __init__(self, name: str, layer: nn.MaxPool2d):
        super().__init__()
        self.name, self.pool = name, layer

    def forward(self, q: Tensor) -> Tensor:
        return self.pool(q)


class IntegerFlatten(nn.Module):
    """Flatten: [B, C, H, W] -> [B, C·H·W], the integers unchanged (same S, Z)."""

    def __init__(self, name: str, layer: nn.Flatten):
        super().__init__()
        self.name, self.flatten = name, layer

    def forward(self, q: Tensor) -> Tensor:
        return self.flatten(q)


class IntegerReLU(nn.Module):
    """A ReLU not right after a Conv2d / Linear: q = max(q, Z) (r ≥ 0 is q ≥ Z), same S, Z."""

    def __init__(self, name: str, Z: int):
        super().__init__()
        self.name, self.Z = name, Z

    def forward(self, q: Tensor) -> Tensor:
        return torch.clamp(q, min=self.Z)


# ---------------------------------------------------------------------------------------------- the model

@dataclass(frozen=True)
class Agreement:
    """The integer model against its float model on ``images`` images: ``agreement``, the fraction with the same
    argmax, and each one's accuracy (fractions in [0, 1])."""
    agreement: float
    integer_accuracy: float
    float_accuracy: float
    images: int

    def describe(self) -> str:
        return (f"same prediction on {self.agreement:.2%} of {self.images:,} images; accuracy "
                f"{self.integer_accuracy:.2%} integer-only vs {self.float_accuracy:.2%} float")


class IntegerModel(nn.Module):
    """A model that computes with integers only: ``forward(x)`` quantizes the float images x [B, 1, 28, 28] once
    (uint8, with the calibrated S_in, Z_in), runs the integer layers, and dequantizes the logits [B, classes] at
    the end, r = S_out (q − Z_out), float32. No parameters; the integers are buffers. Build it with
    ``integer_model(model, calibrate(model, data))``."""

    def __init__(self, layers: list[nn.Module], x: ActivationRange, y: ActivationRange):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.S_in, self.Z_in = x.S, x.Z                  # the input's grid
        self.S_out, self.Z_out = y.S, y.Z                # the logits' grid: the last Conv2d / Linear's output

    def quantize_input(self, x: Tensor) -> Tensor:
        """q_x = clamp(round(x / S_in) + Z_in, 0, 255), uint8 shaped like x."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"IntegerModel takes float images x [B, 1, 28, 28] (data.normalized()), got "
                            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}.")
        return quantize(x, self.S_in, self.Z_in, Q_MIN, Q_MAX).to(torch.uint8)

    def trace(self, x: Tensor) -> list[tuple[str, Tensor]]:
        """Every tensor the integer model computes for x, in order: ``("input", q_x)``, then for each Conv2d /
        Linear ``("<name>.acc", int32 acc)`` and ``("<name>", uint8 q_y)``, for the other layers ``("<name>", q)``."""
        q = self.quantize_input(x)
        out = [("input", q)]
        for layer in self.layers:
            if isinstance(layer, _IntegerLayer):
                acc = layer.accumulate(q)
                out.append((f"{layer.name}.acc", acc))
                q = requantize(acc, layer.M0_q31, layer.n, layer.Z_y, layer.q_min, layer.q_max)
            else:
                q = layer(q)
            out.append((layer.name, q))
        return out

    def forward(self, x: Tensor) -> Tensor:
        q = self.quantize_input(x)
        for layer in self.layers:
            q = layer(q)
        return dequantize(q.to(torch.int32), self.S_out, self.Z_out)

    def compare_with(self, model: nn.Module, data: Data, *, batch_size: int = 1000) -> Agreement:
        """Run this integer model and the float ``model`` (eval mode) on every image of ``data``: how often they
        predict the same class, and each one's accuracy."""
        data = as_image_set(data, "compare_with", "prunelab.load_fashion_mnist('test')")
        x_all, y_all = data.normalized(), data.labels
        same = right_int = right_float = 0
        with in_mode(model, training=False), torch.no_grad():
            for start in range(0, len(data), batch_size):
                x, y = x_all[start:start + batch_size], y_all[start:start + batch_size]
                p_int, p_float = self(x).argmax(1), model(x).argmax(1)
                same += int((p_int == p_float).sum())
                right_int += int((p_int == y).sum())
                right_float += int((p_float == y).sum())
        n = len(data)
        return Agreement(same / n, right_int / n, right_float / n, n)


def _integer_layer(step: _Step, ranges: Mapping[str, ActivationRange], x: ActivationRange) -> nn.Module:
    if isinstance(step.layer, nn.Linear):
        return IntegerLinear(step.name, step.layer, step.relu, x, ranges[step.name])
    if isinstance(step.layer, nn.Conv2d):
        return IntegerConv2d(step.name, step.layer, step.relu, x, ranges[step.name])
    if isinstance(step.layer, nn.MaxPool2d):
        return IntegerMaxPool2d(step.name, step.layer)
    if isinstance(step.layer, nn.Flatten):
        return IntegerFlatten(step.name, step.layer)
    return IntegerReLU(step.name, int(x.Z))


def integer_model(model: nn.Module, ranges: Mapping[str, ActivationRange]) -> IntegerModel:
    """The integer-only version of ``model`` (an nn.Sequential of the supported layers, see the module docstring)
    with the activation grids of ``ranges = calibrate(model, data)``. ``model`` is not changed."""
    steps = _plan(model, "integer_model")
    needed = ["input"] + [s.name for s in steps if _computes(s.layer)]
    if not isinstance(ranges, Mapping) or not all(isinstance(ranges.get(k), ActivationRange) for k in needed):
        missing = [k for k in needed if not isinstance(ranges, Mapping) or k not in ranges]
        raise ValueError(f"ranges must be calibrate(model, data) for this model: ActivationRanges for "
                         f"{', '.join(needed)}" + (f"; missing {', '.join(missing)}." if missing else "."))
    x, layers = ranges["input"], []
    for step in steps:
        layers.append(_integer_layer(step, ranges, x))
        x = ranges[step.name] if _computes(step.layer) else x
    return IntegerModel(layers, ranges["input"], x)
