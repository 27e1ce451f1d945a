"""The heads explorer, driven by clicking its buttons in code."""

import pytest
import torch
from conftest import same, snapshot

import prunelab as pl
from prunelab.explorers import HeadsExplorer


@pytest.fixture(scope="module")
def validation_text():
    return pl.text.load_corpus("validation")


@pytest.fixture
def gpt_explorer(validation_text):
    return HeadsExplorer(pl.text.load_tiny_gpt(), validation_text, n_blocks=4, sample_chars=20)


def test_a_click_removes_a_head_as_head_masks_do_and_reset_restores_every_bit(gpt_explorer, validation_text):
    model = gpt_explorer.model
    before = snapshot(model)
    gpt_explorer.buttons[("blocks.1.attn", 2)].click()
    assert gpt_explorer.error is None and gpt_explorer.heads_removed == 1
    keep = torch.tensor([True, True, False, True])
    assert torch.equal(gpt_explorer.keep["blocks.1.attn"], keep)
    expected = pl.pruning.head_masks_to_parameters(model, {"blocks.1.attn": keep})
    masks = pl.masks.get_masks(model)
    assert masks.keys() == expected.keys() and all(torch.equal(masks[p], expected[p]) for p in expected)
    assert gpt_explorer.value == pl.text.perplexity(model, validation_text, n_blocks=4) > gpt_explorer.baseline
    assert gpt_explorer.buttons[("blocks.1.attn", 2)].description == "h2  off"
    assert f"{gpt_explorer.value:.3f}" in gpt_explorer.figure.value and "1</b> of 16" in gpt_explorer.readout.value
    assert gpt_explorer.sample.startswith(gpt_explorer.prompt) and len(gpt_explorer.sample) > len(gpt_explorer.prompt)
    gpt_explorer.buttons[("blocks.1.attn", 2)].click()                        # a second click restores it
    assert gpt_explorer.value == gpt_explorer.baseline
    gpt_explorer.buttons[("blocks.0.attn", 0)].click()
    gpt_explorer.reset()
    assert same(snapshot(model), before, ordered=True) and pl.masks.masked_parameters(model) == []
    assert gpt_explorer.value == gpt_explorer.baseline
    assert all("off" not in b.description for b in gpt_explorer.buttons.values())


def test_remove_the_least_important_follows_the_importance_given(validation_text):
    model = pl.text.load_tiny_gpt()
    importance = {f"blocks.{i}.attn": torch.tensor([4.0, 3.0, 2.0, 1.0]) + 10 * i for i in range(4)}
    explorer = HeadsExplorer(model, validation_text, importance=importance, n_blocks=2, sample_chars=5)
    explorer.remove_least.click()
    explorer.remove_least.click()
    assert explorer.error is None
    assert torch.equal(explorer.keep["blocks.0.attn"], torch.tensor([True, True, False, False]))
    for _ in range(4):
        explorer.remove_least.click()                  # block 0 keeps one head; block 1 goes next
    assert torch.equal(explorer.keep["blocks.0.attn"], torch.tensor([True, False, False, False]))
    assert int(explorer.keep["blocks.1.attn"].sum()) == 1


def test_the_last_head_of_an_attention_cannot_go_and_the_model_stays_as_it_was(gpt_explorer):
    for h in (0, 1, 2):
        gpt_explorer.buttons[("blocks.3.attn", h)].click()
    masks = pl.masks.get_masks(gpt_explorer.model)
    gpt_explorer.buttons[("blocks.3.attn", 3)].click()
    assert isinstance(gpt_explorer.error, ValueError) and "at least one" in str(gpt_explorer.error)
    assert gpt_explorer.keep["blocks.3.attn"][3]
    assert "off" not in gpt_explorer.buttons[("blocks.3.attn", 3)].description
    after = pl.masks.get_masks(gpt_explorer.model)
    assert after.keys() == masks.keys() and all(torch.equal(after[k], masks[k]) for k in after)


def test_bad_importance_and_masked_attention_are_refused_before_anything_changes(validation_text):
    model = pl.text.load_tiny_gpt()
    with pytest.raises(ValueError, match=r"4 scores for 'blocks.0.attn'.*shape \[3\]"):
        HeadsExplorer(model, validation_text, importance={f"blocks.{i}.attn": torch.ones(3) for i in range(4)})
    pl.prune(model, 0.5, layers=["blocks.0.attn.qkv"])
    with pytest.raises(ValueError, match="already carry masks"):
        HeadsExplorer(model, validation_text)


def test_a_vision_transformer_shows_its_test_accuracy(test_set):
    data = test_set.subset(500, seed=0)
    vit = pl.load_pretrained("vit_tiny")
    explorer = HeadsExplorer(vit, data, exact_budget=float("inf"))
    assert explorer.baseline == pl.evaluate(vit, data).accuracy
    explorer.buttons[("encoder.layers.0.self_attn", 1)].click()
    assert explorer.error is None and explorer.value == pl.evaluate(vit, data).accuracy
    reference = pl.masks.copy_model(pl.load_pretrained("vit_tiny"))
    pl.masks.set_masks(reference, pl.pruning.head_masks_to_parameters(
        reference, {"encoder.layers.0.self_attn": torch.tensor([True, False, True, True])}))
    assert explorer.value == pl.evaluate(reference, data).accuracy
    assert f"{explorer.value:.2%}" in explorer.figure.value
