"""Deep Compression (Han et al. 2016): prune → share weights → Huffman-code, each stage measured on a real file.

| step            | what it stores for each Linear / Conv2d weight W                     | function        |
|-----------------|-----------------------------------------------------------------------|-----------------|
| (a) dense       | every weight, float32 (a ``torch.save`` state dict)                  | ``dense_step``  |
| (b) pruned      | relative indices of the nonzeros, b bits each, and their float32 values | ``prune_step`` |
| (c) shared      | the same indices, k-bit codebook indices idx and a codebook C [2^k]  | ``share_step``  |
| (d) Huffman     | both integer streams Huffman-coded                                    | ``huffman_step``|

Each step works on a copy and returns the model and a ``StageRecord``: the bytes of the file it wrote, and the
accuracy of the model *loaded back from that file*. ``compression_table`` lines them up. The files of (b) to (d)
are ``prunelab.compressed_file``'s format; ``LENET300`` is the recipe of the committed file, which
``python -m prunelab.deep_compression --write`` makes.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import masks as M
from . import metrics
from . import weight_sharing as WS
from ._helpers import per_layer, select_layers, temporary_path
from .checkpoints import CheckpointError, checkpoint_dir, load_pretrained
from .compressed_file import load_compressed, save_compressed
from .data import Data, ImageSet, as_image_set, load_fashion_mnist, sha256_of
from .models import build_model
from .quantization import check_bits
from .schedules import iterative_pruning, iterative_sparsities
from .thresholds import check_sparsity
from .training import evaluate

__all__ = ["StageRecord", "dense_step", "prune_step", "share_step", "huffman_step", "compression_table", "Recipe",
           "LENET300", "run_pipeline", "compressed_checkpoint_path", "compressed_checkpoint_info",
           "load_compressed_checkpoint"]


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
    with temporary_path("model") as path:
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
        by_layer = {name: iterative_sparsities(check_sparsity(s, f"sparsity of {name!r}"), rounds)
                    for name, s in sparsity.items()}
        return [{name: s[k] for name, s in by_layer.items()} for k in range(rounds)]
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
    layer_bits = {n: b for n, b in per_layer(bits, names, "bits").items() if b is not None}
    if not layer_bits:
        raise ValueError(f"bits names no layer to share; give one number or {{layer: bits}} for {', '.join(names)}.")
    for b in layer_bits.values():
        check_bits(b)
    if not (isinstance(epochs, int) and epochs >= 0):
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}.")
    shared, books = model, {}
    for b in sorted(set(layer_bits.values())):                 # share_weights takes one bits value per call
        shared, new = WS.share_weights(shared, b, [n for n in names if layer_bits.get(n) == b], init=init, seed=seed)
        books.update(new)
    before = evaluate(shared, test_data).accuracy
    if epochs:
        books = WS.fine_tune_centroids(shared, books, train_data, epochs=epochs, lr=lr, seed=seed)
    details = {"bits": layer_bits, "accuracy_before_tuning": before, "tune_epochs": epochs}
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


#: LeNet-300-100: Han et al.'s proportions for fc2 and fc3 (91%, 74% removed), fc1 (88% of the weights) pruned to 98%;
#: 4-bit codebooks for fc1 and fc2, 6 bits for fc3. Chosen on the validation split by
#: benches/bench_deep_compression_recipe.py (the smallest of 20 recipes within 0.8 points of the dense validation
#: accuracy); benches/bench_deep_compression.py reports what it gives on the test set.
LENET300 = Recipe(sparsity={"fc1": 0.98, "fc2": 0.91, "fc3": 0.74}, rounds=12, epochs_per_round=3, prune_lr=0.01,
                  bits={"fc1": 4, "fc2": 4, "fc3": 6}, tune_epochs=1, tune_lr=1e-5)


def run_pipeline(model: nn.Module, train_data: Data, test_data: Data, recipe: Recipe
                 ) -> tuple[nn.Module, dict[str, WS.Codebook], list[StageRecord]]:
    """Steps (a) to (d) with ``recipe`` on a copy of ``model``: returns the shared (masked) model, its codebooks
    and the four records."""
    train_data = as_image_set(train_data, "run_pipeline's train_data", "prunelab.load_fashion_mnist('train')")
    test_data = as_image_set(test_data, "run_pipeline's test_data")
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
