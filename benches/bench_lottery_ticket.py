"""The lottery-ticket experiment (Frankle & Carbin 2019) on LeNet-300-100 / Fashion-MNIST.

1. Take the trained baseline and its initial weights θ0 (the baseline recipe uses seed 0, so
   build_model("lenet300", seed=0) *is* its θ0).
2. Prune by magnitude, layer-wise, keeping about 15% of the weights (the output layer keeps twice as much,
   as in the paper).
3. Train the sparse network twice with the same mask, data order and epochs: once from θ0 (rewound: the
   "winning ticket"), once from a fresh random initialisation (seed 1).
The paper's claim: the rewound ticket trains to a higher accuracy than the same mask re-initialised.

    python benches/bench_lottery_ticket.py      # about 30 seconds on 2 CPU cores
"""

import prunelab as pl
from prunelab.masks import get_masks, mask_sparsity
from prunelab.pruning import prune
from prunelab.resets import random_reinit, rewind, snapshot_weights

SPARSITY = {"fc1": 0.86, "fc2": 0.86, "fc3": 0.7}
EPOCHS, LR = 10, 0.05

train_set, test_set = pl.load_fashion_mnist("train"), pl.load_fashion_mnist("test")
theta_0 = snapshot_weights(pl.build_model("lenet300", seed=0))
results = {}
for reset in ("rewind to θ0 (ticket)", "random re-init"):
    model = pl.load_pretrained("lenet300")
    prune(model, SPARSITY)
    if reset.startswith("rewind"):
        rewind(model, theta_0)
    else:
        random_reinit(model, pl.build_model("lenet300", seed=1))
    logs = pl.train(model, train_set, epochs=EPOCHS, lr=LR, weight_decay=5e-4, lr_schedule="cosine", seed=0,
                    test_data=test_set, progress=False)
    results[reset] = [log.test_accuracy for log in logs]
kept = 1 - mask_sparsity(get_masks(model))

print(f"weights kept: {kept:.1%}; {EPOCHS} epochs of SGD from each start, same mask, same data order")
print(f"{'epoch':>5} " + " ".join(f"{name:>22}" for name in results))
for epoch in range(EPOCHS):
    print(f"{epoch + 1:5d} " + " ".join(f"{acc[epoch]:22.2%}" for acc in results.values()))
ticket, reinit = (acc[-1] for acc in results.values())
print(f"RESULT lottery_weights_kept={kept:.3f} unit=fraction target=0.10-0.20")
print(f"RESULT lottery_ticket_accuracy={ticket:.4f} unit=fraction target=reference")
print(f"RESULT lottery_reinit_accuracy={reinit:.4f} unit=fraction target=reference")
print(f"RESULT lottery_ticket_advantage={(ticket - reinit) * 100:.2f} unit=pt target=>0")
