"""Quantization-aware training and mixed precision, measured: what fine-tuning with k-bit weights buys over
rounding after training, and what a bit width per layer buys over one width for all, at the same bytes.

1. LeNet-300-100 (pretrained) at 4 and 2 bits, symmetric, per tensor and per channel:
   - PTQ: ``fake_quantize_model`` of the pretrained weights;
   - float FT + PTQ (the fair control): the same epochs of plain fine-tuning, then ``fake_quantize_model``;
   - QAT: ``qat.qat_finetune`` (straight-through estimator), exported on the k-bit grid.
   Fine-tuning: SGD with momentum 0.9, ``--epochs`` epochs; the learning rate of each method is chosen from
   ``--lrs`` by validation accuracy; test accuracy of the chosen one is reported.
2. LeNet-300-100 and LeNet-5 (pretrained), per channel: ``mixed_precision.allocate_bits`` with widths
   (2, 3, 4, 6, 8) from validation curves, at the bytes of uniform 3 and 4 bits and half way between 2 and 3 and
   between 3 and 4 bits; against the widest uniform width that fits the same budget. Bytes: packed codes + S, Z.

    OMP_NUM_THREADS=1 python benches/bench_qat.py [--epochs 1] [--lrs 0.01 0.001]

Measured on an AMD EPYC (1 thread, AVX512, torch 2.14.1, --epochs 1, lrs 0.01 and 0.001; 74 s), test accuracy:

    LeNet-300-100    bits   PTQ     float FT + PTQ   QAT       (float: 0.8999)
    per tensor        4    0.8815       0.8804      0.8959
    per tensor        2    0.1996       0.2279      0.7784
    per channel       4    0.8972       0.8969      0.8983
    per channel       2    0.5074       0.4975      0.8730

    model      budget B   uniform (bits: test)   mixed (bits per layer: test)
    lenet300    102,285   3: 0.8692              3 3 3: 0.8692 (the same)
    lenet300    135,560   4: 0.8972              4 3 4: 0.8962
    lenet300     85,647   2: 0.5074              2 6 4: 0.6359
    lenet300    118,922   3: 0.8692              3 6 4: 0.8735
    lenet5       24,468   3: 0.8760              8 6 3 2 4: 0.8853
    lenet5       32,151   4: 0.8995              8 6 4 3 8: 0.9036
    lenet5       20,626   2: 0.2825              8 8 2 3 8: 0.6992
    lenet5       28,309   3: 0.8760              8 8 3 4 8: 0.8990

The greedy equalled the exact allocation (``allocate_bits_exact``) at every budget here. The predicted accuracy
(sum of one-layer drops) was within 0.01 of the measured validation accuracy except at 2-3 bits per tensor.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch

import prunelab as pl
from prunelab import mixed_precision as MP
from prunelab import qat
from prunelab import quantization as Q

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402


def float_then_ptq(model, train_set, bits, *, epochs, lr, per_channel):
    tuned = pl.masks.copy_model(model)
    pl.train(tuned, train_set, epochs=epochs, lr=lr, progress=False)
    return Q.fake_quantize_model(tuned, bits, per_channel=per_channel)


def qat_then_export(model, train_set, bits, *, epochs, lr, per_channel):
    return qat.qat_finetune(model, train_set, bits, epochs=epochs, lr=lr, per_channel=per_channel, progress=False)


def best_by_validation(make, lrs, validation):
    """(model, lr, validation accuracy) of the lr with the highest validation accuracy (ties: the first)."""
    runs = [(make(lr), lr) for lr in lrs]
    scored = [(pl.evaluate(m, validation).accuracy, -i, m, lr) for i, (m, lr) in enumerate(runs)]
    accuracy, _, model, lr = max(scored, key=lambda s: s[:2])
    return model, lr, accuracy


def qat_comparison(args, train_set, validation, test_set):
    base = pl.load_pretrained("lenet300")
    print(f"\n1. LeNet-300-100: PTQ vs float FT + PTQ vs QAT, {args.epochs} epoch(s), lr from {args.lrs} by validation")
    print(f"{'granularity':<12s} {'bits':>4s} {'method':<16s} {'lr':>7s} {'val acc':>8s} {'test acc':>8s}")
    for per_channel in (False, True):
        granularity = "per channel" if per_channel else "per tensor"
        for bits in (4, 2):
            ptq = Q.fake_quantize_model(base, bits, per_channel=per_channel)
            rows = [("PTQ", ptq, None, pl.evaluate(ptq, validation).accuracy)]
            for name, method in (("float FT + PTQ", float_then_ptq), ("QAT", qat_then_export)):
                model, lr, val = best_by_validation(
                    lambda lr, method=method: method(base, train_set, bits, epochs=args.epochs, lr=lr,
                                                     per_channel=per_channel), args.lrs, validation)
                rows.append((name, model, lr, val))
            results = {}
            for name, model, lr, val in rows:
                results[name] = pl.evaluate(model, test_set).accuracy
                lr_text = "-" if lr is None else f"{lr:g}"
                print(f"{granularity:<12s} {bits:4d} {name:<16s} {lr_text:>7s} {val:8.4f} {results[name]:8.4f}")
            tag = "per_channel" if per_channel else "per_tensor"
            print(f"RESULT qat lenet300 {tag} bits={bits} test_ptq={results['PTQ']:.4f} "
                  f"test_float_ft_ptq={results['float FT + PTQ']:.4f} test_qat={results['QAT']:.4f} "
                  f"qat_minus_ptq={results['QAT'] - results['PTQ']:+.4f}")


def mixed_comparison(validation, test_set):
    print("\n2. Mixed precision (widths 2, 3, 4, 6, 8; per channel, symmetric) vs the widest uniform width that fits")
    print(f"{'model':<9s} {'budget B':>9s} {'method':<8s} {'bits per layer':<42s} {'bytes':>8s} {'pred':>7s} "
          f"{'val acc':>8s} {'test acc':>8s}")
    for arch in ("lenet300", "lenet5"):
        base = pl.load_pretrained(arch)
        start = time.perf_counter()
        curves = MP.bit_curves(base, validation, MP.DEFAULT_BITS, per_channel=True)
        print(f"{arch}: curves in {time.perf_counter() - start:.1f} s, float validation accuracy {curves.baseline:.4f}")
        uniform = {b: curves.total_bytes({L: b for L in curves.layers}) for b in curves.bits}
        budgets = [uniform[3], uniform[4], (uniform[2] + uniform[3]) // 2, (uniform[3] + uniform[4]) // 2]
        for budget in budgets:
            b_uniform = max(b for b in curves.bits if uniform[b] <= budget)
            allocation = MP.allocate_bits_from_curves(curves, budget)
            exact = MP.allocate_bits_exact(curves, budget)
            rows = [("uniform", {L: b_uniform for L in curves.layers}), ("greedy", allocation.bits)]
            if exact.bits != allocation.bits:
                rows.append(("exact", exact.bits))
            test = {}
            for name, bits in rows:
                model = MP.fake_quantize_mixed(base, bits, per_channel=True)
                val, test[name] = pl.evaluate(model, validation).accuracy, pl.evaluate(model, test_set).accuracy
                text = " ".join(f"{L}:{b}" for L, b in bits.items())
                print(f"{arch:<9s} {budget:9,d} {name:<8s} {text:<42s} {curves.total_bytes(bits):8,d} "
                      f"{curves.predicted_accuracy(bits):7.4f} {val:8.4f} {test[name]:8.4f}")
            print(f"RESULT mixed {arch} budget={budget} uniform_bits={b_uniform} test_uniform={test['uniform']:.4f} "
                  f"test_mixed={test['greedy']:.4f} greedy_equals_exact={exact.bits == allocation.bits}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs (QAT and the float control)")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.001], help="learning rates to choose from")
    args = parser.parse_args()
    print(f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{torch.backends.cpu.get_cpu_capability()}, load average {os.getloadavg()[0]:.1f}")
    train_set, validation, test_set = (pl.load_fashion_mnist(s) for s in ("train", "validation", "test"))
    start = time.perf_counter()
    qat_comparison(args, train_set, validation, test_set)
    mixed_comparison(validation, test_set)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
