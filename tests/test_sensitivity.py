"""Layer sensitivity scans and the budget allocator, on a hand-made model with known curves and on LeNet-300-100
against prunelab.prune + evaluate."""

from collections import OrderedDict

import pytest
import torch
from conftest import same, snapshot
from torch import nn

import prunelab as pl
from prunelab import masks as M
from prunelab.data import ImageSet
from prunelab.sensitivity import (RankedLayer, SensitivityCurves, allocate_sparsity, ranked_layers,
                                  sensitivity_scan)
from prunelab.thresholds import mask_for_sparsity

GRID = (0.5, 0.6, 0.9, 0.99)


@pytest.fixture
def toy():
    """Class 1 has pixel (0, 0) bright, class 0 has it dark; nothing else differs.

    fc1 [4, 784]: column 0 is 1.0 (the detector, 4 weights), the other 3,132 weights are ±0.001 noise, so
    fc1 keeps 100% accuracy until more than 3,132 of its 3,136 weights go (s ≤ 0.99 removes 3,105).
    fc2 [2, 4]: row 0 is tiny (0.01 … 0.04, pruned first, harmless), row 1 is four 1.0s and the class-1
    bias is −7: class 1 needs all four (4 · 2.02 − 7 > 0 > 3 · 2.02 − 7). So fc2 keeps 100% up to s = 0.5
    (k = round(8 s) = 4 removed) and drops to 50% (everything called class 0) from s = 0.6 (k = 5) on.
    """
    model = nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(784, 4), relu1=nn.ReLU(),
                                      fc2=nn.Linear(4, 2)))
    with torch.no_grad():
        noise = torch.full((4, 784), 1e-3)
        noise[:, 1::2] = -1e-3
        noise[:, 0] = 1.0
        model.fc1.weight.copy_(noise)
        model.fc1.bias.zero_()
        model.fc2.weight.copy_(torch.tensor([[0.01, 0.02, 0.03, 0.04], [1.0, 1.0, 1.0, 1.0]]))
        model.fc2.bias.copy_(torch.tensor([0.0, -7.0]))
    labels = torch.arange(100) % 2
    images = torch.zeros(100, 28, 28, dtype=torch.uint8)
    images[labels == 1, 0, 0] = 255
    return model.eval(), ImageSet(images, labels, ("dark", "bright"))


def known_curves():
    return SensitivityCurves(sparsities=(0.0, *GRID), accuracy={"fc1": (1.0,) * 5, "fc2": (1.0, 1.0, 0.5, 0.5, 0.5)},
                             baseline=1.0, units={"fc1": 3136, "fc2": 8}, weights={"fc1": 3136, "fc2": 8},
                             criterion="magnitude", granularity="weight", n_images=100, seconds=0.0)


@pytest.fixture(scope="module")
def small_test(test_set):
    return test_set.subset(1000, seed=1)


# ------------------------------------------------------------------ the scan

def test_scan_of_the_hand_made_model_gives_the_known_curves(toy):
    model, data = toy
    before = snapshot(model)
    curves = sensitivity_scan(model, data, GRID)
    assert curves.sparsities == (0.0, *GRID)
    assert curves.baseline == 1.0
    assert curves.accuracy == known_curves().accuracy          # fc2 is clearly the sensitive layer
    assert curves.units == curves.weights == {"fc1": 3136, "fc2": 8}
    assert same(snapshot(model), before, ordered=True) and M.masked_parameters(model) == []


def test_scan_lifts_existing_masks_and_puts_them_back_bit_for_bit(toy):
    model, data = toy
    pl.prune(model, {"fc2": 0.9})                               # alone this costs half the accuracy
    before, masks_before = snapshot(model), M.get_masks(model)
    curves = sensitivity_scan(model, data, GRID)
    assert curves.baseline == 1.0 and curves.accuracy["fc1"] == (1.0,) * 5   # measured with fc2 dense
    assert same(snapshot(model), before, ordered=True)
    assert M.masked_parameters(model) == ["fc2.weight"]
    assert torch.equal(M.get_masks(model)["fc2.weight"], masks_before["fc2.weight"])


def test_scan_equals_prune_then_evaluate_on_lenet300(small_test):
    model = pl.load_pretrained("lenet300")
    before = snapshot(model)
    curves = sensitivity_scan(model, small_test, [0.5, 0.95])
    assert same(snapshot(model), before, ordered=True) and M.masked_parameters(model) == []
    assert curves.baseline == pl.evaluate(model, small_test).accuracy
    for layer in ("fc1", "fc2", "fc3"):
        for i, s in enumerate(curves.sparsities):
            pl.prune(model, {layer: s})
            assert curves.accuracy[layer][i] == pl.evaluate(model, small_test).accuracy, (layer, s)
            M.reset(model)
    assert curves.weights == {"fc1": 235200, "fc2": 30000, "fc3": 1000} and curves.n_images == 1000


def test_neuron_scan_equals_prune_by_neurons(small_test):
    model = pl.load_pretrained("lenet300")
    before = snapshot(model)
    curves = sensitivity_scan(model, small_test, [0.5], granularity="neuron", criterion="l2")
    assert curves.layers == ["fc1", "fc2"] and curves.units == {"fc1": 300, "fc2": 100}
    assert same(snapshot(model), before, ordered=True)          # weight and bias masks both removed
    for layer in ("fc1", "fc2"):
        pl.prune(model, {layer: 0.5}, granularity="neuron", criterion="l2")
        assert curves.accuracy[layer][1] == pl.evaluate(model, small_test).accuracy
        M.reset(model)
    assert curves.kept_in("fc1", 0.5) == 150 * 784


def test_ranked_layer_masks_are_those_of_mask_for_sparsity_and_prune():
    model = pl.load_pretrained("lenet300")
    ranked = ranked_layers(model)
    W = model.fc2.weight.detach()
    for s in (0.0, 0.33, 0.9):
        assert torch.equal(ranked["fc2"].keep(s), mask_for_sparsity(W.abs(), s))
        assert ranked["fc2"].kept(s) == int(mask_for_sparsity(W.abs(), s).sum())
    masks = pl.prune(model, {"fc1": 0.7, "fc3": 0.2})
    assert torch.equal(ranked["fc1"].masks(0.7)["fc1.weight"], masks["fc1.weight"])
    assert isinstance(ranked["fc3"], RankedLayer)


@pytest.mark.parametrize("kwargs, message", [
    ({"granularity": "n:m"}, "N:M"),
    ({"layers": ["fc4"]}, "Did you mean"),
    ({"criterion": "gradient"}, "needs data"),
])
def test_bad_arguments_are_refused_before_the_model_is_touched(toy, kwargs, message):
    model, data = toy
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        sensitivity_scan(model, data, GRID, **kwargs)
    assert same(snapshot(model), before, ordered=True) and M.masked_parameters(model) == []


def test_bad_grids_and_all_units_removed_are_refused(toy):
    model, data = toy
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        sensitivity_scan(model, data, [0.5, 1.0])
    with pytest.raises(ValueError, match="non-empty"):
        sensitivity_scan(model, data, [])
    with pytest.raises(ValueError, match="removes every unit of 'fc1'"):   # round(0.9 · 4) = 4 of 4 neurons
        sensitivity_scan(model, data, [0.9], granularity="neuron")
    assert M.masked_parameters(model) == []


# ------------------------------------------------------------------ the curves

def test_curves_interpolate_predict_and_count():
    curves = known_curves()
    assert curves.accuracy_at("fc2", 0.55) == pytest.approx(0.75)        # halfway between 0.5 and 0.6
    assert curves.drop("fc2", 0.9) == 0.5 and curves.drop("fc1", 0.99) == 0.0
    assert curves.predicted_accuracy({"fc1": 0.9, "fc2": 0.9}) == 0.5
    assert curves.kept({"fc1": 0.5}) == 1568 + 8 and curves.total == 3144
    with pytest.raises(ValueError, match="outside the scanned range"):
        curves.accuracy_at("fc1", 0.995)
    with pytest.raises(ValueError, match="No curve for layer 'fc3'"):
        curves.drop("fc3", 0.5)


# ------------------------------------------------------------------ the allocator

def test_allocator_prunes_the_insensitive_layer_and_meets_the_budget_exactly(toy):
    curves = known_curves()
    allocation = allocate_sparsity(curves, 100)
    # fc1 costs nothing per weight removed: it goes first, and stops where 100 weights are left
    assert allocation.sparsity == {"fc1": 3044 / 3136, "fc2": 0.0}
    assert allocation.kept == allocation.budget == 100 and allocation.predicted_accuracy == 1.0
    model, data = toy                                           # and measured together, it is as predicted
    pl.prune(model, allocation.sparsity)
    assert sum(int(m.sum()) for m in M.get_masks(model).values()) == 100
    assert pl.evaluate(model, data).accuracy == 1.0


def test_allocator_takes_the_free_weights_of_the_sensitive_layer_before_paying():
    curves = known_curves()
    free = allocate_sparsity(curves, 35)                        # fc1 to 0.99 (31 left), fc2's tiny row (4)
    assert free.sparsity == {"fc1": 0.99, "fc2": 0.5} and free.kept == 35 and free.predicted_accuracy == 1.0
    paid = allocate_sparsity(curves, 34)                        # one more weight must come out of fc2's row 1
    assert paid.sparsity == {"fc1": 0.99, "fc2": 5 / 8} and paid.kept == 34
    assert paid.predicted_accuracy == pytest.approx(0.5)
    on_grid = allocate_sparsity(curves, 100, exact=False)       # whole grid steps only: below the budget
    assert on_grid.sparsity == {"fc1": 0.99, "fc2": 0.0} and on_grid.kept == 39


def test_allocator_budgets_as_fractions_and_its_refusals():
    curves = known_curves()
    assert allocate_sparsity(curves, 0.5).budget == 1572
    assert allocate_sparsity(curves, 0.5).kept == 1572
    assert allocate_sparsity(curves, 1.0).sparsity == {"fc1": 0.0, "fc2": 0.0}
    with pytest.raises(ValueError, match="below the 31 kept when every layer is at the highest scanned sparsity"):
        allocate_sparsity(curves, 20)
    with pytest.raises(ValueError, match="fraction of weights kept"):
        allocate_sparsity(curves, 1.5)
    with pytest.raises(ValueError, match=">= 0"):
        allocate_sparsity(curves, -1)
    for bad in (True, "10", float("nan")):
        with pytest.raises(TypeError, match="budget must be"):
            allocate_sparsity(curves, bad)
