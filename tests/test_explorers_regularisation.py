"""The regularisation-strength explorer shows, for networks trained with different L1 strengths λ1, what
prunelab.prune(net, s) + prunelab.evaluate give when done directly; driven by setting its widgets. The networks
passed in are never changed. Stand-ins for L1-trained networks: the pretrained LeNet-300-100 with its weights soft
thresholded, sign(w) max(|w| − t, 0) (what L1's proximal step does), so that more of them sit at zero."""

import math
import re
from fractions import Fraction

import pytest
import torch
from torch import nn

import prunelab as pl
from conftest import same, snapshot
from prunelab.explorers import regularisation as R
from prunelab.explorers.regularisation import RegularisationExplorer
from prunelab.thresholds import threshold_for_sparsity

SHRINK = {0.0: 0.0, 1e-4: 0.01, 1e-3: 0.03}       # λ1 -> soft threshold t of the stand-in


def soft_thresholded(model, t):
    net = pl.masks.copy_model(model)
    with torch.no_grad():
        for layer in pl.masks.prunable_layers(net).values():
            layer.weight.copy_(layer.weight.sign() * (layer.weight.abs() - t).clamp(min=0))
    return net


@pytest.fixture(scope="module")
def networks():
    base = pl.load_pretrained("lenet300")
    return {lam: soft_thresholded(base, t) for lam, t in SHRINK.items()}


@pytest.fixture(scope="module")
def data(test_set):
    return pl.ImageSet(test_set.images[:1000], test_set.labels[:1000], name="validation")


def pruned_directly(net, s, data, **kwargs):
    """The accuracy the sweep of lesson 09 measures: prune, evaluate, reset."""
    pl.prune(net, s, **kwargs)
    try:
        return pl.evaluate(net, data).accuracy
    finally:
        pl.masks.reset(net)


def test_it_starts_at_the_smallest_lambda_and_half_pruned_with_every_figure_shown(networks, data):
    explorer = RegularisationExplorer(networks, data)
    assert explorer.error is None and explorer.lambdas == [0.0, 1e-4, 1e-3]
    assert (explorer.lam, explorer.s, explorer.layer, explorer.scope) == (0.0, 0.5, "fc1", "layer")
    assert [label for label, _ in explorer.lam_slider.options] == ["0", "0.0001", "0.001"]
    assert explorer.lam_slider.description == "L1 strength λ1"
    assert explorer.slider.description == "weights pruned by magnitude" and explorer.slider.readout_format == ".0%"
    assert explorer.image.value[:4] == b"\x89PNG"
    assert explorer.fig.get_figwidth() * explorer.fig.dpi / explorer.pixel_ratio <= 900
    assert explorer.ax.get_yscale() == "log"
    sizes = [int(px) for px in re.findall(r"font-size:(\d+)px", explorer.headline.value)]
    others = re.findall(r"font-size:(\d+)px", explorer.table.value + explorer.readout.value)
    assert max(sizes) == 24 and all(int(px) < 24 for px in others)             # the headline is the largest text
    cost = f"{100 * explorer.cost[0.0]:.2f} points"
    for figure in (f"{explorer.dense[0.0]:.2%}", f"{explorer.pruned[0.0]:.2%}", cost):
        assert figure in explorer.headline.value
    assert "validation accuracy" in explorer.headline.value
    assert explorer.table.value.count("<tr") == 1 + len(networks)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_every_figure_is_what_prune_and_evaluate_give_directly(networks, data, scope):
    explorer = RegularisationExplorer(networks, data, scope=scope)
    for s in (0.0, 0.3, 0.9, 0.99):
        explorer.slider.value = s
        assert explorer.error is None and explorer.s == s
        for lam, net in networks.items():
            assert explorer.dense[lam] == pl.evaluate(net, data).accuracy
            kwargs = {} if scope == "layer" else {"scope": "global"}
            assert explorer.pruned[lam] == pruned_directly(net, s, data, **kwargs)       # bit for bit: the same masks
            assert explorer.cost[lam] == explorer.dense[lam] - explorer.pruned[lam]
        top = max(explorer.pruned.values())
        assert explorer.best == [lam for lam in explorer.lambdas if explorer.pruned[lam] == top]
        for lam, net in networks.items():
            explorer.lam_slider.value = lam
            W = net.fc1.weight.detach()
            scores = W.abs() if scope == "layer" else torch.cat([net.get_submodule(n).weight.detach().abs().flatten()
                                                                  for n in ("fc1", "fc2", "fc3")])
            v = threshold_for_sparsity(scores, s)
            assert explorer.v_thr == v
            assert explorer.near_zero[lam] == (W.abs() < 1e-3).double().mean().item()
            masks = pl.prune(net, s, **kwargs)                          # ties at v_thr: k = round(s · n) go
            pl.masks.reset(net)
            assert all(torch.equal(keep, masks[f"{name}.weight"])
                       for name, keep in explorer.keep_masks(lam, s).items())
            kept, pruned = explorer.kept_bars.get_data().values, explorer.pruned_bars.get_data().values
            n_pruned = int((~masks["fc1.weight"]).sum())
            assert kept.sum() == W.numel() and pruned.sum() == n_pruned                # every weight in some bin
            assert all(line.get_visible() == (s > 0) for line in explorer.lines)
            if s > 0:
                assert sorted(line.get_xdata()[0] for line in explorer.lines) == [-v, v]
    assert explorer.layer_sparsity == pytest.approx(0.99 if scope == "layer" else
                                                    1 - explorer.keep_masks(explorer.lam, 0.99)["fc1"].float().mean())


def test_the_sliders_move_the_readouts_and_the_axes_stay(networks, data):
    explorer = RegularisationExplorer(networks, data)
    limits = (explorer.ax.get_xlim(), explorer.ax.get_ylim())
    shown = {}
    for lam in explorer.lambdas:
        explorer.lam_slider.value = lam
        shown[lam] = explorer.image.value
        assert explorer.lam == lam and (explorer.ax.get_xlim(), explorer.ax.get_ylim()) == limits
        assert f"λ1 = {lam:g}:" in explorer.headline.value and f"λ1 = {lam:g}:" in explorer.note.get_text()
        assert f"{explorer.near_zero[lam]:.0%} of fc1 have |w| < 1e-3" in explorer.note.get_text()
    assert len(set(shown.values())) == len(networks)
    assert explorer.near_zero[0.0] < explorer.near_zero[1e-4] < explorer.near_zero[1e-3]   # the stand-ins' spikes
    before = dict(explorer.pruned)
    explorer.slider.value = 0.9
    assert explorer.pruned != before and "90% pruned" in explorer.headline.value
    assert f"{explorer.pruned[1e-3]:.2%}" in explorer.headline.value
    assert "every λ1 at 90% pruned" in explorer.table.value
    for lam in explorer.lambdas:                                   # the table: every λ1, the best ones in bold
        weight = "bold" if lam in explorer.best else "normal"
        cell = f"<td align=right style='padding:1px 6px;font-weight:{weight}'>{explorer.pruned[lam]:.2%}</td>"
        assert cell in explorer.table.value
    assert explorer.table.value.count("background") == 1            # the λ1 shown


def test_ties_are_all_bold(networks, data):
    twin = pl.masks.copy_model(networks[0.0])
    explorer = RegularisationExplorer({0.0: networks[0.0], 1e-4: twin, 1e-3: networks[1e-3]}, data, sparsity=0.2)
    assert explorer.pruned[0.0] == explorer.pruned[1e-4] > explorer.pruned[1e-3]      # the twins lead, tied
    assert explorer.best == [0.0, 1e-4] and explorer.table.value.count("font-weight:bold") == 2


def test_moving_back_is_measured_once_and_remembered(networks, data, monkeypatch):
    explorer = RegularisationExplorer(networks, data)
    calls = []
    real = R.evaluate
    monkeypatch.setattr(R, "evaluate", lambda net, d: calls.append(1) or real(net, d))
    explorer.slider.value = 0.9
    assert len(calls) == len(networks)                              # every λ1 at the new s, once
    explorer.slider.value = 0.5
    explorer.slider.value = 0.9
    explorer.lam_slider.value = 1e-3
    assert len(calls) == len(networks) and len(explorer.event_seconds) == 4


def test_reset_brings_the_start_back_and_the_networks_were_never_changed(networks, data):
    before = {lam: snapshot(net) for lam, net in networks.items()}
    grads = {lam: [p.requires_grad for p in net.parameters()] for lam, net in networks.items()}
    explorer = RegularisationExplorer(networks, data, sparsity=0.3, lam=1e-4)
    first = (explorer.image.value, explorer.headline.value, explorer.table.value, dict(explorer.pruned))
    explorer.slider.value, explorer.lam_slider.value = 0.95, 1e-3
    assert explorer.image.value != first[0]
    for lam, net in networks.items():                               # idle after an event: untouched, no masks
        assert same(snapshot(net), before[lam], ordered=True) and not pl.masks.masked_parameters(net)
    explorer.reset_button.click()
    assert explorer.error is None
    assert (explorer.lam, explorer.s, explorer.lam_slider.value, explorer.slider.value) == (1e-4, 0.3, 1e-4, 0.3)
    assert (explorer.image.value, explorer.headline.value, explorer.table.value, explorer.pruned) == first
    for lam, net in networks.items():
        assert same(snapshot(net), before[lam], ordered=True) and not pl.masks.masked_parameters(net)
        assert [p.requires_grad for p in net.parameters()] == grads[lam]
        assert all(p.grad is None for p in net.parameters())
    assert all(not pl.masks.masked_parameters(copy) for copy in explorer._copies.values())


def test_another_layer_and_its_own_histogram(networks, data):
    explorer = RegularisationExplorer(networks, data, layer="fc2", sparsity=0.9)
    assert explorer.layer == "fc2" and "weight w of fc2 (30,000 weights" in explorer.ax.get_xlabel()
    assert explorer.v_thr == threshold_for_sparsity(networks[0.0].fc2.weight.detach().abs(), 0.9)
    assert explorer.kept_bars.get_data().values.sum() == 30_000


def test_a_failure_while_moving_is_shown_and_the_last_figures_stay(networks, data, monkeypatch):
    explorer = RegularisationExplorer(networks, data)
    shown, pruned = explorer.image.value, dict(explorer.pruned)

    def broken(net, d):
        raise RuntimeError("broken on purpose")
    monkeypatch.setattr(R, "evaluate", broken)
    explorer.slider.value = 0.8
    assert isinstance(explorer.error, RuntimeError) and "broken on purpose" in explorer.error_box.value
    assert explorer.s == 0.5 and explorer.pruned == pruned and explorer.image.value == shown
    assert all(not pl.masks.masked_parameters(copy) for copy in explorer._copies.values())   # unmasked again
    monkeypatch.undo()
    explorer.slider.value = 0.7
    assert explorer.error is None and explorer.s == 0.7


# ---------------------------------------------------------------------------------------------------- bad input
def test_no_networks_or_not_a_dict_is_refused(data):
    with pytest.raises(ValueError, match=r"networks is empty: .*keyed by the L1 strength λ1.*\{0.0: net_plain"):
        RegularisationExplorer({}, data)
    with pytest.raises(TypeError, match=r"networks must be a dict \{λ1: trained network\}, .* got list"):
        RegularisationExplorer([pl.build_model("lenet300")], data)


@pytest.mark.parametrize("key", ["L1, λ = 3e-4", True, -1e-4, math.nan, None])
def test_keys_that_are_not_l1_strengths_are_refused(networks, data, key):
    with pytest.raises(ValueError, match=r"keys of networks are the L1 strengths λ1 .* numbers >= 0"):
        RegularisationExplorer({0.0: networks[0.0], key: networks[1e-3]}, data)


def test_the_same_lambda_twice_and_values_that_are_not_networks_are_refused(networks, data):
    with pytest.raises(ValueError, match=r"λ1 = 0.001 twice"):
        RegularisationExplorer({1e-3: networks[0.0], Fraction(1, 1000): networks[1e-3]}, data)
    with pytest.raises(TypeError, match=r"networks\[0.001\] must be an nn.Module .* got OrderedDict"):
        RegularisationExplorer({0.0: networks[0.0], 1e-3: networks[1e-3].state_dict()}, data)


def test_networks_of_different_architectures_are_refused(networks, data):
    wider = pl.build_model("lenet300", seed=0)
    wider.fc1, wider.fc2 = nn.Linear(784, 200), nn.Linear(200, 100)
    with pytest.raises(ValueError, match=r"networks\[0.001\] is not the same architecture as networks\[0\] "
                                         r"\(first difference: fc1.weight \[300, 784\] against "
                                         r"fc1.weight \[200, 784\]"):
        RegularisationExplorer({0.0: networks[0.0], 1e-3: wider}, data)
    with pytest.raises(ValueError, match=r"not the same architecture .*LeNet300.* against Sequential"):
        RegularisationExplorer({0.0: networks[0.0], 1e-3: nn.Sequential(nn.Flatten(), nn.Linear(784, 10))}, data)


def test_an_unknown_layer_or_bad_start_is_refused(networks, data):
    with pytest.raises(ValueError, match=r"Unknown layer 'fc4'\. Did you mean 'fc3'\? Prunable layers of "
                                         r"LeNet300: fc1, fc2, fc3"):
        RegularisationExplorer(networks, data, layer="fc4")
    with pytest.raises(ValueError, match="layer is the name of the layer"):
        RegularisationExplorer(networks, data, layer=1)
    for s in (1.0, -0.1, 0.905, "90%"):
        with pytest.raises(ValueError, match=r"a multiple of 1% from 0 to 0.99"):
            RegularisationExplorer(networks, data, sparsity=s)
    with pytest.raises(ValueError, match=r"one of the keys of networks \(0, 0.0001, 0.001\), got 0.0003"):
        RegularisationExplorer(networks, data, lam=3e-4)
    with pytest.raises(ValueError, match="scope must be 'layer'"):
        RegularisationExplorer(networks, data, scope="row")
    with pytest.raises(ValueError, match="bins is the number of histogram bins"):
        RegularisationExplorer(networks, data, bins=1)


def test_a_masked_network_is_refused_and_left_as_it_is(networks, data):
    net = pl.masks.copy_model(networks[1e-3])
    pl.prune(net, 0.5)
    before = snapshot(net)
    with pytest.raises(ValueError, match=r"networks\[0.001\] carries masks \(fc1.weight, .*prunelab.masks.reset"):
        RegularisationExplorer({0.0: networks[0.0], 1e-3: net}, data)
    assert same(snapshot(net), before, ordered=True)
