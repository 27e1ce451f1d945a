"""Linear quantization of weights, r = S (q − Z): fake quantization for accuracy, real k-bit files for size.

A real number r is stored as an integer q of ``bits`` bits and recovered as r̂ = S (q − Z):

- **affine** (asymmetric): q ∈ [0, 2^b − 1], S = (r_max − r_min) / (q_max − q_min), Z = round(q_min − r_min / S).
  The range [r_min, r_max] is first widened to contain 0, so Z is an integer in [q_min, q_max] and
  r = 0 is represented exactly (q = Z gives r̂ = 0): pruned zeros stay zero.
- **symmetric**: Z = 0, q ∈ [−(2^(b−1) − 1), 2^(b−1) − 1], S = r_absmax / q_max. Zero is q = 0.
  For b = 1 that range is {0}, so 1-bit symmetric is *binary* (sign) quantization instead: q = sign(r) ∈ {−1, +1}
  (r = 0 counts as +1) and S = r_absmax / 2, the S that minimises the worst error over [−r_absmax, r_absmax].
  It has no zero level, so it refuses weights with exact zeros (pruned ones); use ``scheme="affine"``.
- **binary with the least squared error** (``binarize``): the same q = sign(r), with S = α* = mean|r|, the α
  that minimises ‖r − α sign(r)‖² (XNOR-Net, Rastegari et al. 2016; derived in notebook 10).

Granularity: per tensor (one S, Z for the whole W) or ``per_channel`` (one S, Z per output channel, the rows
of a Linear's W [out, in] or the filters of a Conv2d's W [C_out, C_in, kH, kW], broadcast over the rest), or per
group (``fake_quantize_groups``: one S, Z per row for every ``group_size`` consecutive input columns, as GPTQ and
most 4-bit LLM formats store them; ``gptq.gptq`` rounds to the same grids with error compensation).

Fake quantization (``fake_quantize_model``) replaces the weights by r̂ and computes in float32 (activations stay
float) to measure accuracy. ``save_quantized`` writes the integers for real, ``bits`` bits each (``pack_bits``),
with S and Z per tensor or channel; ``load_quantized`` gives back exactly the fake-quantized weights.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from . import masks as M
from ._helpers import select_layers, temporary_path

__all__ = ["FORMAT", "Scheme", "check_bits", "qrange", "affine_params", "symmetric_params", "quantize", "dequantize",
           "QuantizedTensor", "quantize_tensor", "binarize", "fake_quantize", "check_group_size",
           "fake_quantize_groups", "quantization_error", "quantization_report",
           "fake_quantize_model", "pack_bits", "unpack_bits", "encode_quantized", "decode_quantized",
           "save_quantized", "load_quantized", "quantized_file_bytes"]

Scheme = Literal["affine", "symmetric"]
BITS = range(1, 9)
FORMAT = "prunelab.quantized/1"     # the file's "format" entry


# ---------------------------------------------------------------------------------------------- the formulas

def check_bits(bits: int) -> None:
    """``ValueError`` unless ``bits`` is an integer from 1 to 8."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BITS:
        raise ValueError(f"bits must be an integer from 1 to 8 (1 bit = 2 levels, 8 bits = 256 levels), "
                         f"got {bits!r}.")


def _check_scheme(scheme: str) -> None:
    if scheme not in ("affine", "symmetric"):
        raise ValueError(f"scheme must be 'affine' or 'symmetric', got {scheme!r}.")


def qrange(bits: int, scheme: Scheme) -> tuple[int, int]:
    """(q_min, q_max): [0, 2^b − 1] for affine, [−(2^(b−1) − 1), 2^(b−1) − 1] for symmetric
    ([−1, 1] for b = 1, of which binary quantization uses only −1 and +1)."""
    check_bits(bits)
    _check_scheme(scheme)
    if scheme == "affine":
        return 0, 2 ** bits - 1
    q_max = max(2 ** (bits - 1) - 1, 1)
    return -q_max, q_max


def affine_params(r_min: Tensor | float, r_max: Tensor | float, bits: int) -> tuple[Tensor, Tensor]:
    """S = (r_max − r_min) / (q_max − q_min) and Z = round(q_min − r_min / S) clamped to [q_min, q_max].

    [r_min, r_max] is widened to contain 0 first, so r = 0 is exactly q = Z. A zero range (an all-zero row)
    gets S = 1: every entry is then q = Z, r̂ = 0. Tensors broadcast (per-channel ranges give per-channel S, Z).
    Returns S float32 and Z int32.
    """
    q_min, q_max = qrange(bits, "affine")
    r_min = torch.clamp(torch.as_tensor(r_min, dtype=torch.float32), max=0.0)
    r_max = torch.clamp(torch.as_tensor(r_max, dtype=torch.float32), min=0.0)
    S = (r_max - r_min) / (q_max - q_min)
    S = torch.where(S > 0, S, torch.ones_like(S))
    Z = torch.clamp(torch.round(q_min - r_min / S), q_min, q_max).to(torch.int32)
    return S, Z


def symmetric_params(r_absmax: Tensor | float, bits: int) -> tuple[Tensor, Tensor]:
    """S = r_absmax / q_max and Z = 0 (S = r_absmax / 2 for binary 1-bit; S = 1 where r_absmax = 0)."""
    _, q_max = qrange(bits, "symmetric")
    r_absmax = torch.as_tensor(r_absmax, dtype=torch.float32).abs()
    S = r_absmax / (2 if bits == 1 else q_max)
    S = torch.where(S > 0, S, torch.ones_like(S))
    return S, torch.zeros_like(S, dtype=torch.int32)


def quantize(r: Tensor, S: Tensor, Z: Tensor, q_min: int, q_max: int) -> Tensor:
    """q = clamp(round(r / S) + Z, q_min, q_max), an int32 tensor shaped like r (S, Z broadcast)."""
    return torch.clamp(torch.round(r / S) + Z, q_min, q_max).to(torch.int32)


def dequantize(q: Tensor, S: Tensor, Z: Tensor) -> Tensor:
    """r̂ = S (q − Z), float32 (the integer difference is exact, then one multiply)."""
    return (q - Z).to(torch.float32) * S


# ---------------------------------------------------------------------------------------------- whole tensors

class QuantizedTensor(NamedTuple):
    """W quantized: integers ``q`` (int32, W's shape), scale ``S`` and zero point ``Z`` (0-dim per tensor, or
    [C_out, 1, ...] per channel), and how: ``bits``, ``scheme``. ``dequantize()`` gives r̂ = S (q − Z)."""
    q: Tensor
    S: Tensor
    Z: Tensor
    bits: int
    scheme: Scheme

    def dequantize(self) -> Tensor:
        return dequantize(self.q, self.S, self.Z)


def _weights_and_reduction(W: Tensor, per_channel: bool) -> tuple[Tensor, dict]:
    """W as float32 (checked non-empty and finite), and the arguments that reduce it over all of W or, with
    ``per_channel``, over each W[c] keeping the dims (a [C_out, 1, ...] result)."""
    W = W.detach().float()
    if W.numel() == 0:
        raise ValueError("Cannot quantize an empty tensor.")
    if not torch.isfinite(W).all():
        raise ValueError("W holds NaN or inf values; its range, and so S, would be undefined.")
    dims = tuple(range(1, W.dim())) if per_channel and W.dim() >= 1 else tuple(range(W.dim()))
    return W, ({"dim": dims, "keepdim": per_channel} if dims else {})


def _signs(W: Tensor, what: str) -> Tensor:
    """q = sign(W) ∈ {−1, +1} as int32 (r = 0 counts as +1); refuses exact zeros, which have no level."""
    if (W == 0).any():
        raise ValueError(f"{what} has no zero level, so the exact zeros in W (pruned weights) would become ±S. "
                         "Use quantize_tensor with scheme='affine', or bits >= 2.")
    return torch.where(W >= 0, 1, -1).to(torch.int32)


def quantize_tensor(W: Tensor, bits: int, *, scheme: Scheme = "symmetric",
                    per_channel: bool = False) -> QuantizedTensor:
    """Quantize W with S, Z from its own range: over all of W, or ``per_channel`` over each W[c].
    (1-bit symmetric: S = max|r| / 2, the least worst error; ``binarize`` gives the least squared error.)"""
    q_min, q_max = qrange(bits, scheme)
    W, reduce = _weights_and_reduction(W, per_channel)
    if scheme == "affine":
        S, Z = affine_params(W.amin(**reduce), W.amax(**reduce), bits)
    else:
        S, Z = symmetric_params(W.abs().amax(**reduce), bits)
    if scheme == "symmetric" and bits == 1:
        q = _signs(W, "1-bit symmetric (binary, q = sign(r))")
    else:
        q = quantize(W, S, Z, q_min, q_max)
    return QuantizedTensor(q, S, Z, bits, scheme)


def binarize(W: Tensor, *, per_channel: bool = False) -> QuantizedTensor:
    """Binary weights r̂ = α sign(r) with the α that minimises the squared error ‖r − α sign(r)‖²: α* = mean|r|
    (XNOR-Net, Rastegari et al. 2016), over all of W or ``per_channel`` over each W[c].

    With s_i = sign(r_i): d/dα Σ (r_i − α s_i)² = −2 Σ (r_i s_i − α s_i²) = 0, and s_i² = 1, r_i s_i = |r_i|,
    so α = Σ|r_i| / n. Returned as 1-bit symmetric: q = sign(r) ∈ {−1, +1} (r = 0 counts as +1, but exact zeros
    are refused as in ``quantize_tensor``), S = α* (0-dim, or [C_out, 1, ...] per channel), Z = 0.
    """
    W, reduce = _weights_and_reduction(W, per_channel)
    q = _signs(W, "Binary quantization (q = sign(r))")
    S = W.abs().mean(**reduce)                                  # α* = mean |r|, > 0 since no r is 0
    return QuantizedTensor(q, S, torch.zeros_like(S, dtype=torch.int32), 1, "symmetric")


def fake_quantize(W: Tensor, bits: int, *, scheme: Scheme = "symmetric", per_channel: bool = False) -> Tensor:
    """Ŵ = dequantize(quantize(W)): W rounded to the 2^bits levels it would be stored with (float32)."""
    return quantize_tensor(W, bits, scheme=scheme, per_channel=per_channel).dequantize()


def check_group_size(group_size: int | None) -> None:
    """``ValueError`` unless ``group_size`` is a positive integer or None (one group per row)."""
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1):
        raise ValueError(f"group_size must be a positive integer (input columns per group, e.g. 32 or 128) or None "
                         f"(one group per row), got {group_size!r}.")


def fake_quantize_groups(W: Tensor, bits: int, *, group_size: int | None = None,
                         scheme: Scheme = "symmetric") -> Tensor:
    """Round-to-nearest (RTN) per group: W [out, in] cut into groups of ``group_size`` consecutive input columns
    (the last one may be narrower), each row of each group rounded with its own S, Z from its own range; ``None``
    is one group per row (``per_channel``). Returns Ŵ [out, in] float32, at most 2^bits levels per row and group."""
    check_group_size(group_size)
    if W.dim() != 2:
        raise ValueError(f"Group quantization takes a Linear's weight W [out, in], got shape {list(W.shape)}.")
    if group_size is None:
        return fake_quantize(W, bits, scheme=scheme, per_channel=True)
    return torch.cat([fake_quantize(group, bits, scheme=scheme, per_channel=True)         # [out, ≤ group_size]
                      for group in W.split(group_size, dim=1)], dim=1)


def quantization_error(W: Tensor, bits: int, *, scheme: Scheme = "symmetric",
                       per_channel: bool = False) -> dict[str, float]:
    """How far Ŵ is from W: ``mse`` (mean of (W − Ŵ)²), ``max_abs_error`` (max |W − Ŵ|), and ``sqnr_db``,
    the signal-to-quantization-noise ratio 10 log10(Σ W² / Σ (W − Ŵ)²) in dB (inf when Ŵ = W)."""
    W = W.detach().float()
    E = W - fake_quantize(W, bits, scheme=scheme, per_channel=per_channel)
    noise, signal = float((E ** 2).sum()), float((W ** 2).sum())
    sqnr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
    return {"mse": float((E ** 2).mean()), "max_abs_error": float(E.abs().max()), "sqnr_db": sqnr}


def quantization_report(model: nn.Module, bits: int, *, scheme: Scheme = "symmetric", per_channel: bool = False,
                        layers: list[str] | None = None) -> dict[str, dict[str, float]]:
    """``{layer: quantization_error(W_layer)}`` for every Linear / Conv2d (or ``layers``) of the model."""
    check_bits(bits)
    return {name: quantization_error(M.effective(layer), bits, scheme=scheme, per_channel=per_channel)
            for name, layer in select_layers(model, layers).items()}


def fake_quantize_model(model: nn.Module, bits: int, *, scheme: Scheme = "symmetric", per_channel: bool = False,
                        layers: list[str] | None = None) -> nn.Module:
    """A copy of ``model`` whose Linear / Conv2d weights (all, or ``layers``) are replaced by Ŵ.

    Quantizes the effective weights (a masked layer's weight_orig * weight_mask), so pruned zeros stay exactly 0;
    a masked copy keeps its masks and gets Ŵ as weight_orig. Biases and activations stay float32. ``model`` is
    not changed; every argument is checked before anything is computed.
    """
    check_bits(bits)
    _check_scheme(scheme)
    chosen = select_layers(model, layers)
    Wq = {name: fake_quantize(M.effective(layer), bits, scheme=scheme, per_channel=per_channel)
          for name, layer in chosen.items()}
    quantized = M.copy_model(model)
    for name, W in Wq.items():
        M.set_effective(quantized.get_submodule(name), W)
    return quantized


# ---------------------------------------------------------------------------------------------- real storage

def pack_bits(q: Tensor, bits: int) -> Tensor:
    """Store each value of ``q`` (non-negative integers < 2^bits) in ``bits`` bits: a uint8 tensor of
    ceil(n · bits / 8) bytes. Bit planes are interleaved most significant bit first (value 0's bits, then
    value 1's, ...) and packed with numpy.packbits, so values cross byte boundaries (3 bits: 8 values in 3 bytes)."""
    check_bits(bits)
    if q.is_floating_point() or q.is_complex() or q.dtype == torch.bool:
        raise TypeError(f"pack_bits takes an integer tensor of codes, got {q.dtype}.")
    flat = q.detach().cpu().flatten().to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 2 ** bits):
        raise ValueError(f"{bits}-bit codes must lie in [0, {2 ** bits - 1}], got values from {int(flat.min())} "
                         f"to {int(flat.max())}.")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint8)                    # MSB first
    planes = (flat.numpy().astype(np.uint8)[:, None] >> shifts) & 1         # [n, bits]
    return torch.from_numpy(np.packbits(planes.reshape(-1)))


def unpack_bits(packed: Tensor, bits: int, count: int) -> Tensor:
    """The ``count`` codes stored by ``pack_bits(q, bits)``, as a uint8 tensor [count]."""
    check_bits(bits)
    if packed.numel() * 8 < count * bits:
        raise ValueError(f"{packed.numel()} bytes hold at most {packed.numel() * 8 // bits} {bits}-bit codes, "
                         f"not {count}.")
    planes = np.unpackbits(packed.cpu().numpy(), count=count * bits).reshape(count, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint16)
    return torch.from_numpy((planes @ weights).astype(np.uint8))


def _to_codes(qt: QuantizedTensor) -> Tensor:
    """q − q_min, in [0, 2^bits − 1] (binary 1-bit: (q + 1) / 2)."""
    q_min, _ = qrange(qt.bits, qt.scheme)
    return (qt.q + 1) // 2 if (qt.scheme, qt.bits) == ("symmetric", 1) else qt.q - q_min


def _from_codes(u: Tensor, bits: int, scheme: Scheme) -> Tensor:
    q_min, _ = qrange(bits, scheme)
    u = u.to(torch.int32)
    return 2 * u - 1 if (scheme, bits) == ("symmetric", 1) else u + q_min


def encode_quantized(model: nn.Module, bits: int, *, scheme: Scheme = "symmetric", per_channel: bool = False,
                     layers: list[str] | None = None) -> dict:
    """What ``save_quantized`` writes, readable by ``torch.load(weights_only=True)``:

    ``{"format", "bits", "scheme", "dense": {other tensors, float32}, "quantized": {"fc1.weight": {"shape",
    "codes": pack_bits(q − q_min) uint8, "S": float32, "Z": int16}}}``; S and Z are [C_out] per channel,
    0-dim per tensor.
    """
    check_bits(bits)
    _check_scheme(scheme)
    chosen = select_layers(model, layers)
    state = {k: v.detach().cpu() for k, v in M.effective_state_dict(model).items()}
    quantized = {}
    for name, layer in chosen.items():
        qt = quantize_tensor(M.effective(layer).cpu(), bits, scheme=scheme, per_channel=per_channel)
        quantized[f"{name}.weight"] = {"shape": list(qt.q.shape), "codes": pack_bits(_to_codes(qt), bits),
                                       "S": qt.S.flatten() if per_channel else qt.S,
                                       "Z": (qt.Z.flatten() if per_channel else qt.Z).to(torch.int16)}
    return {"format": FORMAT, "bits": bits, "scheme": scheme,
            "dense": {k: v for k, v in state.items() if k not in quantized}, "quantized": quantized}


def decode_quantized(payload: dict) -> dict[str, Tensor]:
    """The state dict back from ``encode_quantized``'s output: weights r̂ = S (q − Z), other tensors as saved."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"Not a prunelab quantized file (expected format {FORMAT!r}); write one with "
                         "prunelab.quantization.save_quantized.")
    bits, scheme, out = payload["bits"], payload["scheme"], dict(payload["dense"])
    for key, e in payload["quantized"].items():
        shape = e["shape"]
        q = _from_codes(unpack_bits(e["codes"], bits, math.prod(shape)), bits, scheme).reshape(shape)
        view = [-1] + [1] * (len(shape) - 1) if e["S"].dim() else []
        out[key] = dequantize(q, e["S"].reshape(view), e["Z"].to(torch.int32).reshape(view))
    return out


def save_quantized(model: nn.Module, bits: int, path: str | Path, *, scheme: Scheme = "symmetric",
                   per_channel: bool = False, layers: list[str] | None = None) -> Path:
    """Write ``encode_quantized(model, ...)`` to ``path`` with ``torch.save``; returns the path."""
    payload = encode_quantized(model, bits, scheme=scheme, per_channel=per_channel, layers=layers)
    torch.save(payload, path)
    return Path(path)


def load_quantized(path: str | Path, model: nn.Module) -> nn.Module:
    """Load a ``save_quantized`` file into ``model`` (an unmasked model of the same architecture), in place;
    its weights become exactly those of ``fake_quantize_model`` with the same settings. Returns ``model``."""
    state = decode_quantized(torch.load(path, map_location="cpu", weights_only=True))
    return M.load_effective_state_dict(model, state, what="load_quantized")


def quantized_file_bytes(model: nn.Module, bits: int, *, scheme: Scheme = "symmetric", per_channel: bool = False,
                         layers: list[str] | None = None) -> int:
    """Bytes of a real ``save_quantized`` file, written to a temporary directory and deleted afterwards."""
    with temporary_path("model.pt") as path:
        return save_quantized(model, bits, path, scheme=scheme, per_channel=per_channel, layers=layers).stat().st_size
