"""The lottery-ticket experiment (Frankle & Carbin 2019) on LeNet-300-100 / Fashion-MNIST, one-shot and iterative.

One-shot (full training set, the 30-epoch baseline):
1. Take the trained baseline and its initial weights θ0 (the baseline recipe uses seed 0, so
   build_model("lenet300", seed=0) *is* its θ0).
2. Prune by magnitude, layer-wise, keeping about 15% of the weights (the output layer keeps twice as much,
   as in the paper).
3. Train the sparse network twice with the same mask, data order and epochs: once from θ0 (rewound: the
   "winning ticket"), once from a fresh random initialisation (seed 1).
The paper's claim: the rewound ticket trains to a higher accuracy than the same mask re-initialised.

Iterative magnitude pruning (IMP, ``prunelab.resets.iterative_magnitude_pruning``), as the paper finds tickets:
train, prune 20% of the remaining weights per layer (the output layer 10%), rewind to θ0, repeat; with notebook
08's recipe (5 epochs on 10,000 training images per training). This bench re-runs seed 0 of the precomputed
record live, with a one-shot ticket at every round's sparsity, and compares the two with the record.

    python benches/bench_lottery_ticket.py                 # about 2 minutes on one thread
    python benches/bench_lottery_ticket.py --write data/precomputed/tickets_lenet300.json   # every seed (minutes)
    python benches/bench_lottery_ticket.py --check data/precomputed/tickets_lenet300.json   # re-run the check case
"""

import argparse
import sys
from dataclasses import replace

import torch

import prunelab as pl
from prunelab._helpers import recorded_elsewhere, write_record
from prunelab.masks import get_masks, mask_sparsity
from prunelab.pruning import prune
from prunelab.resets import (TICKET_RECIPE, compare_tickets, load_tickets, precompute_tickets,
                             random_reinit, recipe_of, rewind, run_tickets, snapshot_weights)

SPARSITY = {"fc1": 0.86, "fc2": 0.86, "fc3": 0.7}
EPOCHS, LR = 10, 0.05


def one_shot_full_data() -> None:
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

    print(f"one-shot, full training set: weights kept: {kept:.1%}; {EPOCHS} epochs of SGD from each start, "
          "same mask, same data order")
    print(f"{'epoch':>5} " + " ".join(f"{name:>22}" for name in results))
    for epoch in range(EPOCHS):
        print(f"{epoch + 1:5d} " + " ".join(f"{acc[epoch]:22.2%}" for acc in results.values()))
    ticket, reinit = (acc[-1] for acc in results.values())
    print(f"RESULT lottery_weights_kept={kept:.3f} unit=fraction target=0.10-0.20")
    print(f"RESULT lottery_ticket_accuracy={ticket:.4f} unit=fraction target=reference")
    print(f"RESULT lottery_reinit_accuracy={reinit:.4f} unit=fraction target=reference")
    print(f"RESULT lottery_ticket_advantage={(ticket - reinit) * 100:.2f} unit=pt target=>0")


def imp_seed_0() -> None:
    recipe = replace(TICKET_RECIPE, seeds=(0,))
    run = run_tickets(recipe)[0]
    print(f"\nIMP, seed 0, {recipe.epochs} epochs on {recipe.train_images:,} images per training "
          f"({run['seconds']:.0f} s); test accuracy (%)")
    print(f"{'round':>5} {'kept':>7} {'IMP ticket':>11} {'re-init':>8} {'one-shot':>9}")
    for r in run["rounds"]:
        print(f"{r['round']:5d} {1 - r['sparsity']:7.2%} {100 * r['ticket_test']:11.2f} "
              f"{100 * r['control_test']:8.2f} {100 * r['one_shot_test']:9.2f}")
    near_14 = min(run["rounds"], key=lambda r: abs(1 - r["sparsity"] - 0.14))
    last = run["rounds"][-1]
    for name, r in (("14", near_14), ("last", last)):
        print(f"RESULT imp_kept_{name}={1 - r['sparsity']:.4f} unit=fraction target=reference")
        print(f"RESULT imp_ticket_accuracy_{name}={r['ticket_test']:.4f} unit=fraction target=reference")
        print(f"RESULT imp_reinit_accuracy_{name}={r['control_test']:.4f} unit=fraction target=reference")
        print(f"RESULT imp_one_shot_accuracy_{name}={r['one_shot_test']:.4f} unit=fraction target=reference")
        print(f"RESULT imp_ticket_advantage_{name}={(r['ticket_test'] - r['control_test']) * 100:.2f} "
              "unit=pt target=>0")
        print(f"RESULT imp_over_one_shot_{name}={(r['ticket_test'] - r['one_shot_test']) * 100:.2f} "
              "unit=pt target=reference")
    try:
        recorded = load_tickets()
    except FileNotFoundError as e:
        print(e)
        return
    difference = compare_tickets(recorded["runs"][:1], [run])
    print(f"RESULT imp_difference_from_record={difference:.4f} unit=fraction target=0 "
          f"(recorded with torch {recorded['torch']} on {recorded['threads']} thread(s))")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", metavar="PATH", help="run every seed of IMP and write the JSON record here")
    action.add_argument("--check", metavar="PATH", help="re-run the record's check case (with --full: all runs)")
    parser.add_argument("--full", action="store_true", help="with --check: re-run every run")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: reproducible, and fastest on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.write:
        command = "python benches/bench_lottery_ticket.py --write " + args.write + (
            f" --threads {args.threads}" if args.threads != 1 else "")
        doc = precompute_tickets(command=command, progress=True)
        path = write_record(args.write, doc)
        print(f"wrote {path} ({path.stat().st_size:,} bytes) in {doc['seconds']} s")
        return 0
    if args.check:
        doc = load_tickets(args.check)
        if note := recorded_elsewhere(doc):
            print(note)
        cases = [("check", doc["check"]["runs"], recipe_of(doc["check"]["recipe"]))]
        if args.full:
            cases.append(("full", doc["runs"], recipe_of(doc["recipe"])))
        worst = 0.0
        for name, recorded, recipe in cases:
            difference = compare_tickets(recorded, run_tickets(recipe))
            worst = max(worst, difference)
            print(f"{name}: largest accuracy difference {difference:.4f}" + (" (identical)" if difference == 0 else ""))
        return 0 if worst == 0 else 1
    one_shot_full_data()
    imp_seed_0()
    return 0


if __name__ == "__main__":
    sys.exit(main())
