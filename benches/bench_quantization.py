"""Quantization and weight sharing of LeNet-300-100, measured: test accuracy and the bytes of real files.

The pretrained LeNet-300-100 is compressed at 8, 4 and 2 bits per weight by
- linear quantization per channel, symmetric and affine (``prunelab.quantization``, fake-quantized for accuracy,
  ``save_quantized`` for the file), and
- k-means weight sharing with linear initialisation (``prunelab.weight_sharing``), before and after
  ``--epochs`` epochs of centroid fine-tuning on the training set.
The float32 state dict (``prunelab.metrics.file_bytes``) is the reference. Then, if torch provides it, int8
dynamic quantization of the Linear layers (``torch.ao.quantization.quantize_dynamic``): accuracy and CPU latency
of a batch of 256 images against float32. All figures are for reference: nothing here has a target.

    python benches/bench_quantization.py [--epochs 1] [--repeats 20]
"""

import argparse
import os
import warnings

import torch
from torch import nn

import prunelab as pl
from prunelab import quantization as Q
from prunelab import weight_sharing as WS

BITS = (8, 4, 2)


def int8_dynamic(model, test_set, repeats):
    """(accuracy, float32 ms, int8 ms) with torch's dynamic int8 Linear layers, or None when unavailable."""
    try:
        from torch.ao.quantization import quantize_dynamic
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            q = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
            accuracy = pl.evaluate(q, test_set).accuracy
        if any("deprecated" in str(w.message) for w in caught):
            print("note: torch says its quantized tensors (torch.ao.quantization) are deprecated; measured anyway")
    except (ImportError, RuntimeError, AttributeError, NotImplementedError) as e:
        print(f"note: int8 dynamic quantization skipped ({type(e).__name__}: {str(e).splitlines()[0]})")
        return None
    float_ms = pl.metrics.measure_latency(model, repeats=repeats).median_ms
    int8_ms = pl.metrics.measure_latency(q, repeats=repeats).median_ms
    return accuracy, float_ms, int8_ms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs of centroid fine-tuning")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs for the int8 latency")
    args = parser.parse_args()
    base = pl.load_pretrained("lenet300")
    train_set, test_set = pl.load_fashion_mnist("train"), pl.load_fashion_mnist("test")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")

    results = {}
    dense_bytes, base_acc = pl.metrics.file_bytes(base), pl.evaluate(base, test_set).accuracy
    print(f"{'method':<22s} {'bits':>4s} {'accuracy':>8s} {'file B':>10s} {'x smaller':>9s}")
    print(f"{'float32':<22s} {32:4d} {base_acc:8.4f} {dense_bytes:10,d} {1:9.2f}")
    results["float32"] = (base_acc, dense_bytes)

    def row(method, bits, accuracy, nbytes):
        print(f"{method:<22s} {bits:4d} {accuracy:8.4f} {nbytes:10,d} {dense_bytes / nbytes:9.2f}")
        results[f"{method}_{bits}bit"] = (accuracy, nbytes)

    for bits in BITS:
        for scheme in ("symmetric", "affine"):
            fq = Q.fake_quantize_model(base, bits, scheme=scheme, per_channel=True)
            row(f"linear_{scheme}", bits, pl.evaluate(fq, test_set).accuracy,
                Q.quantized_file_bytes(base, bits, scheme=scheme, per_channel=True))
        shared, books = WS.share_weights(base, bits, init="linear")
        row("kmeans", bits, pl.evaluate(shared, test_set).accuracy, WS.shared_file_bytes(shared, books))
        tuned = WS.fine_tune_centroids(shared, books, train_set, epochs=args.epochs)
        row("kmeans_finetuned", bits, pl.evaluate(shared, test_set).accuracy, WS.shared_file_bytes(shared, tuned))

    int8 = int8_dynamic(base, test_set, args.repeats)
    if int8 is not None:
        accuracy, float_ms, int8_ms = int8
        print(f"torch int8 dynamic (Linear): accuracy {accuracy:.4f}; latency per 256 images "
              f"float32 {float_ms:.2f} ms, int8 {int8_ms:.2f} ms ({float_ms / int8_ms:.2f}x)")

    for name, (accuracy, nbytes) in results.items():
        print(f"RESULT lenet300_{name}_accuracy={accuracy:.4f} unit=fraction target=reference")
        print(f"RESULT lenet300_{name}_file_bytes={nbytes} unit=bytes target=reference")
    if int8 is not None:
        print(f"RESULT lenet300_int8_dynamic_accuracy={int8[0]:.4f} unit=fraction target=reference")
        print(f"RESULT lenet300_float32_latency_ms={int8[1]:.3f} unit=ms target=reference")
        print(f"RESULT lenet300_int8_dynamic_latency_ms={int8[2]:.3f} unit=ms target=reference")


if __name__ == "__main__":
    main()
