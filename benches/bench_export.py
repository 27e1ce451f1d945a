"""Taking a pruned model home: eager PyTorch vs ONNX Runtime latency, and file sizes, for VGGSmall dense,
channel-pruned at 0.5 (masked) and shrunk.

The three models: (a) dense, the pretrained VGGSmall; (b) masked, ``prunelab.prune(model, 0.5,
granularity="channel")`` (same shapes, half of every conv's channels zeroed with their BatchNorm); (c) shrunk,
saved with ``export.save_for_pytorch(..., shrink_units=True)`` and rebuilt by ``export.load_for_pytorch`` from a
fresh VGGSmall. Each is exported with ``export.export_onnx`` (checked against ONNX Runtime on the batch) and timed
on the first 256 test images in both runtimes (``metrics.measure_latency``, ``export.onnx_latency``: the same
statistics), interleaved round by round so that load on a shared CPU hits every pair alike. ONNX Runtime gets
torch's thread count. Sizes: the ``save_for_pytorch`` file and the ONNX file of each model.

Measured 2026-12-03 on a 2-core AMD EPYC (with AVX-512; /proc/cpuinfo says only "AMD EPYC") shared with other work,
torch 2.14.1, onnxruntime 1.32.0, 8 rounds x 5 repeats, batch 256, median / p90 in ms:

    threads  load  model    eager            onnxruntime     ort speedup   .pt bytes   .onnx bytes
    1        5.1   dense    135.6 / 168.2     59.1 / 61.9    2.30x         322,329     331,961
    1        5.1   masked   140.5 / 173.0     58.4 / 62.5    2.41x         322,373     331,961
    1        5.1   shrunk    61.9 /  66.3     28.9 / 34.1    2.14x          95,237     105,423
    2        4.0   dense    472.0 / 508.1     79.4 / 99.9    5.95x
    2        4.0   masked   488.1 / 516.5     78.9 / 93.9    6.19x
    2        4.0   shrunk   413.9 / 432.5     36.3 / 50.1   11.40x

Shrunk vs dense: 2.19x (eager) and 2.05x (onnxruntime) with one thread; masks alone give nothing (0.96x, 1.01x).
With two threads on a machine whose load was 4-5, torch's OpenMP workers fought the other processes and eager
was 3.5x slower than with one thread, while onnxruntime's thread pool barely suffered: read the 2-thread
row as "what contention does", not as the runtimes' speed. The masked and the shrunk model compute the same
logits (|difference| at most 2e-6); without fine-tuning, this 50% channel pruning leaves VGGSmall at chance
accuracy (10.96%), which does not change any timing.

    python benches/bench_export.py [--rounds 8] [--repeats 5] [--threads N]
"""

import argparse
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import prunelab as pl
from machine import cpu_name
from prunelab import export


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="rounds; each times every model in both runtimes")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches per model, runtime and round")
    parser.add_argument("--threads", type=int, default=None, help="torch (and onnxruntime) threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()} ({platform.machine()}, {os.cpu_count()} logical cores), {platform.platform()}")
    print(f"torch {torch.__version__} with {torch.get_num_threads()} threads, onnxruntime {onnxruntime.__version__} "
          f"with as many; load average {os.getloadavg()[0]:.1f}; {args.rounds} rounds x {args.repeats} repeats")

    test_set = pl.load_fashion_mnist("test")
    x = test_set.normalized()[:256]
    dense = pl.load_pretrained("vgg_small").eval()
    masked = pl.masks.copy_model(dense)
    pl.prune(masked, 0.5, granularity="channel")

    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        folder = Path(tmp)
        pt_bytes = {"dense": export.save_for_pytorch(dense, folder / "dense.pt").bytes,
                    "masked": export.save_for_pytorch(masked, folder / "masked.pt").bytes}
        record = export.save_for_pytorch(masked, folder / "shrunk.pt", shrink_units=True)
        pt_bytes["shrunk"] = record.bytes
        shrunk = export.load_for_pytorch(folder / "shrunk.pt", pl.build_model("vgg_small")).eval()
        models = {"dense": dense, "masked": masked, "shrunk": shrunk}
        with torch.inference_mode():
            diff = float((shrunk(x) - masked(x)).abs().max())
        onnx_paths = {k: export.export_onnx(m, folder / f"{k}.onnx", x) for k, m in models.items()}
        onnx_bytes = {k: p.stat().st_size for k, p in onnx_paths.items()}

        times = {(k, rt): [] for k in models for rt in ("eager", "onnxruntime")}
        for _ in range(args.rounds):
            for k, m in models.items():
                times[k, "eager"] += pl.metrics.measure_latency(m, x, repeats=args.repeats, warmup=1).times_ms
                times[k, "onnxruntime"] += export.onnx_latency(onnx_paths[k], x, repeats=args.repeats,
                                                               warmup=1).times_ms
    stats = {key: (float(np.median(t)), float(np.percentile(t, 90))) for key, t in times.items()}
    accuracy = {k: pl.evaluate(m, test_set).accuracy for k, m in models.items()}

    print(f"\nshrunk widths {record.widths}; |shrunk - masked| logits at most {diff:.2g}")
    print(f"{'model':8s} {'params':>8s} {'accuracy':>9s} {'eager median/p90 ms':>20s} "
          f"{'onnxruntime median/p90 ms':>26s} {'ort speedup':>12s} {'.pt bytes':>10s} {'.onnx bytes':>12s}")
    for k, m in models.items():
        (em, ep), (om, op) = stats[k, "eager"], stats[k, "onnxruntime"]
        print(f"{k:8s} {pl.count_parameters(m):8,d} {accuracy[k]:9.4f} {em:11.2f} / {ep:6.2f} {om:17.2f} / {op:6.2f} "
              f"{em / om:11.2f}x {pt_bytes[k]:10,d} {onnx_bytes[k]:12,d}")
    for rt in ("eager", "onnxruntime"):
        print(f"{rt}: shrunk is {stats['dense', rt][0] / stats['shrunk', rt][0]:.2f}x faster than dense, masked "
              f"{stats['dense', rt][0] / stats['masked', rt][0]:.2f}x")

    print()
    print(f"RESULT cpu={cpu_name().replace(' ', '_')} unit=name target=reference")
    print(f"RESULT torch_threads={torch.get_num_threads()} unit=threads target=reference")
    for (k, rt), (median, p90) in stats.items():
        print(f"RESULT vgg_small_{k}_{rt}_median={median:.2f} unit=ms target=reference")
        print(f"RESULT vgg_small_{k}_{rt}_p90={p90:.2f} unit=ms target=reference")
    for k in models:
        print(f"RESULT vgg_small_{k}_onnxruntime_speedup_over_eager="
              f"{stats[k, 'eager'][0] / stats[k, 'onnxruntime'][0]:.2f} unit=x target=reference")
        print(f"RESULT vgg_small_{k}_pt_bytes={pt_bytes[k]} unit=bytes target=reference")
        print(f"RESULT vgg_small_{k}_onnx_bytes={onnx_bytes[k]} unit=bytes target=reference")
    for rt in ("eager", "onnxruntime"):
        print(f"RESULT vgg_small_shrunk_speedup_{rt}={stats['dense', rt][0] / stats['shrunk', rt][0]:.2f} unit=x "
              "target=reference")
    print(f"RESULT vgg_small_shrunk_minus_masked_max_abs_logit={diff:.2g} unit=logit target=<=1e-5")
    print(f"RESULT vgg_small_accuracy_masked_minus_shrunk={accuracy['masked'] - accuracy['shrunk']:.4f} "
          "unit=fraction target=0")


if __name__ == "__main__":
    main()
