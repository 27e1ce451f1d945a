"""Taylor importance accumulated over batches (Molchanov et al. 2017, 2019), the gradient change ΔG_j of removing a
unit, and the importance of whole layers: each checked against a hand computation or against literally removing
the unit (or layer) from a copy."""

import copy
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import prunelab as pl
from prunelab import masks as M
from prunelab.data_criteria import (gradient_change, layer_importance, layer_loss_change, taylor_unit_terms,
                                    unit_taylor_batches)
from prunelab.pruning import layer_masks_for_sparsity, prune, unit_masks_to_parameters
from prunelab.scores import accumulated_taylor, batch_means, batch_gradients, loss_gradients, taylor, taylor_batches

# The tiny MLP of test_data_criteria: fc1 rows [1, 0], [0, 1], [-1, -1] (unit 2 never on), fc2 passes units 0 and 1
# on as the two logits; no biases.
X = torch.tensor([[1., 2.], [-1., 3.], [2., -2.], [3., 0.]])
Y = torch.tensor([1, 1, 0, 0])
H = torch.tensor([[1., 2., 0.], [0., 3., 0.], [2., 0., 0.], [3., 0., 0.]])   # relu(fc1(X))


def tiny_mlp() -> nn.Sequential:
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(2, 3), relu1=nn.ReLU(), fc2=nn.Linear(3, 2)))
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor([[1., 0.], [0., 1.], [-1., -1.]]))
        model.fc2.weight.copy_(torch.tensor([[1., 0., 0.], [0., 1., 0.]]))
        model.fc1.bias.zero_()
        model.fc2.bias.zero_()
    return model


def per_example_gradients() -> tuple[Tensor, Tensor]:
    """g_n of fc1's and fc2's weights for each example, written out: δ2 = p − e_y, g2 = δ2 hᵀ, δ1 = (W2ᵀ δ2) ⊙ [z1 > 0],
    g1 = δ1 xᵀ: [4, 3, 2] and [4, 2, 3]."""
    model = tiny_mlp()
    W1, W2 = model.fc1.weight.detach(), model.fc2.weight.detach()
    z1 = X @ W1.T                                                    # [4, 3]
    p = torch.softmax(H[:, :2], dim=1)                               # logits = H[:, :2]
    d2 = p - F.one_hot(Y, 2).float()                                 # [4, 2]
    d1 = (d2 @ W2) * (z1 > 0)                                        # [4, 3]
    return d1[:, :, None] * X[:, None, :], d2[:, :, None] * H[:, None, :]



@pytest.fixture(scope="module")
def lenet():
    return pl.load_pretrained("lenet300")


@pytest.fixture(scope="module")
def validation():
    return pl.load_fashion_mnist("validation")


# ---------------------------------------------------------------- the two steps, on numbers

def test_batch_means_and_accumulated_taylor_by_hand():
    t = torch.tensor([[1., -2.], [3., 4.], [-5., 0.]])                # 3 examples, 2 units
    T = batch_means(t, 2)                                           # batches {0, 1} and {2}
    assert torch.equal(T, torch.tensor([[2., 1.], [-5., 0.]]))
    assert torch.equal(accumulated_taylor(T, 1), torch.tensor([3.5, 0.5]))     # (|2| + |−5|) / 2, (|1| + 0) / 2
    assert torch.equal(accumulated_taylor(T, 2), torch.tensor([14.5, 0.5]))    # (4 + 25) / 2, (1 + 0) / 2
    assert torch.equal(accumulated_taylor(batch_means(t, 1), 1), torch.tensor([3., 2.]))   # per example
    assert torch.allclose(accumulated_taylor(batch_means(t, 3), 1), torch.tensor([1 / 3, 2 / 3]))  # |mean| only
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        batch_means(t, 0)
    with pytest.raises(ValueError, match="power must be 1"):
        accumulated_taylor(T, 3)


# ---------------------------------------------------------------- per weight

def test_batch_gradients_are_the_per_example_gradients_by_hand():
    g1, g2 = per_example_gradients()
    got = list(batch_gradients(tiny_mlp(), (X, Y), batch_size=1))
    assert len(got) == 4
    for n, g_n in enumerate(got):
        assert torch.allclose(g_n["fc1.weight"], g1[n], atol=1e-6) and torch.allclose(g_n["fc2.weight"], g2[n],
                                                                                      atol=1e-6)
    pairs = list(batch_gradients(tiny_mlp(), (X, Y), batch_size=3))               # batches {0, 1, 2} and {3}
    assert torch.allclose(pairs[0]["fc2.weight"], g2[:3].mean(0), atol=1e-6)
    assert torch.allclose(pairs[1]["fc2.weight"], g2[3], atol=1e-6)


def test_taylor_batches_by_hand():
    g1, g2 = per_example_gradients()
    model = tiny_mlp()
    W1, W2 = model.fc1.weight.detach(), model.fc2.weight.detach()
    I = taylor_batches(model, (X, Y), batch_size=1)
    assert torch.allclose(I["fc1.weight"], (W1 * g1).abs().mean(0), atol=1e-6)        # (1/4) Σ_n |W ⊙ g_n|
    assert torch.allclose(I["fc2.weight"], (W2 * g2).abs().mean(0), atol=1e-6)
    I2 = taylor_batches(model, (X, Y), batch_size=2, power=2)                         # batches {0, 1}, {2, 3}
    g_b = g2.view(2, 2, 2, 3).mean(1)                                                # [B=2, 2, 3]
    assert torch.allclose(I2["fc2.weight"], (W2 * g_b).pow(2).mean(0), atol=1e-7)
    whole = taylor_batches(model, (X, Y), batch_size=4)                              # one batch: the old "taylor"
    g = loss_gradients(model, (X, Y))
    assert torch.allclose(whole["fc2.weight"], taylor(W2, g["fc2.weight"]), atol=1e-7)


def test_accumulated_taylor_is_not_near_zero_at_a_trained_minimum(lenet, validation):
    n = 1000
    g = loss_gradients(lenet, validation, n_images=n)
    I = taylor_batches(lenet, validation, batch_size=1, n_images=n)
    whole = taylor_batches(lenet, validation, batch_size=n, n_images=n)
    for name in g:
        W = lenet.get_submodule(name.removesuffix(".weight")).weight.detach()
        full = taylor(W, g[name])                                                    # |W ⊙ g|, g over all n
        assert torch.allclose(whole[name], full, rtol=1e-4, atol=1e-9)
        assert (I[name] >= full * (1 - 1e-4) - 1e-9).all()         # |mean_n W g_n| ≤ mean_n |W g_n| everywhere
        assert I[name].mean() > 4 * full.mean(), name                # measured: 6.9x, 4.5x, 6.6x on these images
    for layer in ("fc1", "fc2"):
        t = taylor_unit_terms(lenet, layer, validation, n_images=n)
        per_example, one_batch = accumulated_taylor(t), accumulated_taylor(batch_means(t, n))
        assert per_example.mean() > 4 * one_batch.mean(), layer      # measured: 5.0x, 6.7x


# ---------------------------------------------------------------- per unit

def test_unit_terms_by_hand():
    p = torch.softmax(H[:, :2], dim=1)
    d = p - F.one_hot(Y, 2).float()                                   # ∂ℓ_n/∂logit: fc2 passes h_0, h_1 on
    t = taylor_unit_terms(tiny_mlp(), "fc1", (X, Y))
    assert t.shape == (4, 3)
    assert torch.allclose(t[:, :2], d * H[:, :2], atol=1e-6) and (t[:, 2] == 0).all()   # t_nj = ∂ℓ_n/∂h_nj · h_nj
    assert torch.allclose(taylor_unit_terms(tiny_mlp(), "fc2", (X, Y)), d * H[:, :2], atol=1e-6)   # the classifier
    I = unit_taylor_batches(tiny_mlp(), "fc1", (X, Y), batch_size=2)
    T = (d * H[:, :2]).view(2, 2, 2).mean(1)                          # batches {0, 1}, {2, 3}: [B=2, units 0, 1]
    assert torch.allclose(I[:2], T.abs().mean(0), atol=1e-6) and I[2] == 0


def test_unit_term_is_the_sum_of_g_times_theta_over_the_units_weights_and_bias(lenet, validation):
    n = 64
    I = unit_taylor_batches(lenet, "fc2", validation, batch_size=n, n_images=n)      # one batch: |T_j|
    x, y = validation.normalized()[:n], validation.labels[:n]
    fc2 = lenet.fc2
    g_W, g_b = torch.autograd.grad(F.cross_entropy(lenet(x), y), [fc2.weight, fc2.bias])
    T = (g_W * fc2.weight).sum(1) + g_b * fc2.bias                                   # Σ_i g_ji W_ji + g_bj b_j
    assert torch.allclose(I, T.detach().abs(), rtol=1e-4, atol=1e-8)


def test_unit_term_after_batchnorm_is_molchanovs_gate_over_gamma_and_beta(test_set):
    vgg = pl.load_pretrained("vgg_small").eval()
    data = test_set.subset(8, seed=0)
    t = taylor_unit_terms(vgg, "conv3", data)                                        # conv3 -> bn3 -> relu3
    loss = F.cross_entropy(vgg(data.normalized()), data.labels, reduction="sum")
    g_gamma, g_beta = torch.autograd.grad(loss, [vgg.bn3.weight, vgg.bn3.bias])
    gate = g_gamma * vgg.bn3.weight + g_beta * vgg.bn3.bias                          # Σ_n t_nj
    assert torch.allclose(t.sum(0), gate.detach(), rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------- gradient change

def reference_gradient_change(model, layer, j, data, n) -> float:
    """ΔG_j the slow way: zero unit j's row and bias in a copy, take both gradients, compare all but row j."""
    removed = copy.deepcopy(model)
    with torch.no_grad():
        removed.get_submodule(layer).weight[j] = 0
        removed.get_submodule(layer).bias[j] = 0
    g, g_j = loss_gradients(model, data, n_images=n), loss_gradients(removed, data, n_images=n)
    total = 0.0
    for name in g:
        d = g_j[name] - g[name]
        if name == f"{layer}.weight":
            d[j] = 0
        total += float(d.double().pow(2).sum())
    return math.sqrt(total)


def test_gradient_change_of_the_tiny_mlp_matches_zeroing_the_unit():
    dG = gradient_change(tiny_mlp(), "fc1", (X, Y))
    expected = [reference_gradient_change(tiny_mlp(), "fc1", j, (X, Y), 4) for j in range(3)]
    assert torch.allclose(dG, torch.tensor(expected), atol=1e-6)
    assert dG[2] == 0 and (dG[:2] > 0).all()           # the dead unit: nothing reads a value it never has


def test_gradient_change_on_lenet300_matches_zeroing_the_neuron(lenet, validation):
    data = validation.subset(96, seed=1)
    dG = gradient_change(lenet, "fc2", data, batch_size=40)                          # batches of 40, 40, 16
    assert dG.shape == (100,)
    expected = torch.tensor([reference_gradient_change(lenet, "fc2", j, data, 96) for j in (0, 42, 99)])
    assert torch.allclose(dG[[0, 42, 99]], expected, rtol=1e-3, atol=1e-6)


def test_gradient_change_respects_masks_and_leaves_the_model_untouched(lenet, validation):
    data = validation.subset(32, seed=2)
    model = copy.deepcopy(lenet).train()
    mask = torch.ones_like(model.fc2.weight, dtype=torch.bool)
    mask[:, ::2] = False                                        # fc2 reads only the odd neurons of fc1
    M.set_masks(model, {"fc2.weight": mask})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dG = gradient_change(model, "fc1", data)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and model.training
    assert (dG[::2] == 0).all() and (dG[1::2] > 0).all()        # removing a neuron nobody reads changes nothing


# ---------------------------------------------------------------- through prune

def test_prune_dispatches_the_new_criteria(lenet, validation):
    data = validation.subset(96, seed=3)
    model = copy.deepcopy(lenet)
    masks = prune(model, 0.5, granularity="neuron", criterion="taylor_batches", data=data, batch_size=8)
    expected = {name: unit_taylor_batches(lenet, name, data, batch_size=8) for name in ("fc1", "fc2")}
    assert all(torch.equal(masks[f"{n}.weight"][:, 0], k) for n, k in layer_masks_for_sparsity(expected, 0.5).items())
    masks = prune(model, 0.7, criterion="taylor_batches", data=data)                    # weights, per example
    I = taylor_batches(lenet, data, batch_size=1, n_images=96)
    assert torch.equal(masks["fc1.weight"], layer_masks_for_sparsity({"fc1": I["fc1.weight"]}, 0.7)["fc1"])
    masks = prune(model, 0.25, granularity="neuron", criterion="gradient_change", data=data, layers=["fc2"])
    dG = gradient_change(lenet, "fc2", data)
    assert torch.equal(masks["fc2.weight"][:, 0], layer_masks_for_sparsity({"fc2": dG}, 0.25)["fc2"])
    M.reset(model)
    with pytest.raises(ValueError, match="batch_size is the batch size of the 'taylor_batches' criterion"):
        prune(model, 0.5, criterion="taylor", data=data, batch_size=4)
    with pytest.raises(ValueError, match="criterion for weights must be one of"):
        prune(model, 0.5, criterion="gradient_change", data=data)
    with pytest.raises(ValueError, match="needs data"):
        prune(model, 0.5, granularity="neuron", criterion="gradient_change")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        prune(model, 0.5, granularity="neuron", criterion="taylor_batches", data=data, batch_size=0)
    assert not M.masked_parameters(model)


# ---------------------------------------------------------------- whole layers

def test_zeroing_a_whole_layer_by_hand():
    dL = layer_loss_change(tiny_mlp(), (X, Y), removal="zero")
    L = sum(math.log(math.exp(a) + math.exp(b)) - (a, b)[y] for (a, b, _), y in zip(H.tolist(), Y.tolist())) / 4
    assert list(dL) == ["fc1", "fc2"]                            # every layer can be zeroed; logits become 0 ...
    assert dL["fc1"] == pytest.approx(math.log(2) - L, abs=1e-6) and dL["fc2"] == pytest.approx(math.log(2) - L)
    assert layer_loss_change(tiny_mlp(), (X, Y)) == {}           # ... none replaced by identity (2 -> 3 -> 2)
    with pytest.raises(ValueError, match="removal must be 'identity' or 'zero'.*Did you mean 'zero'"):
        layer_loss_change(tiny_mlp(), (X, Y), removal="zeros")


def test_layer_importance_on_lenet5(validation):
    lenet5 = pl.load_pretrained("lenet5")
    data = validation.subset(1000, seed=4)
    table = layer_importance(lenet5, data, batch_size=250)
    assert [r.layer for r in table.rows] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert all(r.removal == "zero" for r in table.rows)          # no layer of LeNet-5 keeps its shape
    assert table.accuracy > 0.88 and table["conv2"].accuracy < 0.15          # near chance without conv2
    zero = layer_loss_change(lenet5, data, removal="zero")
    assert all(table[name].loss_change == pytest.approx(dL, abs=1e-5) for name, dL in zero.items())
    conv2 = unit_masks_to_parameters(lenet5, {"conv2": torch.zeros(16, dtype=torch.bool)})
    removed = copy.deepcopy(lenet5)
    M.set_masks(removed, conv2)                                 # every channel of conv2 masked: its output is 0
    evaluation = pl.evaluate(removed, data)
    assert evaluation.accuracy == table["conv2"].accuracy
    assert evaluation.loss - table.L == pytest.approx(table["conv2"].loss_change, abs=1e-5)
    assert all(r.gradient_change > 0 and r.max_activation >= r.mean_activation for r in table.rows)
    assert "conv2" in str(table) and "ΔG" in str(table)
    with pytest.raises(KeyError, match="Did you mean 'conv2'"):
        table["conv3"]


def test_layer_importance_on_lenet300_and_the_identity_path(lenet, validation):
    table = layer_importance(lenet, validation.subset(500, seed=5))
    assert [(r.layer, r.removal) for r in table.rows] == [("fc1", "zero"), ("fc2", "zero"), ("fc3", "zero")]
    assert all(r.accuracy < 0.15 and r.loss_change > 1.5 for r in table.rows)   # a chain without a layer: chance
    square = nn.Sequential(OrderedDict(fc1=nn.Linear(2, 2), relu1=nn.ReLU(), fc2=nn.Linear(2, 2)))
    with torch.no_grad():
        square.fc1.weight.copy_(torch.eye(2))
        square.fc2.weight.copy_(2 * torch.eye(2))
        square.fc1.bias.zero_()
        square.fc2.bias.zero_()
    small = layer_importance(square, (X, Y))
    identity = layer_loss_change(square, (X, Y))
    assert [r.removal for r in small.rows] == ["identity", "identity"]
    assert all(small[name].loss_change == pytest.approx(dL, abs=1e-6) for name, dL in identity.items())
    g = loss_gradients(square, (X, Y))
    without_fc1 = copy.deepcopy(square)
    without_fc1.fc1, without_fc1.relu1 = nn.Identity(), nn.Identity()
    g_fc2 = loss_gradients(without_fc1, (X, Y))["fc2.weight"]
    assert small["fc1"].gradient_change == pytest.approx(float((g_fc2 - g["fc2.weight"]).norm()), abs=1e-6)
