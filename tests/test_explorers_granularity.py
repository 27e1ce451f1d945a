"""The granularity explorer, driven by setting widget values and checked against prunelab.prune, shrink and
evaluate on fresh copies of the model (known answers)."""

import asyncio
import random
import re

import pytest
import torch
from conftest import same, snapshot

import prunelab as pl
from prunelab import masks as M
from prunelab.explorers import granularity as G
from prunelab.explorers.granularity import GranularityExplorer, nm_for_sparsity
from prunelab.plots import mask_view
from prunelab.shrink import channels_to_keep, shrink


@pytest.fixture(scope="module")
def small_test(test_set):
    return test_set.subset(2000, seed=1)


@pytest.fixture(scope="module")
def tiny_test(test_set):
    return test_set.subset(100, seed=2)


@pytest.fixture
def explorer(small_test):
    return GranularityExplorer(pl.load_pretrained("lenet300"), small_test, exact_budget=float("inf"),
                               latency_repeats=0)


def pruned(model, **kwargs):
    """A fresh copy of ``model`` pruned by prunelab.prune, and its masks."""
    ref = M.copy_model(model)
    pl.prune(ref, **kwargs)
    return ref, M.get_masks(ref)


def same_masks(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nm_for_sparsity_is_the_closest_n():
    assert nm_for_sparsity(0.0, 4) == 4                    # n = m: dense
    assert nm_for_sparsity(0.5, 4) == 2
    assert nm_for_sparsity(0.3, 4) == 3                    # 2.8 -> 3
    assert nm_for_sparsity(0.625, 4) == 2                  # 1.5 -> 2 (half rounds up)
    assert nm_for_sparsity(0.8, 8) == 2                    # 1.6 -> 2
    assert nm_for_sparsity(0.99, 4) == 1                   # never 0: 1:4 is the sparsest
    assert nm_for_sparsity(0.875, 8) == 1


def test_the_slider_prunes_each_copy_as_prune_does(explorer, small_test):
    model = pl.load_pretrained("lenet300")
    before = snapshot(model)
    explorer.slider.value = 0.8
    assert explorer.error is None
    layers = ["fc1", "fc2"]
    assert list(explorer.layers) == layers                 # fc3 (the classes) is not pruned
    expected = {"weight": pruned(model, sparsity=0.8, layers=layers),
                "unit": pruned(model, sparsity=0.8, granularity="neuron"),
                "n:m": pruned(model, sparsity=0.0, granularity="n:m", n=1, m=4, layers=layers)}
    assert explorer.n == 1                                  # (1 - 0.8) * 4 = 0.8 -> 1:4
    for g, (ref, masks) in expected.items():
        assert same_masks(M.get_masks(explorer.models[g]), masks), g
        assert explorer.accuracy[g] == pl.evaluate(ref, small_test).accuracy, g
        assert explorer.accuracy[g] == pl.evaluate(explorer.models[g], small_test).accuracy
        assert explorer.accuracy_is_exact[g]
    assert set(expected["unit"][1]) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    # sparsity reached: exactly s for weights; whole rows for neurons; 1 - n/m for N:M
    assert explorer.sparsity("weight") == pytest.approx(0.8, abs=1e-5)
    assert explorer.sparsity("unit") == pytest.approx((240 * 784 + 80 * 300) / (300 * 784 + 100 * 300))
    assert explorer.sparsity("n:m") == 0.75
    rows = explorer.masks["unit"]["fc1"]
    assert ((rows.all(1)) | (~rows.any(1))).all() and int(explorer.unit_keep["fc1"].sum()) == 60
    # the three mask images show the masks of the chosen layer
    assert explorer.column_stride() == 4                   # 784 columns drawn as every 4th: 196
    for g in ("weight", "unit", "n:m"):
        shown = explorer.mask_images[g].image.get_array()
        assert (shown == mask_view(explorer.masks[g]["fc1"])[:, ::4]).all()
    explorer.zoom.value = True                             # the corner: every weight
    assert (explorer.mask_images["n:m"].image.get_array() == mask_view(explorer.masks["n:m"]["fc1"])[:16, :48]).all()
    explorer.zoom.value = False
    assert "N:M = 1:4" in explorer.titles["n:m"].get_text() and "240 of 300" in explorer.titles["unit"].get_text()
    text = explorer.readout.value                            # the table: sparsity reached, what goes
    assert "N:M 1:4" in text and "80.0%" in text and "75.0%" in text and "fc1 240/300, fc2 80/100" in text
    assert "keep 1 of every 4" in text and "copy" in text
    headline = explorer.headline.value                      # the three accuracies, by the slider
    assert headline.count("prunelab-accuracy") == 1 and "at s = 80%" in headline and "N:M 1:4" in headline
    assert all(f"{explorer.accuracy[g]:.2%}" in headline for g in expected)
    assert all(f"{100 * (explorer.accuracy[g] - explorer.baseline):+.2f} points" in headline for g in expected)
    assert explorer.accuracy["weight"] > explorer.accuracy["unit"]          # whole neurons hurt more
    assert same(snapshot(model), before, ordered=True)


def test_m_sets_the_groups_and_layers_that_do_not_split_stay_dense(explorer):
    explorer.slider.value = 0.8
    explorer.m.value = 8
    assert explorer.error is None and explorer.n == 2                        # (1 - 0.8) * 8 = 1.6 -> 2:8
    assert explorer.nm_dense_layers() == ["fc2"]                             # 300 inputs: not a multiple of 8
    assert explorer.masks["n:m"]["fc2"].all()
    assert (explorer.masks["n:m"]["fc1"].view(300, -1, 8).sum(-1) == 2).all()
    assert "keep 2 of every 8; fc2 dense" in explorer.readout.value
    explorer.zoom.value = True                                               # the corner, with the groups marked
    assert explorer.mask_images["n:m"].image.get_array().shape == explorer.zoom_shape
    assert len(explorer.axes["n:m"].lines) == explorer.zoom_shape[1] // 8 - 1
    explorer.slider.value = 0.0
    assert explorer.n == 8 and explorer.sparsity("n:m") == 0.0 and explorer.error is None


def test_a_cnn_prunes_channels_with_their_batchnorm_and_shrinks_to_the_same_function(tiny_test):
    model = pl.load_pretrained("vgg_small")
    explorer = GranularityExplorer(model, tiny_test, exact_budget=float("inf"), latency_repeats=0)
    assert explorer.unit_label == "channels" and list(explorer.layers) == [f"conv{i}" for i in range(1, 7)]
    explorer.slider.value = 0.5
    assert explorer.error is None
    ref, masks = pruned(model, sparsity=0.5, granularity="channel")
    assert same_masks(M.get_masks(explorer.models["unit"]), masks) and "bn3.bias" in masks
    assert explorer.accuracy["unit"] == pl.evaluate(ref, tiny_test).accuracy
    assert explorer.nm_dense_layers() == ["conv1"]                            # 1 x 3 x 3 = 9 inputs per filter
    small = explorer.shrunk_model()                        # the channels really gone, the same function
    assert pl.count_parameters(small) == pl.count_parameters(shrink(ref, channels_to_keep(ref)))
    assert pl.count_parameters(small) < pl.count_parameters(model)
    x = tiny_test.normalized()[:16]
    with torch.no_grad():
        assert torch.allclose(small(x), explorer.models["unit"].eval()(x), atol=1e-4)


def test_a_model_with_conv_and_linear_layers_prunes_channels_and_neurons_and_times_the_shrunk_one(tiny_test):
    model = pl.load_pretrained("lenet5")
    explorer = GranularityExplorer(model, tiny_test, exact_budget=float("inf"), latency_repeats=2, latency_batch=8)
    assert explorer.unit_label == "neurons / channels"
    assert explorer.latency is None and "nothing to shrink" in explorer.readout.value
    explorer.slider.value = 0.4
    assert explorer.error is None
    _, channels = pruned(model, sparsity=0.4, granularity="channel")
    _, neurons = pruned(model, sparsity=0.4, granularity="neuron")
    assert same_masks(M.get_masks(explorer.models["unit"]), {**channels, **neurons})
    assert explorer.max_sparsity == 0.91                   # conv1 has 6 channels: round(0.92 * 6) = 6 would empty it
    # no event loop: the latency was measured at once, on the model shrink really made
    r = explorer.latency
    assert r is not None and r.dense.repeats == r.small.repeats == 2 and r.small.batch_size == 8
    small = explorer.shrunk_model()
    assert r.small_parameters == pl.metrics.parameter_counts(small).total < r.dense_parameters == pl.count_parameters(model)
    assert r.small_macs == pl.metrics.count_macs(small).dense < r.dense_macs
    assert r.speedup == r.dense.median_ms / r.small.median_ms
    assert f"{r.small_parameters:,}" in explorer.readout.value and "shrunk" in explorer.readout.value
    low, high = r.speedup_range                             # the spread of the runs, not one timing
    assert low <= r.speedup <= high and r.small.describe() in explorer.readout.value
    assert f"p10–p90 {r.small.p10_ms:.2f}–{r.small.p90_ms:.2f} ms" in explorer.readout.value
    assert f"<b>×{r.speedup:.2f}</b> (×{low:.2f}–×{high:.2f})" in explorer.readout.value


def test_latency_is_measured_once_the_slider_rests_and_cached(tiny_test):
    explorer = GranularityExplorer(pl.load_pretrained("lenet300"), tiny_test, exact_budget=float("inf"),
                                   latency_repeats=2, latency_batch=64)
    explorer.settle_delay = 0.05

    async def drag(value):
        explorer.slider.value = value
        shown = (explorer.latency, explorer.readout.value)
        await asyncio.sleep(0.3)
        return shown

    latency, text = asyncio.run(drag(0.7))
    assert latency is None and "measuring…" in text
    assert explorer.latency is not None and "measuring…" not in explorer.readout.value
    assert explorer.latency.small_parameters < explorer.latency.dense_parameters
    measured = explorer.latency
    explorer.slider.value = 0.2
    latency, text = asyncio.run(drag(0.7))                 # back to a setting already measured: no wait
    assert latency is measured and "measuring…" not in text
    assert explorer.error is None


def test_a_slow_model_shows_estimates_then_exact_accuracy(small_test):
    explorer = GranularityExplorer(pl.load_pretrained("lenet300"), small_test, exact_budget=0.0,
                                   estimate_images=300, latency_repeats=0)
    assert not explorer.meters["weight"].exact_while_moving
    explorer.settle_delay = 0.05

    async def drag():
        explorer.slider.value = 0.9
        shown = (dict(explorer.accuracy_is_exact), explorer.headline.value)
        await asyncio.sleep(0.3)
        return shown

    exact_then, text = asyncio.run(drag())
    assert not any(exact_then.values()) and "estimate on 300 test images" in text and text.count("≈") == 3
    for g, model in explorer.models.items():
        assert explorer.accuracy_is_exact[g] and explorer.accuracy[g] == pl.evaluate(model, small_test).accuracy
    assert "on all 2,000 test images" in explorer.headline.value and "≈" not in explorer.headline.value


def test_a_failure_is_shown_and_the_rest_still_updates(small_test, monkeypatch):
    explorer = GranularityExplorer(pl.load_pretrained("lenet300"), small_test, exact_budget=float("inf"),
                                   latency_repeats=1)
    explorer.settle_delay = 0.01

    def broken(*args, **kwargs):
        raise RuntimeError("the timer broke")

    async def drag(value):
        explorer.slider.value = value
        await asyncio.sleep(0.2)

    monkeypatch.setattr(G, "measure_latency", broken)
    asyncio.run(drag(0.5))
    assert isinstance(explorer.error, RuntimeError)
    assert "the timer broke" in explorer.error_box.value and explorer.error_box.layout.display != "none"
    assert "failed" in explorer.readout.value and explorer.latency is None
    assert explorer.accuracy["unit"] == pl.evaluate(explorer.models["unit"], small_test).accuracy
    monkeypatch.undo()
    asyncio.run(drag(0.6))                                 # the next good event clears the message
    assert explorer.error is None and explorer.error_box.layout.display == "none"
    assert explorer.latency is not None and "shrunk" in explorer.readout.value


def test_bad_arguments_are_refused_before_anything_is_copied(small_test):
    model = pl.load_pretrained("lenet300")
    with pytest.raises(ValueError, match="shrink cannot remove"):
        GranularityExplorer(model, small_test, layers=["fc2", "fc3"])
    with pytest.raises(ValueError, match="m_options"):
        GranularityExplorer(model, small_test, m_options=(1,))
    pl.prune(model, 0.5)
    with pytest.raises(ValueError, match="unmasked"):
        GranularityExplorer(model, small_test)


def test_any_sequence_of_moves_then_reset_restores_every_copy_exactly(tiny_test):
    model = pl.load_pretrained("lenet300")
    before = snapshot(model)
    explorer = GranularityExplorer(model, tiny_test, exact_budget=float("inf"), latency_repeats=0)
    rng = random.Random(0)
    for step in range(24):
        control = rng.choice(["slider", "slider", "slider", "m", "layer", "zoom"])
        if control == "slider":
            explorer.slider.value = round(rng.uniform(0, explorer.slider.max), 2)
        elif control == "m":
            explorer.m.value = rng.choice([v for _, v in explorer.m.options])
        elif control == "layer":
            explorer.layer.value = rng.choice(list(explorer.layers))
        else:
            explorer.zoom.value = not explorer.zoom.value
        assert explorer.error is None
        s = explorer.slider.value
        assert explorer.n == nm_for_sparsity(s, explorer.m.value)
        assert explorer.sparsity("weight") == pytest.approx(s, abs=1e-5)
        if step % 6 == 0:
            for g, copy in explorer.models.items():
                assert explorer.accuracy[g] == pl.evaluate(copy, tiny_test).accuracy
    explorer.reset()
    assert explorer.slider.value == 0.0 and explorer.error is None
    for copy in explorer.models.values():
        assert same(snapshot(copy), before, ordered=True) and M.masked_parameters(copy) == []
    assert same(snapshot(model), before, ordered=True)
    assert all(a == explorer.baseline == pl.evaluate(model, tiny_test).accuracy for a in explorer.accuracy.values())


def test_a_model_with_no_independently_shrinkable_layer_says_so_and_what_to_use():
    with pytest.raises(ValueError, match=r"TinyViT has none.*opaque.*ThresholdExplorer.*shrink_groups"):
        GranularityExplorer(pl.build_model("vit_tiny"), pl.load_fashion_mnist("test").subset(64))


def test_the_headline_is_the_largest_text_next_to_the_slider(explorer):
    row = next(box for box in explorer.view.children if explorer.slider in getattr(box, "children", ()))
    assert explorer.headline in row.children                  # beside the slider (below it where the row wraps)
    def sizes(text):
        return [int(px) for px in re.findall(r"font-size:\s*(\d+)px", text)]

    assert max(sizes(explorer.headline.value)) == 24 > max(sizes(explorer.readout.value))
    assert explorer.slider.description == "sparsity s (fraction pruned)" and explorer.slider.readout_format == ".0%"
    explorer.slider.value = 0.5
    big = re.findall(r"font-size:24px;font-weight:bold'>([^<]+)<", explorer.headline.value)
    assert big == [f"{explorer.accuracy[g]:.2%}" for g in ("weight", "unit", "n:m")]
    assert "N:M 2:4" in explorer.headline.value and "on all 2,000 test images" in explorer.headline.value


def test_the_first_picture_says_to_move_the_slider_once(explorer):
    def notes():
        return [t for ax in explorer.fig.axes for t in ax.texts if "nothing pruned yet" in t.get_text()]

    assert len(notes()) == 1 and notes()[0] is explorer.nothing_pruned_note
    assert explorer.nothing_pruned_note.get_visible() and explorer.nothing_pruned_note in explorer.renderer.animated
    explorer.slider.value = 0.01                              # k = round(0.01 n) weights and 3 neurons of fc1 go
    assert not explorer.nothing_pruned_note.get_visible()
    explorer.zoom.value = True                                # the panels rebuilt: still one note, still hidden
    assert len(notes()) == 1 and not explorer.nothing_pruned_note.get_visible()
    explorer.reset()
    assert explorer.nothing_pruned_note.get_visible() and explorer.error is None


def test_the_copies_share_the_images_path_and_every_figure_is_what_evaluate_says(small_test):
    explorer = GranularityExplorer(pl.load_pretrained("lenet300"), small_test, exact_budget=float("inf"),
                                   latency_repeats=0)
    live = {g: meter.exact for g, meter in explorer.meters.items()}
    paths = set()
    for s in [0.1, 0.11, 0.12, 0.13, 0.5, 0.51, 0.52, 0.8, 0.79, 0.3]:     # small steps (y₀ + x ΔWᵀ) and jumps
        explorer.slider.value = s
        paths |= {(g, a.path) for g, a in live.items()}
        for g, copy in explorer.models.items():
            assert explorer.accuracy[g] == pl.evaluate(copy, small_test).accuracy, (s, g)
    assert {g for g, path in paths if path.startswith("fc1 updated by ΔW")} == {"weight", "unit"}
    assert not any("ΔW" in path for g, path in paths if g == "n:m")
    # fc1's input xᵀ [784, n] is kept once for the three copies; nothing before fc1 is kept (the images are)
    x_t = [[t.data_ptr() for t in a._cuts[a.layer_node("fc1")].x_t] for a in (live["weight"], live["unit"])]
    assert x_t[0] == x_t[1] and len(x_t[0]) == len(live["weight"]._cuts[live["weight"].layer_node("fc1")].values)
    assert all(at.name == "fc1" for a in live.values() for at in a._cuts)
    assert live["n:m"]._cuts == {}                           # N:M changes by 1/m of the weights: nothing worth keeping
    if explorer.meters["weight"].estimate is not None:
        assert all(m.estimate.data is explorer.meters["weight"].estimate.data for m in explorer.meters.values())


def test_live_accuracy_shares_only_with_a_copy_of_the_same_model_on_the_same_data(small_test):
    from prunelab.live_accuracy import LiveAccuracy

    model = pl.load_pretrained("lenet300")
    first = LiveAccuracy(model, small_test)
    LiveAccuracy(M.copy_model(model), small_test, like=first)
    with pytest.raises(ValueError, match="same model.*same data"):
        LiveAccuracy(pl.load_pretrained("lenet5"), small_test, like=first)
    with pytest.raises(ValueError, match="same model.*same data"):
        LiveAccuracy(M.copy_model(model), small_test.subset(100), like=first)


def test_the_default_estimate_is_capped_for_memory(small_test, monkeypatch):
    monkeypatch.setattr(GranularityExplorer, "max_estimate_images", 150)      # the meter alone would take 200
    explorer = GranularityExplorer(pl.load_pretrained("lenet300"), small_test, exact_budget=1e-4, latency_repeats=0)
    assert not explorer.meters["weight"].exact_while_moving
    assert {(len(m.estimate.data), m.n_estimate) for m in explorer.meters.values()} == {(150, 150)}
    explorer.slider.value = 0.6                              # no event loop: the exact figures at once
    assert explorer.error is None and all(explorer.accuracy_is_exact.values())
    for g, copy in explorer.models.items():
        assert explorer.accuracy[g] == pl.evaluate(copy, small_test).accuracy
