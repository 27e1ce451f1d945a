"""Attention-head importance I_h = E_x |∂L(x)/∂ξ_h| (Michel et al. 2019) against direct computations: finite
differences of the loss with one head's output scaled, and Σ W_o ⊙ ∂L/∂W_o over the head's columns."""

import pytest
import torch
from torch import nn

import prunelab as pl
from conftest import same, snapshot
from prunelab import masks as M
from prunelab.heads import head_importance, normalize_per_layer, per_example_cross_entropy
from prunelab.pruning import attention_layers
from prunelab.text import TextSet


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return pl.models.TinyGPT(20, block_size=16, embed_dim=32, depth=2, heads=4).double().eval()


def random_text(n=2000, seed=0):
    ids = torch.randint(0, 20, (n,), generator=torch.Generator().manual_seed(seed))
    return TextSet(ids, "".join(chr(ord("A") + i) for i in range(20)))


def vit(seed=0):
    torch.manual_seed(seed)
    return pl.build_model("vit_tiny").double().eval()


def images(n=5, seed=0):
    """Normalised images [n, 1, 28, 28] (float32 values, as ImageSet.normalized gives them, held in float64)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g).double(), torch.randint(0, 10, (n,), generator=g)


class SequenceFirst(nn.Module):
    """An nn.MultiheadAttention with batch_first=False: its tensors are [T, B, E]."""

    def __init__(self, E=12, heads=3, classes=5):
        super().__init__()
        self.attn = nn.MultiheadAttention(E, heads)
        self.head = nn.Linear(E, classes)

    def forward(self, x):                                           # x [B, T, E]
        s = x.transpose(0, 1)                                       # [T, B, E]
        return self.head(self.attn(s, s, s)[0].mean(0))             # [B, classes]


def finite_difference(model, layout, x, y, eps=1e-6):
    """∂L(x)/∂ξ_h [B, H] of every example and head: head h's output scaled by 1 ± eps through its columns of W_o
    (out = Σ_h W_o[:, head h] A_h + b), a central difference in float64."""
    W_o, d = M.original(model, layout.out), layout.head_dim
    columns = []
    with torch.no_grad():
        for h in range(layout.heads):
            losses = []
            for scale in (1 + eps, 1 - eps):
                W_o[:, h * d:(h + 1) * d] *= scale
                losses.append(per_example_cross_entropy(model(x), y))
                W_o[:, h * d:(h + 1) * d] /= scale
            columns.append((losses[0] - losses[1]) / (2 * eps))
    return torch.stack(columns, 1)


def text_examples(text, n, T=16):
    x, y = text.blocks(T)
    pick = torch.arange(n) * len(x) // n                            # as perplexity and head_importance pick them
    return x[pick], y[pick]


@pytest.mark.parametrize("kind", ["tiny_gpt", "vit", "sequence_first"])
def test_importance_is_the_mean_absolute_gate_derivative_per_example(kind):
    if kind == "tiny_gpt":
        model, data = tiny_gpt(), random_text()
        x, y = text_examples(data, 6)
        I = head_importance(model, data, n_batches=2, batch_size=3)
    elif kind == "vit":
        model, data = vit(), images()
        x, y = data
        I = head_importance(model, data, n_batches=3, batch_size=2)             # 3 batches: 2, 2 and 1
    else:
        torch.manual_seed(0)
        model = SequenceFirst().double().eval()
        x, y = torch.randn(4, 6, 12, dtype=torch.float64), torch.randint(0, 5, (4,))
        I = head_importance(model, (x, y), batch_size=4)
    for name, layout in attention_layers(model).items():
        g = finite_difference(model, layout, x, y)                              # [B, H]
        assert torch.allclose(I[name], g.abs().mean(0), rtol=1e-6, atol=1e-10)
        assert not torch.allclose(I[name], g.mean(0).abs())                     # |·| per example, then the mean


@pytest.mark.parametrize("kind", ["tiny_gpt", "vit"])
def test_one_example_gives_the_sum_of_w_o_times_its_gradient_over_the_heads_columns(kind):
    """At ξ = 1: ∂L/∂ξ_h = Σ_{j ∈ head h} Σ_i W_o[i, j] ∂L/∂W_o[i, j]."""
    if kind == "tiny_gpt":
        model, text = tiny_gpt(), random_text()
        x, y = text_examples(text, 1)
        I = head_importance(model, text, n_batches=1, batch_size=1)
    else:
        model, (x, y) = vit(), images(1)
        I = head_importance(model, (x, y), n_batches=1, batch_size=1)
    layouts = attention_layers(model)
    W_o = [M.original(model, layout.out) for layout in layouts.values()]
    grads = torch.autograd.grad(per_example_cross_entropy(model(x), y).sum(), W_o)
    for (name, layout), W, g in zip(layouts.items(), W_o, grads):
        per_head = (W * g).sum(0).view(layout.heads, layout.head_dim).sum(1)   # [H]
        assert torch.allclose(I[name], per_head.abs().detach(), rtol=1e-8, atol=1e-12)


def test_the_model_is_left_as_it_was_and_a_masked_head_scores_zero():
    model, data = vit(), images()
    model.train()
    before = snapshot(model)
    I = head_importance(model, data, batch_size=5)
    assert model.training and same(before, snapshot(model), ordered=True)
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all((i > 0).all() for i in I.values())
    with torch.no_grad():                                           # a caller's no_grad does not get in the way
        assert all(torch.equal(I[n], i) for n, i in head_importance(model, data, batch_size=5).items())
    masks = pl.prune(model, 0.5, granularity="head", layers=["encoder.layers.0.self_attn"])
    kept = masks["encoder.layers.0.self_attn.out_proj.weight"].any(0).view(4, -1).any(1)
    masked = head_importance(model, data, batch_size=5)["encoder.layers.0.self_attn"]
    assert (masked[~kept] == 0).all() and (masked[kept] > 0).all()


def test_prune_by_head_importance_removes_the_least_important_heads_of_each_layer():
    model, data = vit(), images(8)
    I = head_importance(model, data)
    pl.prune(model, 0.9)                                            # masks before: scores still from the originals
    masks = pl.prune(model, 0.5, granularity="head", criterion="head_importance", data=data)
    for name, layout in attention_layers(model).items():
        kept = masks[layout.out].any(0).view(layout.heads, -1).any(1)
        assert set(kept.nonzero().flatten().tolist()) == set(I[name].argsort()[2:].tolist())
    # text: the same criterion on a TextSet
    gpt, text = tiny_gpt(), random_text()
    masks = pl.prune(gpt, 0.25, granularity="head", criterion="head_importance", data=text)
    assert all(int(k.any(0).view(4, -1).any(1).sum()) == 3 for p, k in masks.items() if p.endswith("proj.weight"))
    # random heads: reproducible with a seed
    again = [pl.prune(gpt, 0.5, granularity="head", criterion="random", seed=3) for _ in range(2)]
    assert all(torch.equal(again[0][p], again[1][p]) for p in again[0])


def test_normalize_per_layer_gives_unit_norms_and_keeps_zeros():
    scores = {"a": torch.tensor([3.0, 4.0]), "b": torch.zeros(3)}
    normalized = normalize_per_layer(scores)
    assert torch.allclose(normalized["a"], torch.tensor([0.6, 0.8])) and torch.equal(normalized["b"], torch.zeros(3))


def test_bad_arguments_give_clear_errors():
    model, data = vit(), images()
    with pytest.raises(ValueError, match="needs data"):
        head_importance(model, None)
    with pytest.raises(ValueError, match="n_batches must be a positive integer"):
        head_importance(model, data, n_batches=0)
    with pytest.raises(ValueError, match="one loss per example"):
        head_importance(model, data, loss=nn.functional.cross_entropy)
    with pytest.raises(ValueError, match="Did you mean 'encoder.layers.0.self_attn'"):
        head_importance(model, data, layers=["encoder.layers.0"])
    with pytest.raises(ValueError, match="needs data"):
        pl.prune(model, 0.5, granularity="head", criterion="head_importance")
    with pytest.raises(ValueError, match="no attention whose heads"):
        head_importance(pl.build_model("lenet300"), data)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert M.masked_parameters(model) == []
