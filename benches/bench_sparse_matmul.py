"""Why no speed-up? A pruned weight stored sparse (CSR, 4 x 4 BSR) against the same weight kept dense, on this CPU:
the time of W X across sparsities and batch sizes, and the break-even sparsity above which sparse storage wins.

Run: python benches/bench_sparse_matmul.py        (prints RESULT lines; about a minute; run on an idle machine)

Two weights: LeNet-300-100's fc1 [300, 784] (784 is not a multiple of 4, so it is timed as [300, 784] with single
weights removed, no BSR) and a square [1024, 1024]; batches of 1 and 64 columns; 1 thread and torch's default.

Measured 2026-12-03, 2-core AMD EPYC (AVX-512), torch 2.14.1, load average 0.6. Break-even sparsity s*:

    weight        format  batch 1 (1 / 2 threads)   batch 64 (1 / 2 threads)
    fc1           CSR     0.94 / 0.93                0.84 / 0.77
    1024 x 1024   CSR     0.93 / 0.87                0.79 / 0.79
    1024 x 1024   BSR 4x4 0.90 / 0.83                0.68 / 0.78

Below s* the sparse product is slower than the dense one with the zeros in it (at s = 0.5, 2-5x slower); the
lessons' 90%-sparse LeNet sits near the break-even, never far above it. A shrunk layer is a smaller dense one:
faster at any sparsity.
"""

from __future__ import annotations

import os

import torch
from machine import cpu_name

from prunelab import sparse_matmul as S

SPARSITIES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
CASES = {"fc1": ((300, 784), ("dense", "csr")), "1024x1024": ((1024, 1024), S.FORMATS)}


def main() -> None:
    default_threads = torch.get_num_threads()
    print(f"{cpu_name()}, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}")
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        for name, (shape, formats) in CASES.items():
            rows = S.speed_table(shape, SPARSITIES, (1, 64), formats=formats)
            print(f"\n{name} {list(shape)}, {threads} thread(s): median ms per product W X (p10-p90)")
            for n in (1, 64):
                print(f"  batch {n}")
                for s in SPARSITIES:
                    cells = [r for r in rows if r.batch == n and r.sparsity == s]
                    print(f"    s = {s:4.2f}  " + "  ".join(
                        f"{r.format} {r.median_ms:7.3f} ({r.result.p10_ms:.3f}-{r.result.p90_ms:.3f})" for r in cells))
                for fmt in formats[1:]:
                    s_star = S.break_even(rows, fmt, n)
                    text = "never on the grid" if s_star is None else f"{s_star:.3f}"
                    print(f"  break-even {fmt}, batch {n}: {text}")
                    print(f"RESULT sparse_break_even layer={name} format={fmt} batch={n} threads={threads} "
                          f"sparsity={'none' if s_star is None else f'{s_star:.3f}'}")
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
