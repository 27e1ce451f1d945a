"""Structured pruning with dependency groups on ResNet-18: prunelab's ``shrink_groups`` vs Torch-Pruning.

For each ratio r, the same per-group rule on ``prunelab.build_model("resnet18")`` (1-channel input, 28x28):
(a) ``prunelab.shrink.shrink_groups(model, r)``: every channel group of ``graph.channel_groups`` (a stage's stem
or downsample conv with every conv2 that adds into it; each block's conv1) loses round(r · n) channels of least
I_c = sum over producers of ||W_p[c]||_1; the classifier's outputs stay.
(b) Torch-Pruning's ``MagnitudePruner`` (L1 magnitude, ``pruning_ratio=r``, ``ignored_layers=[fc]``, local
pruning), then ``pruner.step()``. It removes n - int(n · (1 - r)) per group: the same count here.
Printed: parameters and MACs per image (``metrics.count_macs``) of each, as ratios pruned / dense, and the wall
time of each call (median over --repeats; Torch-Pruning's includes building its dependency graph, prunelab's
includes tracing, finding the groups and the deep copy it returns, since the original stays untouched).

Measured 2026-12-03 (torch 2.14.1, torch-pruning 1.6.1, OMP_NUM_THREADS=1, 2-core AMD EPYC shared with other
work, load average 0.9, 5 repeats; median ms per call):

    ratio  params prunelab  torch-pruning   MACs prunelab  torch-pruning   ms prunelab  torch-pruning
    0.25   0.5628           0.5628          0.5660         0.5660          77.1         137.2
    0.50   0.2504           0.2504          0.2547         0.2547          77.1         164.8
    0.75   0.0628           0.0628          0.0660         0.0660          74.4         129.8

Every conv ends with the same width in both (``tests/test_groups.py``); the two may keep different channels, as
Torch-Pruning's importance also sums the consumers' input weights and the BatchNorm gammas.
Before groups, ``shrink`` could only cut each block's conv1 (MACs left 0.515 at 0.5, 0.273 at 0.75).

    python benches/bench_groups.py [--repeats 5]
"""

import argparse
import os
import statistics
import time

import torch

import prunelab as pl
from prunelab.shrink import shrink_groups

RATIOS = (0.25, 0.5, 0.75)
SHAPE = (1, 1, 28, 28)


def torch_pruning(model, ratio):
    import torch_pruning as tp

    pruner = tp.pruner.MagnitudePruner(model, torch.randn(*SHAPE), importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, ignored_layers=[model.fc], global_pruning=False)
    pruner.step()
    return model


def timed(make, prepare, repeats):
    """(the last result, median seconds) of ``make(prepare())`` over ``repeats`` calls; ``prepare`` is not timed."""
    times = []
    for _ in range(repeats):
        model = prepare()
        start = time.perf_counter()
        result = make(model)
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dense = pl.build_model("resnet18")
    params, macs = pl.count_parameters(dense), pl.metrics.count_macs(dense, SHAPE).dense
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; "
          f"ResNet-18 dense: {params:,d} parameters, {macs:,d} MACs per image")
    print(f"{'ratio':>5s} {'params prunelab':>15s} {'torch-pruning':>13s} {'MACs prunelab':>13s} "
          f"{'torch-pruning':>13s} {'ms prunelab':>11s} {'torch-pruning':>13s}")
    rows = {}
    for r in RATIOS:
        ours, t_ours = timed(lambda m: shrink_groups(m, r), lambda: dense, args.repeats)
        theirs, t_theirs = timed(lambda m: torch_pruning(m, r), lambda: pl.build_model("resnet18"), args.repeats)
        row = {"params_prunelab": pl.count_parameters(ours) / params,
               "params_torch_pruning": pl.count_parameters(theirs) / params,
               "macs_prunelab": pl.metrics.count_macs(ours, SHAPE).dense / macs,
               "macs_torch_pruning": pl.metrics.count_macs(theirs, SHAPE).dense / macs,
               "ms_prunelab": 1000 * t_ours, "ms_torch_pruning": 1000 * t_theirs}
        rows[r] = row
        print(f"{r:5.2f} {row['params_prunelab']:15.4f} {row['params_torch_pruning']:13.4f} "
              f"{row['macs_prunelab']:13.4f} {row['macs_torch_pruning']:13.4f} {row['ms_prunelab']:11.1f} "
              f"{row['ms_torch_pruning']:13.1f}")
    for r, row in rows.items():
        for key, value in row.items():
            unit = "ms" if key.startswith("ms") else "ratio"
            print(f"RESULT resnet18_r{round(r * 100)}_{key}={value:.4f} unit={unit} target=reference")
        gap = abs(row["macs_prunelab"] - row["macs_torch_pruning"]) / row["macs_torch_pruning"]
        print(f"RESULT resnet18_r{round(r * 100)}_macs_gap={gap:.4f} unit=fraction target=<=0.03")


if __name__ == "__main__":
    main()
