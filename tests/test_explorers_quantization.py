"""The quantization explorer, driven by setting widget values and checked against prunelab.quantization and
prunelab.weight_sharing on the same weights (known answers)."""

import asyncio
import random

import pytest
import torch
from conftest import same, snapshot

import prunelab as pl
from prunelab import masks as M
from prunelab import quantization as Q
from prunelab.explorers.quantization import FLOAT, QuantizationExplorer, Setting, linear_levels
from prunelab.weight_sharing import kmeans_codebook, share_weights, shared_file_bytes


@pytest.fixture(scope="module")
def small_test(test_set):
    return test_set.subset(2000, seed=1)


@pytest.fixture(scope="module")
def tiny_test(test_set):
    return test_set.subset(200, seed=2)


@pytest.fixture
def explorer(small_test):
    return QuantizationExplorer(pl.load_pretrained("lenet300"), small_test, exact_budget=float("inf"))


def level_lines(explorer):
    """x of every line drawn on the histogram."""
    return torch.tensor([seg[0, 0] for seg in explorer.levels_artist.lines.get_segments()], dtype=torch.float64)


def test_linear_levels_on_a_hand_example():
    # r in [-1, 3], 2 bits affine: S = 4/3, Z = 1, levels S (q - Z) for q = 0..3
    qt = Q.quantize_tensor(torch.tensor([[-1.0, 3.0]]), 2, scheme="affine")
    assert torch.allclose(linear_levels(qt), torch.tensor([-4 / 3, 0, 4 / 3, 8 / 3]))
    # binary: the two values ±S, S = r_absmax / 2
    assert torch.allclose(linear_levels(Q.quantize_tensor(torch.tensor([-2.0, 1.0]), 1, scheme="symmetric")),
                          torch.tensor([-1.0, 1.0]))
    # per channel: one row of levels per output channel; every r̂ is one of its channel's levels
    W = torch.tensor([[-1.0, 0.5, 1.0], [0.1, 0.2, -0.05]])
    qt = Q.quantize_tensor(W, 3, scheme="symmetric", per_channel=True)
    levels = linear_levels(qt)
    assert levels.shape == (2, 7)
    assert all(torch.isin(qt.dequantize()[c], levels[c]).all() for c in range(2))


def test_the_explorer_starts_at_float32_and_leaves_the_model_alone(explorer, small_test):
    assert explorer.bits.value == FLOAT and explorer.current is None and explorer.setting() is None
    assert explorer.baseline == pl.evaluate(pl.load_pretrained("lenet300"), small_test).accuracy
    assert len(explorer.levels_artist.lines.get_segments()) == 0
    assert f"{explorer.baseline:.2%}</span>" in explorer.headline.value and "prunelab-accuracy" in explorer.headline.value


def test_bits_set_the_weights_levels_errors_accuracy_and_bytes(explorer, small_test):
    model = pl.load_pretrained("lenet300")
    before = snapshot(model)
    explorer.bits.value = 4                                           # affine, per tensor (the defaults)
    assert explorer.error is None
    r = explorer.current
    assert r.setting == Setting("linear", 4, "affine", False)
    reference = Q.fake_quantize_model(model, 4, scheme="affine", per_channel=False)
    for name in ("fc1", "fc2", "fc3"):
        W_hat = reference.get_submodule(name).weight
        assert torch.equal(explorer.quantized_model.get_submodule(name).weight, W_hat)
        err = Q.quantization_error(model.get_submodule(name).weight, 4, scheme="affine")
        assert r.rms[name] == pytest.approx(err["mse"] ** 0.5, rel=1e-6) and r.max_abs[name] == err["max_abs_error"]
        assert r.levels[name].shape == (16,) and torch.isin(W_hat, r.levels[name]).all()
    qt = Q.quantize_tensor(model.fc1.weight, 4, scheme="affine")
    assert torch.allclose(level_lines(explorer), (torch.arange(16) - qt.Z).double() * qt.S.double())
    assert r.accuracy == pl.evaluate(reference, small_test).accuracy and r.accuracy_is_exact
    assert r.file_bytes == Q.quantized_file_bytes(model, 4, scheme="affine", per_channel=False)
    assert explorer.float_bytes == pl.metrics.file_bytes(model) > 6 * r.file_bytes
    text = explorer.readout.value
    assert f"{r.file_bytes:,} bytes" in text and "16 levels" in text
    assert f"font-size:26px;font-weight:bold'>{r.accuracy:.2%}</span>" in explorer.headline.value   # the largest text
    assert same(snapshot(model), before, ordered=True)
    explorer.bits.value = 2                                           # fewer levels, larger errors
    assert explorer.current.rms["fc1"] > r.rms["fc1"] and len(level_lines(explorer)) == 4


def test_symmetric_per_channel_draws_the_levels_of_the_chosen_channel(explorer):
    explorer.scheme.value = "symmetric"
    explorer.per_channel.value = True
    explorer.bits.value = 3
    explorer.layer.value = "fc2"
    explorer.channel.value = 5
    assert explorer.error is None and explorer.channel.layout.display != "none"
    W = pl.load_pretrained("lenet300").fc2.weight.detach()
    qt = Q.quantize_tensor(W, 3, scheme="symmetric", per_channel=True)
    assert torch.allclose(level_lines(explorer), linear_levels(qt)[5].double())
    assert len(level_lines(explorer)) == 7                            # q in [-3, 3]
    assert torch.equal(explorer.shown_weights(), W[5])                # the histogram shows row 5 of W
    assert torch.equal(explorer.quantized_model.fc2.weight, qt.dequantize())
    assert "channel 5" in explorer.ax.get_title()


def test_kmeans_shows_the_starting_centroids_then_the_converged_codebook(tiny_test):
    model = pl.load_pretrained("lenet300")
    layers = ["fc2", "fc3"]                                           # fc1's 235k weights take longer to cluster
    explorer = QuantizationExplorer(model, tiny_test, layers=layers, exact_budget=float("inf"))
    explorer.settle_delay = 0.05
    explorer.method.value = "kmeans"
    assert explorer.scheme.disabled and explorer.per_channel.disabled

    async def drag(bits):
        explorer.bits.value = bits
        shown = (explorer.current, explorer.readout.value)
        await asyncio.sleep(0.5)
        return shown

    start, text = asyncio.run(drag(3))
    assert not start.converged and "starting centroids" in text and "measuring…" in text
    W = model.fc2.weight.detach()
    assert torch.equal(start.weights["fc2"], kmeans_codebook(W, 3, iters=0).weights())
    shared, books = share_weights(model, 3, layers)
    r = explorer.current
    assert r.converged and r.setting == Setting("kmeans", 3, None, False) and explorer.cache[r.setting] is r
    for name in layers:
        assert torch.equal(explorer.quantized_model.get_submodule(name).weight, shared.get_submodule(name).weight)
        assert torch.equal(r.levels[name], books[name].centroids)
    assert torch.allclose(level_lines(explorer), books["fc2"].centroids.double())
    assert r.accuracy == pl.evaluate(shared, tiny_test).accuracy and r.accuracy_is_exact
    assert r.file_bytes == shared_file_bytes(model, books)
    assert "converged" in explorer.readout.value and f"{r.file_bytes:,} bytes" in explorer.readout.value
    explorer.bits.value = 5                                           # no event loop: converged at once
    explorer.bits.value = 3                                           # back: the cached result, instantly
    assert explorer.current is r and explorer.error is None


def test_each_setting_is_cached(explorer):
    explorer.bits.value = 6
    six = explorer.current
    explorer.per_channel.value = True
    assert explorer.current.setting == Setting("linear", 6, "affine", True)
    explorer.per_channel.value = False
    assert explorer.current is six
    assert set(explorer.cache) == {Setting("linear", 6, "affine", True), Setting("linear", 6, "affine", False)}


def test_binary_on_pruned_zeros_is_refused_and_shown_and_zeros_stay_zero(tiny_test):
    model = pl.load_pretrained("lenet300")
    pl.prune(model, 0.7)
    explorer = QuantizationExplorer(model, tiny_test, exact_budget=float("inf"))
    explorer.scheme.value = "symmetric"
    explorer.bits.value = 2
    two = explorer.current
    explorer.bits.value = 1                                           # binary ±S has no level for the zeros
    assert isinstance(explorer.error, ValueError)
    assert "affine" in explorer.error_box.value and explorer.error_box.layout.display != "none"
    assert explorer.bits.value == 2 and explorer.current is two      # the controls show what is shown
    assert explorer.current.setting.bits == 2
    explorer.scheme.value = "affine"                                  # the next good event clears the message
    assert explorer.error is None and explorer.error_box.layout.display == "none"
    explorer.bits.value = 1
    keep = M.get_masks(explorer.quantized_model)
    for name in ("fc1", "fc2", "fc3"):
        W_hat = explorer.quantized_model.get_submodule(name).weight
        assert (W_hat[~keep[f"{name}.weight"]] == 0).all()           # pruned zeros stay exactly 0
    assert "exact zeros not shown" in explorer.ax.get_title()


def test_any_sequence_of_moves_then_float_or_reset_restores_the_exact_weights(tiny_test):
    model = pl.load_pretrained("lenet300")
    pl.prune(model, {"fc2": 0.5})                                    # one masked layer: weight_orig is restored too
    before = snapshot(model)
    explorer = QuantizationExplorer(model, tiny_test, layers=["fc2", "fc3"], exact_budget=float("inf"))
    rng = random.Random(0)
    controls = {"bits": list(range(1, 9)) + [FLOAT], "method": ["linear", "kmeans"],
                "scheme": ["affine", "symmetric"], "per_channel": [False, True], "layer": ["fc2", "fc3"]}
    for step in range(40):
        control = rng.choice(["bits", "bits", *controls, "channel"])
        if control == "channel":
            explorer.channel.value = rng.randint(0, explorer.channel.max)
        else:
            getattr(explorer, control).value = rng.choice(controls[control])
        if explorer.error is not None:                                 # only binary ±S on the pruned zeros
            assert "affine" in str(explorer.error)
        if explorer.current is None:
            assert same(snapshot(explorer.quantized_model), before, ordered=True)
        if step % 4 == 0:
            expected = explorer.baseline if explorer.current is None else explorer.current.accuracy
            assert expected == pl.evaluate(explorer.quantized_model, tiny_test).accuracy
    explorer.reset()
    assert explorer.bits.value == FLOAT and explorer.current is None and explorer.error is None
    assert same(snapshot(explorer.quantized_model), before, ordered=True)
    assert same(snapshot(model), before, ordered=True)
