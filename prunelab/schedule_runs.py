"""One-shot, iterative and gradual pruning of LeNet-300-100 to the same final sparsity with the same
fine-tuning budget, recorded step by step: the precomputed runs behind the schedule explorer.

    python -m prunelab.schedule_runs --write data/precomputed/schedules_lenet300.json   # about 11 min (636 s on one thread, AVX-512 EPYC)
    python -m prunelab.schedule_runs --check data/precomputed/schedules_lenet300.json   # re-run the check case

Every run starts from the baseline checkpoint and trains ``epochs`` epochs in all (SGD, momentum 0.9, weight
decay, learning rate from ``lr``), pruning by magnitude with global scope; masks only shrink:

- ``one-shot``: prune to s_f at step 0, then fine-tune all ``epochs`` (``iterative_pruning`` with one round);
- ``iterative``: ``rounds`` rounds to s_k = 1 − (1 − s_f)^(k/R) (``iterative_sparsities``), each followed by
  epochs / R epochs with their own cosine learning rate, as ``prunelab.schedules.iterative_pruning``;
- ``gradual``: Zhu & Gupta's s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³ (``cubic_sparsity``), s_i = 0,
  t0 = 0, the mask updated every Δt = ``prune_every`` steps until 3/4 of the epochs, during one training run
  with one learning-rate schedule over all epochs, as ``prunelab.schedules.gradual_pruning`` (which has
  a constant rate and no weight decay; ``lr_schedule="constant", weight_decay=0`` gives exactly its run).

Test accuracy is recorded at step 0 (dense), right after every prune event and after every epoch.
Seeds are fixed and the runs use ``threads`` CPU threads; the JSON records torch's version, the threads
and the command. It also holds a cheap ``check`` case (a few thousand images, 2 epochs) that a test re-runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ._helpers import recorded_elsewhere, write_record
from .checkpoints import checkpoint_info, load_pretrained
from .data import ImageSet, data_root, load_fashion_mnist
from .masks import get_masks, mask_sparsity
from .pruning import prune
from .schedules import cubic_sparsity, iterative_sparsities
from .training import evaluate, train

__all__ = ["Schedule", "SCHEDULES", "Recipe", "RECIPE", "CHECK_RECIPE", "FINAL_SPARSITIES", "default_path",
           "gradual_plan", "run_schedule", "precompute", "load_schedule_runs", "find_run"]

Schedule = Literal["one-shot", "iterative", "gradual"]
SCHEDULES: tuple[Schedule, ...] = ("one-shot", "iterative", "gradual")
FINAL_SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)


@dataclass(frozen=True)
class Recipe:
    """The fine-tuning budget and optimiser shared by all three schedules (``train_images`` /
    ``test_images``: subsets of that many images, seed 0; None = all)."""
    epochs: int = 8
    rounds: int = 4                 # iterative: epochs / rounds epochs per round
    prune_every: int = 50           # gradual: Δt, steps between mask updates
    lr: float = 0.01
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    seed: int = 0
    scope: Literal["layer", "global"] = "global"
    criterion: Literal["magnitude"] = "magnitude"
    train_images: int | None = None
    test_images: int | None = None

    def check(self) -> None:
        if self.epochs < 1 or self.rounds < 1 or self.epochs % self.rounds:
            raise ValueError(f"epochs ({self.epochs}) must be a positive multiple of rounds ({self.rounds}), "
                             "so that every schedule trains the same number of epochs.")


RECIPE = Recipe()
CHECK_RECIPE = Recipe(epochs=2, rounds=2, prune_every=4, train_images=2048, test_images=1000)


def default_path() -> Path:
    """``<data root>/precomputed/schedules_lenet300.json``."""
    return data_root() / "precomputed" / "schedules_lenet300.json"


def gradual_plan(recipe: Recipe, steps_per_epoch: int) -> tuple[int, int, int]:
    """(t0, n, Δt) of the gradual schedule: t0 = 0, pruning until 3/4 of the epochs, as ``gradual_pruning``."""
    end_epoch = max(1, (3 * recipe.epochs) // 4)
    return 0, max(1, end_epoch * steps_per_epoch // recipe.prune_every), recipe.prune_every


def _train(model, train_data, test_data, recipe, epochs, seed, after_step=None):
    return train(model, train_data, epochs=epochs, lr=recipe.lr, batch_size=recipe.batch_size,
                 momentum=recipe.momentum, weight_decay=recipe.weight_decay, lr_schedule=recipe.lr_schedule,
                 seed=seed, after_step=after_step, test_data=test_data, device="cpu", progress=False)


def run_schedule(schedule: Schedule, s_final: float, model: nn.Module, train_data: ImageSet,
                 test_data: ImageSet, recipe: Recipe = RECIPE) -> dict:
    """Prune and fine-tune ``model`` in place by ``schedule``; return its record:

    ``prune_steps``: [[t, s_t], …] the target sparsity set at step t; ``accuracy``: [[t, test accuracy], …];
    ``final_accuracy``; ``final_sparsity`` (of the masks); ``steps`` (total training steps); ``seconds``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    recipe.check()
    start = time.perf_counter()
    spe = math.ceil(len(train_data) / recipe.batch_size)
    kwargs = {"scope": recipe.scope, "criterion": recipe.criterion, "keep_pruned": True}
    events: list[list[float]] = []
    accuracy: list[list[float]] = [[0, evaluate(model, test_data).accuracy]]

    def prune_at(m: nn.Module, step: int, s: float) -> None:
        prune(m, s, **kwargs)
        events.append([step, s])
        accuracy.append([step, evaluate(m, test_data).accuracy])

    if schedule == "gradual":
        t0, n, dt = gradual_plan(recipe, spe)
        step = 0

        def after_step(m: nn.Module) -> None:
            nonlocal step
            step += 1
            if step >= t0 and (step - t0) % dt == 0 and step <= t0 + n * dt:
                prune_at(m, step, cubic_sparsity(step, 0.0, s_final, t0, n, dt))

        logs = _train(model, train_data, test_data, recipe, recipe.epochs, recipe.seed, after_step)
        accuracy += [[(e + 1) * spe, log.test_accuracy] for e, log in enumerate(logs)]
    else:
        rounds = 1 if schedule == "one-shot" else recipe.rounds
        per_round = recipe.epochs // rounds
        for k, s in enumerate(iterative_sparsities(s_final, rounds)):
            first = k * per_round * spe
            prune_at(model, first, s)
            logs = _train(model, train_data, test_data, recipe, per_round, recipe.seed + k)
            accuracy += [[first + (e + 1) * spe, log.test_accuracy] for e, log in enumerate(logs)]
    accuracy.sort(key=lambda point: point[0])   # stable: at one step, the order things happened in
    weight_masks = {k: v for k, v in get_masks(model).items() if k.endswith(".weight")}
    return {"schedule": schedule, "s_final": s_final, "prune_steps": events, "accuracy": accuracy,
            "final_accuracy": accuracy[-1][1], "final_sparsity": mask_sparsity(weight_masks),
            "steps": recipe.epochs * spe, "seconds": round(time.perf_counter() - start, 1)}


def _data(recipe: Recipe) -> tuple[ImageSet, ImageSet]:
    train_set, test_set = load_fashion_mnist("train"), load_fashion_mnist("test")
    if recipe.train_images is not None:
        train_set = train_set.subset(recipe.train_images, seed=0)
    if recipe.test_images is not None:
        test_set = test_set.subset(recipe.test_images, seed=0)
    return train_set, test_set


def run_all(final_sparsities, recipe: Recipe, *, progress: bool = False) -> list[dict]:
    """Every schedule at every final sparsity, each from a fresh copy of the baseline checkpoint."""
    train_set, test_set = _data(recipe)
    runs = []
    for s_final in final_sparsities:
        for schedule in SCHEDULES:
            run = run_schedule(schedule, s_final, load_pretrained("lenet300"), train_set, test_set, recipe)
            runs.append(run)
            if progress:
                print(f"s_f = {s_final:<5} {schedule:<10} final accuracy {run['final_accuracy']:.4f} "
                      f"at sparsity {run['final_sparsity']:.4f} ({run['seconds']:.0f} s)", flush=True)
    return runs


def precompute(final_sparsities=FINAL_SPARSITIES, recipe: Recipe = RECIPE, *, command: str = "",
               progress: bool = False) -> dict:
    """The whole record: every run, the cheap check case, and how they were made."""
    start = time.perf_counter()
    train_set, test_set = _data(recipe)
    info = checkpoint_info("lenet300")
    doc = {
        "model": "lenet300",
        "checkpoint_sha256": info["sha256"],
        "baseline_accuracy": evaluate(load_pretrained("lenet300"), test_set).accuracy,
        "final_sparsities": list(final_sparsities),
        "schedules": list(SCHEDULES),
        "recipe": asdict(recipe) | {"optimizer": "SGD", "device": "cpu"},
        "steps_per_epoch": math.ceil(len(train_set) / recipe.batch_size),
        "runs": run_all(final_sparsities, recipe, progress=progress),
        "check": {"recipe": asdict(CHECK_RECIPE), "s_final": 0.9, "runs": run_all([0.9], CHECK_RECIPE)},
        "torch": torch.__version__.split("+")[0],
        "threads": torch.get_num_threads(),
        "command": command,
    }
    doc["seconds"] = round(time.perf_counter() - start)
    return doc


def load_schedule_runs(path: str | Path | None = None) -> dict:
    """The precomputed record (``default_path()`` unless ``path``)."""
    path = Path(path) if path is not None else default_path()
    if not path.is_file():
        raise FileNotFoundError(f"No precomputed schedule runs at {path}. Make them with "
                                f"`python -m prunelab.schedule_runs --write {path}` (a few minutes).")
    return json.loads(path.read_text())


def find_run(doc: dict, schedule: Schedule, s_final: float, *, check: bool = False) -> dict:
    """The record of ``schedule`` at final sparsity ``s_final`` (of the ``check`` case if asked)."""
    runs = doc["check"]["runs"] if check else doc["runs"]
    for run in runs:
        if run["schedule"] == schedule and math.isclose(run["s_final"], s_final):
            return run
    raise ValueError(f"No {schedule!r} run at s_f = {s_final}; precomputed: {sorted({r['s_final'] for r in runs})}.")


def _compare(recorded: list[dict], fresh: list[dict]) -> float:
    """Largest difference in any accuracy; ``inf`` if the schedules (prune steps) differ."""
    worst = 0.0
    for a, b in zip(recorded, fresh, strict=True):
        if a["prune_steps"] != b["prune_steps"] or len(a["accuracy"]) != len(b["accuracy"]):
            return math.inf
        worst = max([worst, *(abs(x[1] - y[1]) for x, y in zip(a["accuracy"], b["accuracy"]))])
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", metavar="PATH", help="run everything and write the JSON record here")
    action.add_argument("--check", metavar="PATH", help="re-run the record's check case (with --full: all "
                        "runs) and compare")
    parser.add_argument("--full", action="store_true", help="with --check: re-run every run")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: reproducible, and fastest on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.write:
        command = "python -m prunelab.schedule_runs --write " + args.write + (
            f" --threads {args.threads}" if args.threads != 1 else "")
        doc = precompute(command=command, progress=True)
        path = write_record(args.write, doc)
        print(f"wrote {path} ({path.stat().st_size:,} bytes) in {doc['seconds']} s")
        return 0
    doc = load_schedule_runs(args.check)
    if note := recorded_elsewhere(doc):
        print(note)
    cases = [("check", doc["check"]["runs"], Recipe(**doc["check"]["recipe"]), [doc["check"]["s_final"]])]
    if args.full:
        recipe = Recipe(**{k: v for k, v in doc["recipe"].items() if k in Recipe.__dataclass_fields__})
        cases.append(("full", doc["runs"], recipe, doc["final_sparsities"]))
    worst = 0.0
    for name, recorded, recipe, sparsities in cases:
        difference = _compare(recorded, run_all(sparsities, recipe))
        worst = max(worst, difference)
        print(f"{name}: largest accuracy difference {difference:.4f}"
              + (" (identical)" if difference == 0 else ""))
    return 0 if worst == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
