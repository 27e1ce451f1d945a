"""Data criteria: activations after the nonlinearity, APoZ, and the measured loss change ΔL_j = L_j − L, checked
against values computed by hand and against literally zeroing a unit (or removing a layer) on a copy."""

import copy
import math
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunelab as pl
from prunelab.data_criteria import (apoz, apoz_score, collect_activations, layer_loss_change, max_activation,
                                    mean_activation, measured_loss_change)

# A tiny MLP with set weights: fc1 = rows [1, 0], [0, 1], [-1, -1], no bias; fc2 passes units 0 and 1 on as logits.
X = torch.tensor([[1., 2.], [-1., 3.], [2., -2.], [3., 0.]])
Y = torch.tensor([1, 1, 0, 0])
H = torch.tensor([[1., 2., 0.],   # relu(fc1(X)), by hand; unit 2 is never on (dead)
                  [0., 3., 0.],
                  [2., 0., 0.],
                  [3., 0., 0.]])


def tiny_mlp(*middle: nn.Module) -> nn.Sequential:
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(2, 3), relu1=nn.ReLU(),
                                      **{f"extra{i}": m for i, m in enumerate(middle)}, fc2=nn.Linear(3, 2)))
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor([[1., 0.], [0., 1.], [-1., -1.]]))
        model.fc2.weight.copy_(torch.tensor([[1., 0., 0.], [0., 1., 0.]]))
        model.fc1.bias.zero_()
        model.fc2.bias.zero_()
    return model


def mean_ce(logits: list[tuple[float, float]]) -> float:
    """Mean cross-entropy of the four examples with two classes, written out: log(e^l0 + e^l1) − l_y."""
    return sum(math.log(math.exp(l0) + math.exp(l1)) - (l0, l1)[y] for (l0, l1), y in zip(logits, Y.tolist())) / 4


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def assert_untouched(model, before, training, n_hooks=0):
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert all(m.training == training for m in model.modules())
    assert hooks(model) == n_hooks


def reference_loss_change(model, data, zero) -> float:
    """L_j − L the slow way: ``zero(copy)`` removes the unit from a copy, which is then evaluated."""
    removed = copy.deepcopy(model)
    with torch.no_grad():
        zero(removed)
    return pl.evaluate(removed, data).loss - pl.evaluate(model, data).loss


@pytest.fixture(scope="module")
def lenet():
    return pl.load_pretrained("lenet300")


@pytest.fixture(scope="module")
def vgg():
    return pl.load_pretrained("vgg_small")


# ---------------------------------------------------------------- activations and their scores

def test_activations_are_taken_after_the_relu_and_raw_for_the_classifier():
    A = collect_activations(tiny_mlp(), X, ["fc1", "fc2"])
    assert torch.equal(A["fc1"], H)
    assert torch.equal(A["fc2"], H[:, :2])  # no nonlinearity after the classifier: its raw logits


def test_later_in_place_operations_do_not_change_returned_activations():
    model = tiny_mlp()
    model.relu1 = nn.Sequential(nn.Dropout(0.5), nn.ReLU(inplace=True))  # eval dropout returns its input itself
    A = collect_activations(model, X, ["fc1", "fc2"])
    assert torch.equal(A["fc1"], model.fc1(X).detach())  # not followed directly by a ReLU: raw, negatives kept
    assert (A["fc1"] < 0).any() and torch.equal(A["fc2"], H[:, :2])


def test_scores_from_activations_by_hand():
    assert torch.equal(mean_activation(H), torch.tensor([1.5, 1.25, 0.]))
    assert torch.equal(max_activation(H), torch.tensor([3., 3., 0.]))
    assert torch.equal(apoz(H), torch.tensor([0.25, 0.5, 1.0]))      # the dead unit: 100 % zeros
    assert torch.equal(apoz_score(H), torch.tensor([0.75, 0.5, 0.]))  # ... so it is pruned first
    A = torch.tensor([[[[0., 1.]], [[2., 2.]]],
                      [[[0., 0.]], [[0., 4.]]]])                         # [N=2, C=2, H=1, W=2]
    assert torch.equal(mean_activation(A), torch.tensor([0.25, 2.0]))
    assert torch.equal(max_activation(A), torch.tensor([1., 4.]))
    assert torch.equal(apoz(A), torch.tensor([0.75, 0.25]))


def test_conv_activation_is_the_post_relu_map(vgg, test_set):
    x = test_set.normalized()[:8]
    A = collect_activations(vgg, x, ["conv1", "conv2", "fc"])
    with torch.no_grad():
        a1 = vgg.relu1(vgg.bn1(vgg.conv1(x)))
        expected = vgg.relu2(vgg.bn2(vgg.conv2(a1)))
        assert torch.allclose(A["conv1"], a1) and A["conv1"].shape == (8, 16, 28, 28)
        assert torch.allclose(A["conv2"], expected)
        assert torch.allclose(A["fc"], vgg(x))


def test_resnet_activations_after_the_in_place_relu_and_before_the_skip_addition():
    model = pl.build_model("resnet18").eval()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    A = collect_activations(model, x, ["layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1"])
    block = model.layer1[0]
    with torch.no_grad():
        inp = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        a1 = torch.relu(block.bn1(block.conv1(inp)))
        a2 = block.bn2(block.conv2(a1))  # followed by `out += identity`, not by a ReLU: the BatchNorm output
    assert torch.allclose(A["layer1.0.conv1"], a1)
    assert torch.allclose(A["layer1.0.conv2"], a2)
    assert (A["layer1.1.conv1"] >= 0).all()


# ---------------------------------------------------------------- measured loss change of units

def test_measured_loss_change_of_the_tiny_mlp_by_hand():
    h = H.tolist()
    L = mean_ce([(a, b) for a, b, _ in h])
    expected = torch.tensor([mean_ce([(0., b) for a, b, _ in h]) - L,   # unit 0 removed: logit 0 is 0
                             mean_ce([(a, 0.) for a, b, _ in h]) - L,   # unit 1 removed
                             0.])                                        # the dead unit changes nothing
    dL = measured_loss_change(tiny_mlp(), "fc1", (X, Y))
    assert torch.allclose(dL, expected, atol=1e-6) and dL[2] == 0
    assert (dL[:2] > 0).all()  # both live units help: removing either raises the loss
    assert torch.allclose(measured_loss_change(tiny_mlp(), "fc2", (X, Y)), expected[:2], atol=1e-6)


def test_generic_path_equals_the_rank_one_update_and_uses_eval_mode():
    fast = measured_loss_change(tiny_mlp(), "fc1", (X, Y))
    model = tiny_mlp(nn.Dropout(0.5)).train()  # dropout between relu1 and fc2: the rank-1 shortcut cannot apply
    assert torch.allclose(measured_loss_change(model, "fc1", (X, Y)), fast, atol=1e-6)
    assert model.training


@pytest.mark.parametrize("layer, units", [("fc1", [0, 1, 57, 150, 299]), ("fc2", [0, 42, 99])])
def test_lenet300_matches_literally_zeroing_the_neuron(lenet, test_set, layer, units):
    data = test_set.subset(300, seed=1)
    dL = measured_loss_change(lenet, layer, data, batch_size=128)
    assert dL.shape == (lenet.get_submodule(layer).out_features,)

    def zero(j):
        return lambda m: (m.get_submodule(layer).weight[j].zero_(), m.get_submodule(layer).bias[j].zero_())
    expected = torch.tensor([reference_loss_change(lenet, data, zero(j)) for j in units])
    assert torch.allclose(dL[units], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layer, channels", [("conv2", [0, 9]), ("conv6", [5, 63])])
def test_vgg_small_matches_literally_zeroing_the_channel(vgg, test_set, layer, channels):
    data = test_set.subset(48, seed=2)
    dL = measured_loss_change(vgg, layer, data)
    bn = vgg.get_submodule(layer.replace("conv", "bn"))

    def zero(c):
        def apply(m):
            m.get_submodule(layer).weight[c].zero_()
            m.get_submodule(layer.replace("conv", "bn")).weight[c].zero_()
            m.get_submodule(layer.replace("conv", "bn")).bias[c].zero_()
        return apply
    expected = torch.tensor([reference_loss_change(vgg, data, zero(c)) for c in channels])
    assert dL.shape == bn.weight.shape
    assert torch.allclose(dL[channels], expected, rtol=1e-4, atol=1e-6)


def test_resnet_channel_feeding_a_skip_connection_matches_literally_zeroing_it(test_set):
    model = pl.build_model("resnet18").eval()
    data = test_set.subset(4, seed=6)
    dL = measured_loss_change(model, "layer1.0.conv2", data)  # conv2 -> bn2 -> out += identity -> relu

    def zero(c):
        def apply(m):
            m.layer1[0].conv2.weight[c].zero_()
            m.layer1[0].bn2.weight[c].zero_()
            m.layer1[0].bn2.bias[c].zero_()
        return apply
    expected = torch.tensor([reference_loss_change(model, data, zero(c)) for c in (0, 17)])
    assert torch.allclose(dL[[0, 17]], expected, rtol=1e-4, atol=1e-6)


def test_masks_are_respected(lenet, test_set):
    data = test_set.subset(200, seed=3)
    model = copy.deepcopy(lenet)
    mask = torch.ones_like(model.fc2.weight)
    mask[:, ::2] = 0  # fc2 ignores the even neurons of fc1
    torch_prune.custom_from_mask(model.fc2, "weight", mask)
    before = snapshot(model)
    dL = measured_loss_change(model, "fc1", data)
    assert_untouched(model, before, training=False, n_hooks=1)  # torch's masking pre-hook, nothing else
    assert (dL[::2] == 0).all()  # removing a neuron nobody reads changes nothing, exactly
    torch_prune.remove(model.fc2, "weight")  # a plain copy with the masked weights, for the reference
    expected = reference_loss_change(model, data, lambda m: (m.fc1.weight[7].zero_(), m.fc1.bias[7].zero_()))
    assert dL[7] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_model_unchanged_and_every_mode_restored(vgg, test_set):
    model = copy.deepcopy(vgg).train()
    model.bn1.eval()  # a mixed state, e.g. frozen BatchNorm statistics, must come back as it was
    before = snapshot(model)
    data = test_set.subset(32, seed=4)
    collect_activations(model, data.normalized()[:4], ["conv1", "fc"])
    measured_loss_change(model, "conv6", data)
    layer_loss_change(model, data)
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not model.bn1.training and all(m.training for m in model.modules() if m is not model.bn1)
    assert hooks(model) == 0


# ---------------------------------------------------------------- removing whole layers

def test_layer_loss_change_by_hand():
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(2, 2), relu1=nn.ReLU(), fc2=nn.Linear(2, 2)))
    with torch.no_grad():
        model.fc1.weight.copy_(torch.eye(2))
        model.fc2.weight.copy_(2 * torch.eye(2))
        model.fc1.bias.zero_()
        model.fc2.bias.zero_()
    x = X.tolist()
    L = mean_ce([(2 * max(a, 0), 2 * max(b, 0)) for a, b in x])   # logits = 2 relu(x)
    dL = layer_loss_change(model, (X, Y))
    assert list(dL) == ["fc1", "fc2"]
    assert dL["fc1"] == pytest.approx(mean_ce([(2 * a, 2 * b) for a, b in x]) - L, abs=1e-6)   # fc1 + relu1 gone
    assert dL["fc2"] == pytest.approx(mean_ce([(max(a, 0), max(b, 0)) for a, b in x]) - L, abs=1e-6)


def test_layer_loss_change_skips_shape_changing_layers(vgg, lenet, test_set):
    data = test_set.subset(64, seed=5)
    assert layer_loss_change(lenet, data) == {}  # 784 -> 300 -> 100 -> 10: no layer keeps its shape
    dL = layer_loss_change(vgg, data)
    assert list(dL) == ["conv2", "conv4", "conv6"]
    removed = copy.deepcopy(vgg)
    removed.conv4, removed.bn4, removed.relu4 = nn.Identity(), nn.Identity(), nn.Identity()
    expected = pl.evaluate(removed, data).loss - pl.evaluate(vgg, data).loss
    assert dL["conv4"] == pytest.approx(expected, rel=1e-4, abs=1e-6)


# ---------------------------------------------------------------- bad input leaves the model untouched

def test_bad_input_gives_clear_errors_and_leaves_the_model_untouched(lenet, test_set):
    model = copy.deepcopy(lenet).train()
    before = snapshot(model)
    data = test_set.subset(16)
    with pytest.raises(ValueError, match=r"no prunable layer 'fc4'.*Did you mean.*fc1, fc2, fc3"):
        measured_loss_change(model, "fc4", data)
    with pytest.raises(ValueError, match="relu1.*fc1, fc2, fc3"):
        collect_activations(model, data.normalized(), ["fc1", "relu1"])
    with pytest.raises(TypeError, match=r"list of layer names.*\['fc1'\]"):
        collect_activations(model, data.normalized(), "fc1")
    empty = pl.ImageSet(torch.zeros(0, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="The loss change got an ImageSet with no images"):
        measured_loss_change(model, "fc1", empty)
    with pytest.raises(ValueError, match="no images"):
        layer_loss_change(model, empty)
    with pytest.raises(ValueError, match=r"cannot take a batch of shape \[4, 3, 32, 32\]"):
        collect_activations(model, torch.randn(4, 3, 32, 32), ["fc1"])
    wrong_size = pl.ImageSet(torch.zeros(4, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="cannot take a batch"):
        measured_loss_change(model, "fc2", wrong_size)
    with pytest.raises(ValueError, match="float batch"):
        collect_activations(model, data.images, ["fc1"])
    with pytest.raises(ValueError, match="n_images"):
        measured_loss_change(model, "fc1", data, n_images=0)
    with pytest.raises(TypeError, match=r"images with labels: an ImageSet.*a pair \(x, y\) of tensors.*"
                                        r"got a torch\.Tensor of shape \[16, 1, 28, 28\]"):
        measured_loss_change(model, "fc1", data.normalized())
    with pytest.raises(TypeError, match=r"got a tuple of \(torch\.Tensor, numpy\.ndarray, numpy\.ndarray\)"):
        layer_loss_change(model, (data.normalized(), data.labels.numpy(), data.labels.numpy()))
    assert layer_loss_change(model, (data.normalized(), data.labels.numpy())) == {}   # a pair is fine; LeNet: {}
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        apoz(torch.ones(5))
    assert_untouched(model, before, training=True)
