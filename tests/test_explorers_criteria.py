"""The criteria explorer removes a fraction of one layer's neurons by every criterion; each removed set and each
accuracy is recomputed here without the explorer (unit_scores, masks on a copy, evaluate). Driven by setting its
slider. The model passed in is never changed."""

import pytest
import torch
from torch import nn

import prunelab as pl
from conftest import same, snapshot
from prunelab.explorers.criteria import LESSON_CRITERIA, CriteriaExplorer, jaccard

FAST = ("l1", "l2", "random", "mean_activation", "apoz")       # no gradients: quick to score


@pytest.fixture(scope="module")
def model():
    return pl.load_pretrained("lenet300")


@pytest.fixture(scope="module")
def validation():
    return pl.load_fashion_mnist("validation")


@pytest.fixture(scope="module")
def calib(train_set):
    return train_set.subset(512, seed=0)


@pytest.fixture(scope="module")
def explorer(model, validation, calib):
    """Lesson 03's nine criteria on fc1; a test that moves it puts it back with reset()."""
    return CriteriaExplorer(model, validation, calibration=calib)


def accuracy_without(model, layer, keep, data):
    """The accuracy of a copy of ``model`` with the neurons ``keep`` [n] (True = kept) of ``layer`` masked out."""
    copy = pl.masks.copy_model(model)
    pl.masks.set_masks(copy, pl.pruning.unit_masks_to_parameters(copy, {layer: keep}))
    return pl.evaluate(copy, data).accuracy


def bold_cells(headline):
    return headline.count("font-size:20px;font-weight:bold")


def test_the_scores_are_the_lessons_computed_once(explorer, model, calib):
    assert explorer.criteria == LESSON_CRITERIA and explorer.layer == "fc1" and explorer.n == 300
    for c in LESSON_CRITERIA:
        assert torch.equal(explorer.scores[c], pl.pruning.unit_scores(model, {"fc1": model.fc1}, c, calib)["fc1"]), c
    assert torch.equal(explorer.order, explorer.scores["l1"].argsort(stable=True))   # strips: by l1, lowest left
    assert explorer.fraction == 0.25 and explorer.k == 75 and explorer.slider.value == 0.25
    assert explorer.slider.description == "fc1 neurons removed" and explorer.slider.readout_format == ".0%"
    assert explorer.image.value[:4] == b"\x89PNG" and explorer.error is None
    assert "validation accuracy" in explorer.headline.value and "prunelab-accuracy" in explorer.headline.value
    assert "‖W<sub>j</sub>‖<sub>1</sub>" in explorer.headline.value and "seed 0" in explorer.headline.value


def test_the_scores_use_the_first_n_images_of_the_data_when_no_calibration_is_given(model, validation):
    explorer = CriteriaExplorer(model, validation, criteria=("taylor", "mean_activation"), n_images=300)
    first = pl.ImageSet(validation.images[:300], validation.labels[:300], name="validation")
    for c in ("taylor", "mean_activation"):
        assert torch.equal(explorer.scores[c], pl.pruning.unit_scores(model, {"fc1": model.fc1}, c, first)["fc1"]), c
    assert "300 validation images" in explorer.readout.value


def test_nothing_removed_leaves_every_criterion_at_the_dense_accuracy_exactly(explorer, model, validation):
    explorer.slider.value = 0.0
    dense = pl.evaluate(model, validation).accuracy
    assert explorer.k == 0 and explorer.baseline == dense
    assert all(a == dense for a in explorer.accuracy.values()) and all(k.all() for k in explorer.keep.values())
    assert bold_cells(explorer.headline.value) == len(LESSON_CRITERIA)        # all tied: all bold
    assert torch.equal(explorer.overlap, torch.ones(9, 9, dtype=torch.float64))
    explorer.reset()


@pytest.mark.parametrize("fraction", [0.01, 0.37, 0.5, 0.99])
def test_each_criterion_removes_its_round_f_n_lowest_neurons_and_the_accuracy_is_evaluates(
        explorer, model, validation, fraction):
    explorer.slider.value = fraction
    k = round(fraction * 300)
    assert explorer.error is None and explorer.k == k and explorer.accuracy_is_exact
    for c in LESSON_CRITERIA:
        keep = explorer.keep[c]
        assert int((~keep).sum()) == k, c
        assert torch.equal(keep, pl.pruning.layer_masks_for_sparsity({"fc1": explorer.scores[c]}, fraction)["fc1"])
        assert explorer.accuracy[c] == accuracy_without(model, "fc1", keep, validation), c
    assert f"{explorer.accuracy[explorer.best[0]]:.2%}" in explorer.headline.value
    assert f"<b>{k}</b> of 300 neurons" in explorer.count.value
    explorer.reset()


def test_the_slider_changes_masks_accuracy_and_strips(explorer):
    first_image, first_keep = explorer.image.value, dict(explorer.keep)
    explorer.slider.value = 0.6
    assert explorer.image.value != first_image
    assert all(not torch.equal(explorer.keep[c], first_keep[c]) for c in LESSON_CRITERIA)
    assert all(explorer.accuracy[c] < explorer.baseline for c in LESSON_CRITERIA)
    strips = explorer.strips.get_array()                      # [2C − 1, n]: rows 0, 2, ...; neurons in l1 order
    for i, c in enumerate(LESSON_CRITERIA):
        assert torch.equal(torch.as_tensor(strips[2 * i]).bool(), explorer.keep[c][explorer.order]), c
    l1_row = torch.as_tensor(strips[0]).bool()
    assert not l1_row[:180].any() and l1_row[180:].all()      # ordered by l1: its removed neurons on the left
    explorer.reset()


def test_the_overlap_is_the_jaccard_index_of_the_removed_sets(explorer):
    explorer.slider.value = 0.5
    R = {c: set((~explorer.keep[c]).nonzero().flatten().tolist()) for c in LESSON_CRITERIA}
    for a, ca in enumerate(LESSON_CRITERIA):
        for b, cb in enumerate(LESSON_CRITERIA):
            assert explorer.overlap[a, b].item() == pytest.approx(len(R[ca] & R[cb]) / len(R[ca] | R[cb]))
    assert f"{explorer.overlap[0, 1].item():.0%}" in explorer.headline.value
    assert "f / (2 − f) = 33%" in explorer.readout.value
    explorer.reset()


def test_jaccard_by_hand():
    removed = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    J = jaccard(removed)
    assert J[0, 1] == pytest.approx(1 / 3) and J[0, 0] == 1 and J[0, 2] == 0 and J[2, 3] == 1   # empty vs empty: 1
    assert torch.equal(J, J.T)


def test_random_is_seeded_and_reproducible(model, validation, calib):
    a = CriteriaExplorer(model, validation, criteria=("random", "l1"), removed=0.4)
    b = CriteriaExplorer(model, validation, criteria=("random", "l1"), removed=0.4)
    c = CriteriaExplorer(model, validation, criteria=("random", "l1"), removed=0.4, seed=1)
    assert torch.equal(a.keep["random"], b.keep["random"]) and a.accuracy == b.accuracy
    assert not torch.equal(a.keep["random"], c.keep["random"])
    assert torch.equal(c.scores["random"], pl.scores.random_scores((300,), seed=1))


def test_ties_are_all_bold(model, validation):
    explorer = CriteriaExplorer(model, validation, criteria=("l1", "magnitude", "random"), removed=0.1)
    assert torch.allclose(explorer.scores["l1"], explorer.scores["magnitude"])   # Σ_i |W_ji| is the L1 norm
    assert torch.equal(explorer.keep["l1"], explorer.keep["magnitude"])
    assert explorer.accuracy["l1"] == explorer.accuracy["magnitude"] > explorer.accuracy["random"]
    assert explorer.best == ["l1", "magnitude"] and bold_cells(explorer.headline.value) == 2


def test_reset_is_exact_and_the_model_passed_in_is_never_changed(model, validation, calib):
    user = pl.masks.copy_model(model)
    before = snapshot(user)
    explorer = CriteriaExplorer(user, validation, criteria=FAST, calibration=calib, removed=0.3)
    first = (explorer.image.value, explorer.headline.value, explorer.readout.value, dict(explorer.accuracy))
    for f in (0.0, 0.55, 0.99, 0.12):
        explorer.slider.value = f
        assert explorer.error is None and same(snapshot(user), before, ordered=True)
        assert same(pl.masks.effective_state_dict(explorer.model), before)      # idle: the copy as it came
    explorer.reset_button.click()
    assert explorer.error is None and explorer.slider.value == 0.3 and explorer.fraction == 0.3
    assert (explorer.image.value, explorer.headline.value, explorer.readout.value, explorer.accuracy) == first
    assert same(snapshot(user), before, ordered=True) and not pl.masks.masked_parameters(user)
    assert same(pl.masks.effective_state_dict(explorer.model), before)
    assert explorer.model is not user and all(p.grad is None for p in user.parameters())


def test_masks_the_model_came_with_stay(model, validation):
    user = pl.masks.copy_model(model)
    pl.prune(user, 0.8, layers=["fc1", "fc2"])                  # weights pruned before the explorer
    before = snapshot(user)
    explorer = CriteriaExplorer(user, validation, criteria=("l2", "random"), removed=0.0)
    assert explorer.baseline == pl.evaluate(user, validation).accuracy
    explorer.slider.value = 0.5
    for c in ("l2", "random"):
        check = pl.masks.copy_model(user)
        units = pl.pruning.unit_masks_to_parameters(check, {"fc1": explorer.keep[c]})
        current = pl.masks.get_masks(check)
        pl.masks.set_masks(check, {p: m & current[p] if p in current else m for p, m in units.items()})
        assert explorer.accuracy[c] == pl.evaluate(check, validation).accuracy, c
    assert same(snapshot(user), before, ordered=True)


def test_estimates_while_moving_and_the_exact_figures_at_rest(explorer, model, validation):
    slow = CriteriaExplorer(model, validation, criteria=FAST, exact_budget=0.0, estimate_images=300)
    assert not slow.meter.exact_while_moving and slow.meter.n_estimate == 300
    slow.slider.value = 0.5                     # no event loop: the exact figures at once
    assert slow.accuracy_is_exact and "all 5,000 validation images" in slow.readout.value
    assert all(slow.accuracy[c] == accuracy_without(model, "fc1", slow.keep[c], validation) for c in FAST)
    slow._measure(exact=False)                  # what a move shows before the slider rests
    assert not slow.accuracy_is_exact
    slow._redraw()
    assert "<sup>≈</sup>" in slow.headline.value and "estimate on 300 validation images" in slow.readout.value


def test_fc2_works_too(model, validation, calib):
    explorer = CriteriaExplorer(model, validation, layer="fc2", criteria=("l1", "apoz"), calibration=calib,
                                removed=0.5)
    assert explorer.n == 100 and explorer.k == 50 and explorer.slider.description == "fc2 neurons removed"
    assert explorer.accuracy["apoz"] == accuracy_without(model, "fc2", explorer.keep["apoz"], validation)


@pytest.mark.parametrize("layer, message", [
    ("fc9", r"Unknown layer 'fc9'\. Did you mean 'fc2'\? Layers with neurons to remove: 'fc1', 'fc2'\."),
    ("fc3", r"'fc3' has no neurons to remove: it is the last layer: its outputs are the classes\. .*'fc1', 'fc2'"),
    ("relu1", r"'relu1' has no neurons to remove: it is a ReLU, which has no weight rows\. .*'fc1', 'fc2'"),
    ("", r"Unknown layer ''\. Layers with neurons to remove: 'fc1', 'fc2'\."),
])
def test_a_layer_without_neurons_names_the_valid_ones(model, validation, layer, message):
    with pytest.raises(ValueError, match=message):
        CriteriaExplorer(model, validation, layer=layer, criteria=("l1",))


def test_other_bad_input_says_what_to_do(model, validation):
    with pytest.raises(ValueError, match=r"Unknown criterion 'taylr'\. Did you mean 'taylor'\? Criteria: 'l1', .*"
                                         r"'loss_change'.*\(lesson 03: l1, l2, gradient"):
        CriteriaExplorer(model, validation, criteria=("l1", "taylr"))
    with pytest.raises(ValueError, match="criteria is empty"):
        CriteriaExplorer(model, validation, criteria=())
    with pytest.raises(ValueError, match="criteria names 'l1' more than once"):
        CriteriaExplorer(model, validation, criteria=("l1", "l2", "l1"))
    with pytest.raises(ValueError, match=r"removed is the fraction of fc1's neurons .* from 0 to 0\.99"):
        CriteriaExplorer(model, validation, criteria=("l1",), removed=1.0)
    with pytest.raises(ValueError, match="removed is the fraction"):
        CriteriaExplorer(model, validation, criteria=("l1",), removed=True)
    with pytest.raises(ValueError, match=r"n_images is how many calibration images .* got 0"):
        CriteriaExplorer(model, validation, criteria=("l1",), n_images=0)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        CriteriaExplorer(lambda x: x, validation)
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 8), nn.ReLU(),
                         nn.Linear(8, 10))
    with pytest.raises(ValueError, match=r"'0' has no neurons to remove: it is a Conv2d.*Layers with neurons to "
                                         r"remove: '3'\."):
        CriteriaExplorer(conv, validation, layer="0", criteria=("l1",))
    with pytest.raises(ValueError, match="Sequential has no Linear layer with neurons to remove"):
        CriteriaExplorer(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), validation, layer="1")
    a = CriteriaExplorer(model, validation, criteria="l2", removed=0.2)     # one name is one criterion
    assert a.criteria == ("l2",) and a.k == 60


def test_an_event_is_timed(explorer):
    n = len(explorer.event_seconds)
    explorer.slider.value = 0.42
    assert explorer.error is None and len(explorer.event_seconds) > n and explorer.event_seconds[-1] > 0
    # (two entries when the move measured estimates: the move, then the exact figures once it rests)
    explorer.reset()
