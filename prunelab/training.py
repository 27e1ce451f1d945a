"""Train and evaluate on in-memory tensors: no DataLoader, no per-image Python, deterministic given a seed.

``train`` draws its batch order from a ``torch.Generator`` seeded with ``seed``; nothing touches torch's
global random state. On the CPU, the same seed, data, torch version and thread count give bit-identical
weights. Training runs where the model is: it stays on the device the user put it on unless ``device=`` asks
for another (``default_device()`` picks CUDA when present, or what ``$PRUNELAB_DEVICE`` says, for those who
want it: ``model.to(prunelab.default_device())``). The notebooks' asserted figures come from the CPU.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._helpers import in_mode
from .data import Data, as_image_set

__all__ = ["Evaluation", "EpochLog", "default_device", "evaluate", "train", "model_device"]

LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (logits [B, K], y [B], x [B, 1, H, W]) -> scalar


def default_device() -> torch.device:
    """``$PRUNELAB_DEVICE`` when set (e.g. ``cpu``), else CUDA when present, else the CPU."""
    name = os.environ.get("PRUNELAB_DEVICE", "").strip()
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"PRUNELAB_DEVICE={name!r} is not a torch device: set it to 'cpu' or 'cuda', "
                         "or unset it to use CUDA when present.") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"PRUNELAB_DEVICE={name!r} asks for CUDA, but torch sees no CUDA device here: "
                         "set it to 'cpu' or unset it.")
    return device


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    return next(model.parameters(), torch.empty(0)).device


@dataclass(frozen=True)
class Evaluation:
    """accuracy: fraction correct in [0, 1]; loss: mean cross-entropy (nats); correct, total: counts."""
    accuracy: float
    loss: float
    correct: int
    total: int


def eval_batch_size(model: nn.Module) -> int:
    """Images per batch for ``evaluate``, chosen by measurement on a 2-core CPU (benches/bench_evaluate.py):
    convolutions run fastest on small batches whose activations stay in cache, matrix products on large ones.
    """
    return 256 if any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in model.modules()) else 2500


@torch.inference_mode()
def evaluate(model: nn.Module, data: Data, *, batch_size: int | None = None) -> Evaluation:
    """Accuracy and mean cross-entropy of ``model`` on every image of ``data``, on the model's device.

    Runs in eval mode (BatchNorm uses its running statistics) and puts the model back in the mode it
    was in. The normalised images are cached on the device, so repeated calls (a slider) only run the model.
    ``batch_size`` defaults to ``eval_batch_size(model)``. ``data``: an ImageSet, an ``(x, y)`` pair, a
    Dataset or a DataLoader (see ``data.as_image_set``).
    """
    data = as_image_set(data, "evaluate")
    batch_size = eval_batch_size(model) if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    device = model_device(model)
    x_all, y_all = data.normalized(device), data.labels.to(device)
    with in_mode(model, training=False):
        correct, loss_sum = 0, 0.0
        for start in range(0, len(data), batch_size):
            x, y = x_all[start:start + batch_size], y_all[start:start + batch_size]
            logits = model(x)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
    return Evaluation(correct / len(data), loss_sum / len(data), correct, len(data))


@dataclass(frozen=True)
class EpochLog:
    """One epoch of training: mean training loss and accuracy over its batches, optional test accuracy."""
    epoch: int
    train_loss: float
    train_accuracy: float
    seconds: float
    test_accuracy: float | None = None


def cross_entropy(logits: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """The default training loss, mean cross-entropy; ``x`` is unused (a loss like distillation needs it)."""
    return F.cross_entropy(logits, y)


def train(
    model: nn.Module,
    data: Data,
    *,
    epochs: int = 1,
    lr: float = 0.05,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    lr_schedule: Literal["constant", "cosine"] = "constant",
    seed: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    loss_fn: LossFn = cross_entropy,
    after_step: Callable[[nn.Module], None] | None = None,
    test_data: Data | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> list[EpochLog]:
    """Train ``model`` in place with mini-batch SGD (momentum, optional weight decay) and return a log per epoch.

    - ``lr_schedule="cosine"`` decays the learning rate from ``lr`` to 0 over all steps.
    - ``optimizer``: use this one instead of building SGD (``lr``, ``momentum``, ``weight_decay`` then unused).
    - ``loss_fn(logits, y, x)``: the loss to minimise; cross-entropy by default.
    - ``after_step(model)``: called after every optimiser step (e.g. to re-apply pruning masks).
    - ``test_data``: if given, test accuracy is evaluated after each epoch.
    - ``device``: where to train; the model is moved there. Default: where the model already is.
    """
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if optimizer is None and not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr}")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    data = as_image_set(data, "train", "prunelab.load_fashion_mnist('train')")
    if test_data is not None:
        test_data = as_image_set(test_data, "train's test_data")

    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)
    if optimizer is None:
        # fused: one kernel for all parameters, about 18% faster per LeNet-300-100 step on a 2-core CPU
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay,
                                    fused=True)
    steps_per_epoch = math.ceil(len(data) / batch_size)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
                 if lr_schedule == "cosine" else None)
    generator = torch.Generator().manual_seed(seed)

    logs: list[EpochLog] = []
    with tqdm(total=epochs * steps_per_epoch, disable=not progress, unit="batch", leave=False) as bar, \
            in_mode(model, training=True):
        for epoch in range(1, epochs + 1):
            bar.set_description(f"epoch {epoch}/{epochs}")
            start = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            for x, y in data.batches(batch_size, shuffle=True, generator=generator, device=device):
                logits = model(x)
                loss = loss_fn(logits, y, x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                if after_step is not None:
                    after_step(model)
                loss_sum += loss.detach() * len(y)
                correct += (logits.detach().argmax(1) == y).sum()
                bar.update()
            seconds = time.perf_counter() - start
            test_acc = evaluate(model, test_data).accuracy if test_data is not None else None
            logs.append(EpochLog(epoch, float(loss_sum) / len(data), int(correct) / len(data), seconds, test_acc))
            bar.set_postfix(loss=f"{logs[-1].train_loss:.3f}",
                            **({"test_acc": f"{test_acc:.4f}"} if test_acc is not None else {}))
    return logs
