"""The automated per-layer sparsity search: it keeps the budget exactly, never ends below its start on the data it
searched, measures what prune + evaluate measure, leaves the model as it was, and refuses bad input clearly."""

import pytest

import prunelab as pl
from conftest import same, snapshot
from prunelab.search import search_sparsity, uniform


@pytest.fixture(scope="module")
def lenet300():
    return pl.load_pretrained("lenet300")


@pytest.fixture(scope="module")
def validation():
    return pl.load_fashion_mnist("validation").subset(1500, seed=0)


def pruned_accuracy(model, sparsity, data):
    pruned = pl.masks.copy_model(model)
    pl.prune(pruned, sparsity)
    return pl.evaluate(pruned, data).accuracy


def test_uniform_keeps_the_budget_exactly_with_the_same_sparsity_everywhere(lenet300):
    sparsity = uniform(lenet300, 0.1)
    weights = {name: m.weight.numel() for name, m in pl.masks.prunable_layers(lenet300).items()}
    kept = {name: n - round(sparsity[name] * n) for name, n in weights.items()}
    assert sum(kept.values()) == round(0.1 * sum(weights.values())) == 26_620
    assert all(abs(s - 0.9) < 1e-4 for s in sparsity.values())
    assert sum(n - round(s * n) for n, s in zip(weights.values(), uniform(lenet300, 5_000).values())) == 5_000


def test_the_search_keeps_the_budget_and_improves_on_uniform_as_measured(lenet300, validation):
    before = snapshot(lenet300)
    result = search_sparsity(lenet300, validation, 0.1, evaluations=60)
    assert result.kept == result.budget == 26_620 and result.evaluations <= 60
    assert list(result.history) == sorted(result.history) and result.history[-1] == result.accuracy
    assert result.start_accuracy == pytest.approx(pruned_accuracy(lenet300, uniform(lenet300, 0.1), validation),
                                                  abs=1 / 1500)
    assert result.accuracy == pytest.approx(pruned_accuracy(lenet300, result.sparsity, validation), abs=1 / 1500)
    assert result.accuracy > result.start_accuracy + 0.03 and result.accepted >= 1   # uniform 90% is far off
    assert same(snapshot(lenet300), before)


def test_masks_already_on_the_model_are_lifted_during_the_search_and_put_back(validation):
    model = pl.load_pretrained("lenet300")
    pl.prune(model, 0.3)
    before = snapshot(model)
    result = search_sparsity(model, validation, 0.2, evaluations=5)
    assert result.start_accuracy == pytest.approx(
        pruned_accuracy(pl.load_pretrained("lenet300"), uniform(model, 0.2), validation), abs=1 / 1500)
    assert same(snapshot(model), before)


def test_a_start_allocation_is_where_the_search_begins(lenet300, validation):
    start = {"fc1": 0.95, "fc2": 0.5, "fc3": 0.5}
    weights = {"fc1": 235_200, "fc2": 30_000, "fc3": 1_000}
    budget = sum(n - round(start[name] * n) for name, n in weights.items())
    result = search_sparsity(lenet300, validation, budget, start=start, evaluations=3, seed=1)
    assert result.start_accuracy == pytest.approx(pruned_accuracy(lenet300, start, validation), abs=1 / 1500)
    assert result.kept == budget


@pytest.mark.parametrize("kwargs, error, match", [
    ({"budget": 0.1, "start": {"fc1": 0.9, "fc2": 0.9}}, ValueError, r"start must give a sparsity for each "
                                                                     r"searched layer, fc1, fc2, fc3"),
    ({"budget": 0.1, "start": {"fc1": 0.5, "fc2": 0.5, "fc3": 0.5}}, ValueError, r"start keeps 133,100 weights, "
                                                                                 r"the budget is 26,620"),
    ({"budget": 0.1, "layers": ["fc1"]}, ValueError, r"at least two"),
    ({"budget": 2}, ValueError, r"between 3 \(one weight per layer\) and all 266,200"),
    ({"budget": 1.5}, ValueError, r"fraction of weights kept, in \(0, 1\]"),
    ({"budget": 0.1, "step": 0}, ValueError, r"step must be a fraction in \(0, 1\]"),
    ({"budget": 0.1, "evaluations": 0}, ValueError, r"evaluations and patience must be ints >= 1"),
])
def test_bad_input_says_what_is_wrong_and_leaves_the_model_untouched(lenet300, validation, kwargs, error, match):
    before = snapshot(lenet300)
    budget = kwargs.pop("budget")
    with pytest.raises(error, match=match):
        search_sparsity(lenet300, validation, budget, **kwargs)
    assert same(snapshot(lenet300), before)
