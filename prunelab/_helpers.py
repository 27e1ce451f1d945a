"""The few general helpers every part of the kit uses, so that compression need not import pruning for them.

- ``did_you_mean``: the hint of an "unknown name" error;
- ``select_layers``: the prunable layers a function works on, by name, checked;
- ``in_mode``: train or eval mode for a block, every submodule's own mode restored afterwards;
- ``per_layer``: one setting for every layer, or ``{layer: setting}``, as ``{layer: setting or None}``;
- ``temporary_path``: a file path in a temporary directory, to measure the bytes of a real file;
- ``write_record`` / ``recorded_elsewhere``: a precomputed JSON record (schedule runs, lottery tickets) written,
  and the note to print when it is checked under another torch or thread count than it was made with.
"""

from __future__ import annotations

import difflib
import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn


def did_you_mean(value: object, options: Iterable[object]) -> str:
    """``" Did you mean 'x'?"`` for the option closest to ``value``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def select_layers(model: nn.Module, layers: list[str] | None = None, *, units: bool = False) -> dict[str, nn.Module]:
    """The prunable layers (``masks.prunable_layers``) to work on: ``layers`` by name, or all of them.

    With ``units`` (neuron/channel pruning) the last layer is left out by default: its outputs are the classes.
    An unknown name is a ``ValueError`` that lists the layers there are.
    """
    from .masks import prunable_layers      # here, not at the top: masks imports did_you_mean from this module

    available = prunable_layers(model)
    if layers is None:
        names = list(available)[:-1] if units else list(available)
    else:
        names = list(layers)
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ValueError(f"Unknown layer {unknown[0]!r}.{did_you_mean(unknown[0], available)} Prunable layers "
                             f"of {type(model).__name__}: {', '.join(available)}.")
    if not names:
        raise ValueError(f"{type(model).__name__} has no layer to prune at this granularity.")
    return {n: available[n] for n in names}


def per_layer(value: object, names: list[str], what: str) -> dict:
    """``{layer: value}`` from one value or a mapping (layers missing from the mapping get None)."""
    if isinstance(value, Mapping):
        unknown = set(value) - set(names)
        if unknown:
            raise ValueError(f"{what} given for unknown layer(s) {sorted(unknown)}; layers: {', '.join(names)}.")
        return {n: value.get(n) for n in names}
    return {n: value for n in names}


@contextmanager
def in_mode(model: nn.Module, *, training: bool) -> Iterator[nn.Module]:
    """``model.train(training)`` inside the block; afterwards every submodule has the mode it had before (a
    BatchNorm a user froze in eval mode stays frozen), also when the block raises."""
    modes = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training


@contextmanager
def temporary_path(name: str) -> Iterator[Path]:
    """``<a new temporary directory>/<name>``; the directory and whatever was written there go afterwards."""
    with tempfile.TemporaryDirectory(prefix="prunelab-") as tmp:
        yield Path(tmp) / name


def write_record(path: str | Path, doc: dict) -> Path:
    """Write a precomputed record as JSON (indent 1, a final newline), making its folder; return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def recorded_elsewhere(doc: Mapping) -> str | None:
    """The note to print when a record (with ``"torch"`` and ``"threads"``) was made with another torch version or
    thread count than this process has, so that a re-run may differ slightly; None when they are the same."""
    here = torch.__version__.split("+")[0]
    if doc["threads"] == torch.get_num_threads() and doc["torch"] == here:
        return None
    return (f"note: recorded with torch {doc['torch']} on {doc['threads']} threads; this is torch "
            f"{torch.__version__} on {torch.get_num_threads()}: expect small differences")
