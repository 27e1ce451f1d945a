"""The Deep Compression file: a pruned (and weight-shared) model's effective weights in as few bytes as it takes.

The file (``save_compressed`` / ``load_compressed``) is the 4 bytes ``PLDC``, the length of a JSON header
(uint32, little-endian), the header, then the byte blocks it describes, in order. A weight is stored sparse:
the gaps of ``encoding.relative_indices`` (fillers included) and, at those positions, either float32 values
or codebook indices idx with W = C[idx]; positions not stored are 0 (or C[0], the zero centroid). Each
integer stream is ``"packed"`` (``quantization.pack_bits``) or ``"huffman"`` (a uint8 code length per
symbol, then the canonical code). Biases and other tensors are stored raw, little-endian. Decoding rebuilds
the effective weights bit for bit. ``prunelab.deep_compression`` is the pipeline that writes such files.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from . import masks as M
from . import weight_sharing as WS
from ._helpers import per_layer, select_layers, temporary_path
from .encoding import absolute_indices, huffman_code_lengths, huffman_decode, huffman_encode, relative_indices
from .quantization import check_bits, pack_bits, unpack_bits

__all__ = ["Coding", "FORMAT", "MAGIC", "save_compressed", "read_header", "read_compressed", "load_compressed",
           "compressed_file_bytes"]

Coding = Literal["packed", "huffman"]
FORMAT = "prunelab.deep_compression/1"     # the header's "format"
MAGIC = b"PLDC"       # the first 4 bytes of every such file


# ---------------------------------------------------------------------------------------------- integer streams

def _write_stream(symbols: np.ndarray, bits: int, coding: Coding) -> tuple[dict, bytes]:
    """One integer stream (values < 2^bits): ``bits`` bits each, or a Huffman length table plus the code."""
    if coding == "packed":
        blob = pack_bits(torch.from_numpy(symbols), bits).numpy().tobytes()
        return {"coding": "packed", "bits": bits}, blob
    lengths = huffman_code_lengths(np.bincount(symbols, minlength=1))
    blob = lengths.tobytes() + huffman_encode(symbols, lengths)
    return {"coding": "huffman", "symbols": len(lengths)}, blob


def _read_stream(meta: dict, blob: bytes, count: int) -> np.ndarray:
    if meta["coding"] == "packed":
        packed = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
        return unpack_bits(packed, meta["bits"], count).numpy().astype(np.int64)
    k = meta["symbols"]
    return huffman_decode(blob[k:], np.frombuffer(blob[:k], dtype=np.uint8), count)


# ---------------------------------------------------------------------------------------------- one tensor

def _raw(t: Tensor) -> tuple[dict, list[bytes]]:
    blob = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return {"kind": "raw", "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}, [blob]


def _sparse(W: Tensor, book: WS.Codebook | None, index_bits: int, coding: Coding) -> tuple[dict, list[bytes]]:
    """W [shape] stored by relative indices of its nonzeros (of idx ≠ 0 with a codebook) and their values."""
    flat = (book.indices if book is not None else W).detach().cpu().reshape(-1)
    gaps, positions = relative_indices((flat != 0).numpy(), index_bits)
    positions = torch.from_numpy(positions)
    gap_meta, gap_blob = _write_stream(gaps, index_bits, coding)
    entry = {"kind": "sparse", "shape": list(W.shape), "entries": len(gaps), "gaps": gap_meta}
    if book is None:                                           # float32 values, fillers store 0.0
        return {**entry, "values": {"coding": "float32"}}, [gap_blob, flat.float()[positions].numpy().tobytes()]
    K = book.centroids.numel()
    code_meta, code_blob = _write_stream(flat[positions].numpy(), max(1, (K - 1).bit_length()), coding)
    return {**entry, "codebook": K, "values": code_meta}, [gap_blob, book.centroids.float().numpy().tobytes(),
                                                          code_blob]


def _best_sparse(W, book, index_bits: int | None, coding: Coding) -> tuple[dict, list[bytes]]:
    """``_sparse`` with ``index_bits``, or with the b in 1..8 that gives the fewest bytes (ties: smallest b)."""
    candidates = [index_bits] if index_bits is not None else list(range(1, 9))
    encoded = [_sparse(W, book, b, coding) for b in candidates]
    best = int(np.argmin([sum(map(len, blobs)) for _, blobs in encoded]))
    entry, blobs = encoded[best]
    return {**entry, "index_bits": candidates[best]}, blobs


# ---------------------------------------------------------------------------------------------- the file

def _check_coding(coding: str) -> None:
    if coding not in ("packed", "huffman"):
        raise ValueError(f"coding must be 'packed' (k bits per integer) or 'huffman', got {coding!r}.")


def _check_codebooks(model: nn.Module, codebooks: Mapping[str, WS.Codebook]) -> None:
    layers = select_layers(model, list(codebooks)) if codebooks else {}
    for name, book in codebooks.items():
        W = M.effective(layers[name]).cpu()
        C, idx = book
        if idx.shape != W.shape or idx.dtype not in (torch.int64, torch.int32) or not torch.equal(C[idx], W):
            raise ValueError(f"The weights of {name!r} are not its codebook's C[idx]; pass the model and the "
                             "codebooks that share_weights (or share_step) returned together.")


def _encode(model: nn.Module, codebooks: Mapping[str, WS.Codebook] | None, coding: Coding,
            index_bits: int | Mapping[str, int] | None) -> bytes:
    _check_coding(coding)
    codebooks = dict(codebooks or {})
    _check_codebooks(model, codebooks)
    layers = list(M.prunable_layers(model))
    bits = per_layer(index_bits, layers, "index_bits")
    for name, b in bits.items():
        if b is not None:
            check_bits(b)
    state = M.effective_state_dict(model)
    tensors, blobs = {}, []
    for key, value in state.items():
        name = key.removesuffix(".weight")
        if key.endswith(".weight") and name in layers:
            entry, data = _best_sparse(value, codebooks.get(name), bits[name], coding)
        else:
            entry, data = _raw(value)
        entry["nbytes"] = [len(d) for d in data]
        tensors[key], blobs = entry, blobs + data
    header = json.dumps({"format": FORMAT, "coding": coding, "tensors": tensors}, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + b"".join(blobs)


def save_compressed(model: nn.Module, codebooks: Mapping[str, WS.Codebook] | None, path: str | Path, *,
                    coding: Coding = "huffman", index_bits: int | Mapping[str, int] | None = None) -> Path:
    """Write the model's effective weights to ``path`` (see the module docstring); returns the path.

    ``codebooks`` ``{layer: Codebook}`` (from ``share_weights`` / ``share_step``, matching the model's weights
    exactly) store those layers as codebook indices; other Linear / Conv2d weights are stored sparse with
    float32 values; None: no codebooks. ``index_bits``: bits b of the relative indices, one for all layers or
    ``{layer: b}``, 1 to 8; None (or a layer left out) picks, per layer, the b giving the smallest file.
    """
    data = _encode(model, codebooks, coding, index_bits)
    Path(path).write_bytes(data)
    return Path(path)


def _split_file(data: bytes) -> tuple[dict, bytes]:
    if data[:4] != MAGIC or len(data) < 8:
        raise ValueError("Not a prunelab deep-compression file (it does not start with b'PLDC'); write one with "
                         "prunelab.compressed_file.save_compressed.")
    (n,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8:8 + n])
    if header.get("format") != FORMAT:
        raise ValueError(f"Unknown deep-compression format {header.get('format')!r}; this prunelab reads {FORMAT!r}.")
    return header, data[8 + n:]


def read_header(path: str | Path) -> dict:
    """The JSON header of a ``save_compressed`` file: coding and, per tensor, how it is stored and its bytes."""
    return _split_file(Path(path).read_bytes())[0]


def _decode_entry(entry: dict, blobs: list[bytes]) -> Tensor:
    shape = entry["shape"]
    if entry["kind"] == "raw":
        return torch.frombuffer(bytearray(blobs[0]), dtype=getattr(torch, entry["dtype"])).reshape(shape)
    m = entry["entries"]
    positions = absolute_indices(_read_stream(entry["gaps"], blobs[0], m))
    if m and positions[-1] >= math.prod(shape):
        raise ValueError(f"Corrupt file: a relative index points past the end of a weight of shape {shape}.")
    if "codebook" not in entry:
        W = np.zeros(math.prod(shape), dtype=np.float32)
        W[positions] = np.frombuffer(blobs[1], dtype=np.float32)
        return torch.from_numpy(W).reshape(shape)
    C = torch.frombuffer(bytearray(blobs[1]), dtype=torch.float32)
    idx = np.zeros(math.prod(shape), dtype=np.int64)
    idx[positions] = _read_stream(entry["values"], blobs[2], m)
    return C[torch.from_numpy(idx)].reshape(shape)


def read_compressed(path: str | Path) -> dict[str, Tensor]:
    """The effective state dict stored in a ``save_compressed`` file (weights C[idx] or sparse float32)."""
    header, payload = _split_file(Path(path).read_bytes())
    described = sum(sum(entry["nbytes"]) for entry in header["tensors"].values())
    if described != len(payload):
        raise ValueError(f"Corrupt file: its header describes {described} bytes of data, it holds {len(payload)}.")
    state, start = {}, 0
    for key, entry in header["tensors"].items():
        blobs = []
        for n in entry["nbytes"]:
            blobs.append(payload[start:start + n])
            start += n
        state[key] = _decode_entry(entry, blobs)
    return state


def load_compressed(path: str | Path, model: nn.Module) -> nn.Module:
    """Load a ``save_compressed`` file into ``model`` (unmasked, same architecture), in place; returns it.
    The file is checked against the model before anything is copied."""
    return M.load_effective_state_dict(model, read_compressed(path), what="load_compressed")


def compressed_file_bytes(model: nn.Module, codebooks: Mapping[str, WS.Codebook] | None = None, *,
                          coding: Coding = "huffman", index_bits: int | Mapping[str, int] | None = None) -> int:
    """Bytes of a real ``save_compressed`` file, written to a temporary directory and deleted afterwards."""
    with temporary_path("model.plc") as path:
        return save_compressed(model, codebooks, path, coding=coding, index_bits=index_bits).stat().st_size
