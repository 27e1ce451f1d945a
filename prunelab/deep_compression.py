"""Deep Compression (Han et al. 2016): prune → share weights → Huffman-code, each stage measured on a real file.

| step            | what it stores for each Linear / Conv2d weight W                     | function        |
|-----------------|-----------------------------------------------------------------------|-----------------|
| (a) dense       | every weight, float32 (a ``torch.save`` state dict)                  | ``dense_step``  |
| (b) pruned      | relative indices of the nonzeros, b bits each, and their float32 values | ``prune_step`` |
| (c) shared      | the same indices, k-bit codebook indices idx and a codebook C [2^k]  | ``share_step``  |
| (d) Huffman     | both integer streams Huffman-coded                                    | ``huffman_step``|

Each step works on a copy and returns the model and a ``StageRecord``: the bytes of the file it wrote, and the
test accuracy of the model *loaded back from that file*. ``compression_table`` lines them up.

The file (``save_compressed`` / ``load_compressed``) is the 4 bytes ``PLDC``, the length of a JSON header
(uint32, little-endian), the header, then the byte blocks it describes, in order. A weight is stored sparse:
the gaps of ``encoding.relative_indices`` (fillers included) and, at those positions, either float32 values
or codebook indices idx with W = C[idx]; positions not stored are 0 (or C[0], the zero centroid). Each
integer stream is ``"packed"`` (``quantization.pack_bits``) or ``"huffman"`` (a uint8 code length per
symbol, then the canonical code). Biases and other tensors are stored raw, little-endian. Decoding rebuilds
the effective weights bit for bit.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import struct
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from . import masks as M
from . import metrics
from . import weight_sharing as WS
from .checkpoints import CheckpointError, checkpoint_dir, load_pretrained
from .data import ImageSet, load_fashion_mnist, sha256_of
from .encoding import absolute_indices, huffman_code_lengths, huffman_decode, huffman_encode, relative_indices
from .models import build_model
from .pruning import select_layers
from .quantization import check_bits, effective_weight, pack_bits, unpack_bits
from .schedules import iterative_pruning, iterative_sparsities
from .thresholds import check_sparsity
from .training import evaluate

__all__ = ["Coding", "StageRecord", "save_compressed", "read_header", "read_compressed", "load_compressed",
           "compressed_file_bytes", "dense_step", "prune_step", "share_step", "huffman_step", "compression_table",
           "Recipe", "LENET300", "run_pipeline", "compressed_checkpoint_path", "compressed_checkpoint_info",
           "load_compressed_checkpoint"]

Coding = Literal["packed", "huffman"]
_FORMAT = "prunelab.deep_compression/1"
_MAGIC = b"PLDC"


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


def _per_layer(value, names: list[str], what: str) -> dict:
    """``{layer: value}`` from one value or a mapping (layers missing from the mapping get None)."""
    if isinstance(value, Mapping):
        unknown = set(value) - set(names)
        if unknown:
            raise ValueError(f"{what} given for unknown layer(s) {sorted(unknown)}; layers: {', '.join(names)}.")
        return {n: value.get(n) for n in names}
    return {n: value for n in names}


def _check_codebooks(model: nn.Module, codebooks: Mapping[str, WS.Codebook]) -> None:
    layers = select_layers(model, list(codebooks)) if codebooks else {}
    for name, book in codebooks.items():
        W = effective_weight(layers[name]).cpu()
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
    bits = _per_layer(index_bits, layers, "index_bits")
    for name, b in bits.items():
        if b is not None:
            check_bits(b)
    state = metrics.effective_state_dict(model)
    tensors, blobs = {}, []
    for key, value in state.items():
        name = key.removesuffix(".weight")
        if key.endswith(".weight") and name in layers:
            entry, data = _best_sparse(value, codebooks.get(name), bits[name], coding)
        else:
            entry, data = _raw(value)
        entry["nbytes"] = [len(d) for d in data]
        tensors[key], blobs = entry, blobs + data
    header = json.dumps({"format": _FORMAT, "coding": coding, "tensors": tensors}, separators=(",", ":")).encode()
    return _MAGIC + struct.pack("<I", len(header)) + header + b"".join(blobs)


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
    if data[:4] != _MAGIC or len(data) < 8:
        raise ValueError("Not a prunelab deep-compression file (it does not start with b'PLDC'); write one with "
                         "prunelab.deep_compression.save_compressed.")
    (n,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8:8 + n])
    if header.get("format") != _FORMAT:
        raise ValueError(f"Unknown deep-compression format {header.get('format')!r}; this prunelab reads {_FORMAT!r}.")
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


def _check_fits(model: nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    if M.masked_parameters(model):
        raise ValueError(f"{what} loads effective weights into an unmasked model; build a fresh one "
                         "(prunelab.build_model) or commit the masks first (prunelab.masks.commit).")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        diff = sorted(set(expected.items()) ^ set(got.items()))[:4]
        raise ValueError(f"The file does not fit this {type(model).__name__} (differences in key: shape, e.g. "
                         f"{diff}); build the architecture it was saved from.")


def load_compressed(path: str | Path, model: nn.Module) -> nn.Module:
    """Load a ``save_compressed`` file into ``model`` (unmasked, same architecture), in place; returns it.
    The file is checked against the model before anything is copied."""
    state = read_compressed(path)
    _check_fits(model, state, "load_compressed")
    model.load_state_dict(state)
    return model


def compressed_file_bytes(model: nn.Module, codebooks: Mapping[str, WS.Codebook] | None = None, *,
                          coding: Coding = "huffman", index_bits: int | Mapping[str, int] | None = None) -> int:
    """Bytes of a real ``save_compressed`` file, written to a temporary directory and deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="prunelab-") as tmp:
        return save_compressed(model, codebooks, Path(tmp) / "model.plc", coding=coding,
                               index_bits=index_bits).stat().st_size


# ---------------------------------------------------------------------------------------------- the steps

@dataclass(frozen=True)
class StageRecord:
    """One stage measured on its file: ``bytes`` on disk, test ``accuracy`` (fraction) of the model loaded back
    from the file, ``weights_left`` (nonzero Linear / Conv2d weights over all of them), ``file`` (what it holds)
    and ``details`` (settings and figures of the step, e.g. the prune rounds)."""
    stage: str
    file: str
    bytes: int
    accuracy: float
    weights_left: float
    details: dict = field(default_factory=dict)


def _unmasked_copy(model: nn.Module) -> nn.Module:
    return M.reset(M.copy_model(model)).cpu()


def _measure(stage: str, file: str, model: nn.Module, write: Callable[[Path], None],
             read: Callable[[Path, nn.Module], nn.Module], test_data: ImageSet,
             details: dict | None = None) -> tuple[nn.Module, StageRecord]:
    """Write the stage's file, load it into a fresh unmasked copy of ``model``, and evaluate that copy."""
    with tempfile.TemporaryDirectory(prefix="prunelab-") as tmp:
        path = Path(tmp) / "model"
        write(path)
        loaded = read(path, _unmasked_copy(model)).eval()
        size = path.stat().st_size
    record = StageRecord(stage, file, size, evaluate(loaded, test_data).accuracy,
                         1 - metrics.global_sparsity(loaded), details or {})
    return loaded, record


def _save_dense(model: nn.Module, path: Path) -> None:
    torch.save(metrics.encode_weights(model, "dense"), path)


def _load_dense(path: Path, model: nn.Module) -> nn.Module:
    model.load_state_dict(metrics.decode_weights(torch.load(path, map_location="cpu", weights_only=True)))
    return model


def dense_step(model: nn.Module, test_data: ImageSet) -> tuple[nn.Module, StageRecord]:
    """(a) The reference: the effective state dict, float32, as a ``torch.save`` file (``metrics.encode_weights``
    ``"dense"``). Returns the model loaded back from the file and its record."""
    return _measure("dense", "torch.save state dict, float32", model, lambda p: _save_dense(model, p),
                    _load_dense, test_data)


def _schedule(sparsity: float | Mapping[str, float], rounds: int) -> list:
    """Per round, the sparsity (or ``{layer: s}``) of equal-ratio rounds s_k = 1 − (1 − s)^(k/R) per layer."""
    if isinstance(sparsity, Mapping):
        per_layer = {name: iterative_sparsities(check_sparsity(s, f"sparsity of {name!r}"), rounds)
                     for name, s in sparsity.items()}
        return [{name: s[k] for name, s in per_layer.items()} for k in range(rounds)]
    return iterative_sparsities(check_sparsity(sparsity), rounds)


def prune_step(model: nn.Module, train_data: ImageSet, test_data: ImageSet, sparsity: float | Mapping[str, float],
               *, rounds: int = 12, epochs_per_round: int = 3, lr: float = 0.01, weight_decay: float = 5e-4,
               seed: int = 0, index_bits: int | Mapping[str, int] | None = None) -> tuple[nn.Module, StageRecord]:
    """(b) Iterative magnitude pruning of a copy of ``model`` (``schedules.iterative_pruning``): ``rounds``
    equal-ratio rounds to ``sparsity`` (fraction removed, one number or ``{layer: s}``), each fine-tuned for
    ``epochs_per_round`` epochs. Stored with relative indices (``index_bits``) and float32 values, packed.

    Returns the pruned copy (masked) and the record; ``details["rounds"]`` holds the ``PruneStep`` of each round.
    """
    if isinstance(sparsity, Mapping):
        select_layers(model, list(sparsity))
    schedule = _schedule(sparsity, rounds)
    pruned = M.copy_model(model)
    history = iterative_pruning(pruned, train_data, test_data, schedule, epochs_per_round=epochs_per_round, lr=lr,
                                weight_decay=weight_decay, seed=seed)
    details = {"sparsity": sparsity, "rounds": history}
    _, record = _measure("pruned", "relative indices (packed) + float32 values", pruned,
                         lambda p: save_compressed(pruned, None, p, coding="packed", index_bits=index_bits),
                         load_compressed, test_data, details)
    return pruned, record


def share_step(model: nn.Module, train_data: ImageSet, test_data: ImageSet, bits: int | Mapping[str, int], *,
               epochs: int = 1, lr: float = 1e-5, init: WS.Init = "linear", seed: int = 0,
               index_bits: int | Mapping[str, int] | None = None
               ) -> tuple[nn.Module, dict[str, WS.Codebook], StageRecord]:
    """(c) Weight sharing of a copy of ``model`` (``weight_sharing.share_weights``) with ``bits`` per layer (one
    number or ``{layer: bits}``; layers left out stay float32), then ``epochs`` of centroid fine-tuning
    (``fine_tune_centroids``, 0 for none). Stored as packed relative indices and k-bit codebook indices.

    Returns the shared copy, its codebooks and the record (``details["accuracy_before_tuning"]``).
    """
    names = list(M.prunable_layers(model))
    per_layer = {n: b for n, b in _per_layer(bits, names, "bits").items() if b is not None}
    if not per_layer:
        raise ValueError(f"bits names no layer to share; give one number or {{layer: bits}} for {', '.join(names)}.")
    for b in per_layer.values():
        check_bits(b)
    if not (isinstance(epochs, int) and epochs >= 0):
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}.")
    shared, books = model, {}
    for b in sorted(set(per_layer.values())):                 # share_weights takes one bits value per call
        shared, new = WS.share_weights(shared, b, [n for n in names if per_layer.get(n) == b], init=init, seed=seed)
        books.update(new)
    before = evaluate(shared, test_data).accuracy
    if epochs:
        books = WS.fine_tune_centroids(shared, books, train_data, epochs=epochs, lr=lr, seed=seed)
    details = {"bits": per_layer, "accuracy_before_tuning": before, "tune_epochs": epochs}
    _, record = _measure("shared", "relative indices + codebook indices (packed) + codebooks", shared,
                         lambda p: save_compressed(shared, books, p, coding="packed", index_bits=index_bits),
                         load_compressed, test_data, details)
    return shared, {n: books[n] for n in names if n in books}, record


def huffman_step(model: nn.Module, codebooks: Mapping[str, WS.Codebook] | None, test_data: ImageSet, *,
                 index_bits: int | Mapping[str, int] | None = None) -> tuple[nn.Module, StageRecord]:
    """(d) The same model with its relative indices and codebook indices Huffman-coded. Returns the model loaded
    back from the file (unmasked) and the record."""
    return _measure("huffman", "Huffman-coded relative indices + codebook indices + codebooks", model,
                    lambda p: save_compressed(model, codebooks, p, coding="huffman", index_bits=index_bits),
                    load_compressed, test_data)


def compression_table(records: list[StageRecord]) -> str:
    """A text table of the stages: bytes, x smaller than the first record, accuracy and its change (points)."""
    if not records:
        raise ValueError("compression_table needs at least one StageRecord (the first is the reference).")
    ref = records[0]
    lines = [f"{'stage':<9} {'bytes':>11} {'x smaller':>9} {'weights':>8} {'accuracy':>9} {'change':>8}  file"]
    for r in records:
        lines.append(f"{r.stage:<9} {r.bytes:11,d} {ref.bytes / r.bytes:9.1f} {r.weights_left:8.2%} "
                     f"{r.accuracy:9.2%} {100 * (r.accuracy - ref.accuracy):+6.2f}pt  {r.file}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- the pipeline

@dataclass(frozen=True)
class Recipe:
    """Settings of the whole pipeline: final ``sparsity`` per layer (fraction removed) reached in ``rounds``
    rounds of ``epochs_per_round`` fine-tuning epochs at ``prune_lr``; codebook ``bits`` per layer; ``tune_epochs``
    of centroid fine-tuning at ``tune_lr``; one ``seed`` for everything."""
    sparsity: Mapping[str, float]
    rounds: int
    epochs_per_round: int
    prune_lr: float
    bits: Mapping[str, int]
    tune_epochs: int
    tune_lr: float
    seed: int = 0


#: LeNet-300-100: Han et al.'s per-layer proportions with fc1 (88% of the weights) pruned a little harder, 94% instead
#: of 92% (6.4% of the weights left); 5-bit codebooks for fc1 and fc2, 6 bits for fc3. See
#: benches/bench_deep_compression.py for what it gives.
LENET300 = Recipe(sparsity={"fc1": 0.94, "fc2": 0.91, "fc3": 0.74}, rounds=12, epochs_per_round=3, prune_lr=0.01,
                  bits={"fc1": 5, "fc2": 5, "fc3": 6}, tune_epochs=1, tune_lr=1e-5)


def run_pipeline(model: nn.Module, train_data: ImageSet, test_data: ImageSet, recipe: Recipe
                 ) -> tuple[nn.Module, dict[str, WS.Codebook], list[StageRecord]]:
    """Steps (a) to (d) with ``recipe`` on a copy of ``model``: returns the shared (masked) model, its codebooks
    and the four records."""
    _, dense = dense_step(model, test_data)
    pruned, pruned_record = prune_step(model, train_data, test_data, recipe.sparsity, rounds=recipe.rounds,
                                       epochs_per_round=recipe.epochs_per_round, lr=recipe.prune_lr,
                                       seed=recipe.seed)
    shared, books, shared_record = share_step(pruned, train_data, test_data, recipe.bits, epochs=recipe.tune_epochs,
                                              lr=recipe.tune_lr, seed=recipe.seed)
    _, huffman = huffman_step(shared, books, test_data)
    return shared, books, [dense, pruned_record, shared_record, huffman]


# ---------------------------------------------------------------------------------------------- the artefact

def compressed_checkpoint_path(name: str = "lenet300") -> Path:
    """``<data root>/checkpoints/deep_compression/<name>.plc`` (its JSON sidecar: the same name, ``.json``)."""
    return checkpoint_dir() / "deep_compression" / f"{name}.plc"


def compressed_checkpoint_info(name: str = "lenet300") -> dict:
    """The sidecar of a committed deep-compression file: recipe, bytes and accuracy per stage, SHA-256."""
    path = compressed_checkpoint_path(name).with_suffix(".json")
    if not path.is_file():
        raise CheckpointError(f"No deep-compression file named {name!r} ({path} is missing); write it with "
                              "`python -m prunelab.deep_compression --write`.")
    return json.loads(path.read_text())


def load_compressed_checkpoint(name: str = "lenet300", *, verify: bool = True) -> nn.Module:
    """The committed pruned + shared model ``name``, rebuilt from its file, unmasked, in eval mode (seconds)."""
    info = compressed_checkpoint_info(name)
    path = compressed_checkpoint_path(name)
    if verify and (not path.is_file() or sha256_of(path) != info["sha256"]):
        raise CheckpointError(f"{path} is missing or differs from the SHA-256 in its sidecar; restore it with "
                              f"`git checkout -- data/checkpoints/deep_compression/{path.name}` or re-create it "
                              "with `python -m prunelab.deep_compression --write`.")
    return load_compressed(path, build_model(info["arch"])).eval()


def _write_artefact(path: Path) -> None:
    train_data, test_data = load_fashion_mnist("train"), load_fashion_mnist("test")
    start = time.perf_counter()
    shared, books, records = run_pipeline(load_pretrained("lenet300"), train_data, test_data, LENET300)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_compressed(shared, books, path)
    loaded = load_compressed(path, _unmasked_copy(shared))
    result = evaluate(loaded, test_data)
    print(compression_table(records))
    info = {"name": path.stem, "arch": "lenet300", "file": path.name, "sha256": sha256_of(path),
            "bytes": path.stat().st_size, "test_accuracy": result.accuracy, "test_correct": result.correct,
            "test_total": result.total, "recipe": asdict(LENET300),
            "stages": [{"stage": r.stage, "file": r.file, "bytes": r.bytes, "accuracy": r.accuracy,
                        "weights_left": round(r.weights_left, 6)} for r in records],
            "torch": torch.__version__.split("+")[0], "threads": torch.get_num_threads(),
            "python": platform.python_version(), "seconds": round(time.perf_counter() - start),
            "command": "python -m prunelab.deep_compression --write"}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {path} ({info['bytes']:,d} bytes, test accuracy {result.accuracy:.2%}) and its .json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Deep Compression of LeNet-300-100 with the fixed LENET300 recipe.")
    parser.add_argument("--write", nargs="?", const=str(compressed_checkpoint_path()), metavar="PATH",
                        help="run the pipeline and write the compressed file (default: %(const)s) and its .json")
    args = parser.parse_args(argv)
    if args.write is None:
        parser.error("nothing to do: pass --write [PATH]")
    _write_artefact(Path(args.write))


if __name__ == "__main__":
    main()
