"""Structured pruning with dependency groups: prunelab's ``shrink_groups`` vs Torch-Pruning, on ResNet-18 (residual
adds), DenseNet-121 (concatenations) and ResNeXt-50 32x4d (grouped convs).

For each model and ratio r, the same per-group rule:
(a) ``prunelab.shrink.shrink_groups(model, r)``: every channel group of ``graph.channel_groups`` (ResNet-18: a
stage's stem or downsample conv with every conv2 that adds into it; each block's conv1. DenseNet-121: each conv's
outputs, read at their offset in every later concatenation) loses round(r · n) channels of least
I_c = sum over producers of ||W_p[c]||_1; the classifier's outputs stay.
(b) Torch-Pruning's ``MagnitudePruner`` (L1 magnitude, ``pruning_ratio=r``, the classifier in ``ignored_layers``,
local pruning), then ``pruner.step()``. It removes n - int(n · (1 - r)) per group: the same count here.
The models: ``prunelab.build_model("resnet18")`` (1-channel input, 28x28) and torchvision's DenseNet-121 with a
1-channel stem (random init, 64x64 input: 28x28 is too small for its four downsamplings).
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

DenseNet-121 (6,957,834 parameters, 224,864,256 MACs per 64x64 image), measured 2026-12-03 (torch 2.14.1,
torch-pruning 1.6.0, OMP_NUM_THREADS=1, the same shared machine at load average 3.9, 1 repeat):

    ratio  params prunelab  torch-pruning   MACs prunelab  torch-pruning   ms prunelab  torch-pruning
    0.25   0.5651           0.5651          0.5652         0.5652          443.7        4372.0
    0.50   0.2535           0.2535          0.2536         0.2536          246.8        3191.5

Every conv, BatchNorm and the classifier end with the same shape in both. Before concatenations were followed,
only the 1x1 bottleneck conv of each dense layer could shrink.

ResNeXt-50 32x4d (torchvision, random init, 3-channel 64x64 input): each 3x3 conv has 32 groups, so its input and
output channels go in steps of 32, the same positions from every group (``ChannelGroup.blocks``); Torch-Pruning
does the same. Measured 2026-12-03 (torch 2.14.1, torch-pruning 1.6.1, OMP_NUM_THREADS=1, idle 2-core AMD EPYC,
1 repeat):

    ratio  params prunelab  torch-pruning   MACs prunelab  torch-pruning   ms prunelab  torch-pruning
    0.25   0.5633           0.5633          0.5677          0.5677          1696.9       1318.9
    0.50   0.2511           0.2511          0.2570          0.2570          1181.1       1397.0

Every conv keeps its groups and ends with the same shape in both. Before grouped convs were followed, every channel
group that one wrote or read was refused ("not supported yet").

    python benches/bench_groups.py [--repeats 5] [--models resnet18 densenet121 resnext50]
"""

import argparse
import os
import statistics
import time

import torch
from torch import nn

import prunelab as pl
from prunelab.shrink import shrink_groups


def densenet121() -> nn.Module:
    """torchvision's DenseNet-121 (random init, no download, 10 classes) with its first conv taking 1 channel."""
    from torchvision.models import densenet121 as tv_densenet121

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = tv_densenet121(weights=None, num_classes=10)
        model.features.conv0 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def resnext50() -> nn.Module:
    """torchvision's ResNeXt-50 32x4d (random init, no download, 10 classes)."""
    from torchvision.models import resnext50_32x4d

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return resnext50_32x4d(weights=None, num_classes=10)


# name: (build a fresh model, input shape, ratios, the classifier's attribute)
MODELS = {"resnet18": (lambda: pl.build_model("resnet18"), (1, 1, 28, 28), (0.25, 0.5, 0.75), "fc"),
          "densenet121": (densenet121, (1, 1, 64, 64), (0.25, 0.5), "classifier"),
          "resnext50": (resnext50, (1, 3, 64, 64), (0.25, 0.5), "fc")}


def torch_pruning(model, ratio, shape, classifier):
    import torch_pruning as tp

    pruner = tp.pruner.MagnitudePruner(model, torch.randn(*shape), importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, ignored_layers=[getattr(model, classifier)],
                                       global_pruning=False)
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


def compare(name, repeats):
    """Print the table for one model and its RESULT lines."""
    build, shape, ratios, classifier = MODELS[name]
    dense = build()
    params, macs = pl.count_parameters(dense), pl.metrics.count_macs(dense, shape).dense
    print(f"\n{name} dense: {params:,d} parameters, {macs:,d} MACs per image {shape}")
    print(f"{'ratio':>5s} {'params prunelab':>15s} {'torch-pruning':>13s} {'MACs prunelab':>13s} "
          f"{'torch-pruning':>13s} {'ms prunelab':>11s} {'torch-pruning':>13s}")
    rows = {}
    for r in ratios:
        ours, t_ours = timed(lambda m: shrink_groups(m, r), lambda: dense, repeats)
        theirs, t_theirs = timed(lambda m: torch_pruning(m, r, shape, classifier), build, repeats)
        row = {"params_prunelab": pl.count_parameters(ours) / params,
               "params_torch_pruning": pl.count_parameters(theirs) / params,
               "macs_prunelab": pl.metrics.count_macs(ours, shape).dense / macs,
               "macs_torch_pruning": pl.metrics.count_macs(theirs, shape).dense / macs,
               "ms_prunelab": 1000 * t_ours, "ms_torch_pruning": 1000 * t_theirs}
        rows[r] = row
        print(f"{r:5.2f} {row['params_prunelab']:15.4f} {row['params_torch_pruning']:13.4f} "
              f"{row['macs_prunelab']:13.4f} {row['macs_torch_pruning']:13.4f} {row['ms_prunelab']:11.1f} "
              f"{row['ms_torch_pruning']:13.1f}")
    for r, row in rows.items():
        for key, value in row.items():
            unit = "ms" if key.startswith("ms") else "ratio"
            print(f"RESULT {name}_r{round(r * 100)}_{key}={value:.4f} unit={unit} target=reference")
        gap = abs(row["macs_prunelab"] - row["macs_torch_pruning"]) / row["macs_torch_pruning"]
        print(f"RESULT {name}_r{round(r * 100)}_macs_gap={gap:.4f} unit=fraction target=<=0.03")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    for name in args.models:
        compare(name, args.repeats)


if __name__ == "__main__":
    main()
