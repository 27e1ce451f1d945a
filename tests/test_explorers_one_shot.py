"""The one-shot comparison explorer: magnitude, Wanda and SparseGPT on copies of the tiny GPT."""

import asyncio

import pytest
import torch
from conftest import same, snapshot

import prunelab as pl
from prunelab.explorers import OneShotExplorer


@pytest.fixture(scope="module")
def texts():
    return pl.text.load_corpus("validation"), pl.text.load_corpus("train")


@pytest.fixture(scope="module")
def explorer(texts):
    validation, train = texts
    return OneShotExplorer(pl.text.load_tiny_gpt(), validation, train, n_blocks=4, calibration_blocks=8,
                           sparsities=(0.3, 0.5, 0.7), sample_chars=10)


def test_each_method_prunes_its_copy_as_the_package_does_and_the_model_stays_dense(explorer, texts):
    validation, _ = texts
    before = snapshot(explorer.model)
    explorer.slider.value = 0.5
    assert explorer.error is None
    layers = explorer.layers
    assert "head" not in layers and len(layers) == 16                      # every Linear of the 4 blocks
    expected = pl.masks.copy_model(explorer.model)
    pl.prune(expected, 0.5, criterion="wanda", data=explorer.calibration, layers=layers)
    got = pl.masks.get_masks(explorer.models["wanda"])
    assert all(torch.equal(got[p], m) for p, m in pl.masks.get_masks(expected).items())
    reference = pl.one_shot.sparsegpt(explorer.model, explorer.calibration, 0.5, layers=layers)
    assert explorer.perplexity["sparsegpt"] == pl.text.perplexity(reference, validation, n_blocks=4)
    for method in ("magnitude", "wanda", "sparsegpt"):
        assert pl.metrics.layer_sparsity(explorer.models[method])["blocks.0.mlp.fc"] == pytest.approx(0.5)
        assert explorer.samples[method].startswith(explorer.prompt)
    assert explorer.perplexity["sparsegpt"] < explorer.perplexity["magnitude"]
    assert same(snapshot(explorer.model), before) and pl.masks.masked_parameters(explorer.model) == []


def test_an_n_m_pattern_keeps_n_of_every_m_whatever_the_slider(explorer):
    explorer.pattern.value = "2:4"
    assert explorer.error is None and explorer.setting() == (0.5, "2:4")
    for method in ("magnitude", "wanda", "sparsegpt"):
        keep = pl.masks.get_masks(explorer.models[method])["blocks.1.attn.qkv.weight"]
        assert (keep.view(keep.shape[0], -1, 4).sum(-1) == 2).all(), method
    explorer.pattern.value = "unstructured"


def test_sparsegpt_waits_for_rest_and_a_setting_seen_before_is_immediate(explorer):
    explorer.settle_delay = 0.05

    async def move(value):
        explorer.slider.value = value
        shown = explorer.perplexity["sparsegpt"], explorer.figure.value
        await asyncio.sleep(0.5)
        return shown

    explorer.slider.value = 0.5
    shown, text = asyncio.run(move(0.7))                                   # never computed yet
    assert shown is None and "computing when the controls rest" in text
    assert explorer.perplexity["sparsegpt"] is not None
    shown, _ = asyncio.run(move(0.5))                                        # computed before: kept
    assert shown is not None


def test_a_masked_model_or_a_layer_that_is_not_pruned_is_refused(texts):
    validation, train = texts
    model = pl.text.load_tiny_gpt()
    with pytest.raises(ValueError, match="shown must be one of the pruned layers"):
        OneShotExplorer(model, validation, train, shown="head", n_blocks=2)
    pl.prune(model, 0.5, layers=["blocks.0.mlp.fc"])
    with pytest.raises(ValueError, match="carries masks"):
        OneShotExplorer(model, validation, train, n_blocks=2)
