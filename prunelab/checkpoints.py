"""Baseline checkpoints: plain ``state_dict`` files under ``data/checkpoints/``, each with a JSON sidecar.

``<name>.pt`` is an ordinary ``torch.save(model.state_dict())`` file, loadable by anyone with
``torch.load(path, weights_only=True)``. ``<name>.json`` records how it was made (architecture, epochs,
seed, recipe), its test accuracy and its SHA-256. ``python -m prunelab.baselines`` re-creates them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .data import data_root, sha256_of
from .models import MODELS, build_model, check_model_name

__all__ = ["CheckpointError", "checkpoint_dir", "checkpoint_info", "load_pretrained", "load_weights",
           "available_checkpoints"]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not fit the model."""


def checkpoint_dir() -> Path:
    """``<data root>/checkpoints`` (see ``prunelab.data.data_root``)."""
    return data_root() / "checkpoints"


def available_checkpoints() -> list[str]:
    """Names of the baseline checkpoints that have a metadata file."""
    return sorted(p.stem for p in checkpoint_dir().glob("*.json"))


def checkpoint_info(name: str) -> dict:
    """The metadata of baseline checkpoint ``name`` (architecture, recipe, test accuracy, SHA-256, ...)."""
    path = checkpoint_dir() / f"{name}.json"
    if not path.is_file():
        known = ", ".join(available_checkpoints()) or "none"
        raise CheckpointError(f"No baseline checkpoint named {name!r} in {checkpoint_dir()}. "
                              f"Available: {known}. Train them with `python -m prunelab.baselines`.")
    return json.loads(path.read_text())


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a file that is not a safe checkpoint
        raise CheckpointError(
            f"{path} is not a loadable weights-only checkpoint ({type(e).__name__}: {str(e).splitlines()[0]}). "
            "prunelab loads with torch.load(..., weights_only=True); save a plain model.state_dict().") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state_dict (a dict of tensors); "
                              "save one with torch.save(model.state_dict(), path).")
    return state


def _mismatches(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    problems = [f"missing {k}" for k in expected if k not in got]
    problems += [f"unexpected {k}" for k in got if k not in expected]
    problems += [f"{k}: checkpoint {got[k]} vs model {expected[k]}"
                 for k in expected if k in got and got[k] != expected[k]]
    return problems


def _matching_architectures(state: dict[str, torch.Tensor]) -> list[str]:
    matches = []
    for arch in MODELS:
        if not _mismatches(build_model(arch), state):
            matches.append(arch)
    return matches


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the state_dict at ``path`` into ``model`` and return it.

    Every key and shape is checked before anything is copied, so on a mismatch the model is left exactly
    as it was and ``CheckpointError`` lists the differences (and which known architecture fits the file).
    """
    path = Path(path)
    state = _read_state_dict(path)
    problems = _mismatches(model, state)
    if problems:
        fits = _matching_architectures(state)
        hint = (f" The file fits prunelab's {', '.join(repr(a) for a in fits)} architecture."
                if fits else "")
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} differences)" if len(problems) > 5 else "")
        raise CheckpointError(f"{path} does not fit this {type(model).__name__}: {shown}.{hint} "
                              "Build the matching model first (prunelab.build_model(name)).")
    model.load_state_dict(state)
    return model


def load_pretrained(name: str, *, verify: bool = True) -> nn.Module:
    """The baseline model ``name`` (e.g. ``"lenet300"``) with its trained weights, in eval mode.

    With ``verify`` the file's SHA-256 is checked against its metadata first.
    """
    check_model_name(name)
    info = checkpoint_info(name)
    path = checkpoint_dir() / info["file"]
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file {path} is missing. Restore it with "
                              f"`git checkout -- data/checkpoints/{info['file']}` or re-train it with "
                              f"`{info['command']}`.")
    if verify and sha256_of(path) != info["sha256"]:
        raise CheckpointError(f"Checkpoint {path} is corrupt: its SHA-256 differs from {info['sha256']} "
                              f"recorded in {name}.json. Restore it with `git checkout -- data/checkpoints/"
                              f"{info['file']}` or re-train it with `{info['command']}`.")
    model = load_weights(build_model(info["arch"]), path)
    return model.eval()
