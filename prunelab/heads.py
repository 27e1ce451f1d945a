"""Attention-head importance from data (Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better than One?").

Give every head h of an attention a gate ξ_h (= 1) that multiplies the head's output before the output projection
W_o: out = Σ_h ξ_h · W_o[:, head h] · A_h + b_o. Then I_h = E_x |∂L(x)/∂ξ_h|, the expected size of the loss change
per unit of the gate, the first-order estimate of what removing the head (ξ_h = 0) costs on example x; the absolute
value is taken per example, so that gains on some examples do not cancel losses on others.

How it is computed, exactly per example: ``head_gates`` installs gates ξ of shape [B, H], one per example and head,
so ∂(Σ_x L(x))/∂ξ[x, h] = ∂L(x)/∂ξ_h (examples do not interact in eval mode). For a written-out attention
(``TinyGPT``'s ``CausalSelfAttention``, with ``qkv`` and ``proj``) a pre-hook multiplies the input of ``proj``;
``nn.MultiheadAttention`` reads ``out_proj.weight`` without calling ``out_proj``, so a hook on the attention
recomputes its output from the heads' outputs A (``one_shot.out_proj_input``) as (ξ ⊙ A) W_oᵀ + b_o. (An
equivalent route at ξ = 1: ∂L/∂ξ_h = Σ_{j ∈ head h} Σ_i W_o[i, j] ∂L/∂W_o[i, j], but that needs the gradient of
W_o per example, which one backward pass over a batch does not give.)

Data: images with labels (``data.as_image_set``: an ImageSet, an ``(x, y)`` pair, ...; L the cross-entropy of the
class logits) or a ``text.TextSet`` (L the mean next-character cross-entropy of a block of ``block_size``
characters). ``prune(model, s, granularity="head", criterion="head_importance", data=...)`` uses it.

Ranking heads across layers: Michel et al. divide each layer's I by its ℓ2 norm first (``normalize_per_layer``).
On the tiny GPT that is the wrong choice: its last layers' heads matter less each, and normalising hides it
(removing 8 of 16 heads greedily, recomputing I after each: validation perplexity 3.59 with I as it is, 10.64
normalised, 9.44 for random heads; ``benches/bench_gpt_compression.py``). So ``prune`` uses I as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._helpers import in_mode
from .data import Data, as_image_set
from .graph import HeadLayout
from .one_shot import out_proj_input
from .pruning import attention_layers
from .text import TextSet
from .training import model_device

__all__ = ["Loss", "per_example_cross_entropy", "head_gates", "head_importance", "normalize_per_layer"]

Loss = Callable[[Tensor, Tensor], Tensor]          # (output, target) -> per-example losses [B]
EXAMPLE = "prunelab.load_fashion_mnist('validation').subset(512) or prunelab.text.load_corpus('train')"


def per_example_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """L(x) of every example: the cross-entropy of logits [B, C] with labels y [B], or the mean over the positions
    of logits [B, T, V] with next tokens y [B, T] (nats). Returns [B]."""
    B = logits.shape[0]
    return F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction="none").view(B, -1).mean(1)


def _float_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 if none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _gated(A: Tensor, xi: Tensor, batch_dim: int) -> Tensor:
    """The heads' outputs A (E = H · d values per position, heads side by side; batch along ``batch_dim``) with
    head h of example b multiplied by ξ[b, h], ξ [B, H]."""
    B, H = xi.shape
    A_b = A.movedim(batch_dim, 0)                                   # [B, ..., E]
    gated = A_b.reshape(B, -1, H, A.shape[-1] // H) * xi.view(B, 1, H, 1)    # [B, positions, H, d]
    return gated.view(A_b.shape).movedim(0, batch_dim)


def _gate_multihead(gate: Tensor):
    """A forward hook for ``nn.MultiheadAttention`` that returns (ξ ⊙ A) W_oᵀ + b_o instead of its output."""
    def hook(mha: nn.MultiheadAttention, args, kwargs, output):
        A = out_proj_input(mha, args, kwargs)                       # [B, T, E] (or [T, B, E])
        if A.dim() != 3:
            raise ValueError("Head gates need batched attention inputs ([B, T, E] or [T, B, E]), got unbatched ones.")
        gated = _gated(A, gate, 0 if mha.batch_first else 1)
        return F.linear(gated, mha.out_proj.weight, mha.out_proj.bias), output[1]
    return hook


@contextmanager
def head_gates(model: nn.Module, layouts: dict[str, HeadLayout], batch: int) -> Iterator[dict[str, Tensor]]:
    """Inside the block, each attention's heads are multiplied by gates ``{attention: ξ [batch, H]}`` (ones in the
    model's dtype, requiring grad), one per example and head, before W_o; the model computes exactly as before.
    The hooks go afterwards, also when the block raises."""
    device, dtype = model_device(model), _float_dtype(model)
    gates = {name: torch.ones(batch, layout.heads, device=device, dtype=dtype, requires_grad=True)
             for name, layout in layouts.items()}
    handles = []
    try:
        for name, layout in layouts.items():
            attention = model.get_submodule(name)
            if isinstance(attention, nn.MultiheadAttention):
                handles.append(attention.register_forward_hook(_gate_multihead(gates[name]), with_kwargs=True))
            else:                                                   # qkv / proj: proj is called on the heads
                proj = model.get_submodule(layout.out.rpartition(".")[0])
                handles.append(proj.register_forward_pre_hook(
                    lambda module, args, xi=gates[name]: (_gated(args[0], xi, 0), *args[1:])))
        yield gates
    finally:
        for handle in handles:
            handle.remove()


def _examples(model: nn.Module, data: Data | TextSet, n: int, block_size: int | None) -> tuple[Tensor, Tensor]:
    """(x, y) of at most ``n`` examples on the model's device: the first n images with labels (normalised, in the
    model's floating-point dtype), or n blocks of ``block_size`` characters (default the model's ``block_size``)
    spread evenly over a TextSet, as ``perplexity`` picks them, with their next characters."""
    device = model_device(model)
    if isinstance(data, TextSet):
        T = block_size if block_size is not None else getattr(model, "block_size", None)
        if T is None:
            raise ValueError(f"{type(model).__name__} has no block_size: pass block_size= (characters per block).")
        x, y = data.spread_blocks(T, min(n, data.block_count(T)))   # [n, T] each
        return x.to(device), y.to(device)
    images = as_image_set(data, "Head importance", EXAMPLE)
    return images.normalized(device)[:n].to(_float_dtype(model)), images.labels[:n].to(device)


def head_importance(model: nn.Module, data: Data | TextSet, *, loss: Loss | None = None,
                    layers: list[str] | None = None, n_batches: int = 8, batch_size: int = 32,
                    block_size: int | None = None) -> dict[str, Tensor]:
    """I_h = E_x |∂L(x)/∂ξ_h| of every head, ``{attention: [H]}`` float64, over ``n_batches`` · ``batch_size``
    examples of ``data`` (fewer if it has fewer): images with labels or a ``text.TextSet``.

    ``loss(output, target)`` gives the per-example losses [B] (default ``per_example_cross_entropy``); ``layers``
    names the attention modules (default all, ``pruning.attention_layers``). The model as it computes now (masks
    included: a masked head has I_h = 0), in eval mode, its weights, gradients and mode left as they were.
    """
    if data is None:
        raise ValueError(f"Head importance needs data to compute the loss on: pass data=, e.g. {EXAMPLE}.")
    for value, what in ((n_batches, "n_batches"), (batch_size, "batch_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} must be a positive integer, got {value!r}.")
    layouts = attention_layers(model, layers)
    loss = per_example_cross_entropy if loss is None else loss
    x, y = _examples(model, data, n_batches * batch_size, block_size)
    total = {name: torch.zeros(layout.heads, dtype=torch.float64) for name, layout in layouts.items()}
    with in_mode(model, training=False), torch.enable_grad():          # gradients even under a caller's no_grad
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            with head_gates(model, layouts, len(xb)) as gates:
                losses = loss(model(xb), yb)                        # [B]
                if losses.shape != (len(xb),):
                    raise ValueError(f"loss must return one loss per example, [{len(xb)}], got "
                                     f"{list(losses.shape)}: use reduction='none' (and average over positions).")
                grads = torch.autograd.grad(losses.sum(), list(gates.values()))   # ∂L(x)/∂ξ_h, each [B, H]
            for name, g in zip(gates, grads):
                total[name] += g.detach().abs().sum(0).double().cpu()
    return {name: t / len(x) for name, t in total.items()}


def normalize_per_layer(scores: dict[str, Tensor]) -> dict[str, Tensor]:
    """I_h / ‖I_layer‖₂ for every layer (as Michel et al. do, after Molchanov et al. 2017), so that heads of
    different layers can be ranked together; a layer whose scores are all 0 stays 0."""
    return {name: s / s.norm().clamp_min(torch.finfo(s.dtype).tiny) for name, s in scores.items()}
