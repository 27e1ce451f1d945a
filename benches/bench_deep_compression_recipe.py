"""How ``prunelab.deep_compression.LENET300`` was chosen: a small grid of recipes, each judged on the validation
split only; the test set reports the chosen one once.

The grid varies what moves the file size most: how hard fc1 (88% of LeNet-300-100's weights) is pruned, and the
codebook bits of fc1 and fc2. fc2 and fc3 keep Han et al.'s proportions (91% and 74% removed), fc3 keeps 6 bits,
and the schedule is the recipe's (12 equal-ratio rounds of 3 fine-tuning epochs, one epoch of centroid
fine-tuning). Each pruning run is shared at every bit width, so the grid costs one pipeline per sparsity. A first
grid (fc1 92 to 96%, 4 to 6 bits) chose its own corner (96%, 4 bits), so it was widened to these twenty.

The rule, fixed before any run: the smallest Huffman-coded file whose validation accuracy is at most
``MAX_DROP_POINTS`` below the dense model's validation accuracy. That is the 1.0-point target less a margin of
0.2 points for the gap between the 5,000 validation images and the 10,000 test images (one standard error of a
5,000-image accuracy near 90% is 0.42 points). Deterministic (fixed seeds, the committed baseline).

    python benches/bench_deep_compression_recipe.py    # 7 minutes on 2 cores (AMD EPYC, AVX2, beside a test run)

What it gave (2026-12-02, 55,000 training images): of 20 recipes, the smallest within 0.8 points on validation was
fc1 98% with 4-bit codebooks, 12,410 bytes (86x), 0.76 points below the dense model on validation; on the test
set it lost 1.16 points. Choosing the smallest of many files at the edge of a limit picks one whose validation
figure happened to be lucky: the margin was too small for twenty tries (see notebook 13).
"""

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import prunelab as pl
from prunelab import compressed_file as CF
from prunelab import deep_compression as DC

FC1_SPARSITIES = (0.92, 0.94, 0.96, 0.97, 0.98)
FC1_FC2_BITS = (3, 4, 5, 6)
MAX_DROP_POINTS = 0.8


def main():
    train_set, validation = pl.load_fashion_mnist("train"), pl.load_fashion_mnist("validation")
    base = pl.load_pretrained("lenet300")
    dense_validation = pl.evaluate(base, validation).accuracy
    print(f"dense LeNet-300-100: {dense_validation:.2%} validation accuracy; rule: smallest file within "
          f"{MAX_DROP_POINTS} pt of it on validation")
    start = time.perf_counter()
    candidates = []
    print(f"\n{'fc1 s':>6} {'bits':>8} {'bytes':>8} {'x smaller':>9} {'validation':>10} {'change':>8}")
    _, dense_record = DC.dense_step(base, validation)
    for fc1 in FC1_SPARSITIES:
        recipe = replace(DC.LENET300, sparsity={**DC.LENET300.sparsity, "fc1": fc1})
        pruned, _ = DC.prune_step(base, train_set, validation, recipe.sparsity, rounds=recipe.rounds,
                                  epochs_per_round=recipe.epochs_per_round, lr=recipe.prune_lr, seed=recipe.seed)
        for b in FC1_FC2_BITS:
            recipe_b = replace(recipe, bits={**DC.LENET300.bits, "fc1": b, "fc2": b})
            shared, books, _ = DC.share_step(pruned, train_set, validation, recipe_b.bits,
                                             epochs=recipe_b.tune_epochs, lr=recipe_b.tune_lr, seed=recipe_b.seed)
            _, record = DC.huffman_step(shared, books, validation)
            change = 100 * (record.accuracy - dense_validation)
            candidates.append((recipe_b, shared, books, record))
            print(f"{fc1:6.2f} {'/'.join(str(v) for v in recipe_b.bits.values()):>8} {record.bytes:8,d} "
                  f"{dense_record.bytes / record.bytes:9.1f} {record.accuracy:10.2%} {change:+7.2f}pt", flush=True)
    passing = [c for c in candidates if 100 * (dense_validation - c[3].accuracy) <= MAX_DROP_POINTS]
    if not passing:
        print(f"RESULT dc_recipe_found=0 unit=bool target=1  (no recipe within {MAX_DROP_POINTS} pt on validation)")
        return
    recipe, shared, books, record = min(passing, key=lambda c: c[3].bytes)
    print(f"\nchosen on validation: sparsity {dict(recipe.sparsity)}, bits {dict(recipe.bits)} "
          f"({record.bytes:,d} bytes, {record.accuracy:.2%} validation); "
          f"LENET300 is {'this recipe' if recipe == DC.LENET300 else 'ANOTHER recipe: update it'}")

    # The report, once: the chosen file loaded back and scored on the test set.
    test_set = pl.load_fashion_mnist("test")
    with tempfile.TemporaryDirectory(prefix="prunelab-") as tmp:
        path = CF.save_compressed(shared, books, Path(tmp) / "chosen.plc")
        loaded = CF.load_compressed(path, pl.build_model("lenet300")).eval()
    test_accuracy, dense_test = pl.evaluate(loaded, test_set).accuracy, pl.evaluate(base, test_set).accuracy
    print(f"test accuracy of the chosen file: {test_accuracy:.2%} (dense {dense_test:.2%}, "
          f"{100 * (test_accuracy - dense_test):+.2f} pt)")
    print("RESULT dc_recipe_found=1 unit=bool target=1")
    print(f"RESULT dc_recipe_is_lenet300={int(recipe == DC.LENET300)} unit=bool target=1")
    print(f"RESULT dc_recipe_bytes={record.bytes} unit=bytes target=reference")
    print(f"RESULT dc_recipe_validation_drop={100 * (dense_validation - record.accuracy):.2f} unit=pt "
          f"target=<={MAX_DROP_POINTS}")
    print(f"RESULT dc_recipe_test_drop={100 * (dense_test - test_accuracy):.2f} unit=pt target=<=1.0")
    print(f"RESULT dc_recipe_seconds={time.perf_counter() - start:.0f} unit=s target=reference")


if __name__ == "__main__":
    main()
