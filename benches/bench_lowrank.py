"""Low-rank decomposition of LeNet-300-100's fc1 by truncated SVD: test accuracy and parameters against rank.

fc1 is a [300, 784] weight (235,200 weights + 300 biases, 88% of the model). At rank r it becomes
Linear(784, r, bias=False) -> Linear(r, 300): r (300 + 784) + 300 parameters, fewer than the dense layer only up
to r = 216 (``break_even_rank``); r = 300 is the full rank (the same outputs, more parameters). For every rank:
relative Frobenius error of W, parameters of fc1 and of the model, test accuracy. Then, for --finetune-ranks,
test accuracy after --epochs epochs of fine-tuning of the whole decomposed model (``prunelab.train``, lr --lr,
cosine schedule, seed 0).

    python benches/bench_lowrank.py [--ranks 1 2 5 10 20 50 100 200 300] [--finetune-ranks 5 20 50] [--epochs 1]
"""

import argparse
import os
import time

import torch

import prunelab as pl
from prunelab import lowrank as LR


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50, 100, 200, 300])
    parser.add_argument("--finetune-ranks", type=int, nargs="+", default=[5, 20, 50])
    parser.add_argument("--epochs", type=int, default=1, help="epochs of fine-tuning")
    parser.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    base = pl.load_pretrained("lenet300")
    train_set, test_set = pl.load_fashion_mnist("train"), pl.load_fashion_mnist("test")
    W = base.fc1.weight.detach()
    m, n = W.shape
    dense_fc1, dense_model = pl.count_parameters(base.fc1), pl.count_parameters(base)
    base_acc = pl.evaluate(base, test_set).accuracy
    print(f"lenet300: fc1 [{m}, {n}], {dense_fc1:,} of {dense_model:,} parameters; test accuracy {base_acc:.4f}; "
          f"break-even rank {LR.break_even_rank(m, n)}; rank for 90% / 99% of Σσ²: "
          f"{LR.rank_for_energy(W, 0.9)} / {LR.rank_for_energy(W, 0.99)}")

    print(f"{'rank':>5s} {'rel. error':>10s} {'fc1 params':>10s} {'model params':>12s} {'x smaller':>9s} "
          f"{'accuracy':>8s} {'tuned':>8s}")
    rows = {}
    for r in args.ranks:
        low = LR.decompose(base, {"fc1": r})
        fc1_params, model_params = pl.count_parameters(low.fc1), pl.count_parameters(low)
        assert fc1_params == LR.factorized_parameters(m, n, r)
        accuracy, tuned = pl.evaluate(low, test_set).accuracy, None
        if r in args.finetune_ranks:
            pl.train(low, train_set, epochs=args.epochs, lr=args.lr, lr_schedule="cosine", seed=0, device="cpu",
                     progress=False)
            tuned = pl.evaluate(low, test_set).accuracy
        rows[r] = (LR.lowrank_error(W, r), fc1_params, model_params, accuracy, tuned)
        print(f"{r:5d} {rows[r][0]:10.4f} {fc1_params:10,d} {model_params:12,d} {dense_model / model_params:9.2f} "
              f"{accuracy:8.4f} {'' if tuned is None else f'{tuned:.4f}':>8s}")
    print(f"total {time.perf_counter() - start:.0f} s")

    print(f"RESULT lowrank_dense_accuracy={base_acc:.4f} unit=fraction target=reference")
    for r, (error, fc1_params, model_params, accuracy, tuned) in rows.items():
        print(f"RESULT lowrank_fc1_r{r}_accuracy={accuracy:.4f} unit=fraction target=reference")
        print(f"RESULT lowrank_fc1_r{r}_model_parameters={model_params} unit=count target=reference")
        print(f"RESULT lowrank_fc1_r{r}_relative_error={error:.4f} unit=fraction target=reference")
        if tuned is not None:
            print(f"RESULT lowrank_fc1_r{r}_finetuned_accuracy={tuned:.4f} unit=fraction target=reference")


if __name__ == "__main__":
    main()
