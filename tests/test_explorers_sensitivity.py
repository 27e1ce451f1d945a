"""The sensitivity explorer, driven by setting its widgets: dials, budget fit, errors, reset."""

import asyncio
import random

import pytest
import torch
from conftest import same, snapshot

import prunelab as pl
from prunelab import masks as M
from prunelab.explorers.sensitivity import SensitivityExplorer
from prunelab.sensitivity import allocate_sparsity, sensitivity_scan

GRID = (0.5, 0.8, 0.9, 0.95, 0.99)


@pytest.fixture(scope="module")
def small_test(test_set):
    return test_set.subset(2000, seed=1)


@pytest.fixture(scope="module")
def curves(small_test):
    return sensitivity_scan(pl.load_pretrained("lenet300"), small_test, GRID)


@pytest.fixture
def explorer(small_test, curves):
    return SensitivityExplorer(pl.load_pretrained("lenet300"), small_test, curves=curves, exact_budget=float("inf"))


def test_one_dial_moves_its_marker_and_alone_measures_its_own_curve(explorer, small_test, curves):
    before = explorer.image.value
    explorer.dials["fc1"].value = 0.9
    assert explorer.error is None
    expected = pl.prune(pl.load_pretrained("lenet300"), {"fc1": 0.9})["fc1.weight"]
    assert torch.equal(M.get_masks(explorer.model)["fc1.weight"], expected)
    assert explorer.accuracy == pl.evaluate(explorer.model, small_test).accuracy
    # one layer pruned: the measured accuracy is that layer's curve point, and so is the prediction
    a = curves.accuracy["fc1"][curves.sparsities.index(0.9)]
    assert explorer.accuracy == a and explorer.predicted == pytest.approx(a)
    assert list(explorer.markers["fc1"].get_xdata()) == [0.9]
    assert list(explorer.markers["fc1"].get_ydata()) == pytest.approx([a])
    assert list(explorer.markers["fc2"].get_xdata()) == [0.0]
    assert list(explorer.measured_lines["fc3"].get_ydata()) == [a, a]
    assert explorer.kept == 235200 - round(0.9 * 235200) + 30000 + 1000
    assert explorer.image.value != before and explorer.image.value[:4] == b"\x89PNG"
    # the headline by the dials: the accuracy as the largest text, named by the split it measures on (the notebook
    # gives it the validation split, for choosing)
    assert "prunelab-accuracy" in explorer.headline.value
    assert f"test accuracy, all dials together:</span><br><span style='font-size:26px;font-weight:bold'>" \
        f"{explorer.accuracy:.2%}</span>" in explorer.headline.value


def test_dials_together_are_measured_and_compared_with_the_sum_of_drops(explorer, small_test, curves):
    explorer.dials["fc1"].value = 0.95
    explorer.dials["fc2"].value = 0.9
    explorer.dials["fc3"].value = 0.8
    assert explorer.error is None
    reference = pl.load_pretrained("lenet300")
    pl.prune(reference, {"fc1": 0.95, "fc2": 0.9, "fc3": 0.8})
    assert explorer.accuracy == pl.evaluate(reference, small_test).accuracy
    assert explorer.predicted == pytest.approx(
        curves.baseline - sum(curves.baseline - curves.accuracy[n][curves.sparsities.index(s)]
                              for n, s in {"fc1": 0.95, "fc2": 0.9, "fc3": 0.8}.items()))
    assert list(explorer.predicted_lines["fc1"].get_ydata()) == pytest.approx([explorer.predicted] * 2)
    kept = sum(int(m.sum()) for m in M.get_masks(explorer.model).values())
    assert explorer.kept == kept and f"{kept:,} / 266,200" in explorer.readout.value
    gap = f"{100 * (explorer.accuracy - explorer.predicted):+.2f} points"
    assert gap in explorer.headline.value and f"sum-of-drops prediction <b>{explorer.predicted:.2%}" in \
        explorer.headline.value
    # one scale (percent) and one sign convention (a loss is negative) throughout the table
    row = f"<tr><td>fc1</td><td>95.0%</td><td>{curves.kept_in('fc1', 0.95):,} / {curves.weights['fc1']:,}</td>"
    assert row in explorer.readout.value
    change = curves.accuracy_at("fc1", 0.95) - curves.baseline
    assert change < 0 and f"{100 * change:+.2f}</td></tr>" in explorer.readout.value
    assert f"Σ {100 * (explorer.predicted - curves.baseline):+.2f}" in explorer.readout.value


def test_a_dial_between_grid_points_sits_on_the_interpolated_curve(explorer, curves):
    explorer.dials["fc2"].value = 0.85
    i, j = curves.sparsities.index(0.8), curves.sparsities.index(0.9)
    y = (curves.accuracy["fc2"][i] + curves.accuracy["fc2"][j]) / 2           # halfway between 0.8 and 0.9
    assert list(explorer.markers["fc2"].get_ydata()) == pytest.approx([y])
    assert explorer.sparsity["fc2"] == 0.85


def test_fit_budget_sets_the_dials_by_allocate_sparsity(explorer, small_test, curves):
    explorer.budget.value = 0.1
    explorer.fit_button.click()
    assert explorer.error is None
    allocation = allocate_sparsity(curves, 0.1)
    assert explorer.allocation == allocation
    assert {n: d.value for n, d in explorer.dials.items()} == allocation.sparsity == explorer.sparsity
    kept = sum(int(m.sum()) for m in M.get_masks(explorer.model).values())
    assert kept == explorer.kept == allocation.kept == 26620
    assert explorer.accuracy == pl.evaluate(explorer.model, small_test).accuracy
    assert "allocate_sparsity for a budget of 26,620 weights" in explorer.readout.value
    explorer.dials["fc3"].value = 0.33                     # a manual move: no longer the fitted allocation
    assert explorer.allocation is None and "allocate_sparsity" not in explorer.readout.value


def test_an_impossible_budget_shows_an_error_and_changes_nothing(explorer):
    explorer.dials["fc2"].value = 0.5
    masks_before = M.get_masks(explorer.model)
    explorer.budget.value = 0.001                          # below the 1% every layer keeps at s = 0.99
    explorer.fit_button.click()
    assert isinstance(explorer.error, ValueError)
    assert "below the 2,662 kept" in explorer.error_box.value and explorer.error_box.layout.display != "none"
    assert explorer.sparsity == {"fc1": 0.0, "fc2": 0.5, "fc3": 0.0}
    after = M.get_masks(explorer.model)
    assert after.keys() == masks_before.keys() and all(torch.equal(after[k], masks_before[k]) for k in after)
    explorer.dials["fc2"].value = 0.6                      # the next good event clears the message
    assert explorer.error is None and explorer.error_box.layout.display == "none"


def test_any_sequence_of_moves_then_reset_restores_the_exact_weights(small_test, curves):
    model = pl.load_pretrained("lenet300")
    before = snapshot(model)
    explorer = SensitivityExplorer(model, small_test, curves=curves, exact_budget=float("inf"))
    rng = random.Random(0)
    for _ in range(25):
        if rng.random() < 0.15:
            explorer.budget.value = rng.uniform(0.02, 1.0)
            explorer.fit_button.click()
        else:
            explorer.dials[rng.choice(list(explorer.dials))].value = rng.uniform(0, 0.99)
        assert explorer.error is None
        assert explorer.accuracy == pl.evaluate(model, small_test).accuracy
    explorer.reset()
    assert same(snapshot(model), before, ordered=True) and M.masked_parameters(model) == []
    assert explorer.accuracy == explorer.baseline == pl.evaluate(model, small_test).accuracy
    assert all(d.value == 0.0 for d in explorer.dials.values())
    assert list(explorer.markers["fc1"].get_xdata()) == [0.0]


def test_without_curves_it_scans_at_construction(small_test):
    explorer = SensitivityExplorer(pl.load_pretrained("lenet300"), small_test, sparsities=(0.5, 0.9),
                                   layers=["fc2", "fc3"], exact_budget=float("inf"))
    fresh = sensitivity_scan(pl.load_pretrained("lenet300"), small_test, (0.5, 0.9), layers=["fc2", "fc3"])
    assert explorer.curves.accuracy == fresh.accuracy and list(explorer.dials) == ["fc2", "fc3"]
    assert explorer.dials["fc2"].max == 0.9
    line = explorer.axes["fc2"].lines[0]                  # the curve drawn is the scan's
    assert list(line.get_ydata()) == list(fresh.accuracy["fc2"])


def test_a_masked_model_is_refused(small_test, curves):
    model = pl.load_pretrained("lenet300")
    pl.prune(model, 0.5)
    with pytest.raises(ValueError, match="already carries masks"):
        SensitivityExplorer(model, small_test, curves=curves)


def test_a_slow_model_shows_an_estimate_then_the_exact_accuracy(small_test, curves):
    explorer = SensitivityExplorer(pl.load_pretrained("lenet300"), small_test, curves=curves, exact_budget=0.0,
                                   estimate_images=300)
    assert not explorer.meter.exact_while_moving
    explorer.settle_delay = 0.05

    async def drag():
        explorer.dials["fc1"].value = 0.95
        shown = (explorer.accuracy_is_exact, explorer.headline.value)
        await asyncio.sleep(0.3)
        return shown

    exact_then, text = asyncio.run(drag())
    assert not exact_then and "estimate on 300 test images" in text
    assert explorer.accuracy_is_exact and explorer.accuracy == pl.evaluate(explorer.model, small_test).accuracy
    assert "all 2,000 test images" in explorer.headline.value
