"""Channel pruning fine-tuned, against measured latency: the central result of MIT 6.5940's lab 1, on VGGSmall.

For each ratio r, every conv of the pretrained VGGSmall loses k = round(r · C_out) filters, chosen by one of two
criteria: ``l1`` (the filters with the smallest sum |W[c]|, "sorted") or ``random`` (no criterion: a seeded draw).
``prunelab.shrink.shrink`` removes them for real (the BatchNorm entries and the next layer's input channels go
too), then the smaller network is fine-tuned with the baseline's optimiser (SGD, momentum 0.9, weight decay 5e-4,
cosine rate from ``--lr``) for ``--epochs`` epochs on ``--train-images`` training images. Accuracy before and after
fine-tuning is measured on the validation split (where a choice would be made) and reported on test; the latency
of the shrunk model is timed against the dense one, interleaved repeat by repeat on the same batch
(``metrics.measure_latency``), so that load on the machine hits both alike. The speed-up is dense / shrunk median.

    python benches/bench_finetuned_channels.py [--ratios 0.25 0.5 0.75] [--epochs 2] [--train-images 10000]

Measured 2026-12-04 (torch 2.14.1, 1 thread, 2-core AMD EPYC with AVX-512, load 0.7-1.2;
``--seeds 0 1 2``, the defaults otherwise; dense VGGSmall 93.42% validation, 93.02% test, 7,344,000 MACs):

    removed  MACs fewer  speed-up   validation after (L1 | random)   before (L1 | random)   test after, L1
    25%      1.77x       1.5-1.7x   92.18-92.50 | 91.68-92.10        59.22 | 28.20-69.26    91.88-92.12
    50%      3.94x       2.7-2.9x   89.78-90.28 | 89.42-90.54        10.78 | 10.00-20.00    89.29-89.61
    75%      15.26x      4.9-5.4x   85.40-85.78 | 84.40-85.70         9.40 | 10.00          84.66-84.88

Fine-tuning gives back most of what removing the filters took; the criterion matters before it (L1 59% vs random
28-69% at 25%) and hardly after it: L1's mean is ahead by 0.42, 0.23 and 0.33 points, less than the spread over
seeds at 50%. The speed-up is 0.9 of the MAC reduction at 25%, 0.7 at 50% and a third at 75% (narrow layers run
less efficiently: bench_structured.py). Each fine-tuning took 5-16 s on one thread.
"""

import argparse
import itertools
import os
import statistics
import time

import torch
from torch import nn

import prunelab as pl
from prunelab.metrics import count_macs, measure_latency
from prunelab.shrink import shrink

from machine import cpu_name


def filters_to_keep(model: nn.Module, ratio: float, criterion: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per Conv2d: the indices of the filters kept, sorted; k = round(ratio · C_out) removed (at least one kept)."""
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            n = conv.out_channels
            kept = max(1, n - round(ratio * n))
            if criterion == "l1":
                score = conv.weight.detach().abs().sum((1, 2, 3))
                chosen = score.argsort(descending=True, stable=True)[:kept]
            else:
                chosen = torch.randperm(n, generator=g)[:kept]
            keep[name] = chosen.sort().values
    return keep


def interleaved_speedup(dense: nn.Module, small: nn.Module, x: torch.Tensor,
                        repeats: int) -> tuple[float, float, float]:
    """Median dense / shrunk time over ``repeats`` interleaved pairs, with the pairs' 10th and 90th percentiles."""
    ratios = []
    for _ in range(repeats):
        a = measure_latency(dense, x, repeats=3, warmup=1).median_ms
        b = measure_latency(small, x, repeats=3, warmup=1).median_ms
        ratios.append(a / b)
    q = statistics.quantiles(ratios, n=10)
    return statistics.median(ratios), q[0], q[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--criteria", nargs="+", default=["l1", "random"], choices=["l1", "random"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=10_000)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=10, help="interleaved dense/shrunk timing pairs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="fine-tuning data order (and the random criterion's draw): the spread over seeds")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dense = pl.load_pretrained("vgg_small")
    train_set = pl.load_fashion_mnist("train").subset(args.train_images, seed=0)
    validation, test = pl.load_fashion_mnist("validation"), pl.load_fashion_mnist("test")
    x = validation.normalized()[:256]
    dense_macs = count_macs(dense, data=validation).dense
    dense_val, dense_test = pl.evaluate(dense, validation).accuracy, pl.evaluate(dense, test).accuracy
    print(f"{cpu_name()}, {args.threads} thread(s), load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}")
    print(f"VGGSmall dense: validation {dense_val:.2%}, test {dense_test:.2%}, {dense_macs:,} MACs per image; "
          f"fine-tuning {args.epochs} epochs on {len(train_set):,} images, lr {args.lr} (cosine)")
    print(f"{'criterion':9} {'ratio':>5} {'seed':>4} {'MACs':>7} {'speed-up (p10-p90)':>20} {'val before':>10} "
          f"{'val after':>9} {'test after':>10} {'train s':>7}")
    for criterion, ratio, seed in itertools.product(args.criteria, args.ratios, args.seeds):
        small = shrink(dense, filters_to_keep(dense, ratio, criterion, seed))
        macs = count_macs(small, data=validation).dense
        before = pl.evaluate(small, validation).accuracy
        start = time.perf_counter()
        pl.train(small, train_set, epochs=args.epochs, lr=args.lr, lr_schedule="cosine", momentum=0.9,
                 weight_decay=5e-4, seed=seed, progress=False)
        seconds = time.perf_counter() - start
        after, after_test = pl.evaluate(small, validation).accuracy, pl.evaluate(small, test).accuracy
        speedup, lo, hi = interleaved_speedup(dense, small, x, args.repeats)
        print(f"{criterion:9} {ratio:5.2f} {seed:4} {dense_macs / macs:6.2f}x {speedup:6.2f}x ({lo:.2f}-{hi:.2f}) "
              f"{before:10.2%} {after:9.2%} {after_test:10.2%} {seconds:7.0f}", flush=True)
        tag = f"{criterion}_r{round(100 * ratio)}_seed{seed}"
        print(f"RESULT finetuned_channels_{tag}_val_before={100 * before:.2f} unit=%")
        print(f"RESULT finetuned_channels_{tag}_val_after={100 * after:.2f} unit=%")
        print(f"RESULT finetuned_channels_{tag}_test_after={100 * after_test:.2f} unit=%")
        print(f"RESULT finetuned_channels_{tag}_mac_reduction={dense_macs / macs:.2f} unit=x")
        print(f"RESULT finetuned_channels_{tag}_speedup={speedup:.2f} unit=x (p10 {lo:.2f}, p90 {hi:.2f})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
