"""What the surviving weights start from after pruning, before retraining.

- keep: the trained values (ordinary fine-tuning);
- random re-init: fresh random values, as if training the sparse network from scratch;
- rewind: the values they had at initialisation (Frankle & Carbin 2019, the lottery ticket), or after k
  training iterations (Frankle et al. 2020, "late rewinding").
For these three the mask stays; only the original (``weight_orig``) values of the kept entries matter.

- inherit: the pruned weights come *back*, each with the mean of its kept neighbours (``inherit``); the
  masks go and the network is dense again, so retraining starts from a smooth fill-in rather than from the
  pruned weights' old values (lifting the mask) or from zeros (committing it).

- ``iterative_magnitude_pruning``: how Frankle & Carbin *find* a ticket: train, prune p of the remaining
  weights per layer, rewind the survivors to θ0, repeat; each round also trains the same mask from a random
  re-initialisation (the control). ``precompute_tickets`` runs it for LeNet-300-100 on Fashion-MNIST, with a
  one-shot ticket at every round's sparsity, into ``data/precomputed/tickets_lenet300.json`` (notebook 08)::

      python benches/bench_lottery_ticket.py --write data/precomputed/tickets_lenet300.json  # 7 minutes
      python benches/bench_lottery_ticket.py --check data/precomputed/tickets_lenet300.json  # the check case
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import ImageSet, data_root, load_fashion_mnist
from .masks import copy_model, get_masks, mask_sparsity, masked_parameters, original, reset, set_effective
from .models import build_model
from .pruning import prune
from .training import evaluate, train

__all__ = ["inherit", "inherited_values", "random_reinit", "rewind", "snapshot_weights", "TicketRound",
           "imp_sparsities", "iterative_magnitude_pruning", "TicketRecipe", "TICKET_RECIPE", "CHECK_TICKET_RECIPE",
           "one_shot_ticket", "precompute_tickets", "run_tickets", "load_tickets", "tickets_path", "recipe_of",
           "compare_tickets"]


def snapshot_weights(model: nn.Module) -> dict[str, Tensor]:
    """A copy of every parameter's original values, ``{param_name: tensor}`` (masks ignored): save one at
    initialisation (or after k iterations) to rewind to later."""
    names = [n.removesuffix("_orig") for n, _ in model.named_parameters()]
    return {name: original(model, name).detach().clone() for name in names}


def rewind(model: nn.Module, weights: dict[str, Tensor]) -> nn.Module:
    """Set every parameter's original values to ``weights`` (from ``snapshot_weights``), keeping the masks.

    All names and shapes are checked first; on a mismatch the model is left as it was."""
    names = [n.removesuffix("_orig") for n, _ in model.named_parameters()]
    missing = [n for n in names if n not in weights]
    wrong = [n for n in names if n in weights and weights[n].shape != original(model, n).shape]
    if missing or wrong:
        raise ValueError(f"These weights do not fit the model (missing: {missing[:3]}, wrong shape: {wrong[:3]}); "
                         "take them with snapshot_weights from a model of the same architecture.")
    for name in names:  # a masked parameter keeps its mask; its effective tensor is refreshed now
        module_name, _, tensor_name = name.rpartition(".")
        set_effective(model.get_submodule(module_name), weights[name], tensor_name)
    return model


def random_reinit(model: nn.Module, fresh: nn.Module) -> nn.Module:
    """Give the kept weights the values of ``fresh``, a newly initialised model of the same architecture
    (e.g. ``prunelab.build_model(name, seed=1)``): the sparse network trained from a random start."""
    return rewind(model, snapshot_weights(fresh))


_NEIGHBOURS = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def inherited_values(W: Tensor, keep: Tensor) -> Tensor:
    """W with every pruned entry (``keep`` False) replaced by the mean of its kept neighbours.

    Neighbours are the 4 adjacent entries (left, right, above, below) in W's 2-D view [rows, columns]:
    ``W.flatten(1)`` for a Linear [out, in] or a Conv2d [C_out, C_in·kH·kW], one row for a vector.
    w_ij ← Σ_{kept (a, b) ~ (i, j)} w_ab / #kept neighbours, and 0 where no neighbour is kept.
    W, keep: the same shape; returns a new tensor of that shape.
    """
    W2 = W.detach().reshape(1, -1) if W.dim() == 1 else W.detach().flatten(1)
    K2 = keep.reshape(W2.shape).to(W2.dtype)
    total = F.conv2d((W2 * K2)[None, None], _NEIGHBOURS.to(W2), padding=1)[0, 0]
    count = F.conv2d(K2[None, None], _NEIGHBOURS.to(W2), padding=1)[0, 0]
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
    return torch.where(K2.bool(), W2, mean).reshape(W.shape)


def inherit(model: nn.Module) -> nn.Module:
    """The "inherit" reset: every masked parameter's pruned entries take the mean of their kept neighbours
    (``inherited_values``), kept entries keep their values, and the masks are removed: a dense model."""
    names = masked_parameters(model)
    if not names:
        raise ValueError("inherit() fills in pruned weights, but this model has no masks: prune it first "
                         "(e.g. prunelab.prune(model, 0.8)).")
    with torch.no_grad():
        for name in names:
            module_name, _, tensor_name = name.rpartition(".")
            module = model.get_submodule(module_name)
            orig = getattr(module, tensor_name + "_orig")
            orig.copy_(inherited_values(orig, getattr(module, tensor_name + "_mask").bool()))
    return reset(model, names)


@dataclass(frozen=True)
class TicketRound:
    """One round of ``iterative_magnitude_pruning``: ``sparsity`` of the weight masks (all layers together),
    then validation and test accuracy of the ticket (θ0 ⊙ M, trained) and of the control (θ'0 ⊙ M, trained)."""
    round: int
    sparsity: float
    ticket_validation: float
    ticket_test: float
    control_validation: float
    control_test: float


def imp_sparsities(layers: list[str], k: int, rate: float) -> dict[str, float]:
    """Round k's sparsity per layer, p = ``rate`` of the remaining weights pruned per round:
    s_k = 1 − (1 − p)^k, and 1 − (1 − p/2)^k for the last (output) layer, as Frankle & Carbin do."""
    return {name: 1 - (1 - (rate / 2 if name == layers[-1] else rate)) ** k for name in layers}


def iterative_magnitude_pruning(model: nn.Module, fresh: nn.Module, train_data: ImageSet,
                                validation_data: ImageSet, test_data: ImageSet, *, rounds: int, rate: float = 0.2,
                                epochs: int = 5, seed: int = 0, **train_kwargs) -> list[TicketRound]:
    """Find a lottery ticket by iterative magnitude pruning with rewinding (Frankle & Carbin 2019).

    ``model`` holds θ0 (untrained); ``fresh`` is another initialisation θ'0 of the same architecture. Round 0
    trains the dense network; each round k = 1 … ``rounds`` prunes p = ``rate`` of the remaining weights of every
    Linear/Conv layer by magnitude (the output layer p/2; masks only shrink), rewinds the survivors to θ0 and
    trains again. Each round also trains the control, the same mask M_k on θ'0. Every training: ``epochs``
    epochs, data order ``seed``, ``train_kwargs`` (lr, weight_decay, ...) to ``prunelab.train``.
    ``model`` is trained in place: on return it is the last round's trained ticket, with its masks.
    """
    theta_0 = snapshot_weights(model)
    layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    history = []
    for k in range(rounds + 1):
        if k:
            prune(model, imp_sparsities(layers, k, rate), keep_pruned=True)   # M_k = |θ_T| > v_thr, within M_k−1
            rewind(model, theta_0)                                             # θ0 ⊙ M_k
        control = random_reinit(copy_model(model), fresh)                      # θ'0 ⊙ M_k
        for net in (model, control):
            train(net, train_data, epochs=epochs, seed=seed, progress=False, **train_kwargs)
        weight_masks = {n: m for n, m in get_masks(model).items() if n.endswith(".weight")}
        history.append(TicketRound(k, mask_sparsity(weight_masks) if weight_masks else 0.0,
                                   evaluate(model, validation_data).accuracy, evaluate(model, test_data).accuracy,
                                   evaluate(control, validation_data).accuracy, evaluate(control, test_data).accuracy))
    return history


@dataclass(frozen=True)
class TicketRecipe:
    """The precomputed IMP runs: LeNet-300-100, θ0 = ``build_model("lenet300", seed=0)`` (the baseline's), the
    baseline's optimiser (SGD, momentum, weight decay, cosine rate from ``lr``) but ``epochs`` epochs on a subset
    of ``train_images`` training images (seed 0), as notebook 08. Run ``seed``: data order ``seed``, control
    θ'0 = ``build_model("lenet300", seed=seed + 1)``."""
    rounds: int = 18
    rate: float = 0.2
    epochs: int = 5
    lr: float = 0.05
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    train_images: int | None = 10_000
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)

    def train_kwargs(self) -> dict:
        return {"lr": self.lr, "lr_schedule": self.lr_schedule, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "batch_size": self.batch_size, "device": "cpu"}


TICKET_RECIPE = TicketRecipe()
CHECK_TICKET_RECIPE = TicketRecipe(rounds=2, epochs=1, train_images=2048, seeds=(0,))


def one_shot_ticket(trained: nn.Module, theta_0: dict[str, Tensor], sparsity: dict[str, float]) -> nn.Module:
    """The one-shot ticket: a copy of the trained dense network pruned once to ``sparsity`` by magnitude, its
    survivors rewound to θ0 (train it afterwards)."""
    ticket = copy_model(trained)
    prune(ticket, sparsity)
    return rewind(ticket, theta_0)


def _data(recipe: TicketRecipe) -> tuple[ImageSet, ImageSet, ImageSet]:
    train_set = load_fashion_mnist("train")
    if recipe.train_images is not None:
        train_set = train_set.subset(recipe.train_images, seed=0)
    return train_set, load_fashion_mnist("validation"), load_fashion_mnist("test")


def _ticket_run(recipe: TicketRecipe, seed: int, train_set, validation_set, test_set) -> dict:
    """One seed: IMP (ticket and control), and a one-shot ticket at every round's layer sparsities."""
    start = time.perf_counter()
    kwargs = dict(epochs=recipe.epochs, seed=seed, **recipe.train_kwargs())
    model = build_model("lenet300", seed=0)
    theta_0 = snapshot_weights(model)
    dense = copy_model(model)                         # θ_T: the same training as IMP's round 0
    train(dense, train_set, progress=False, **kwargs)
    history = iterative_magnitude_pruning(model, build_model("lenet300", seed=seed + 1), train_set,
                                          validation_set, test_set, rounds=recipe.rounds, rate=recipe.rate, **kwargs)
    rounds = []
    for r in history:
        layers = imp_sparsities(["fc1", "fc2", "fc3"], r.round, recipe.rate)
        ticket = one_shot_ticket(dense, theta_0, layers)
        if r.round:
            train(ticket, train_set, progress=False, **kwargs)
        else:                                         # nothing pruned: the one-shot ticket is round 0's network
            ticket = dense
        rounds.append(asdict(r) | {"layer_sparsity": {name: round(v, 9) for name, v in layers.items()},
                                   "one_shot_validation": evaluate(ticket, validation_set).accuracy,
                                   "one_shot_test": evaluate(ticket, test_set).accuracy})
    return {"seed": seed, "control_init_seed": seed + 1, "rounds": rounds,
            "seconds": round(time.perf_counter() - start, 1)}


def run_tickets(recipe: TicketRecipe, *, progress: bool = False) -> list[dict]:
    """Every seed of ``recipe``."""
    runs = []
    data = _data(recipe)
    for seed in recipe.seeds:
        runs.append(_ticket_run(recipe, seed, *data))
        if progress:
            last = runs[-1]["rounds"][-1]
            print(f"seed {seed}: {1 - last['sparsity']:.1%} kept after {recipe.rounds} rounds: ticket "
                  f"{last['ticket_test']:.2%}, control {last['control_test']:.2%}, one-shot "
                  f"{last['one_shot_test']:.2%} on test ({runs[-1]['seconds']:.0f} s)", flush=True)
    return runs


def precompute_tickets(recipe: TicketRecipe = TICKET_RECIPE, *, command: str = "", progress: bool = False) -> dict:
    """The whole record: every seed's rounds, the cheap check case, and how they were made."""
    start = time.perf_counter()
    doc = {
        "model": "lenet300",
        "theta_0": "prunelab.build_model('lenet300', seed=0)",
        "recipe": asdict(recipe) | {"optimizer": "SGD", "output_layer_rate": recipe.rate / 2, "device": "cpu"},
        "runs": run_tickets(recipe, progress=progress),
        "check": {"recipe": asdict(CHECK_TICKET_RECIPE), "runs": run_tickets(CHECK_TICKET_RECIPE)},
        "torch": torch.__version__.split("+")[0],
        "threads": torch.get_num_threads(),
        "command": command,
    }
    doc["seconds"] = round(time.perf_counter() - start)
    return doc


def tickets_path() -> Path:
    """``<data root>/precomputed/tickets_lenet300.json``."""
    return data_root() / "precomputed" / "tickets_lenet300.json"


def load_tickets(path: str | Path | None = None) -> dict:
    """The precomputed IMP record (``tickets_path()`` unless ``path``)."""
    path = Path(path) if path is not None else tickets_path()
    if not path.is_file():
        raise FileNotFoundError(f"No precomputed lottery tickets at {path}. Make them with `python "
                                f"benches/bench_lottery_ticket.py --write {path}` (about 7 minutes on one thread).")
    return json.loads(path.read_text())


def recipe_of(record: dict) -> TicketRecipe:
    """The ``TicketRecipe`` a record (``doc["recipe"]`` or ``doc["check"]["recipe"]``) was made with."""
    fields = {k: v for k, v in record.items() if k in TicketRecipe.__dataclass_fields__}
    return TicketRecipe(**fields | {"seeds": tuple(fields["seeds"])})


def compare_tickets(recorded: list[dict], fresh: list[dict]) -> float:
    """Largest difference in any accuracy between two lists of runs; ``inf`` if their sparsities differ."""
    worst = 0.0
    for a, b in zip(recorded, fresh, strict=True):
        for x, y in zip(a["rounds"], b["rounds"], strict=True):
            if not math.isclose(x["sparsity"], y["sparsity"], rel_tol=0, abs_tol=1e-12):
                return math.inf
            worst = max([worst, *(abs(x[k] - y[k]) for k in x if k.endswith(("_validation", "_test")))])
    return worst
