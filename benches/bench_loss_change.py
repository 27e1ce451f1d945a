"""The measured loss change ΔL_j = L_j − L of every neuron of LeNet-300-100 (fc1: 300, fc2: 100), on the
10,000 test images and on 10,000 training images: ``measured_loss_change`` against the naive loop (zero one
neuron's row and bias, evaluate, restore), which is timed on a sample of neurons and extrapolated to all 400.

Also printed: how well cheap criteria predict the measured ΔL, as Spearman's rank correlation ρ (computed with
torch) between ΔL and the L1 norm of each neuron's weight row, the mean activation and 1 − APoZ.

    python benches/bench_loss_change.py [--repeats 3] [--sample 8]
"""

import argparse
import statistics
import time

import torch

import prunelab as pl
from prunelab.data_criteria import apoz_score, collect_activations, mean_activation, measured_loss_change

LAYERS = ("fc1", "fc2")


def ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of the entries of v; tied entries share their average rank."""
    _, inverse, counts = torch.unique(v, return_inverse=True, return_counts=True)  # unique values sorted
    ends = counts.cumsum(0).double()
    return (ends - (counts.double() - 1) / 2)[inverse]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's ρ: Pearson's correlation of the ranks."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def naive_loss_change(model, layer, j, data, L) -> float:
    """Zero neuron j (its weight row and bias), evaluate, restore."""
    fc = model.get_submodule(layer)
    with torch.no_grad():
        row, bias = fc.weight[j].clone(), fc.bias[j].clone()
        fc.weight[j], fc.bias[j] = 0, 0
        loss = pl.evaluate(model, data).loss
        fc.weight[j], fc.bias[j] = row, bias
    return loss - L


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of measured_loss_change (median)")
    parser.add_argument("--sample", type=int, default=8, help="neurons per layer timed with the naive loop")
    args = parser.parse_args()
    model = pl.load_pretrained("lenet300")
    sets = {"test": pl.load_fashion_mnist("test"), "train10k": pl.load_fashion_mnist("train").subset(10_000)}
    neurons = sum(model.get_submodule(n).out_features for n in LAYERS)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; LeNet-300-100, {neurons} neurons "
          f"in {', '.join(LAYERS)}")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    results = {}
    for name, data in sets.items():
        data.normalized()  # cache the normalised images, as evaluate would
        measured_loss_change(model, "fc2", data)  # warm-up
        dL, seconds = {}, []
        for _ in range(args.repeats):
            start = time.perf_counter()
            dL = {layer: measured_loss_change(model, layer, data) for layer in LAYERS}
            seconds.append(time.perf_counter() - start)
        fast = statistics.median(seconds)

        L = pl.evaluate(model, data).loss
        naive_seconds, worst = [], 0.0
        for layer in LAYERS:
            units = model.get_submodule(layer).out_features
            for j in torch.linspace(0, units - 1, args.sample).long().tolist():
                start = time.perf_counter()
                slow = naive_loss_change(model, layer, j, data, L)
                naive_seconds.append(time.perf_counter() - start)
                worst = max(worst, abs(slow - float(dL[layer][j])))
        naive = statistics.mean(naive_seconds) * sum(len(d) for d in dL.values())
        print(f"\n{name} ({len(data)} images), L = {L:.4f}")
        print(f"  measured_loss_change, all neurons: {fast:6.2f} s  (median of {args.repeats}: "
              f"{', '.join(f'{s:.2f}' for s in seconds)})")
        print(f"  naive loop: {statistics.mean(naive_seconds) * 1000:.0f} ms per neuron -> {naive:6.1f} s for all "
              f"(extrapolated from {len(naive_seconds)}); speed-up {naive / fast:.0f}x; "
              f"largest |ΔL difference| on the sample {worst:.1e}")

        acts = collect_activations(model, data.normalized(), list(LAYERS))
        for layer in LAYERS:
            W = model.get_submodule(layer).weight.detach()
            cheap = {"|W| row L1": W.abs().sum(1), "mean activation": mean_activation(acts[layer]),
                     "1 - APoZ": apoz_score(acts[layer])}
            rho = {k: spearman(dL[layer], v) for k, v in cheap.items()}
            print(f"  {layer}: ΔL min {float(dL[layer].min()):+.4f} median {float(dL[layer].median()):+.5f} "
                  f"max {float(dL[layer].max()):+.4f}, {int((dL[layer] == 0).sum())} exactly 0 (dead); "
                  "Spearman ρ with " + ", ".join(f"{k} {r:+.2f}" for k, r in rho.items()))
            results[f"lenet300_spearman_dL_vs_l1_{layer}_{name}"] = (rho["|W| row L1"], "1")
        results[f"lenet300_measured_dL_all_neurons_{name}"] = (fast, "s")
        results[f"lenet300_naive_dL_all_neurons_{name}_extrapolated"] = (naive, "s")
        results[f"lenet300_measured_dL_speedup_{name}"] = (naive / fast, "x")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "the model was changed"
    print()
    for key, (value, unit) in results.items():
        print(f"RESULT {key}={value:.3g} unit={unit} target=reference")


if __name__ == "__main__":
    main()
