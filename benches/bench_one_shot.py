"""One-shot pruning of LeNet-300-100 without fine-tuning: magnitude vs Wanda vs SparseGPT, test accuracy at 50%
unstructured and 2:4, and SparseGPT's time.

Calibration: --calibration images of the validation split (``ImageSet.subset``, seed 0; labels unused). Every
Linear is pruned (fc1, fc2 and the class layer fc3). Magnitude: ``prune(model, 0.5)``, each layer to 50% by |W|
(and 2:4 by |W|). Wanda: ``prune(model, 0.5, criterion="wanda", data=calibration)``, |W_ij| · ‖X_j‖₂ compared
within each output row (also shown compared over the whole layer, ``scope="layer"``). SparseGPT:
``one_shot.sparsegpt`` (blocksize 128, damp 0.01), its wall time the median of --repeats calls (the calibration
forward passes included). Accuracy on the 10,000 test images.

Measured on a 2-core AMD EPYC shared with other work (load average 4), torch 2.14.1, 2 threads; dense 0.8999:

    method       pattern  accuracy  vs dense
    magnitude    50%      0.8934    -0.0065
    wanda        50%      0.8713    -0.0286
    wanda_layer  50%      0.8889    -0.0110
    sparsegpt    50%      0.8997    -0.0002
    magnitude    2:4      0.8821    -0.0178
    wanda        2:4      0.8726    -0.0273
    sparsegpt    2:4      0.8945    -0.0054

SparseGPT took 1.1-2.9 s per call (median 2.0 s at 50%, 1.4 s at 2:4; the spread is the shared CPU). Wanda's loss
here is its per-row rule on fc1: pruning fc1 alone, magnitude per layer gives 0.8947 and per row 0.8820, Wanda per
layer 0.8902 and per row 0.8736 (fc2 and fc3 alone: every variant within 0.002 of dense). Wanda was made for the
outlier input features of large language models, which a pixel MLP lacks; SparseGPT's weight update is what helps.

    python benches/bench_one_shot.py [--calibration 512] [--repeats 3] [--threads N]
"""

import argparse
import os
import platform
import statistics
import time

import torch

import prunelab as pl
from machine import cpu_name
from prunelab import masks as M
from prunelab.one_shot import sparsegpt


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=int, default=512, help="validation images for calibration")
    parser.add_argument("--repeats", type=int, default=3, help="timed SparseGPT calls per setting")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()} ({platform.machine()}, {os.cpu_count()} logical cores); torch {torch.__version__} "
          f"with {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}")
    calibration = pl.load_fashion_mnist("validation").subset(args.calibration)
    test_set = pl.load_fashion_mnist("test")
    base = pl.load_pretrained("lenet300")
    dense = pl.evaluate(base, test_set).accuracy
    print(f"lenet300 dense: test accuracy {dense:.4f}; calibration: {calibration.images_label()}")

    settings = {"50%": {"sparsity": 0.5}, "2:4": {"sparsity": 0.0, "n": 2, "m": 4}}
    results, seconds = {}, {}
    for label, s in settings.items():
        nm = {"granularity": "n:m", "n": 2, "m": 4} if "n" in s else {}
        for method, extra in (("magnitude", {}), ("wanda", {"criterion": "wanda", "data": calibration}),
                              ("wanda_layer", {"criterion": "wanda", "data": calibration, "scope": "layer"})):
            if method == "wanda_layer" and nm:
                continue                                         # N:M groups are within a row anyway
            model = M.copy_model(base)
            pl.prune(model, s["sparsity"], **nm, **extra)
            results[method, label] = (pl.evaluate(model, test_set).accuracy, M.mask_sparsity(M.get_masks(model)))
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            pruned = sparsegpt(base, calibration, s["sparsity"], n=s.get("n"), m=s.get("m"))
            times.append(time.perf_counter() - start)
        seconds[label] = times
        results["sparsegpt", label] = (pl.evaluate(pruned, test_set).accuracy, M.mask_sparsity(M.get_masks(pruned)))

    print(f"{'method':<12s} {'pattern':<7s} {'sparsity':>8s} {'accuracy':>8s} {'vs dense':>8s}")
    for (method, label), (accuracy, sparsity) in results.items():
        print(f"{method:<12s} {label:<7s} {sparsity:8.4f} {accuracy:8.4f} {accuracy - dense:+8.4f}")
    for label, times in seconds.items():
        print(f"sparsegpt {label}: median {statistics.median(times):.3f} s of {len(times)} calls "
              f"(min {min(times):.3f} s, max {max(times):.3f} s)")

    print(f"RESULT one_shot_dense_accuracy={dense:.4f} unit=fraction target=reference")
    for (method, label), (accuracy, _) in results.items():
        key = "unstructured50" if label == "50%" else "2of4"
        print(f"RESULT one_shot_{method}_{key}_accuracy={accuracy:.4f} unit=fraction target=reference")
    for label, times in seconds.items():
        key = "unstructured50" if label == "50%" else "2of4"
        print(f"RESULT one_shot_sparsegpt_{key}_seconds={statistics.median(times):.3f} unit=s target=reference")


if __name__ == "__main__":
    main()
