"""Why masks give no speed-up, measured: a pruned weight stored sparse against the same weight kept dense.

A masked layer still multiplies a dense W [out, in] that holds zeros: Y = W X costs out · in · n multiply-adds
whatever the sparsity s. Stored sparse, only the nonzeros are kept:

- **CSR** (compressed sparse rows): the nonzero values, their column indices and where each row starts; Y = W X
  costs (1 − s) · out · in · n multiply-adds, but each one reads an index and a scattered row of X, so a
  multiply-add costs several times what it costs in a dense, vectorised, cache-blocked matrix product;
- **BSR** (block sparse rows): the same with dense b × b blocks, for masks that remove whole blocks: fewer
  indices, and each block is a small dense product.

So sparse storage is faster only above a **break-even sparsity** s*, where (1 − s*) · (cost of a sparse
multiply-add) = cost of a dense one. ``speed_table`` times W X for each format over a grid of sparsities and
batch sizes n, on this CPU (``metrics.time_calls``: warm-up runs, then the median and its spread; the formats
take turns in rounds, so that a change of machine load touches all of them), and ``break_even`` reads s* off it.
Structured removal (``prunelab.shrink``) needs no break-even: a smaller dense W is faster at any sparsity.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .metrics import LatencyResult, time_calls
from .thresholds import check_sparsity

__all__ = ["Format", "MatmulTiming", "block_mask", "stored", "speed_table", "break_even"]

Format = Literal["dense", "csr", "bsr"]
FORMATS: tuple[Format, ...] = ("dense", "csr", "bsr")


@dataclass(frozen=True)
class MatmulTiming:
    """W X for one format, sparsity and batch size n (columns of X): ``result`` (ms per product)."""
    format: Format
    sparsity: float
    batch: int
    result: LatencyResult

    @property
    def median_ms(self) -> float:
        return self.result.median_ms


def block_mask(shape: tuple[int, int], sparsity: float, block: int = 1, *, seed: int = 0) -> Tensor:
    """A keep-mask [out, in] removing round(s · B) of its B blocks of ``block`` × ``block`` weights, chosen at random
    (seeded; block = 1: single weights, as unstructured pruning of random-looking weights leaves them). Both
    dimensions must be multiples of ``block``."""
    check_sparsity(sparsity)
    out, in_ = shape
    if out % block or in_ % block:
        raise ValueError(f"shape {list(shape)} does not split into {block} x {block} blocks; pick a block that "
                         f"divides both (e.g. 1, 2 or 4).")
    rows, cols = out // block, in_ // block
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(rows * cols, generator=g)
    keep = torch.ones(rows * cols, dtype=torch.bool)
    keep[order[:round(sparsity * rows * cols)]] = False
    return keep.view(rows, cols).repeat_interleave(block, 0).repeat_interleave(block, 1)


def stored(W: Tensor, fmt: Format, block: int = 4) -> Tensor:
    """W [out, in] (zeros where pruned) stored as ``fmt``: itself (dense), CSR, or BSR of ``block`` × ``block``."""
    with warnings.catch_warnings():                      # torch calls its sparse CSR/BSR support "beta"
        warnings.filterwarnings("ignore", "Sparse (CSR|BSR) tensor support is in beta", UserWarning)
        if fmt == "dense":
            return W
        if fmt == "csr":
            return W.to_sparse_csr()
        if fmt == "bsr":
            return W.to_sparse_bsr((block, block))
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}.")


def speed_table(shape: tuple[int, int] = (1024, 1024), sparsities: tuple[float, ...] = (0.0, 0.5, 0.8, 0.9, 0.95,
                0.98, 0.99), batches: tuple[int, ...] = (1, 64), *, formats: tuple[Format, ...] = FORMATS,
                block: int = 4, repeats: int = 30, warmup: int = 3, rounds: int = 3,
                seed: int = 0) -> list[MatmulTiming]:
    """Time W X (W [out, in] at each sparsity, X [in, n] for each batch n) stored in each format.

    The mask removes whole ``block`` × ``block`` blocks when "bsr" is timed (so that all formats multiply the same
    W; CSR and dense do not care how the zeros are arranged), else single weights. For each (s, n) the formats
    take turns in ``rounds`` rounds; in each, a format runs ``warmup`` untimed products, then repeats / rounds
    timed ones in a row (its data warm in the cache, as in a network that runs the layer again and again).
    """
    g = torch.Generator().manual_seed(seed)
    W0 = torch.randn(shape, generator=g)
    rows = []
    for s in sparsities:
        W = W0 * block_mask(shape, s, block if "bsr" in formats else 1, seed=seed)
        for n in batches:
            x = torch.randn(shape[1], n, generator=g)
            ready = {fmt: stored(W, fmt, block) for fmt in formats}
            times = {fmt: [] for fmt in formats}
            for _ in range(rounds):               # each round: every format, warm (its data in cache), in turn
                for fmt in formats:
                    result = time_calls(lambda: ready[fmt] @ x, n, repeats=-(-repeats // rounds), warmup=warmup)
                    times[fmt] += result.times_ms
            for fmt in formats:
                rows.append(MatmulTiming(fmt, s, n, _summary(times[fmt], n)))
    return rows


def _summary(times_ms: list[float], batch: int) -> LatencyResult:
    t = torch.tensor(times_ms, dtype=torch.float64)
    return LatencyResult(float(t.median()), float(t.quantile(0.9)), float(t.min()), len(times_ms), batch,
                         tuple(times_ms))


def break_even(rows: list[MatmulTiming], fmt: Format, batch: int) -> float | None:
    """The sparsity above which ``fmt`` multiplies faster than dense at batch ``batch``: where the median time ratio
    fmt / dense crosses 1, interpolated linearly between the grid's sparsities; None if it never does on the grid
    (0.0 if it is faster at every sparsity)."""
    dense = {r.sparsity: r.median_ms for r in rows if r.format == "dense" and r.batch == batch}
    ratio = sorted((r.sparsity, r.median_ms / dense[r.sparsity]) for r in rows
                   if r.format == fmt and r.batch == batch and r.sparsity in dense)
    if not ratio:
        raise ValueError(f"no timings of {fmt!r} and 'dense' at batch {batch} in the table.")
    if ratio[0][1] < 1:
        return 0.0
    for (s0, r0), (s1, r1) in zip(ratio, ratio[1:]):
        if r0 >= 1 > r1:
            return s0 + (r0 - 1) / (r0 - r1) * (s1 - s0)
    return None
