"""Test accuracy after every slider move, fast: cache the activations that a change cannot touch.

A model that is an ``nn.Sequential`` computes h_{i+1} = f_i(h_i). Masking layer k changes f_k only, so the
inputs h_0 … h_k of the layers before it stay the same: ``LiveAccuracy`` keeps them and, after a change,
runs the model from the first changed layer on. For LeNet-300-100 on the full test set (10,000 images) that
is about 20 ms when fc1 changes and 3 ms when only fc2 or fc3 does (benches/bench_explorer.py).

The cached activations belong to the model's current state. Say which layers changed (``changed=``) each
time; ``changed=None`` means "anything may have changed" and runs the whole model. Models that are not
``nn.Sequential``, or whose activations would not fit in ``max_cache_bytes``, are always run whole.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ._helpers import in_mode
from .data import Data, as_image_set
from .training import eval_batch_size, model_device

__all__ = ["LiveAccuracy"]


class LiveAccuracy:
    """Accuracy of ``model`` on every image of ``data``, recomputed from the first changed layer on.

    ``accuracy(changed)`` returns the fraction correct in [0, 1]; ``changed`` names the layers whose weights
    or masks changed since the last call (qualified names such as ``"fc2"`` or ``"layer1.0.conv1"``).
    ``seconds`` is the time the last call took.
    """

    def __init__(self, model: nn.Module, data: Data, *, max_cache_bytes: float = 512e6):
        self.model = model
        self.data = data = as_image_set(data, "LiveAccuracy")
        self.labels = data.labels.to(model_device(model))
        self.batch_size = eval_batch_size(model)
        self.max_cache_bytes = max_cache_bytes
        self.children = list(model.named_children()) if isinstance(model, nn.Sequential) else []
        self._inputs: list[list[Tensor]] | None = None   # per batch: inputs to each child, h_0 … h_n
        self._correct = 0                                  # of the last call
        self.seconds = 0.0

    def _first_changed(self, changed: Iterable[str] | None) -> int:
        if changed is None or self._inputs is None:
            return 0
        index = {name: i for i, (name, _) in enumerate(self.children)}
        firsts = [index.get(name.split(".")[0]) for name in changed]
        if any(i is None for i in firsts):
            return 0
        return min(firsts, default=len(self.children))

    @torch.inference_mode()
    def accuracy(self, changed: Iterable[str] | None = None) -> float:
        start = time.perf_counter()
        with in_mode(self.model, training=False):
            correct = self._correct = self._run(self._first_changed(changed))
        self.seconds = time.perf_counter() - start
        return correct / len(self.labels)

    def _run(self, first: int) -> int:
        if not self.children:                      # not a chain of layers: run the model whole
            x = self.data.normalized(model_device(self.model))
            return sum(int((self.model(x[i:i + self.batch_size]).argmax(1) == self.labels[i:i + self.batch_size])
                           .sum()) for i in range(0, len(x), self.batch_size))
        if self._inputs is None:
            return self._run_and_cache()
        if first >= len(self.children):           # nothing changed
            return self._correct
        correct = 0
        for b, inputs in enumerate(self._inputs):
            h = inputs[first]
            for i in range(first, len(self.children)):
                if i > first:
                    inputs[i] = h
                h = self.children[i][1](h)
            correct += int((h.argmax(1) == self._labels_of(b)).sum())
        return correct

    def _labels_of(self, b: int) -> Tensor:
        return self.labels[b * self.batch_size:(b + 1) * self.batch_size]

    def _run_and_cache(self) -> int:
        """The first, full pass: keep every layer's input if they all fit in ``max_cache_bytes``."""
        x = self.data.normalized(model_device(self.model))
        n_batches = -(-len(x) // self.batch_size)
        batches, correct, keep = [], 0, None
        for start in range(0, len(x), self.batch_size):
            h, inputs = x[start:start + self.batch_size], []
            for _, child in self.children:
                inputs.append(h)
                h = child(h)
            if keep is None:   # the first batch tells what the whole cache would take
                size = sum(t.numel() * t.element_size() for t in inputs) * n_batches
                keep = size <= self.max_cache_bytes and not any(getattr(m, "inplace", False)
                                                                for m in self.model.modules())
            if keep:
                batches.append(inputs)
            correct += int((h.argmax(1) == self.labels[start:start + self.batch_size]).sum())
        if keep:
            self._inputs = batches
        else:
            self.children = []   # too big to cache (or in-place layers would overwrite it): run it whole
        return correct
