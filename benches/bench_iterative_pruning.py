"""Iterative magnitude pruning of LeNet-300-100 with fine-tuning, Han et al. (2015) redone on Fashion-MNIST.

Han et al. pruned LeNet-300-100 on MNIST to 8% of its weights (fc1 92%, fc2 91%, fc3 74% removed) with no
accuracy loss. Here: the same per-layer proportions, reached in equal-ratio rounds
(s_k = 1 − (1 − s_f)^(k/R)), each followed by fine-tuning (SGD + momentum, cosine lr from 0.01); target:
at most 8% of the weights left, at most 0.5 percentage points below the baseline. Global-scope pruning to
the same overall sparsity is printed for comparison. Deterministic: fixed seeds, the committed baseline.

    python benches/bench_iterative_pruning.py      # about 70 seconds on 2 CPU cores
"""

import time

import prunelab as pl
from prunelab.masks import get_masks, mask_sparsity
from prunelab.schedules import iterative_pruning

FINAL = {"fc1": 0.923, "fc2": 0.91, "fc3": 0.74}  # Han et al.'s Table 4 proportions, 8.0% of weights kept
ROUNDS = 12
EPOCHS = [3] * ROUNDS


def per_layer_schedule(final, rounds):
    return [{name: 1 - (1 - s) ** (k / rounds) for name, s in final.items()} for k in range(1, rounds + 1)]


def run(schedule, **kwargs):
    model = pl.load_pretrained("lenet300")
    start = time.perf_counter()
    history = iterative_pruning(model, train_set, test_set, schedule, epochs_per_round=EPOCHS, lr=0.01,
                                **kwargs)
    return model, history, time.perf_counter() - start


train_set, test_set = pl.load_fashion_mnist("train"), pl.load_fashion_mnist("test")
baseline = pl.evaluate(pl.load_pretrained("lenet300"), test_set).accuracy
print(f"baseline LeNet-300-100: {baseline:.2%} test accuracy, 266,200 weights")

results = {}
layer_schedule = per_layer_schedule(FINAL, ROUNDS)
model, history, seconds = run(layer_schedule, scope="layer")
final_sparsity = mask_sparsity(get_masks(model))
results["layer"] = (history[-1].accuracy_tuned, final_sparsity)
model_g, history_g, seconds_g = run([h.sparsity for h in history], scope="global")
results["global"] = (history_g[-1].accuracy_tuned, mask_sparsity(get_masks(model_g)))

print(f"\naccuracy vs remaining weights (layer-wise, Han et al.'s proportions; {seconds:.0f} s):")
print(f"{'round':>5} {'weights left':>12} {'after pruning':>14} {'after fine-tuning':>18}")
for i, h in enumerate(history, 1):
    print(f"{i:5d} {1 - h.sparsity:12.2%} {h.accuracy_pruned:14.2%} {h.accuracy_tuned:18.2%}")
print("per layer at the end: " + ", ".join(
    f"{k.removesuffix('.weight')} {1 - float(m.float().mean()):.1%} removed" for k, m in get_masks(model).items()))
print(f"\nglobal scope to the same sparsities ({seconds_g:.0f} s):")
for i, h in enumerate(history_g, 1):
    print(f"{i:5d} {1 - h.sparsity:12.2%} {h.accuracy_pruned:14.2%} {h.accuracy_tuned:18.2%}")

accuracy, sparsity = results["layer"]
print(f"RESULT imp_weights_left={1 - sparsity:.4f} unit=fraction target=<=0.08")
print(f"RESULT imp_compression={1 / (1 - sparsity):.1f} unit=x target=>=12.5")
print(f"RESULT imp_accuracy={accuracy:.4f} unit=fraction target=reference")
print(f"RESULT imp_accuracy_drop={(baseline - accuracy) * 100:.2f} unit=pt target=<=0.5")
print(f"RESULT imp_global_accuracy_drop={(baseline - results['global'][0]) * 100:.2f} unit=pt target=reference")
