"""Attention heads removed for real (shrink.shrink_heads), and the tiny GPT's MLP width through shrink."""

import pytest
import torch
from conftest import same, snapshot

import prunelab as pl
from prunelab.shrink import shrink, shrink_heads


@pytest.fixture(scope="module")
def gpt():
    return pl.text.load_tiny_gpt()


@pytest.fixture(scope="module")
def tokens():
    return pl.text.load_corpus("validation").blocks(64)[0][:4]


def test_the_shrunk_attention_computes_what_the_masked_one_does(gpt, tokens):
    keep = {"blocks.0.attn": torch.tensor([True, False, True, True]), "blocks.2.attn": [3]}
    masked = pl.masks.copy_model(gpt)
    bool_keep = {"blocks.0.attn": keep["blocks.0.attn"], "blocks.2.attn": torch.arange(4) == 3}
    pl.masks.set_masks(masked, pl.pruning.head_masks_to_parameters(masked, bool_keep))
    before = snapshot(gpt)
    small = shrink_heads(gpt, keep)
    assert same(snapshot(gpt), before)                                   # the model itself is left alone
    with torch.no_grad():
        assert torch.allclose(small(tokens), masked(tokens), atol=1e-5)
    E, d = 128, 32
    assert small.blocks[0].attn.heads == 3 and small.blocks[0].attn.qkv.weight.shape == (3 * 3 * d, E)
    assert small.blocks[2].attn.proj.weight.shape == (E, d) and small.blocks[1].attn.heads == 4
    removed = (1 + 3) * (4 * E * d + 3 * d)           # per head: rows of W_q, W_k, W_v, columns of W_o, biases
    assert pl.count_parameters(small) == pl.count_parameters(gpt) - removed
    layout = pl.graph.head_layout(small, "blocks.0.attn", small.blocks[0].attn)
    assert (layout.heads, layout.embed_dim) == (3, 3 * d)
    T = 64                                                               # the products of 4 of 16 heads go too
    dense, shrunk = (pl.metrics.count_macs(m, (1, T)).layers for m in (gpt, small))
    assert shrunk["blocks.0.attn.attention"].dense == dense["blocks.0.attn.attention"].dense * 3 // 4


def test_heads_of_a_multihead_attention_or_bad_choices_are_refused_before_anything(gpt):
    with pytest.raises(ValueError, match="nn.MultiheadAttention.*H · d = E"):
        shrink_heads(pl.models.TinyViT(), {"encoder.layers.0.self_attn": [0, 1]})
    with pytest.raises(ValueError, match="distinct heads in 0..3, at least one"):
        shrink_heads(gpt, {"blocks.0.attn": []})
    with pytest.raises(ValueError, match="distinct heads in 0..3"):
        shrink_heads(gpt, {"blocks.0.attn": [1, 4]})
    with pytest.raises(ValueError, match=r"bool \[4\]"):
        shrink_heads(gpt, {"blocks.0.attn": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="not a written-out attention"):
        shrink_heads(gpt, {"blocks.0.mlp": [0]})


def test_the_mlp_width_of_the_tiny_gpt_shrinks_through_its_traced_graph(gpt, tokens):
    masked = pl.masks.copy_model(gpt)
    pl.prune(masked, 0.5, granularity="neuron", layers=["blocks.1.mlp.fc"])
    keep = pl.shrink.channels_to_keep(masked)
    assert list(keep) == ["blocks.1.mlp.fc"] and len(keep["blocks.1.mlp.fc"]) == 256
    small = shrink(masked, keep)
    assert small.blocks[1].mlp.proj.in_features == 256
    with torch.no_grad():
        assert torch.allclose(small(tokens), masked(tokens), atol=1e-5)
