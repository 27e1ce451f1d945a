"""What the surviving weights start from after pruning, before retraining.

- keep: the trained values (ordinary fine-tuning);
- random re-init: fresh random values, as if training the sparse network from scratch;
- rewind: the values they had at initialisation (Frankle & Carbin 2019, the lottery ticket), or after k
  training iterations (Frankle et al. 2020, "late rewinding").
The mask stays; only the original (``weight_orig``) values of the kept entries matter.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .masks import masked_parameters, original

__all__ = ["snapshot_weights", "rewind", "random_reinit"]


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
    with torch.no_grad():
        for name in names:
            original(model, name).copy_(weights[name])
        for name in masked_parameters(model):  # refresh the effective tensors now
            module_name, _, tensor_name = name.rpartition(".")
            module = model.get_submodule(module_name)
            setattr(module, tensor_name, getattr(module, tensor_name + "_orig") * getattr(module, tensor_name + "_mask"))
    return model


def random_reinit(model: nn.Module, fresh: nn.Module) -> nn.Module:
    """Give the kept weights the values of ``fresh``, a newly initialised model of the same architecture
    (e.g. ``prunelab.build_model(name, seed=1)``): the sparse network trained from a random start."""
    return rewind(model, snapshot_weights(fresh))
