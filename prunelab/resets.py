"""What the surviving weights start from after pruning, before retraining.

- keep: the trained values (ordinary fine-tuning);
- random re-init: fresh random values, as if training the sparse network from scratch;
- rewind: the values they had at initialisation (Frankle & Carbin 2019, the lottery ticket), or after k
  training iterations (Frankle et al. 2020, "late rewinding").
For these three the mask stays; only the original (``weight_orig``) values of the kept entries matter.

- inherit: the pruned weights come *back*, each with the mean of its kept neighbours (``inherit``); the
  masks go and the network is dense again, so retraining starts from a smooth fill-in rather than from the
  pruned weights' old values (lifting the mask) or from zeros (committing it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masks import masked_parameters, original, reset, set_effective

__all__ = ["inherit", "inherited_values", "random_reinit", "rewind", "snapshot_weights"]


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
