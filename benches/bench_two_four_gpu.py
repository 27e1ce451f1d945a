"""2:4 sparsity on a GPU's sparse tensor cores: W X in float16 with W stored dense (``torch.mm``) against the same W
pruned 2:4 and stored semi-structured (``torch.sparse.to_sparse_semi_structured``: the kept values and 2-bit
positions), for a few batch sizes B.

Run: python benches/bench_two_four_gpu.py [--size 4096] [--batches 64 256 1024 4096 16384] [--repeats 60] [--cutlass]

Needs a CUDA GPU of compute capability 8.0 or higher (Ampere and later: A100 is 8.0, RTX 30xx 8.6, RTX 40xx 8.9,
H100 9.0), whose sparse tensor cores run 2:4 products; there it prints a table and RESULT lines. Without one
(no CUDA device, or an older GPU such as a T4, 7.5) it prints why, and what it would have measured, and exits 0.

W [size, size] is float16 N(0, 1) pruned 2:4 by magnitude along its rows, the reduction dimension
(``prunelab.pruning.nm_masks``: the 2 largest |w| of every 4 consecutive weights); X [size, B] is float16 N(0, 1).
Both products are timed with ``prunelab.metrics.time_calls``, ``torch.cuda.synchronize()`` inside each timed call
(the clock stops when the GPU has finished), after ``warmup`` untimed calls, the two taking turns in ``rounds``
rounds; the medians are compared. ``error`` is ‖W_sparse X − W X‖_F / ‖W X‖_F, the two products' relative
difference (both multiply the same float16 numbers, so it is float16 rounding, of the order of 1e-3).

The backend is torch's default, cuSPARSELt, or CUTLASS with ``--cutlass`` (torch's CUTLASS kernels run only on
compute capability 8.x; they refuse a Hopper or Blackwell GPU). ``sparse bytes`` are what the semi-structured
tensor holds (``packed`` and, for CUTLASS, ``meta``); for CUTLASS they are 9/16 of the dense bytes (notebook 21
checks that layout on a CPU).

notebooks/21_two_four_sparsity_on_hardware.ipynb holds a copy of ``two_four_gpu_timings`` in its GPU cell: change
both together. Not yet measured: no GPU was at hand when this was written, so no figures are recorded here.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

from prunelab.metrics import time_calls
from prunelab.pruning import nm_masks


def two_four_gpu_timings(size: int = 4096, batches: tuple[int, ...] = (64, 256, 1024, 4096, 16384), *,
                         repeats: int = 60, warmup: int = 10, rounds: int = 3, seed: int = 0) -> dict:
    """Time W X on the GPU, W [size, size] float16 pruned 2:4, X [size, B]: W dense (torch.mm) and stored
    semi-structured (to_sparse_semi_structured). Returns {"device", "capability", "backend", "dense_bytes",
    "sparse_bytes", "rows"}, one row per B: {"batch", "dense_ms", "sparse_ms", "speedup", "error"}."""
    if not (torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)):
        raise RuntimeError("2:4 products need a CUDA GPU of compute capability 8.0 or higher (sparse tensor cores).")
    cuda = torch.device("cuda")
    g = torch.Generator(device=cuda).manual_seed(seed)
    W = torch.randn(size, size, generator=g, device=cuda, dtype=torch.float16)            # [out, in]
    W_24 = W * nm_masks({"W": W.abs()}, 2, 4)["W"]                                         # 2 of every 4 in a row kept
    assert bool(((W_24.view(size, -1, 4) != 0).sum(-1) <= 2).all()), "W_24 is not 2:4"
    W_sparse = to_sparse_semi_structured(W_24)                                             # values + metadata
    stored = [t for t in (W_sparse.packed, W_sparse.meta) if t is not None]
    result = {"device": torch.cuda.get_device_name(), "capability": torch.cuda.get_device_capability(),
              "backend": W_sparse.BACKEND, "dense_bytes": W_24.numel() * W_24.element_size(),
              "sparse_bytes": sum(t.numel() * t.element_size() for t in stored), "rows": []}
    for B in batches:
        X = torch.randn(size, B, generator=g, device=cuda, dtype=torch.float16)           # [in, B]
        Y = torch.mm(W_24, X)                                                              # [out, B]
        error = float((torch.mm(W_sparse, X) - Y).float().norm() / Y.float().norm())

        def dense():
            torch.mm(W_24, X)
            torch.cuda.synchronize()                  # time_calls' clock stops when the GPU has finished

        def sparse():
            torch.mm(W_sparse, X)
            torch.cuda.synchronize()

        torch.cuda.synchronize()
        times = {"dense": [], "sparse": []}
        for _ in range(rounds):                       # the two take turns: a change of clock or load hits both
            for name, run in (("dense", dense), ("sparse", sparse)):
                times[name] += time_calls(run, B, repeats=-(-repeats // rounds), warmup=warmup).times_ms
        dense_ms, sparse_ms = statistics.median(times["dense"]), statistics.median(times["sparse"])
        result["rows"].append({"batch": B, "dense_ms": dense_ms, "sparse_ms": sparse_ms,
                               "speedup": dense_ms / sparse_ms, "error": error})
    return result


def why_not_here() -> str | None:
    """None where 2:4 products can run (CUDA, compute capability >= 8.0), else the reason."""
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 0):
        return (f"{torch.cuda.get_device_name()} has compute capability {major}.{minor}, below 8.0: "
                "no sparse tensor cores")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="W is size x size (a multiple of 64)")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024, 4096, 16384], help="columns B of X")
    parser.add_argument("--repeats", type=int, default=60, help="timed products per format and B")
    parser.add_argument("--cutlass", action="store_true", help="torch's CUTLASS backend instead of cuSPARSELt")
    args = parser.parse_args()
    reason = why_not_here()
    if reason is not None:
        print(f"Nothing measured: {reason}.\n"
              f"On a GPU with sparse tensor cores (compute capability >= 8.0) this bench prunes a {args.size} x "
              f"{args.size} float16 W to 2:4, stores it with torch.sparse.to_sparse_semi_structured, and times W X "
              f"dense against semi-structured for X [{args.size}, B], B = {', '.join(map(str, args.batches))}, "
              "printing RESULT lines.")
        return
    SparseSemiStructuredTensor._FORCE_CUTLASS = args.cutlass
    try:
        result = two_four_gpu_timings(args.size, tuple(args.batches), repeats=args.repeats)
    except (RuntimeError, NotImplementedError) as error:
        print(f"The GPU refused the 2:4 product ({'CUTLASS' if args.cutlass else 'cuSPARSELt'} backend): {error}\n"
              f"Try the other backend ({'without' if args.cutlass else 'with'} --cutlass).")
        return
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = False
    major, minor = result["capability"]
    print(f"{result['device']} (compute capability {major}.{minor}), torch {torch.__version__}, "
          f"backend {result['backend']}")
    print(f"W {args.size} x {args.size} float16: dense {result['dense_bytes']:,} bytes, semi-structured "
          f"{result['sparse_bytes']:,} bytes ({result['sparse_bytes'] / result['dense_bytes']:.4f} of dense)")
    print(f"\n{'B':>6s} {'dense ms':>9s} {'2:4 ms':>9s} {'speed-up':>9s} {'rel. error':>11s}")
    for row in result["rows"]:
        print(f"{row['batch']:6d} {row['dense_ms']:9.4f} {row['sparse_ms']:9.4f} {row['speedup']:8.2f}x "
              f"{row['error']:11.1e}")
    print(f"RESULT two_four_sparse_bytes size={args.size} backend={result['backend']} bytes={result['sparse_bytes']} "
          f"fraction={result['sparse_bytes'] / result['dense_bytes']:.4f}")
    for row in result["rows"]:
        print(f"RESULT two_four_gpu_speedup size={args.size} batch={row['batch']} backend={result['backend']} "
              f"dense_ms={row['dense_ms']:.4f} sparse_ms={row['sparse_ms']:.4f} speedup={row['speedup']:.3f} "
              f"error={row['error']:.1e}")


if __name__ == "__main__":
    main()
