"""The explorers, driven the way a learner drives them: by setting widget values. No browser needed."""

import asyncio
import random

import pytest
import torch
from conftest import same, snapshot
from torch import nn

import prunelab as pl
from prunelab.explorers import ThresholdExplorer
from prunelab.explorers.base import FloatSlider, page_value, projector_css, projector_mode
from prunelab.thresholds import RankedScores
from prunelab.live_accuracy import LiveAccuracy
from prunelab.thresholds import mask_for_sparsity


@pytest.fixture(scope="module")
def small_test(test_set):
    return test_set.subset(2000, seed=1)


@pytest.fixture
def explorer(small_test):
    return ThresholdExplorer(pl.load_pretrained("lenet300"), small_test, exact_budget=float("inf"))


def test_ranked_scores_give_the_same_masks_as_mask_for_sparsity():
    scores = torch.tensor([[0.3, 0.1, 0.1], [0.5, 0.1, 0.2]])    # ties at 0.1
    ranked = RankedScores(scores)
    for s in (0.0, 0.2, 0.34, 0.5, 0.9):
        assert torch.equal(ranked.mask_for_sparsity(s), mask_for_sparsity(scores, s))
    assert ranked.threshold_for_sparsity(0.5) == pytest.approx(0.1)
    assert torch.equal(ranked.mask_for_threshold(0.15), scores > 0.15)
    assert ranked.sparsity_for_threshold(0.1) == 0.5


def test_live_accuracy_reuses_cached_activations_correctly(small_test):
    model = pl.load_pretrained("lenet300")
    live = LiveAccuracy(model, small_test)
    assert live.accuracy() == pl.evaluate(model, small_test).accuracy
    pl.prune(model, {"fc2": 0.9})
    assert live.accuracy(["fc2"]) == pl.evaluate(model, small_test).accuracy
    pl.prune(model, {"fc1": 0.95, "fc2": 0.5})
    assert live.accuracy(["fc1", "fc2"]) == pl.evaluate(model, small_test).accuracy


def test_live_accuracy_runs_a_model_that_is_not_a_chain_whole(small_test):
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = pl.load_pretrained("lenet300")

        def forward(self, x):
            return self.net(x)

    model = Wrapped()
    live = LiveAccuracy(model, small_test)
    assert live.accuracy() == pl.evaluate(model, small_test).accuracy
    pl.prune(model, 0.9)
    assert live.accuracy(["net.fc1"]) == pl.evaluate(model, small_test).accuracy


def test_slider_sets_the_mask_histogram_readout_and_accuracy(explorer, small_test):
    model, W = explorer.model, pl.masks.original(explorer.model, "fc1.weight").detach()
    before = explorer.image.value
    explorer.slider.value = 0.8
    assert explorer.error is None
    expected = mask_for_sparsity(W.abs(), 0.8)
    assert torch.equal(explorer.masks["fc1"], expected)
    assert torch.equal(pl.masks.get_masks(model)["fc1.weight"], expected)
    assert explorer.sparsity("fc1") == pytest.approx(0.8, abs=1e-5)
    assert explorer.accuracy == pl.evaluate(model, small_test).accuracy
    assert explorer.accuracy < explorer.baseline
    # the histogram's red stairs hold exactly the pruned weights, the blue ones sit on top of them
    pruned_counts = explorer.histogram.pruned.get_data().values
    assert pruned_counts.sum() == int((~expected).sum())
    assert (explorer.histogram.kept.get_data().baseline == pruned_counts).all()
    v_thr = explorer.v_thr["fc1"]
    assert [line.get_xdata()[0] for line in explorer.histogram.lines] == pytest.approx([-v_thr, v_thr])
    assert (explorer.mask_image.image.get_array() == expected.to(torch.uint8).numpy()).all()
    assert explorer.image.value != before and explorer.image.value[:4] == b"\x89PNG"
    assert f"{explorer.accuracy:.2%}" in explorer.headline.value and "80.0%" in explorer.readout.value
    assert "fc1 80.0% pruned" in explorer.headline.value and not explorer.all_kept_note.get_visible()


def test_the_first_picture_says_what_to_do_and_reset_brings_the_controls_back(explorer):
    assert explorer.all_kept_note.get_visible() and "move the slider" in explorer.all_kept_note.get_text()
    assert explorer.slider.description == "target sparsity s" and explorer.slider.readout_format == ".1%"
    explorer.zoom.value = True
    assert explorer.mask_image.image.get_array().shape == (32, 64)
    explorer.rule.value = "threshold"
    assert explorer.slider.description == "threshold v_thr" and explorer.slider.readout_format == ".4g"
    explorer.scope.value = "global"
    explorer.slider.value = 0.02
    assert explorer.error is None and explorer.sparsity("*") > 0
    explorer.reset()
    assert (explorer.rule.value, explorer.scope.value, explorer.zoom.value) == ("sparsity", "layer", False)
    assert explorer.slider.value == 0.0 and explorer.slider.description == "target sparsity s"
    assert explorer.mask_image.image.get_array().shape == (300, 784) and explorer.all_kept_note.get_visible()


def test_each_layer_keeps_its_own_setting(explorer):
    explorer.slider.value = 0.5
    explorer.layer.value = "fc2"
    assert explorer.slider.value == 0.0           # fc2 is still dense
    explorer.slider.value = 0.7
    explorer.layer.value = "fc1"
    assert explorer.slider.value == 0.5
    assert explorer.sparsity("fc1") == pytest.approx(0.5, abs=1e-5)
    assert explorer.sparsity("fc2") == pytest.approx(0.7, abs=1e-5)
    assert explorer.sparsity("fc3") == 0.0


def test_global_scope_uses_one_threshold_over_all_layers(explorer, small_test):
    explorer.scope.value = "global"
    explorer.slider.value = 0.9
    scores = {n: pl.masks.original(explorer.model, f"{n}.weight").detach().abs() for n in ("fc1", "fc2", "fc3")}
    expected = pl.pruning.layer_masks_for_sparsity(scores, 0.9, "global")
    assert all(torch.equal(explorer.masks[n], expected[n]) for n in scores)
    assert len(set(explorer.v_thr.values())) == 1
    assert explorer.accuracy == pl.evaluate(explorer.model, small_test).accuracy


def test_fixed_threshold_and_quality_rules(explorer):
    W = pl.masks.original(explorer.model, "fc1.weight").detach()
    explorer.rule.value = "threshold"
    explorer.slider.value = 0.05
    assert torch.equal(explorer.masks["fc1"], W.abs() > 0.05)
    explorer.rule.value = "quality"                       # the same mask, expressed as q = v_thr / σ
    assert explorer.slider.value == pytest.approx(0.05 / float(W.std()), rel=0.05)
    explorer.slider.value = 1.0
    assert torch.equal(explorer.masks["fc1"], W.abs() > float(W.std()))
    assert explorer.error is None


def test_switching_the_criterion_keeps_the_sparsity(explorer):
    explorer.slider.value = 0.6
    explorer.criterion.value = "random"
    assert explorer.sparsity("fc1") == pytest.approx(0.6, abs=1e-5)
    assert not torch.equal(explorer.masks["fc1"], mask_for_sparsity(explorer.model.fc1.weight_orig.detach().abs(), 0.6))
    assert all(line.get_visible() is False for line in explorer.histogram.lines)   # v_thr is not on the w axis


def test_an_error_in_a_callback_is_shown_and_changes_nothing(explorer):
    explorer.slider.value = 0.3
    masks_before = {n: m.clone() for n, m in explorer.masks.items()}
    explorer.criterion.value = "random"
    explorer.rule.value = "quality"                       # quality needs magnitude scores
    assert isinstance(explorer.error, ValueError)
    assert "magnitude" in explorer.error_box.value and explorer.error_box.layout.display != "none"
    assert explorer.rule.value == "sparsity"
    assert explorer.sparsity("fc1") == pytest.approx(0.3, abs=1e-5)
    explorer.slider.value = 0.4                           # the next good event clears the message
    assert explorer.error is None and explorer.error_box.layout.display == "none"
    assert masks_before.keys() == explorer.masks.keys()


def test_any_sequence_of_moves_then_reset_restores_the_exact_weights(small_test):
    model = pl.load_pretrained("lenet300")
    before = snapshot(model)
    explorer = ThresholdExplorer(model, small_test, calibration_data=small_test.subset(256),
                                 exact_budget=float("inf"))
    rng = random.Random(0)
    for _ in range(60):
        control = rng.choice(["slider", "slider", "slider", "layer", "scope", "criterion", "rule"])
        if control == "slider":
            explorer.slider.value = rng.uniform(explorer.slider.min, explorer.slider.max)
        else:
            widget = getattr(explorer, control)
            widget.value = rng.choice([v for _, v in widget.options] if isinstance(widget.options[0], tuple)
                                      else list(widget.options))
        if explorer.error is not None:                      # only quality + a non-magnitude criterion
            assert "magnitude" in str(explorer.error)
        assert explorer.accuracy == pl.evaluate(model, small_test).accuracy
    explorer.reset()
    assert same(snapshot(model), before, ordered=True)
    assert explorer.accuracy == explorer.baseline == pl.evaluate(model, small_test).accuracy
    assert pl.masks.masked_parameters(model) == []


def test_a_slow_model_shows_an_estimate_then_the_exact_accuracy(small_test):
    explorer = ThresholdExplorer(pl.load_pretrained("lenet300"), small_test, exact_budget=0.0,
                                 estimate_images=300)
    assert not explorer.meter.exact_while_moving
    explorer.settle_delay = 0.05

    async def drag():
        explorer.slider.value = 0.9
        shown = (explorer.accuracy, explorer.accuracy_is_exact, explorer.headline.value)
        await asyncio.sleep(0.3)
        return shown

    _, exact_then, text = asyncio.run(drag())
    assert not exact_then and "estimate on 300 test images" in text
    assert explorer.accuracy_is_exact and explorer.accuracy == pl.evaluate(explorer.model, small_test).accuracy
    assert "all 2,000 test images" in explorer.headline.value


def test_the_time_budget_decides_how_many_images_an_estimate_uses(small_test):
    from prunelab.explorers.base import AccuracyMeter
    model = pl.load_pretrained("lenet300")
    hopeless = AccuracyMeter(model, small_test, exact_budget=1e-9)
    assert not hopeless.exact_while_moving and hopeless.n_estimate == AccuracyMeter.MIN_ESTIMATE_IMAGES
    budget = 600 * hopeless.seconds_per_image * 2          # two passes over about 600 images
    meter = AccuracyMeter(model, small_test, exact_budget=budget, passes=2)
    if not meter.exact_while_moving:                        # (a fast machine runs all 2,000 within the budget)
        assert meter.n_estimate == max(AccuracyMeter.MIN_ESTIMATE_IMAGES,
                                       int(budget / 2 / meter.seconds_per_image))
        assert len(meter.estimate.data) == meter.n_estimate
    twin = AccuracyMeter(pl.load_pretrained("lenet300"), small_test, like=meter)
    assert twin.n_estimate == meter.n_estimate and twin.exact_while_moving == meter.exact_while_moving


def test_live_accuracy_with_nothing_changed_gives_the_last_result(small_test):
    model = pl.load_pretrained("lenet300")
    live = LiveAccuracy(model, small_test)
    pl.prune(model, {"fc3": 0.5})
    expected = live.accuracy(["fc3"])
    assert live.accuracy([]) == expected == pl.evaluate(model, small_test).accuracy


def test_a_slider_move_that_changes_no_mask_is_fine(explorer):
    explorer.layer.value = "fc3"
    explorer.slider.value = 0.5
    explorer.slider.value = 0.5001                        # the same k: the mask does not change
    assert explorer.error is None and explorer.sparsity("fc3") == 0.5


# ---------------------------------------------------------------------------------------------------- projector mode
@pytest.mark.parametrize("environ, on", [
    ({}, False), ({"QUERY_STRING": ""}, False), ({"QUERY_STRING": "projector"}, True),
    ({"QUERY_STRING": "a=1&projector=1"}, True), ({"QUERY_STRING": "projector=0"}, False),
    ({"QUERY_STRING": "projector=off", "PRUNELAB_PROJECTOR": "1"}, False),      # the page's address decides
    ({"PRUNELAB_PROJECTOR": "1"}, True), ({"PRUNELAB_PROJECTOR": "yes"}, True), ({"PRUNELAB_PROJECTOR": "0"}, False)])
def test_projector_mode_is_read_from_the_address_then_the_variable(environ, on):
    assert projector_mode(environ) is on


def test_projector_mode_wraps_the_view_with_its_style_and_draws_the_figure_with_twice_the_pixels(monkeypatch,
                                                                                                   small_test):
    model = pl.load_pretrained("lenet300")
    plain = ThresholdExplorer(model, small_test)
    monkeypatch.setenv("PRUNELAB_PROJECTOR", "1")
    projected = ThresholdExplorer(model, small_test)
    assert plain.display_widget() is plain.view and not plain.projector
    box = projected.display_widget()
    assert projected.projector and box.children[1] is projected.view and "prunelab-projector" in box._dom_classes
    assert "font-size: 16px" in box.children[0].value and box.children[0].layout.display == "none"
    assert projected.display_widget() is box                                    # one box, not one per display
    css = projector_css()                        # inline sizes under 16 px are raised; a headline's larger one stays
    assert '[style*="font-size:12px"]' in css and '[style*="font-size:15px"]' in css and "font-size:16px" not in css
    # the same CSS size, twice the pixels: the PNG of the projector's figure is twice as wide
    assert plain.image.layout.width == projected.image.layout.width == f"{round(plain.fig.get_figwidth() * plain.fig.dpi)}px"
    assert projected.fig.dpi == 2 * plain.fig.dpi
    w_plain, w_projected = (int.from_bytes(e.image.value[16:20], "big") for e in (plain, projected))   # PNG IHDR width
    assert w_projected == 2 * w_plain
    pl.masks.reset(model)


# ---------------------------------------------------------------------------------------------------- sliders
def test_page_value_follows_the_pages_slider_arithmetic():
    # noUiSlider works in percent of the range: 0.88 on [0, 0.99] is 88.88...%, 88 steps of 1.0101...%, and back
    assert page_value(0.88, 0.0, 0.99, 0.01) == 88 * (100 * 0.01 / 0.99) * 0.99 / 100 == 0.8800000000000001
    assert page_value(0.88, 0.0, 1.0, 0.01) == 0.88 and page_value(0.9034, 0.0, 1.0, 0.01) == 0.9
    assert page_value(0.99, 0.0, 0.99, 0.01) == 0.99 and page_value(-1.0, 0.0, 0.99, 0.01) == 0.0
    assert page_value(0.0149, 0.0, 1.0, 0.01) == 0.01 and page_value(0.015, 0.0, 1.0, 0.01) == 0.02   # half up


def test_a_float_slider_sends_what_the_page_shows_and_keeps_what_the_code_set():
    slider = FloatSlider(min=0.0, max=0.99, step=0.01)
    slider.value = 0.88
    assert slider.value == 0.88 and slider.get_state("value") == {"value": 0.8800000000000001}
    slider.value = 0.9034                                 # off the grid: the page shows 0.90, the code keeps 0.9034
    assert slider.value == 0.9034 and slider.get_state("value") == {"value": 0.9000000000000001}
    slider.set_state({"value": 0.4700000000000001})       # a move on the page: back on the kernel's grid
    assert slider.value == 0.47
    slider.value = 5.0
    assert slider.value == 0.99                           # still clamped to [min, max]
