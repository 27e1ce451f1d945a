"""Full test-set evaluation (10,000 images): median and p90 over repeated calls, as a slider would make them.

LeNet-300-100 carries the target (median at most 60 ms on a 2-core CPU); the other baselines are
printed for reference.

    python benches/bench_evaluate.py [--repeats 50]
"""

import argparse
import statistics
import time

import torch

import prunelab as pl


def timings(model, test_set, repeats):
    pl.evaluate(model, test_set)  # warm-up: caches the normalised images
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        pl.evaluate(model, test_set)
        out.append((time.perf_counter() - start) * 1000)
    return statistics.median(out), statistics.quantiles(out, n=10)[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    test_set = pl.load_fashion_mnist("test")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    results = {}
    for name in pl.available_checkpoints():
        model = pl.load_pretrained(name)
        repeats = args.repeats if name == "lenet300" else max(5, args.repeats // 10)
        results[name] = timings(model, test_set, repeats)
        print(f"{name:10s} accuracy {pl.evaluate(model, test_set).accuracy:.4f}  "
              f"median {results[name][0]:7.1f} ms  p90 {results[name][1]:7.1f} ms")
    for name, (median, p90) in results.items():
        target = "<=60" if name == "lenet300" else "reference"
        print(f"RESULT {name}_eval_median={median:.1f} unit=ms target={target}")
    print(f"RESULT lenet300_eval_p90={results['lenet300'][1]:.1f} unit=ms target=reference")


if __name__ == "__main__":
    main()
