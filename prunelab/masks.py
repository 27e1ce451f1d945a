"""Non-destructive masks, stored exactly as ``torch.nn.utils.prune`` stores them.

A masked parameter ``weight`` of a module becomes

- ``weight_orig``: the original values (a parameter; masking never changes it),
- ``weight_mask``: a 0/1 float buffer of the same shape,
- ``weight``: ``weight_orig * weight_mask``, recomputed by a forward pre-hook before every forward.

So a state dict holds ``weight_orig`` / ``weight_mask`` as torch users know them, and
``torch.nn.utils.prune.remove`` commits it. Unlike calling ``torch.nn.utils.prune`` functions again, which
multiplies a new mask into the old one, ``set_masks`` *replaces* the mask in place (``mask.copy_(new)``):
sparsity 0.9 then 0.3 gives the 0.3 mask, and ``reset`` gives back the original tensors bit for bit.

Masks are keyed by parameter name, ``"fc1.weight"``, ``"fc1.bias"``, ``"bn1.weight"``, ...
A masked entry stays exactly zero while training: its effective value is ``orig * 0``.

Some modules read a child's tensor without calling the child, so the child's pre-hook never runs:
``nn.MultiheadAttention`` reads ``out_proj.weight``, and ``nn.TransformerEncoderLayer``'s inference fast path
reads every weight below it. Each such module (``READERS``) above a mask gets one more pre-hook that
recomputes every masked tensor below it, so training a pruned transformer works and masked entries stay zero.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from ._helpers import did_you_mean

__all__ = ["READERS", "prunable_layers", "set_masks", "get_masks", "original", "effective", "set_effective",
           "effective_state_dict", "load_effective_state_dict", "reset", "commit", "masked_parameters",
           "load_masked_state_dict", "mask_sparsity", "copy_model"]


# modules whose forward reads tensors of their children without calling them (see the module docstring)
READERS = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every ``nn.Linear`` and ``nn.Conv2d`` of ``model``, keyed by qualified name (``"fc1"``, ``"layer1.0.conv1"``).

    Raises ``ValueError`` when there is none.
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    if not layers:
        raise ValueError(f"{type(model).__name__} has nothing prunable: prunelab prunes the weights of "
                         "nn.Linear and nn.Conv2d layers, and this model has none.")
    return layers


def _split(model: nn.Module, param_name: str) -> tuple[nn.Module, str]:
    module_name, _, tensor_name = param_name.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        module = None
    if module is None or not (hasattr(module, tensor_name + "_orig")
                              or isinstance(getattr(module, tensor_name, None), nn.Parameter)):
        known = [n.removesuffix("_orig") for n, _ in model.named_parameters()]
        raise ValueError(f"{type(model).__name__} has no parameter {param_name!r} to mask."
                         f"{did_you_mean(param_name, known)} "
                         f"Masks are keyed by parameter names such as {', '.join(known[:4])}.")
    return module, tensor_name


def original(model: nn.Module, param_name: str) -> Tensor:
    """The original (unmasked) values of a parameter: ``<name>_orig`` when masked, else the parameter itself."""
    module, tensor_name = _split(model, param_name)
    orig = getattr(module, tensor_name + "_orig", None)
    return orig if orig is not None else getattr(module, tensor_name)


def effective(module: nn.Module, tensor_name: str = "weight") -> Tensor | None:
    """The tensor a forward pass computes with, detached: ``<name>_orig * <name>_mask`` when masked, else the
    tensor itself (None when the module has none, e.g. ``bias=False``). The one place that multiplies a mask
    in."""
    mask = getattr(module, tensor_name + "_mask", None)
    value = getattr(module, tensor_name + "_orig") * mask if mask is not None else getattr(module, tensor_name, None)
    return None if value is None else value.detach()


def _refresh(module: nn.Module, tensor_name: str) -> None:
    """Recompute a masked tensor now (what the forward pre-hook does before the next forward)."""
    with torch.no_grad():
        setattr(module, tensor_name, getattr(module, tensor_name + "_orig") * getattr(module, tensor_name + "_mask"))


def set_effective(module: nn.Module, value: Tensor, tensor_name: str = "weight") -> None:
    """Write ``value`` as the tensor the module computes with, in place. A masked tensor keeps its mask: ``value``
    goes to ``<name>_orig`` and the effective tensor is refreshed now, not only at the next forward."""
    with torch.no_grad():
        if hasattr(module, tensor_name + "_mask"):
            getattr(module, tensor_name + "_orig").copy_(value)
            _refresh(module, tensor_name)
        else:
            getattr(module, tensor_name).copy_(value)


def effective_state_dict(model_or_state: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A model's state dict (or a saved one) with the masks folded in: each ``<name>_orig`` / ``<name>_mask`` pair
    becomes ``<name> = orig * mask``. It loads into an unmasked model of the same architecture.

    Zeros are stored as +0.0 (``orig * 0`` is -0.0 for a negative ``orig``; the sign bit would make a dense
    file compress worse without changing any value).
    """
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    out = {}
    for key, value in state.items():
        name, suffix = key[:-5], key[-5:]
        if suffix == "_mask" and name + "_orig" in state:
            continue                                                      # folded into <name> below
        if suffix == "_orig" and name + "_mask" in state:
            key, value = name, value * state[name + "_mask"]
        out[key] = value + 0.0 if value.is_floating_point() else value  # -0.0 + 0.0 = +0.0
    return out


def load_effective_state_dict(model: nn.Module, state: Mapping[str, Tensor], *,
                              what: str = "load_effective_state_dict") -> nn.Module:
    """Load effective weights (``effective_state_dict``, or what a compressed file decodes to) into ``model``, in
    place; returns it. ``model`` must be unmasked and have exactly the state's keys and shapes: both are checked
    before anything is copied, and ``what`` (the caller's name) opens the error."""
    if masked_parameters(model):
        raise ValueError(f"{what} loads effective weights into an unmasked model; build a fresh one "
                         "(prunelab.build_model) or commit the masks first (prunelab.masks.commit).")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        diff = sorted(set(expected.items()) ^ set(got.items()))[:4]
        raise ValueError(f"{what}: what is loaded does not fit this {type(model).__name__} (differences in key: "
                         f"shape, e.g. {diff}); build the architecture it was saved from.")
    model.load_state_dict(state)
    return model


def masked_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters that currently carry a mask."""
    return [name.removesuffix("_mask") for name, _ in model.named_buffers() if name.endswith("_mask")]


def get_masks(model: nn.Module) -> dict[str, Tensor]:
    """The current masks, ``{param_name: bool tensor}`` (copies)."""
    return {name: model.get_buffer(name + "_mask").bool() for name in masked_parameters(model)}


def _check_mask(model: nn.Module, name: str, mask: Tensor) -> None:
    orig = original(model, name)
    if not isinstance(mask, Tensor) or mask.shape != orig.shape:
        got = list(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"The mask for {name!r} must have the parameter's shape {list(orig.shape)}, got {got}.")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"The mask for {name!r} must hold only 0 and 1 (or be a bool tensor).")
    if not torch.isfinite(orig).all():
        raise ValueError(f"{name!r} holds NaN or inf values; masking would hide them. Fix or reload the "
                         "weights (e.g. prunelab.load_pretrained) before pruning.")


def set_masks(model: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
    """Set the masks of the named parameters, replacing any earlier mask (never multiplying into it).

    Every mask is checked before any is applied, so a bad one leaves the model exactly as it was.
    Parameters not named keep their current mask (or none). Returns ``model``.
    """
    for name, mask in masks.items():
        _check_mask(model, name, mask)
    for name, mask in masks.items():
        module, tensor_name = _split(model, name)
        mask = mask.to(device=original(model, name).device, dtype=original(model, name).dtype)
        if hasattr(module, tensor_name + "_mask"):
            getattr(module, tensor_name + "_mask").copy_(mask)
            _refresh(module, tensor_name)  # the effective tensor now, not only at the next forward
        else:
            prune.custom_from_mask(module, tensor_name, mask)
            _hook_readers_above(model, name)
    return model


def _recompute_masked_below(reader: nn.Module, args) -> None:
    """Forward pre-hook of a reader: every masked tensor below it becomes ``orig * mask`` now (with autograd,
    as the tensor's own pre-hook would compute it)."""
    for module in reader.modules():
        for key in [k for k in module._buffers if k.endswith("_mask")]:
            tensor_name = key.removesuffix("_mask")
            if tensor_name + "_orig" in module._parameters:
                setattr(module, tensor_name, module._parameters[tensor_name + "_orig"] * module._buffers[key])


def _hook_readers_above(model: nn.Module, param_name: str) -> None:
    """Give every READERS module that holds ``param_name`` (itself or above it) the recomputing pre-hook, once."""
    parts = param_name.split(".")[:-1]
    for depth in range(len(parts) + 1):
        ancestor = model.get_submodule(".".join(parts[:depth]))
        if isinstance(ancestor, READERS) and _recompute_masked_below not in ancestor._forward_pre_hooks.values():
            ancestor.register_forward_pre_hook(_recompute_masked_below)


def reset(model: nn.Module, names: list[str] | None = None) -> nn.Module:
    """Remove the masks (all, or of ``names``) and put the original tensors back, bit for bit.

    Every name is checked first: one without a mask is a ``ValueError`` and the model is left as it was.
    """
    masked = masked_parameters(model)
    if isinstance(names, str):
        raise TypeError(f"names must be a list of parameter names, e.g. [{names!r}], not a string.")
    names = masked if names is None else list(dict.fromkeys(names))
    located = [_split(model, name) for name in names]  # an unknown name: ValueError with a "did you mean"
    unmasked = [name for name in names if name not in masked]
    if unmasked:
        have = (f"The masked parameters are {', '.join(masked)}." if masked
                else f"No parameter of {type(model).__name__} has a mask.")
        raise ValueError(f"Cannot reset {', '.join(map(repr, unmasked))}: no mask to remove. {have} Masks are "
                         "added by prunelab.prune (or prunelab.masks.set_masks).")
    for module, tensor_name in located:
        orig = getattr(module, tensor_name + "_orig")
        _remove_reparametrization(module, tensor_name)
        module.register_parameter(tensor_name, orig)
        if tensor_name == "weight":  # back in torch's own order (weight before bias), as before masking
            module._parameters = {"weight": orig, **module._parameters}
    return model


def commit(model: nn.Module) -> nn.Module:
    """Make the pruning permanent: each masked parameter becomes ``orig * mask`` and the masks go away.

    The same as ``torch.nn.utils.prune.remove`` on every masked parameter. After this, the originals are gone
    and training can revive zeros (there is no mask left to keep them at zero).
    ``torch.jit.script`` needs committed masks: it cannot compile the masks' forward pre-hooks (``'CustomFromMask'
    object has no attribute '__name__'``), so script ``commit(copy_model(model))`` (``prunelab.export`` does this
    for files).
    """
    for name in masked_parameters(model):
        module, tensor_name = _split(model, name)
        prune.remove(module, tensor_name)
    return model


def _remove_reparametrization(module: nn.Module, tensor_name: str) -> None:
    for key, hook in list(module._forward_pre_hooks.items()):
        if isinstance(hook, prune.BasePruningMethod) and hook._tensor_name == tensor_name:
            del module._forward_pre_hooks[key]
    if hasattr(module, tensor_name) and not isinstance(getattr(module, tensor_name), nn.Parameter):
        delattr(module, tensor_name)
    del module._parameters[tensor_name + "_orig"]
    del module._buffers[tensor_name + "_mask"]


def mask_sparsity(masks: dict[str, Tensor]) -> float:
    """Fraction of masked-out entries over all the given masks together."""
    total = sum(m.numel() for m in masks.values())
    return 1 - sum(int(m.sum()) for m in masks.values()) / total if total else math.nan


def load_masked_state_dict(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """Load a state dict saved from a masked model (``<name>_orig`` / ``<name>_mask`` keys) into ``model``.

    Puts a mask on every parameter that has one in ``state``, then loads; the same as applying
    ``torch.nn.utils.prune.identity`` to those parameters and calling ``load_state_dict``. Returns ``model``.
    """
    masks = {key.removesuffix("_mask"): value.bool() for key, value in state.items() if key.endswith("_mask")}
    shapes_ok = all(_split(model, name) and original(model, name).shape == m.shape for name, m in masks.items())
    if not shapes_ok:
        raise ValueError("The saved masks do not fit this model's parameters; build the model the state "
                         "dict was saved from.")
    set_masks(model, masks)
    model.load_state_dict(state)
    return model


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works for a masked model after a forward pass with gradients.

    Such a model's effective ``weight`` is a non-leaf tensor, which deepcopy refuses; it is copied detached
    (the forward pre-hook recomputes it anyway). Masks, originals and hooks are copied as they are.
    """
    memo = {id(t): t.detach().clone() for m in model.modules() for t in vars(m).values()
            if isinstance(t, Tensor) and not t.is_leaf}
    return copy.deepcopy(model, memo)
