"""Knowledge distillation on Fashion-MNIST: does LeNet-300-100 teach a 784-30-10 student anything?

Teacher: ``pl.load_pretrained("lenet300")`` (266,610 parameters, trained by ``prunelab.baselines``). Student:
``prunelab.distillation.student_mlp(30)`` (23,860 parameters, 11x fewer). With and without the teacher, the
students get the same initial weights, epochs, lr, batch size, batch order (seed) and schedule (the teacher's
recipe: SGD momentum 0.9, weight decay 5e-4, cosine from lr); only the loss differs.

Each part first chooses T and α without the test set: students train on the training split for every T in
--temperatures and α in --alphas and for α = 0 (plain cross-entropy), with the first seed, and the best
accuracy on the 5,000-image validation split wins (neither teacher nor student ever trained on it). Then the
best (T, α) against plain training, for each of --seeds: test accuracy per seed, mean and range.

1. Full training set: all 55,000 training images, --epochs epochs.
2. Data-limited: the student sees only --small images (a random subset) for --small-epochs epochs; the teacher
   still knows all 55,000. This is where a teacher is expected to help most.

Also printed: how confident the teacher is on the training images (its mean probability for the true class at
each T); near 1 at T = 1, its soft targets carry little beyond the labels.

    python benches/bench_distillation.py [--epochs 10] [--seeds 0 1 2] [--small 5000] [--small-epochs 30]
"""

import argparse
import functools
import os
import statistics
import time

import torch

import prunelab as pl
from prunelab import distillation as D

RECIPE = {"lr": 0.05, "batch_size": 128, "momentum": 0.9, "weight_decay": 5e-4, "lr_schedule": "cosine"}


def run(teacher, train_data, eval_data, *, T, alpha, epochs, seed, hidden):
    """Accuracy on ``eval_data`` of a student trained with (T, α); α = 0 is plain training (no teacher)."""
    student = D.student_mlp(hidden, seed=seed)
    D.distill(student, teacher, train_data, T=T, alpha=alpha, epochs=epochs, seed=seed, device="cpu",
              progress=False, **RECIPE)
    return pl.evaluate(student, eval_data).accuracy


def teacher_confidence(teacher, data, temperatures):
    """Mean probability the teacher's soft targets give the true class, at each T."""
    with torch.no_grad():
        z_t = teacher(data.normalized())
    rows = torch.arange(len(data))
    return {T: float(D.soft_targets(z_t, T)[rows, data.labels].mean()) for T in temperatures}


def compare(name, teacher, train_data, validation_set, test_set, args, epochs):
    """Sweep (T, α) on train_data -> validation_set with the first seed, then the best against plain training
    on train_data -> test_set for every seed. Returns {RESULT name: value}."""
    run_ = functools.partial(run, teacher, epochs=epochs, hidden=args.hidden)
    seed0 = args.seeds[0]
    print(f"   sweep: train on {len(train_data):,}, accuracy on {len(validation_set):,} validation images, "
          f"seed {seed0}")
    baseline = run_(train_data, validation_set, T=1.0, alpha=0.0, seed=seed0)
    print(f"   no teacher (alpha=0)  validation accuracy {baseline:.4f}")
    sweep = {}
    for T in args.temperatures:
        for alpha in args.alphas:
            sweep[(T, alpha)] = run_(train_data, validation_set, T=T, alpha=alpha, seed=seed0)
            print(f"   T={T:<4g} alpha={alpha:<4g}  validation accuracy {sweep[(T, alpha)]:.4f} "
                  f"({sweep[(T, alpha)] - baseline:+.4f})")
    T, alpha = max(sweep, key=sweep.get)
    print(f"   best on the validation split: T={T:g}, alpha={alpha:g}")
    print(f"   then: train on {len(train_data):,}, test set ({len(test_set):,}), T={T:g}, alpha={alpha:g}")
    plain, distilled = [], []
    for seed in args.seeds:
        plain.append(run_(train_data, test_set, T=1.0, alpha=0.0, seed=seed))
        distilled.append(run_(train_data, test_set, T=T, alpha=alpha, seed=seed))
        print(f"   seed {seed}: without teacher {plain[-1]:.4f}, with teacher {distilled[-1]:.4f} "
              f"({distilled[-1] - plain[-1]:+.4f})")
    gains = [d - p for d, p in zip(distilled, plain)]
    print(f"   mean: without {statistics.mean(plain):.4f} (range {min(plain):.4f}-{max(plain):.4f}), "
          f"with {statistics.mean(distilled):.4f} (range {min(distilled):.4f}-{max(distilled):.4f}); "
          f"gain {statistics.mean(gains):+.4f} (per seed {min(gains):+.4f} to {max(gains):+.4f})")
    return {f"distill_{name}_best_T": (f"{T:g}", "temperature"),
            f"distill_{name}_best_alpha": (f"{alpha:g}", "fraction"),
            f"distill_{name}_plain_accuracy": (f"{statistics.mean(plain):.4f}", "fraction"),
            f"distill_{name}_distilled_accuracy": (f"{statistics.mean(distilled):.4f}", "fraction"),
            f"distill_{name}_gain": (f"{statistics.mean(gains):+.4f}", "fraction")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs on the full training set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--hidden", type=int, default=30, help="hidden units of the student")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.9])
    parser.add_argument("--small", type=int, default=5000, help="images of the data-limited part (0: skip it)")
    parser.add_argument("--small-epochs", type=int, default=30, help="epochs of the data-limited part")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    teacher = pl.load_pretrained("lenet300")
    train_set, test_set = pl.load_fashion_mnist("train"), pl.load_fashion_mnist("test")
    validation_set = pl.load_fashion_mnist("validation")
    print(f"teacher lenet300: {pl.count_parameters(teacher):,} parameters, test accuracy "
          f"{pl.evaluate(teacher, test_set).accuracy:.4f}, "
          f"validation {pl.evaluate(teacher, validation_set).accuracy:.4f}")
    confidence = teacher_confidence(teacher, train_set, args.temperatures)
    print("teacher's mean p(true class) on the training images: "
          + ", ".join(f"T={T:g}: {p:.3f}" for T, p in confidence.items()))
    student_params = pl.count_parameters(D.student_mlp(args.hidden))
    print(f"student 784-{args.hidden}-10: {student_params:,} parameters; {RECIPE}")
    results = {"distill_student_parameters": (str(student_params), "count")}

    print(f"\n1. full training set, {args.epochs} epochs")
    results |= compare("full", teacher, train_set, validation_set, test_set, args, args.epochs)
    if args.small:
        print(f"\n2. data-limited: the student sees {args.small:,} training images ({args.small_epochs} epochs); "
              f"the teacher was trained on all {len(train_set):,}")
        results |= compare(f"small{args.small}", teacher, train_set.subset(args.small, seed=0), validation_set,
                           test_set, args, args.small_epochs)
    print(f"total {time.perf_counter() - start:.0f} s")
    for key, (value, unit) in results.items():
        print(f"RESULT {key}={value} unit={unit} target=reference")


if __name__ == "__main__":
    main()
