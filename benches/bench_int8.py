"""int8 for real: integer-only inference against float, and a measured int8 speed-up in ONNX Runtime.

(a) ``prunelab.integer_inference``: LeNet-300-100, LeNet-5 and VGGSmall (BatchNorm folded) computed with integers
only, uint8 activations calibrated on 1,000 validation images ("minmax" and "percentile" 99.99), int8 weights per
channel, int32 accumulators, fixed-point requantization; on the 10,000 test images: the fraction of images where
the integer-only and the float model predict the same class, and both accuracies. That code is written to be read
(its sums are float64 BLAS on integer values), so its time is shown but is no measure of int8 hardware.

(b) A real engine: each float model exported with ``export.export_onnx``, then quantized by ONNX Runtime's static
quantization (``export.quantize_onnx_int8``: ``quantize_static`` with a CalibrationDataReader over 1,000 validation
images, int8 weights per channel, uint8 activations) in both formats, QDQ and QOperator. Timed on the first 256 test
images (batch 256) with ``metrics.time_calls`` (through ``metrics.measure_latency`` and ``export.onnx_latency``),
interleaved round by round so that load on a shared CPU hits every variant alike; ONNX Runtime gets torch's thread
count. int8 accuracy on the 10,000 test images.

Measured 2026-12-03 on a 2-core AMD EPYC (with AVX-512 and AVX-512 VNNI; /proc/cpuinfo says only "AMD EPYC")
shared with other work (load average 4.0, so the p90s are wide), torch 2.14.1, onnxruntime 1.32.0, 1 thread,
8 rounds x 5 repeats:

    (a) integer-only vs float, 10,000 test images, calibrated on 1,000 validation images
    model      method      agreement  int accuracy  float accuracy  integer ms/batch
    lenet300   minmax         99.66%        90.01%          89.99%               4.3
    lenet300   percentile     99.69%        90.01%          89.99%               5.2
    lenet5     minmax         99.43%        91.15%          91.10%              43.8
    lenet5     percentile     99.38%        91.04%          91.10%              41.0
    vgg_small  minmax         99.68%        93.01%          93.02%             693.6
    vgg_small  percentile     99.63%        93.07%          93.02%            1221.9

    (b) batch 256, median ms (p10-p90); accuracy on 10,000 test images
    model      variant                median (p10-p90) ms  accuracy  vs onnx float  vs eager
    lenet300   eager float32           1.84 (  1.59-  6.33)    0.8999          0.78x     1.00x
    lenet300   onnx float32            1.44 (  1.30-  5.57)    0.8999          1.00x     1.27x
    lenet300   onnx int8 QDQ           0.41 (  0.40-  4.52)    0.9001          3.56x     4.53x
    lenet300   onnx int8 QOperator     0.43 (  0.40-  4.55)    0.9001          3.38x     4.31x
    lenet5     eager float32          27.14 ( 23.98- 31.88)    0.9110          0.38x     1.00x
    lenet5     onnx float32           10.18 (  8.62- 14.28)    0.9110          1.00x     2.67x
    lenet5     onnx int8 QDQ          25.69 ( 17.66- 32.64)    0.9115          0.40x     1.06x
    lenet5     onnx int8 QOperator    21.84 ( 17.54- 36.46)    0.9115          0.47x     1.24x
    vgg_small  eager float32         118.77 ( 90.02-147.51)    0.9302          0.48x     1.00x
    vgg_small  onnx float32           56.45 ( 39.99- 63.02)    0.9302          1.00x     2.10x
    vgg_small  onnx int8 QDQ          29.24 ( 25.26- 37.70)    0.9301          1.93x     4.06x
    vgg_small  onnx int8 QOperator    28.82 ( 25.74- 39.89)    0.9301          1.96x     4.12x

Integer-only inference agrees with float on 99.4-99.7% of the test images, within 0.06 points of its accuracy,
with either calibration. In ONNX Runtime, int8 is 3.4-3.6x faster than float for LeNet-300-100 (matrix products)
and 1.9-2.0x for VGGSmall, with the same accuracy to 0.01-0.02 points. QDQ and QOperator are equally fast within the
noise (ONNX Runtime fuses a QDQ graph into the same integer kernels), so QDQ, ``quantize_static``'s own default,
is ``quantize_onnx_int8``'s default. LeNet-5 gets *slower* in int8 (0.4-0.5x): in an ONNX Runtime profile (one thread,
batch 256) its first conv, 1 input channel and 6 filters of 5x5, took 10.2 ms as a QLinearConv against 4.4 ms as a
float Conv with its ReLU fused (NCHWc kernel): half of the float model's time, three quarters of the int8 one's.
With so few channels (a dot product of 25 values per output) an int8 GEMM has nothing to multiply at width.
The integer-only model of (a) is 1.6-10x slower than eager float: it is float64 BLAS on integer values, written to
be read, not an int8 engine.

    python benches/bench_int8.py [--rounds 8] [--repeats 5] [--threads 1] [--calibration 1000]
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
from prunelab import integer_inference as II

MODELS = ("lenet300", "lenet5", "vgg_small")
METHODS = ("minmax", "percentile")
FORMATS = ("QDQ", "QOperator")


def integer_only(name, model, calibration, test_set, x):
    """{method: (Agreement, integer model's median ms for the batch x)} for the float ``model``."""
    out = {}
    for method in METHODS:
        integer = II.integer_model(model, II.calibrate(model, calibration, method=method))
        agreement = integer.compare_with(model, test_set)
        ms = pl.metrics.measure_latency(integer, x, repeats=3, warmup=1).median_ms
        print(f"  {name:10s} {method:10s} {agreement.describe()}; {ms:.1f} ms per batch of {len(x)}", flush=True)
        out[method] = agreement, ms
    return out


def onnx_accuracy(path, test_set):
    """Accuracy of the ONNX file on every image of ``test_set``, in ONNX Runtime."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, name = test_set.normalized().numpy(), session.get_inputs()[0].name
    predicted = np.concatenate([session.run(None, {name: x[i:i + 1000]})[0].argmax(1) for i in range(0, len(x), 1000)])
    return float((predicted == test_set.labels.numpy()).mean())


def engine(name, model, calibration, test_set, x, folder, rounds, repeats):
    """{variant: (times in ms, accuracy)} for eager float32, ONNX float32 and ONNX int8 in both formats."""
    paths = {"onnx float32": export.export_onnx(model, folder / f"{name}.onnx", x[:8])}
    for fmt in FORMATS:
        paths[f"onnx int8 {fmt}"] = export.quantize_onnx_int8(paths["onnx float32"], folder / f"{name}-{fmt}.onnx",
                                                               calibration, quant_format=fmt)
    times = {variant: [] for variant in ["eager float32", *paths]}
    for _ in range(rounds):
        times["eager float32"] += pl.metrics.measure_latency(model, x, repeats=repeats, warmup=1).times_ms
        for variant, path in paths.items():
            times[variant] += export.onnx_latency(path, x, repeats=repeats, warmup=1).times_ms
    accuracy = {"eager float32": pl.evaluate(model, test_set).accuracy}
    accuracy |= {variant: onnx_accuracy(path, test_set) for variant, path in paths.items()}
    return {variant: (t, accuracy[variant]) for variant, t in times.items()}


def spread(t):
    """(median, p10, p90) in ms."""
    return float(np.median(t)), float(np.percentile(t, 10)), float(np.percentile(t, 90))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="rounds; each times every variant of every model")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches per variant and round")
    parser.add_argument("--threads", type=int, default=1, help="torch (and onnxruntime) threads")
    parser.add_argument("--calibration", type=int, default=1000, help="validation images to calibrate on")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()} ({platform.machine()}, {os.cpu_count()} logical cores), {platform.platform()}")
    print(f"torch {torch.__version__} with {torch.get_num_threads()} threads, onnxruntime {onnxruntime.__version__} "
          f"with as many; load average {os.getloadavg()[0]:.1f}; {args.rounds} rounds x {args.repeats} repeats")

    test_set = pl.load_fashion_mnist("test")
    calibration = pl.load_fashion_mnist("validation").subset(args.calibration, seed=0)
    x = test_set.normalized()[:256]
    models = {name: pl.load_pretrained(name).eval() for name in MODELS}

    print("\n(a) integer-only inference (prunelab.integer_inference) vs float, on the 10,000 test images")
    integer = {name: integer_only(name, m, calibration, test_set, x) for name, m in models.items()}
    print("\n(b) ONNX Runtime static int8 quantization vs float")
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        measured = {name: engine(name, m, calibration.normalized(), test_set, x, Path(tmp), args.rounds, args.repeats)
                    for name, m in models.items()}

    print(f"\n(a) integer-only vs float, {len(test_set):,} test images, calibrated on {len(calibration):,} "
          "validation images")
    print(f"{'model':10s} {'method':10s} {'agreement':>10s} {'int accuracy':>13s} {'float accuracy':>15s} "
          f"{'integer ms/batch':>17s}")
    for name, by_method in integer.items():
        for method, (a, ms) in by_method.items():
            print(f"{name:10s} {method:10s} {a.agreement:10.2%} {a.integer_accuracy:13.2%} {a.float_accuracy:15.2%} "
                  f"{ms:17.1f}")
    print(f"\n(b) batch {len(x)}, median ms (p10-p90); accuracy on {len(test_set):,} test images")
    print(f"{'model':10s} {'variant':19s} {'median (p10-p90) ms':>22s} {'accuracy':>9s} {'vs onnx float':>14s} "
          f"{'vs eager':>9s}")
    for name, variants in measured.items():
        eager, onnx_float = spread(variants["eager float32"][0])[0], spread(variants["onnx float32"][0])[0]
        for variant, (t, acc) in variants.items():
            median, p10, p90 = spread(t)
            print(f"{name:10s} {variant:19s} {median:8.2f} ({p10:6.2f}-{p90:6.2f}) {acc:9.4f} "
                  f"{onnx_float / median:13.2f}x {eager / median:8.2f}x")

    print()
    print(f"RESULT cpu={cpu_name().replace(' ', '_')} unit=name target=reference")
    print(f"RESULT torch_threads={torch.get_num_threads()} unit=threads target=reference")
    for name, by_method in integer.items():
        for method, (a, ms) in by_method.items():
            print(f"RESULT {name}_integer_{method}_agreement={a.agreement:.4f} unit=fraction target=>=0.98")
            print(f"RESULT {name}_integer_{method}_accuracy_minus_float={a.integer_accuracy - a.float_accuracy:+.4f} "
                  "unit=fraction target=>=-0.01")
        print(f"RESULT {name}_float_accuracy={by_method['minmax'][0].float_accuracy:.4f} unit=fraction "
              "target=reference")
    for name, variants in measured.items():
        eager, onnx_float = spread(variants["eager float32"][0])[0], spread(variants["onnx float32"][0])[0]
        for variant, (t, acc) in variants.items():
            key = f"{name}_{variant.replace(' ', '_')}"
            median, p10, p90 = spread(t)
            print(f"RESULT {key}_median={median:.2f} unit=ms target=reference")
            print(f"RESULT {key}_p10={p10:.2f} unit=ms target=reference")
            print(f"RESULT {key}_p90={p90:.2f} unit=ms target=reference")
            print(f"RESULT {key}_accuracy={acc:.4f} unit=fraction target=reference")
            if "int8" in variant:
                print(f"RESULT {key}_speedup_over_onnx_float32={onnx_float / median:.2f} unit=x target=reference")
                print(f"RESULT {key}_speedup_over_eager={eager / median:.2f} unit=x target=reference")


if __name__ == "__main__":
    main()
