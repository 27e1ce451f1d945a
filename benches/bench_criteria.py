"""Importance criteria on LeNet-300-100 (issue 16): Taylor accumulated over batches, the gradient change of a
neuron, and whole layers removed.

1. Taylor, whole set vs accumulated (Molchanov et al. 2017, 2019). Per weight, |W ⊙ g| with g = ∂L/∂W over all N
   validation images, against I = (1/B) Σ_b |W ⊙ g_b| over batches of b images (``scores.taylor_batches``); per
   neuron, |T_j| of the whole set against (1/B) Σ_b |T_j(b)| (``data_criteria.unit_taylor_batches``). Printed: the
   mean score per layer, for b = N (the whole-set form) down to b = 1 (per example), and for N = 1000 and 5000.
2. Neurons removed by each criterion: 25/50/75% of the neurons of fc1 and of fc2, scores from 2,048 training images
   (seed 0, as notebook 03), validation accuracy without retraining; and Spearman's ρ between the criteria's
   scores (``bench_loss_change.spearman``). Also: single weights removed by |W|, Taylor and accumulated Taylor.
3. ``data_criteria.layer_importance`` of LeNet-5, LeNet-300-100 (validation) and VGGSmall (1,000 validation
   images): each whole layer replaced by identity where shapes allow, else its output set to 0.

Measured 2026-12-03 (torch 2.14.1, 2 threads, 2-core AMD EPYC shared with other work). Run again under
ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 OMP_NUM_THREADS=1, every figure
below and every RESULT line but the timings came out the same to the digits printed.

1. Mean Taylor score per layer, N = 5000 validation images (x: over the whole-set form):

    weights   whole set |W ⊙ g|   b = 512           b = 32            b = 1 (per example)
    fc1       1.14e-05            3.44e-05 (3.0x)   1.07e-04 (9.4x)   1.54e-04 (13.6x)
    fc2       2.12e-05            5.95e-05 (2.8x)   1.46e-04 (6.9x)   1.81e-04 (8.6x)
    fc3       2.52e-04            7.17e-04 (2.8x)   1.82e-03 (7.2x)   2.54e-03 (10.1x)
    neurons   whole set |T_j|     b = 512           b = 32            b = 1
    fc1       7.13e-04            1.94e-03          5.16e-03          7.03e-03 (9.9x)
    fc2       1.62e-03            3.08e-03          8.63e-03          1.40e-02 (8.6x)

   With N = 1000 the whole-set form is about twice as large (fc1 weights 2.28e-05, neurons 1.47e-03) and the
   per-example form the same (1.57e-04, 7.33e-03): the whole-set gradient is mostly sampling noise that shrinks
   like 1/√N at a trained minimum, the accumulated score does not (ratios 6.9x, 4.5x, 6.6x; neurons 5.0x, 6.7x).

2. Neurons removed from fc1 and fc2 (each the same fraction), validation accuracy (dense 89.92%):

    criterion                  25%     50%     75%
    mean_activation          87.2%   81.9%   55.6%
    loss_change ΔL_j         89.2%   72.5%   42.5%
    random (seed 0)          86.2%   70.5%   32.4%     5 seeds: 84-86%, 70-78%, 32-49%
    gradient_change ΔG_j     88.9%   62.8%   36.6%
    l1                       89.6%   62.4%   36.0%
    taylor_batches b=N       88.6%   62.4%   29.0%     |Σ_i g_ji W_ji + g_bj b_j|, whole-set g
    taylor (Σ_i |g_ji W_ji|) 79.1%   57.2%   33.5%     the old "taylor", whole-set g
    taylor_batches b=32 p=2  88.4%   54.0%   36.4%
    taylor_batches b=1       88.3%   52.0%   34.9%     the criterion's default (Molchanov et al. 2017)

   Spearman ρ (fc1 / fc2):     ΔL            L1            taylor        taylor_batches b=1
    gradient_change           +0.87 / +0.93  +0.91 / +0.93  +0.87 / +0.84  +0.95 / +0.95
    taylor_batches b=1        +0.81 / +0.90  +0.88 / +0.89  +0.88 / +0.89
    taylor                    +0.74 / +0.85  +0.87 / +0.89
    taylor_batches b=N        +0.70 / +0.78  +0.64 / +0.64  +0.72 / +0.68  +0.69 / +0.67
    mean_activation           +0.60 / +0.56  +0.57 / +0.57  +0.52 / +0.33  +0.63 / +0.45

   Seconds for fc1 + fc2 on 2,048 images: gradient_change 8.4 (2 threads; 13.9 with 1 thread, AVX2; 62 while
   other work loaded the 2 cores), taylor_batches (all three forms) 0.03, loss_change 0.14.

   Single weights, each of fc1, fc2, fc3 the same fraction, validation accuracy:

    criterion              70%     90%
    |W|                  86.7%   57.8%
    taylor               66.5%   20.0%
    taylor_batches b=1   63.3%   33.6%

3. Whole layers removed (layer_importance), validation images; L and accuracy of the intact model first:

    LeNet-5 (5,000): L = 0.2968, 91.3%          LeNet-300-100 (5,000): L = 0.3094, 89.9%
    layer  removal  mean A  max A   ΔL      acc    ΔG        layer  removal  mean A  max A   ΔL      acc    ΔG
    conv1  zero     0.731   13.91  +2.3836  10.0%  3.13e+00  fc1    zero     0.292   10.77  +2.1105  10.0%  1.74e-01
    conv2  zero     0.432   22.21  +2.1419  10.0%  4.33e-01  fc2    zero     0.497    9.97  +2.0046  10.0%  3.31e-01
    fc1    zero     0.544   17.78  +2.1426  10.0%  2.99e-01  fc3    zero    -0.017   31.35  +1.9932  10.0%  3.50e-01
    fc2    zero     0.698   20.75  +2.0220  10.0%  4.45e-01
    fc3    zero     0.015   44.44  +2.0057  10.0%  4.56e-01

    VGGSmall (1,000): L = 0.2356, 92.4%
    conv1  zero     0.155    3.82  +4.7711  11.5%  5.63e+01
    conv2  identity 0.149    3.87  +6.5791   8.7%  6.39e+01
    conv3  zero     0.120    2.84  +3.7202   8.3%  6.60e+01
    conv4  identity 0.107    3.37  +3.2069   9.1%  2.11e+01
    conv5  zero     0.094    2.58  +2.2361  11.2%  1.28e+00
    conv6  identity 0.206    8.00  +2.3284  13.2%  4.51e+00
    fc     zero     0.019   22.15  +2.0670   9.8%  1.08e+00

    python benches/bench_criteria.py [--seeds 5]
"""

import argparse
import time

import torch

import prunelab as pl
from bench_loss_change import spearman
from machine import cpu_name
from prunelab import masks as M
from prunelab.data_criteria import layer_importance, taylor_unit_terms
from prunelab.pruning import layer_masks_for_sparsity, unit_masks_to_parameters, unit_scores
from prunelab.scores import accumulated_taylor, batch_means, loss_gradients, taylor, taylor_batches

LAYERS = ("fc1", "fc2")
FRACTIONS = (0.25, 0.5, 0.75)
RESULTS: dict[str, tuple[float, str]] = {}


def result(key: str, value: float, unit: str) -> None:
    RESULTS[key] = (value, unit)


def taylor_forms(model, validation) -> None:
    """Task 1: mean Taylor score per layer, whole set vs accumulated over batches of b images."""
    print("\n1. Taylor on LeNet-300-100, validation images: mean score per layer (whole set = one batch of N)")
    for n in (1000, 5000):
        g = loss_gradients(model, validation, n_images=n)
        full = {name: float(taylor(M.effective(model.get_submodule(name[:-7])), g[name]).mean()) for name in g}
        print(f"  N = {n}: per weight, mean |W ⊙ g| of the whole set: "
              + ", ".join(f"{name[:-7]} {v:.2e}" for name, v in full.items()))
        for b in (512, 32, 1):
            start = time.perf_counter()
            I = taylor_batches(model, validation, batch_size=b, n_images=n)
            seconds = time.perf_counter() - start
            print(f"    b = {b:3d}: (1/B) Σ_b |W ⊙ g_b| " + ", ".join(
                f"{name[:-7]} {float(v.mean()):.2e} ({float(v.mean()) / full[name]:4.1f}x)" for name, v in I.items())
                + f"   [{seconds:.1f} s]")
            if b == 1:
                for name, v in I.items():
                    result(f"taylor_per_example_over_whole_set_{name[:-7]}_weights_N{n}", float(v.mean()) / full[name],
                           "x")
        for layer in LAYERS:
            t = taylor_unit_terms(model, layer, validation, n_images=n)                  # [N, units]
            forms = {b: float(accumulated_taylor(batch_means(t, b)).mean()) for b in (n, 512, 32, 1)}
            print(f"    {layer} neurons, mean (1/B) Σ_b |T_j(b)|: " + ", ".join(
                f"b = {b}: {v:.2e}" for b, v in forms.items()) + f"  (b = 1 / whole set {forms[1] / forms[n]:.1f}x)")
            result(f"taylor_per_example_over_whole_set_{layer}_neurons_N{n}", forms[1] / forms[n], "x")
            result(f"taylor_whole_set_{layer}_neurons_mean_N{n}", forms[n], "nats")
            result(f"taylor_per_example_{layer}_neurons_mean_N{n}", forms[1], "nats")


def neuron_scores(model, calibration) -> dict[str, dict[str, torch.Tensor]]:
    """Task 2: every criterion's scores of fc1 and fc2, with the seconds each took."""
    units = {name: model.get_submodule(name) for name in LAYERS}
    scores, seconds = {}, {}

    def timed(label, compute):
        start = time.perf_counter()
        scores[label] = compute()
        seconds[label] = time.perf_counter() - start

    for criterion in ("l1", "random", "mean_activation", "taylor", "loss_change", "gradient_change"):
        timed(criterion, lambda: unit_scores(model, units, criterion, calibration))
    timed("taylor_terms", lambda: {name: taylor_unit_terms(model, name, calibration) for name in LAYERS})
    terms = scores.pop("taylor_terms")
    n = len(calibration)
    scores["taylor_batches b=N"] = {k: accumulated_taylor(batch_means(t, n)) for k, t in terms.items()}
    scores["taylor_batches b=1"] = {k: accumulated_taylor(batch_means(t, 1)) for k, t in terms.items()}
    scores["taylor_batches b=32 p=2"] = {k: accumulated_taylor(batch_means(t, 32), 2) for k, t in terms.items()}
    assert all(torch.allclose(scores["taylor_batches b=1"][k], s) for k, s in
               unit_scores(model, units, "taylor_batches", calibration).items())    # the criterion prune uses
    print("  seconds for fc1 + fc2 on the calibration set: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items())
          + " (taylor_terms: all three taylor_batches forms)")
    result("gradient_change_fc1_fc2_seconds", seconds["gradient_change"], "s")
    result("taylor_batches_fc1_fc2_seconds", seconds["taylor_terms"], "s")
    return scores


def accuracy_without(model, validation, unit_score, fraction) -> float:
    keep = layer_masks_for_sparsity(unit_score, fraction)
    M.set_masks(model, unit_masks_to_parameters(model, keep))
    accuracy = pl.evaluate(model, validation).accuracy
    M.reset(model)
    return accuracy


def neuron_table(model, calibration, validation, seeds) -> None:
    print(f"\n2. Neurons removed from fc1 and fc2 of LeNet-300-100, scores from {len(calibration):,} training images "
          f"(seed 0), validation accuracy (dense {pl.evaluate(model, validation).accuracy:.2%})")
    scores = neuron_scores(model, calibration)
    accuracy = {c: {f: accuracy_without(model, validation, s, f) for f in FRACTIONS} for c, s in scores.items()}
    units = {name: model.get_submodule(name) for name in LAYERS}
    random_range = {f: [accuracy_without(model, validation, unit_scores(model, units, "random", seed=seed), f)
                        for seed in range(seeds)] for f in FRACTIONS}
    print("  criterion                  " + "  ".join(f"{f:>6.0%}" for f in FRACTIONS))
    for c in sorted(accuracy, key=lambda c: -accuracy[c][0.5]):
        print(f"  {c:25s}  " + "  ".join(f"{accuracy[c][f]:6.1%}" for f in FRACTIONS))
        for f in FRACTIONS:
            result(f"neurons_{c.replace(' ', '_').replace('=', '')}_{round(100 * f)}pct_accuracy", accuracy[c][f],
                   "fraction")
    print(f"  random, {seeds} seeds           " + "  ".join(
        f"{min(r):.0%}-{max(r):.0%}" for r in random_range.values()))
    names = list(scores)
    for layer in LAYERS:
        print(f"  Spearman ρ between the criteria's scores, {layer}:")
        print("  " + " " * 25 + "".join(f"{k[:9]:>10s}" for k in names))
        for a in names:
            row = [spearman(scores[a][layer], scores[b][layer]) for b in names]
            print(f"  {a:25s}" + "".join(f"{r:+10.2f}" for r in row))
        for other in ("loss_change", "l1", "taylor", "taylor_batches b=1"):
            result(f"spearman_gradient_change_vs_{other.replace(' ', '_').replace('=', '')}_{layer}",
                   spearman(scores["gradient_change"][layer], scores[other][layer]), "1")
        result(f"spearman_taylor_batches_b1_vs_loss_change_{layer}",
               spearman(scores["taylor_batches b=1"][layer], scores["loss_change"][layer]), "1")
        result(f"spearman_taylor_vs_loss_change_{layer}", spearman(scores["taylor"][layer],
                                                                  scores["loss_change"][layer]), "1")


def weight_table(model, calibration, validation) -> None:
    print("\n   Single weights of fc1, fc2 and fc3 (each layer the same fraction), validation accuracy")
    g = loss_gradients(model, calibration)
    W = {name: M.effective(model.get_submodule(name[:-7])) for name in g}
    I = taylor_batches(model, calibration, batch_size=1)
    per_weight = {"|W|": {n: w.abs() for n, w in W.items()}, "taylor": {n: taylor(W[n], g[n]) for n in W},
                  "taylor_batches b=1": I}
    print("   criterion              70%     90%")
    for c, s in per_weight.items():
        row = []
        for f in (0.7, 0.9):
            M.set_masks(model, layer_masks_for_sparsity(s, f))
            row.append(pl.evaluate(model, validation).accuracy)
            M.reset(model)
            result(f"weights_{c.replace('|', '').replace(' ', '_').replace('=', '')}_{round(100 * f)}pct_accuracy",
                   row[-1], "fraction")
        print(f"   {c:20s}" + "".join(f"{a:8.1%}" for a in row))


def layer_tables(validation) -> None:
    print("\n3. Whole layers removed (layer_importance): identity where shapes allow, else output set to 0")
    for name, n in (("lenet5", None), ("lenet300", None), ("vgg_small", 1000)):
        start = time.perf_counter()
        table = layer_importance(pl.load_pretrained(name), validation, n_images=n)
        seconds = time.perf_counter() - start
        print(f"  {name}, {n or len(validation):,} validation images, {seconds:.1f} s")
        print("    " + str(table).replace("\n", "\n    "))
        for row in table.rows:
            result(f"layer_{name}_{row.layer}_{row.removal}_accuracy", row.accuracy, "fraction")
            result(f"layer_{name}_{row.layer}_{row.removal}_gradient_change", row.gradient_change, "1")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="random criterion: seeds for the range")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_name()}")
    model = pl.load_pretrained("lenet300")
    validation = pl.load_fashion_mnist("validation")
    calibration = pl.load_fashion_mnist("train").subset(2048, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    taylor_forms(model, validation)
    neuron_table(model, calibration, validation, args.seeds)
    weight_table(model, calibration, validation)
    layer_tables(validation)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "the model was changed"
    print()
    for key, (value, unit) in RESULTS.items():
        print(f"RESULT {key}={value:.4g} unit={unit} target=reference")


if __name__ == "__main__":
    main()
