"""Weight sharing by k-means, as in Deep Compression (Han et al. 2016): W_i = C[idx_i].

Each layer's weights are clustered into K = 2^bits values, the codebook C [K]; a weight is stored as the
``bits``-bit index idx_i of its centroid. k-means is 1-D (Lloyd's algorithm on the weight values) and starts
from ``init``: ``"linear"`` (K values evenly spaced between min and max: the paper's best, because it keeps
a few large weights), ``"density"`` (evenly spaced quantiles of the weights) or ``"random"`` (K distinct
weights drawn with ``seed``). Everything is deterministic.

Pruned zeros are kept as exact zeros and not clustered: when W has exact zeros, C[0] = 0.0 is reserved for
them and the nonzero weights are clustered into the other K − 1 centroids. A centroid at exactly 0.0 is never
trained, so pruned weights stay zero through fine-tuning.

Fine-tuning trains only the centroids. Since W_i = C[idx_i], the chain rule gives
∂L/∂C_k = Σ_{i: idx_i = k} ∂L/∂W_i (``centroid_gradient``): the weights stay tied to their cluster.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import masks as M
from .data import Data, as_image_set
from ._helpers import in_mode, select_layers, temporary_path
from .quantization import check_bits, pack_bits, unpack_bits
from .training import model_device

__all__ = ["FORMAT", "Init", "Codebook", "initial_centroids", "assign", "kmeans_codebook", "share_weights",
           "centroid_gradient", "fine_tune_centroids", "encode_shared", "decode_shared", "save_shared",
           "load_shared", "shared_file_bytes"]

Init = Literal["linear", "random", "density"]
FORMAT = "prunelab.shared/1"     # the file's "format" entry


class Codebook(NamedTuple):
    """A shared layer: ``centroids`` C float32 [2^bits] and ``indices`` idx int64 [W.shape]; W = C[idx]."""
    centroids: Tensor
    indices: Tensor

    def weights(self) -> Tensor:
        """W = C[idx]."""
        return self.centroids[self.indices]


def initial_centroids(w: Tensor, k: int, init: Init = "linear", seed: int = 0) -> Tensor:
    """k starting centroids for the 1-D values ``w`` [n], sorted ascending (see the module docstring)."""
    if init == "linear":
        return torch.linspace(float(w.min()), float(w.max()), k)
    if init == "density":
        return torch.quantile(w, torch.linspace(0, 1, k))
    if init == "random":
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(w.numel(), generator=g)[:k]
        c = w[pick].sort().values
        return torch.cat([c, c[-1:].expand(k - c.numel())])     # fewer values than k: repeat the largest
    raise ValueError(f"init must be 'linear', 'density' or 'random', got {init!r}.")


def assign(w: Tensor, C: Tensor) -> Tensor:
    """idx_i = argmin_k |w_i − C_k| for sorted C: a search among the midpoints between neighbours (int64)."""
    return torch.bucketize(w, (C[1:] + C[:-1]) / 2)


def kmeans_codebook(W: Tensor, bits: int, *, init: Init = "linear", iters: int = 50,
                    seed: int = 0) -> Codebook:
    """Cluster the values of W into 2^bits centroids with 1-D k-means (Lloyd), at most ``iters`` rounds.

    Exact zeros of W (pruned weights) are not clustered: they get C[0] = 0.0 and the nonzero weights share the
    other 2^bits − 1 centroids. An empty cluster keeps its centroid. Returns a ``Codebook`` (C sorted ascending
    apart from a reserved C[0] = 0, and idx shaped like W).
    """
    check_bits(bits)
    if not (isinstance(iters, int) and iters >= 0):
        raise ValueError(f"iters must be a non-negative integer, got {iters!r}.")
    W = W.detach().float().cpu()
    if W.numel() == 0 or not torch.isfinite(W).all():
        raise ValueError("W must be a non-empty tensor of finite values to cluster.")
    K = 2 ** bits
    nonzero = W != 0
    reserve_zero = not bool(nonzero.all())
    w = W[nonzero]
    k = K - reserve_zero
    if k == 0 or w.numel() == 0:                                 # nothing to cluster
        return Codebook(torch.zeros(K), torch.zeros(W.shape, dtype=torch.int64))
    C = initial_centroids(w, k, init, seed)
    idx = assign(w, C)
    for _ in range(iters):
        sums = torch.zeros(k).index_add_(0, idx, w)
        counts = torch.zeros(k).index_add_(0, idx, torch.ones_like(w))
        C = torch.where(counts > 0, sums / counts.clamp(min=1), C).sort().values
        new_idx = assign(w, C)
        if torch.equal(new_idx, idx):
            break
        idx = new_idx
    indices = torch.zeros(W.shape, dtype=torch.int64)
    indices[nonzero] = idx + reserve_zero
    centroids = torch.cat([torch.zeros(1), C]) if reserve_zero else C
    return Codebook(centroids, indices)


def share_weights(model: nn.Module, bits: int, layers: list[str] | None = None, *, init: Init = "linear",
                  iters: int = 50, seed: int = 0) -> tuple[nn.Module, dict[str, Codebook]]:
    """A copy of ``model`` whose Linear / Conv2d weights (all, or ``layers``) are C[idx], and the codebooks
    ``{layer: Codebook}``. Clusters the effective weights, so pruned zeros stay zero; ``model`` is not changed."""
    check_bits(bits)
    chosen = select_layers(model, layers)
    books = {name: kmeans_codebook(M.effective(layer), bits, init=init, iters=iters, seed=seed)
             for name, layer in chosen.items()}
    shared = M.copy_model(model)
    for name, book in books.items():
        M.set_effective(shared.get_submodule(name), book.weights())
    return shared, books


# ---------------------------------------------------------------------------------------------- fine-tuning

def centroid_gradient(grad_W: Tensor, indices: Tensor, k: int) -> Tensor:
    """∂L/∂C_k = Σ_{i: idx_i = k} ∂L/∂W_i: the gradients of each cluster's weights, summed, [k]."""
    return torch.zeros(k, dtype=grad_W.dtype, device=grad_W.device).index_add_(
        0, indices.flatten().to(grad_W.device), grad_W.flatten())


def fine_tune_centroids(model: nn.Module, codebooks: dict[str, Codebook], train_data: Data, *,
                        epochs: int = 1, lr: float = 1e-5, momentum: float = 0.9, batch_size: int = 128,
                        seed: int = 0) -> dict[str, Codebook]:
    """Train only the centroids of a shared model (``share_weights``'s copy), in place; returns the new codebooks.

    Each step: forward and backward with W = C[idx], then C ← SGD step with ∂L/∂C = ``centroid_gradient``
    (momentum ``momentum``), then W ← C[idx]. Other parameters (biases, unshared layers) do not change, the
    indices do not change, and a centroid at exactly 0 (the pruned weights') stays 0. Batch order from ``seed``.
    Note the gradient is a *sum* over the cluster, so ``lr`` is much smaller than for training weights.
    """
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
    train_data = as_image_set(train_data, "fine_tune_centroids", "prunelab.load_fashion_mnist('train')")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr}.")
    device = model_device(model)
    layers = select_layers(model, list(codebooks))
    params = {name: layer.weight_orig if hasattr(layer, "weight_mask") else layer.weight
              for name, layer in layers.items()}
    C = {name: nn.Parameter(book.centroids.clone().to(device)) for name, book in codebooks.items()}
    idx = {name: book.indices.to(device) for name, book in codebooks.items()}
    trainable = {name: (c != 0).float() for name, c in C.items()}           # the zero centroid stays 0
    for name in codebooks:
        if not torch.equal(params[name].detach(), C[name].detach()[idx[name]]):
            raise ValueError(f"The weights of {name!r} are not its codebook's C[idx]; pass the model and the "
                             "codebooks that share_weights returned together.")
    optimizer = torch.optim.SGD(list(C.values()), lr=lr, momentum=momentum)
    requires = {p: p.requires_grad for p in model.parameters()}
    generator = torch.Generator().manual_seed(seed)
    try:
        for p in model.parameters():
            p.requires_grad_(any(p is q for q in params.values()))
        with in_mode(model, training=True):
            for _ in range(epochs):
                for x, y in train_data.batches(batch_size, shuffle=True, generator=generator, device=device):
                    for p in params.values():
                        p.grad = None
                    F.cross_entropy(model(x), y).backward()
                    for name, c in C.items():
                        c.grad = centroid_gradient(params[name].grad, idx[name], c.numel()) * trainable[name]
                    optimizer.step()
                    for name, layer in layers.items():
                        M.set_effective(layer, C[name].detach()[idx[name]])
    finally:
        for p, r in requires.items():
            p.requires_grad_(r)
            p.grad = None
    return {name: Codebook(C[name].detach().cpu(), codebooks[name].indices) for name in codebooks}


# ---------------------------------------------------------------------------------------------- storage

def encode_shared(model: nn.Module, codebooks: dict[str, Codebook]) -> dict:
    """What ``save_shared`` writes, readable by ``torch.load(weights_only=True)``: ``{"format", "dense": {other
    tensors}, "shared": {"fc1.weight": {"shape", "bits", "codes": pack_bits(idx) uint8, "codebook": C float32}}}``."""
    select_layers(model, list(codebooks))
    state = {k: v.detach().cpu() for k, v in M.effective_state_dict(model).items()}
    shared = {}
    for name, book in codebooks.items():
        bits = max(1, int(book.centroids.numel() - 1).bit_length())
        shared[f"{name}.weight"] = {"shape": list(book.indices.shape), "bits": bits,
                                    "codes": pack_bits(book.indices, bits),
                                    "codebook": book.centroids.detach().cpu().float()}
    return {"format": FORMAT, "dense": {k: v for k, v in state.items() if k not in shared}, "shared": shared}


def decode_shared(payload: dict) -> dict[str, Tensor]:
    """The state dict back from ``encode_shared``'s output: each shared weight C[idx], other tensors as saved."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"Not a prunelab weight-sharing file (expected format {FORMAT!r}); write one with "
                         "prunelab.weight_sharing.save_shared.")
    out = dict(payload["dense"])
    for key, e in payload["shared"].items():
        idx = unpack_bits(e["codes"], e["bits"], math.prod(e["shape"])).to(torch.int64).reshape(e["shape"])
        out[key] = e["codebook"][idx]
    return out


def save_shared(model: nn.Module, codebooks: dict[str, Codebook], path: str | Path) -> Path:
    """Write ``encode_shared(model, codebooks)`` to ``path`` with ``torch.save``; returns the path."""
    torch.save(encode_shared(model, codebooks), path)
    return Path(path)


def load_shared(path: str | Path, model: nn.Module) -> nn.Module:
    """Load a ``save_shared`` file into ``model`` (unmasked, same architecture), in place; returns ``model``."""
    state = decode_shared(torch.load(path, map_location="cpu", weights_only=True))
    return M.load_effective_state_dict(model, state, what="load_shared")


def shared_file_bytes(model: nn.Module, codebooks: dict[str, Codebook]) -> int:
    """Bytes of a real ``save_shared`` file, written to a temporary directory and deleted afterwards."""
    with temporary_path("model.pt") as path:
        return save_shared(model, codebooks, path).stat().st_size
