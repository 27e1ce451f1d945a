"""What pruning buys, measured: sparsity, parameters, MACs, bytes on disk and latency.

Every metric reads the *effective* weights: a masked parameter (``weight_orig`` and ``weight_mask``, the
``torch.nn.utils.prune`` representation) counts as ``weight_orig * weight_mask``, so a masked-out weight is a
zero. Prunable layers are the ``nn.Linear`` and ``nn.Conv2d`` layers, keyed by qualified name (``"fc1"``).

| metric     | functions                                          | unit                                   |
|------------|----------------------------------------------------|----------------------------------------|
| sparsity   | ``sparsity``, ``layer_sparsity``, ``global_sparsity`` | fraction of exact zeros, in [0, 1]  |
| parameters | ``parameter_counts``                               | scalars (total and nonzero)            |
| compute    | ``count_macs``                                     | MACs per image; FLOPs = 2 x MACs       |
| storage    | ``file_bytes``, ``size_report``                    | bytes of a ``torch.save`` file, gzipped or not |
| speed      | ``measure_latency``, ``time_calls``                | milliseconds of wall-clock time per batch |

Zeros only save compute and bytes when something skips them: ``count_macs``'s ``effective`` count and the
``"bitmask"`` / ``"csr"`` encodings do; a dense matrix product (``measure_latency``) does not.
"""

from __future__ import annotations

import gzip
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import numpy as np
import torch
from torch import Tensor, nn

from . import graph
from ._helpers import did_you_mean, in_mode, temporary_path
from .data import Data, as_image_set
from .masks import effective, effective_state_dict, prunable_layers

__all__ = ["Encoding", "ENCODINGS", "Count", "ParameterCounts", "LayerMACs", "MACCount", "FileSize", "LatencyResult",
           "sparsity", "layer_sparsity", "global_sparsity", "parameter_counts", "count_macs",
           "encode_weights", "decode_weights", "file_bytes", "size_report", "time_calls",
           "measure_latency"]

Encoding = Literal["dense", "bitmask", "csr"]
ENCODINGS: tuple[str, ...] = get_args(Encoding)


# ---------------------------------------------------------------------------------------------- sparsity, counts

def sparsity(t: Tensor | np.ndarray) -> float:
    """Fraction of the entries of ``t`` (a tensor, or a numpy array) that are exactly zero, in [0, 1]."""
    t = torch.as_tensor(t)
    if t.numel() == 0:
        raise ValueError("sparsity of an empty tensor is undefined; pass a tensor with at least one entry.")
    return int((t == 0).sum()) / t.numel()


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """``{layer name: sparsity of its effective weight}`` for every Linear and Conv2d."""
    return {name: sparsity(effective(layer)) for name, layer in prunable_layers(model).items()}


def global_sparsity(model: nn.Module) -> float:
    """Zero weights / all weights, over the weights of every Linear and Conv2d together (biases excluded)."""
    weights = [effective(layer) for layer in prunable_layers(model).values()]
    return sum(int((W == 0).sum()) for W in weights) / sum(W.numel() for W in weights)


class Count(NamedTuple):
    """Number of scalars: ``total`` and how many of them are ``nonzero``."""
    total: int
    nonzero: int


@dataclass(frozen=True)
class ParameterCounts:
    """Scalar parameters of a model (weights, biases, BatchNorm γ and β; running statistics are buffers).

    total: all of them; nonzero: those whose effective value is not 0; layers: ``{name: Count}`` of each
    Linear / Conv2d *weight*. ``compression`` = total / nonzero (x).
    """
    total: int
    nonzero: int
    layers: dict[str, Count]

    @property
    def compression(self) -> float:
        return self.total / self.nonzero if self.nonzero else float("inf")


def parameter_counts(model: nn.Module) -> ParameterCounts:
    """Total and nonzero parameters of ``model``, masked entries counting as zero; see ``ParameterCounts``."""
    layers = {}
    for name, layer in prunable_layers(model).items():
        W = effective(layer)
        layers[name] = Count(W.numel(), int(W.count_nonzero()))
    state = effective_state_dict(model)
    masked = {key[:-len("_mask")] for key, _ in model.named_buffers() if key.endswith("_mask")}
    names = [key[:-len("_orig")] if key[:-len("_orig")] in masked else key for key, _ in model.named_parameters()]
    return ParameterCounts(total=sum(state[n].numel() for n in names),
                           nonzero=sum(int(state[n].count_nonzero()) for n in names), layers=layers)


# ---------------------------------------------------------------------------------------------- MACs

class LayerMACs(NamedTuple):
    """Multiply-accumulates of one layer per image: ``dense`` (every weight) and ``effective`` (nonzero weights)."""
    dense: int
    effective: int


@dataclass(frozen=True)
class MACCount:
    """Multiply-accumulates per image, per layer (in the order they ran) and in total.

    A MAC is one ``a += w * x``; FLOPs = 2 x MACs (one multiply and one add). Bias additions, activations,
    pooling and BatchNorm are not counted: they are a few per output, against ``C_in * kH * kW`` MACs per output.
    """
    dense: int
    effective: int
    layers: dict[str, LayerMACs]

    @property
    def flops(self) -> int:
        return 2 * self.dense

    @property
    def effective_flops(self) -> int:
        return 2 * self.effective


def _device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next((p for p in model.parameters() if p.is_floating_point()), torch.empty(0))
    return p.device, p.dtype


def _attention_products(L: int, S: int, E: int, W_o: Tensor, heads: int) -> LayerMACs:
    """Q Kᵀ and the weighted sum of V for L queries and S keys: 2 · L · S · E MACs; effective: those of the heads
    whose columns of W_o [E, E] are not all zero, 2 · L · S · d each (d = E / heads)."""
    alive = int((W_o != 0).any(0).view(heads, E // heads).any(1).sum())
    return LayerMACs(2 * L * S * E, 2 * L * S * (E // heads) * alive)


def count_macs(model: nn.Module, input_shape: tuple[int, ...] | None = None, *, data: Data | None = None) -> MACCount:
    """MACs of one forward pass, per image, counted by forward hooks on every Linear, Conv2d and
    MultiheadAttention.

    Each weight is used once per output position P (H_out * W_out for a conv, 1 for a Linear on [B, in], the
    L tokens for a Linear on [B, L, in]): dense = P * numel(W), effective = P * nonzero(W). So Conv2d dense =
    H_out * W_out * C_out * (C_in / groups) * kH * kW and Linear dense = in * out. A MultiheadAttention with
    embedding E, L queries and S keys counts three entries: ``<name>.in_proj`` (W_q on L tokens, W_k and W_v
    on S), ``<name>.attention`` (Q Kᵀ and the weighted sum of V: 2 · L · S · E; effective: of the heads whose
    columns of W_o are not all zero, 2 · L · S · d each) and
    ``<name>.out_proj`` (L tokens). ``input_shape`` includes a batch dimension; the answer is
    per image whatever the batch. By default it is that of ``data``'s images (``ImageSet.input_shape``), else
    Fashion-MNIST's (1, 1, 28, 28). The model is left as it was (no hooks, same mode, no gradients, BN untouched).
    """
    if input_shape is None:
        input_shape = (1, 1, 28, 28) if data is None else as_image_set(data, "count_macs").input_shape
    layers = prunable_layers(model)
    if len(input_shape) < 2 or not all(isinstance(n, int) and n > 0 for n in input_shape):
        raise ValueError(f"input_shape must be positive ints [B, ...] with a batch dimension, e.g. (1, 1, 28, 28); "
                         f"got {input_shape!r}.")
    counts: dict[str, LayerMACs] = {}

    def hook(name: str):
        def count(layer: nn.Module, inputs, out: Tensor) -> None:
            W = effective(layer)
            P = out[0].numel() // W.shape[0]            # output positions per image
            dense, nonzero = counts.get(name, (0, 0))    # a layer called twice counts twice
            counts[name] = LayerMACs(dense + P * W.numel(), nonzero + P * int(W.count_nonzero()))
        return count

    def attention_hook(name: str):
        def count(mha: nn.MultiheadAttention, inputs, out) -> None:
            query, key = inputs[0], inputs[1]
            token_dim = 1 if mha.batch_first and query.dim() == 3 else 0
            L, S, E = query.shape[token_dim], key.shape[token_dim], mha.embed_dim
            if mha.in_proj_weight is not None or hasattr(mha, "in_proj_weight_orig"):
                W_q, W_k, W_v = effective(mha, "in_proj_weight").split(E)
            else:
                W_q, W_k, W_v = (effective(mha, f"{p}_proj_weight") for p in "qkv")
            W_o = effective(mha.out_proj)
            counts[f"{name}.in_proj"] = LayerMACs(L * W_q.numel() + S * (W_k.numel() + W_v.numel()),
                                                  L * int(W_q.count_nonzero())
                                                  + S * int(W_k.count_nonzero() + W_v.count_nonzero()))
            counts[f"{name}.attention"] = _attention_products(L, S, E, W_o, mha.num_heads)
            counts[f"{name}.out_proj"] = LayerMACs(L * W_o.numel(), L * int(W_o.count_nonzero()))
        return count

    def written_out_hook(name: str, layout: graph.HeadLayout):
        out_layer = model.get_submodule(layout.out.rpartition(".")[0])

        def count(module: nn.Module, inputs, out) -> None:     # its qkv and proj Linears count themselves
            T = inputs[0].shape[-2]                             # x: [B, T, E]
            counts[f"{name}.attention"] = _attention_products(T, T, layout.embed_dim, effective(out_layer),
                                                              layout.heads)
        return count

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    for name, m in model.named_modules():
        layout = None if isinstance(m, nn.MultiheadAttention) else graph.head_layout(model, name, m)
        if isinstance(m, nn.MultiheadAttention):
            handles.append(m.register_forward_hook(attention_hook(name)))
        elif layout is not None:
            handles.append(m.register_forward_hook(written_out_hook(name, layout)))
    device, dtype = _device_and_dtype(model)
    try:
        with in_mode(model, training=False), torch.no_grad():
            model(torch.zeros(input_shape, device=device, dtype=dtype))
    except RuntimeError as e:
        raise ValueError(f"{type(model).__name__} cannot run on an input of shape {tuple(input_shape)}: "
                         f"{str(e).splitlines()[0]} Pass the input_shape the model takes, or data=its images.") from e
    finally:
        for h in handles:
            h.remove()
    return MACCount(dense=sum(c.dense for c in counts.values()),
                    effective=sum(c.effective for c in counts.values()), layers=counts)


# ---------------------------------------------------------------------------------------------- bytes on disk

def _check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"Unknown encoding {encoding!r}. Known encodings: {', '.join(ENCODINGS)}."
                         f"{did_you_mean(str(encoding).lower(), ENCODINGS)}")


def _index_dtype(n_max: int) -> torch.dtype:
    """The smallest unsigned integer dtype that holds 0 .. n_max."""
    return next(d for d in (torch.uint8, torch.uint16, torch.uint32, torch.uint64) if n_max <= torch.iinfo(d).max)


def _encode_bitmask(W: Tensor) -> dict:
    """The nonzero values of W (row-major) and a 1-bit-per-weight mask, 8 weights per uint8 byte."""
    nz = W != 0
    return {"shape": list(W.shape), "values": W[nz], "mask": torch.from_numpy(np.packbits(nz.flatten().numpy()))}


def _decode_bitmask(e: dict) -> Tensor:
    shape, values = e["shape"], e["values"]
    nz = torch.from_numpy(np.unpackbits(e["mask"].numpy(), count=int(np.prod(shape))).astype(bool))
    W = torch.zeros(nz.shape, dtype=values.dtype)
    W[nz] = values
    return W.reshape(shape)


def _encode_csr(W: Tensor) -> dict:
    """Compressed sparse rows of W viewed as [out, -1]: nonzero values, their column indices, and row pointers
    (row i's entries are values[row_ptr[i]:row_ptr[i + 1]]); indices in the smallest unsigned dtype that fits."""
    W2 = W.reshape(W.shape[0], -1)
    nz = W2 != 0
    row_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), nz.sum(1).cumsum(0)])
    cols = nz.nonzero()[:, 1]
    return {"shape": list(W.shape), "values": W2[nz], "cols": cols.to(_index_dtype(W2.shape[1] - 1)),
            "row_ptr": row_ptr.to(_index_dtype(int(row_ptr[-1])))}


def _decode_csr(e: dict) -> Tensor:
    shape, values = e["shape"], e["values"]
    row_ptr = e["row_ptr"].to(torch.int64)
    rows = torch.repeat_interleave(torch.arange(shape[0]), row_ptr.diff())
    W2 = torch.zeros(shape[0], int(np.prod(shape[1:])), dtype=values.dtype)
    W2[rows, e["cols"].to(torch.int64)] = values
    return W2.reshape(shape)


_CODECS = {"bitmask": (_encode_bitmask, _decode_bitmask), "csr": (_encode_csr, _decode_csr)}


def encode_weights(model: nn.Module, encoding: Encoding) -> dict:
    """What ``file_bytes`` saves: a dict that ``torch.save`` writes and ``torch.load(weights_only=True)`` reads.

    ``"dense"``: ``effective_state_dict(model)``, an ordinary state dict. ``"bitmask"`` / ``"csr"``:
    ``{"encoding", "dense": other tensors (biases, BatchNorm, ...), "sparse": {"fc1.weight": {...}}}`` where
    every Linear / Conv2d weight is stored by ``_encode_bitmask`` or ``_encode_csr``.
    """
    _check_encoding(encoding)
    weights = {f"{name}.weight" for name in prunable_layers(model)}
    state = {k: v.cpu() for k, v in effective_state_dict(model).items()}
    if encoding == "dense":
        return state
    encode = _CODECS[encoding][0]
    return {"encoding": encoding, "dense": {k: v for k, v in state.items() if k not in weights},
            "sparse": {k: encode(v) for k, v in state.items() if k in weights}}


def decode_weights(payload: dict) -> dict[str, Tensor]:
    """The effective state dict back from ``encode_weights``'s output (exact: zeros and values bit for bit)."""
    if not isinstance(payload.get("encoding"), str):
        return dict(payload)
    decode = _CODECS[payload["encoding"]][1]
    return {**payload["dense"], **{k: decode(e) for k, e in payload["sparse"].items()}}


@dataclass(frozen=True)
class FileSize:
    """Size of a model saved with one encoding: ``bytes`` of the ``torch.save`` file, ``gzip_bytes`` of that
    file compressed with gzip (level 9). ``compression`` = bytes / gzip_bytes (x)."""
    encoding: Encoding
    bytes: int
    gzip_bytes: int

    @property
    def compression(self) -> float:
        return self.bytes / self.gzip_bytes


def _measure(payload: dict, encoding: Encoding) -> FileSize:
    """Write ``payload`` to a real file in a temporary directory, gzip it, read both sizes, delete both."""
    with temporary_path("model.pt") as path:
        torch.save(payload, path)
        with open(path, "rb") as src, open(path.with_suffix(".pt.gz"), "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as dst:
            shutil.copyfileobj(src, dst)
        return FileSize(encoding, path.stat().st_size, path.with_suffix(".pt.gz").stat().st_size)


def file_bytes(model: nn.Module, encoding: Encoding = "dense", *, compress: bool = False) -> int:
    """Bytes of a real file holding the model's effective weights in ``encoding`` (see ``encode_weights``),
    or, with ``compress``, of that file gzip-compressed. The files are deleted afterwards."""
    size = _measure(encode_weights(model, encoding), encoding)
    return size.gzip_bytes if compress else size.bytes


def size_report(model: nn.Module) -> dict[str, FileSize]:
    """``{encoding: FileSize}`` for every encoding: ``"dense"``, ``"bitmask"``, ``"csr"``."""
    return {encoding: _measure(encode_weights(model, encoding), encoding) for encoding in ENCODINGS}


# ---------------------------------------------------------------------------------------------- latency

@dataclass(frozen=True)
class LatencyResult:
    """Wall-clock time of one forward pass of a batch, in milliseconds: ``median_ms``, ``p90_ms`` (90th
    percentile), ``min_ms``, over ``repeats`` timed runs of a batch of ``batch_size``; ``times_ms`` all of them."""
    median_ms: float
    p90_ms: float
    min_ms: float
    repeats: int
    batch_size: int
    times_ms: tuple[float, ...]

    @property
    def images_per_s(self) -> float:
        return self.batch_size / (self.median_ms / 1000)

    @property
    def p10_ms(self) -> float:
        """10th percentile: with ``p90_ms``, the spread of the middle 80% of the runs."""
        return float(np.percentile(self.times_ms, 10))

    def describe(self) -> str:
        """"12.34 ms (p10–p90 12.10–13.02 ms, 20 runs)": the median with its spread, for a readout."""
        return f"{self.median_ms:.2f} ms (p10–p90 {self.p10_ms:.2f}–{self.p90_ms:.2f} ms, {self.repeats} runs)"


def _check_repeats(repeats: int, warmup: int) -> None:
    if not (isinstance(repeats, int) and repeats >= 1):
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}.")
    if not (isinstance(warmup, int) and warmup >= 0):
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}.")


def time_calls(run: Callable[[], object], batch_size: int, *, repeats: int = 20, warmup: int = 3) -> LatencyResult:
    """Time ``run()``, one forward pass of a batch of ``batch_size``, with ``time.perf_counter``: ``warmup`` untimed
    calls, then ``repeats`` timed ones, summarised as a ``LatencyResult`` (median, 90th percentile, minimum).

    The statistics of every latency in the kit: ``measure_latency`` (PyTorch) and ``export.onnx_latency`` (ONNX
    Runtime) both time through here. ``run`` must return only when its work is done (synchronise a GPU in it).
    """
    _check_repeats(repeats, warmup)
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        run()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    t = np.array(times)
    return LatencyResult(float(np.median(t)), float(np.percentile(t, 90)), float(t.min()), repeats, batch_size,
                         tuple(times))


def measure_latency(model: nn.Module, x: Tensor | None = None, *, data: Data | None = None, repeats: int = 20,
                    warmup: int = 3) -> LatencyResult:
    """Time ``model(x)`` with ``time_calls``: ``warmup`` untimed runs, then ``repeats`` timed ones.

    ``x`` defaults to the first 256 images of ``data`` (normalised), else a batch of 256 random images
    [256, 1, 28, 28] (fixed seed; the global random state is not touched). Runs on the model's device (the CPU
    in the kit) under ``torch.inference_mode`` in eval mode, and puts every submodule back in the mode it was in.
    """
    _check_repeats(repeats, warmup)
    device, dtype = _device_and_dtype(model)
    if x is None and data is not None:
        x = as_image_set(data, "measure_latency").normalized(device)[:256].to(dtype)
    elif x is None:
        x = torch.randn(256, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    elif not isinstance(x, Tensor):
        raise TypeError(f"x must be a Tensor [B, ...] (e.g. [256, 1, 28, 28]), got {type(x).__name__}.")
    try:
        with in_mode(model, training=False), torch.inference_mode():
            model(x[:1])
    except RuntimeError as e:
        raise ValueError(f"{type(model).__name__} cannot run on a batch of shape {list(x.shape)}: "
                         f"{str(e).splitlines()[0]} Pass x= a batch it takes, or data=its images.") from e

    def run() -> None:
        model(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)             # the work done, not only queued

    with in_mode(model, training=False), torch.inference_mode():
        return time_calls(run, x.shape[0] if x.dim() else 1, repeats=repeats, warmup=warmup)
