"""What unstructured pruning buys LeNet-300-100, measured: parameters, MACs, bytes on disk, and CPU latency.

The pretrained LeNet-300-100 is pruned with ``torch.nn.utils.prune.global_unstructured`` (L1, one threshold
over fc1, fc2 and fc3 together) at 0%, 50%, 90% and 95%. For each, ``prunelab.metrics`` measures nonzero
parameters, effective MACs per image, the bytes of real files (dense, bitmask, csr, and gzip of dense and
bitmask), the test accuracy, and the median latency of a batch of 256 images (the mask does not skip any work,
so latency should not move). All figures are for reference: nothing here has a target.

    python benches/bench_metrics.py [--repeats 20]
"""

import argparse
import copy
import os

import torch
from torch.nn.utils import prune

import prunelab as pl
from prunelab import metrics as M

AMOUNTS = (0.0, 0.5, 0.9, 0.95)


def pruned(model, amount):
    model = copy.deepcopy(model)
    prune.global_unstructured([(model.fc1, "weight"), (model.fc2, "weight"), (model.fc3, "weight")],
                              pruning_method=prune.L1Unstructured, amount=amount)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    base = pl.load_pretrained("lenet300")
    test_set = pl.load_fashion_mnist("test")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}, latency: batch of 256, {args.repeats} repeats")
    header = (f"{'sparsity':>8s} {'nonzero':>8s} {'eff. MACs':>10s} {'dense B':>10s} {'bitmask B':>10s} "
              f"{'csr B':>10s} {'gz(dense)':>10s} {'gz(bitm.)':>10s} {'accuracy':>8s} {'ms/256':>7s}")
    print(header)
    rows = {}
    for amount in AMOUNTS:
        model = pruned(base, amount)
        counts, macs, size = M.parameter_counts(model), M.count_macs(model), M.size_report(model)
        latency = M.measure_latency(model, repeats=args.repeats)
        accuracy = pl.evaluate(model, test_set).accuracy
        row = {"sparsity": M.global_sparsity(model), "nonzero_params": counts.nonzero,
               "effective_macs": macs.effective, "dense_bytes": size["dense"].bytes,
               "bitmask_bytes": size["bitmask"].bytes, "csr_bytes": size["csr"].bytes,
               "gzip_dense_bytes": size["dense"].gzip_bytes, "gzip_bitmask_bytes": size["bitmask"].gzip_bytes}
        rows[amount] = row
        print(f"{row['sparsity']:8.1%} {counts.nonzero:8,d} {macs.effective:10,d} {size['dense'].bytes:10,d} "
              f"{size['bitmask'].bytes:10,d} {size['csr'].bytes:10,d} {size['dense'].gzip_bytes:10,d} "
              f"{size['bitmask'].gzip_bytes:10,d} {accuracy:8.4f} {latency.median_ms:7.2f}")
    print(f"dense MACs per image {M.count_macs(base).dense:,d}; "
          f"total parameters {M.parameter_counts(base).total:,d}")
    for amount, row in rows.items():
        for key, value in row.items():
            if key != "sparsity":
                print(f"RESULT lenet300_s{round(amount * 100)}_{key}={value} "
                      f"unit={'bytes' if key.endswith('bytes') else 'count'} target=reference")
    s90 = rows[0.9]
    print(f"RESULT lenet300_s90_dense_over_bitmask={s90['dense_bytes'] / s90['bitmask_bytes']:.2f} unit=x "
          f"target=reference")


if __name__ == "__main__":
    main()
