"""Masks never lose data, never compound, keep pruned weights dead, and speak torch.nn.utils.prune's format."""

import io
import random

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunelab as pl
from conftest import snapshot, same
from prunelab import masks as M
from prunelab.pruning import prune




@pytest.fixture
def lenet():
    return pl.load_pretrained("lenet300")


def test_setting_masks_replaces_never_compounds(lenet):
    prune(lenet, 0.9)
    high = M.get_masks(lenet)
    prune(lenet, 0.3)
    fresh = pl.load_pretrained("lenet300")
    prune(fresh, 0.3)
    assert all(torch.equal(M.get_masks(lenet)[k], M.get_masks(fresh)[k]) for k in high)
    assert M.mask_sparsity(M.get_masks(lenet)) == pytest.approx(0.3, abs=1e-4)


def test_sparsity_zero_and_reset_restore_bit_identical_weights_and_accuracy(lenet, test_set):
    before, accuracy = snapshot(lenet), pl.evaluate(lenet, test_set).correct
    prune(lenet, 0.8)
    prune(lenet, 0.0)
    assert all(torch.equal(lenet.get_submodule(n).weight, before[f"{n}.weight"]) for n in ("fc1", "fc2", "fc3"))
    assert pl.evaluate(lenet, test_set).correct == accuracy
    M.reset(lenet)
    assert same(snapshot(lenet), before, ordered=True) and not M.masked_parameters(lenet)


def test_many_random_moves_then_reset_give_back_the_exact_model():
    model = pl.load_pretrained("vgg_small")
    before = snapshot(model)
    rng = random.Random(0)
    refused = 0
    for _ in range(25):
        masks = M.get_masks(model)
        try:
            prune(model, rng.choice([0.0, 0.1, 0.5, 0.77, 0.95]),
                  granularity=rng.choice(["weight", "channel", "n:m"]), scope=rng.choice(["layer", "global"]))
        except ValueError:  # e.g. global channel pruning that would empty a layer: refused, nothing changed
            refused += 1
            assert same(M.get_masks(model), masks, ordered=True)
    assert refused < 25
    M.reset(model)
    assert same(snapshot(model), before, ordered=True)


def test_masked_weights_stay_zero_through_fine_tuning_with_momentum_and_decay(lenet, train_set):
    optimizer = torch.optim.SGD(lenet.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    pl.train(lenet, train_set.subset(512), epochs=1, batch_size=64, optimizer=optimizer, progress=False)  # momentum built up
    prune(lenet, 0.9)
    kept_before = lenet.fc1.weight.detach().clone()
    pl.train(lenet, train_set.subset(2048), epochs=2, batch_size=64, optimizer=optimizer, device="cpu",
             progress=False)
    lenet(torch.zeros(1, 1, 28, 28))  # the effective weight is refreshed by the forward pre-hook
    mask = M.get_masks(lenet)["fc1.weight"]
    assert (lenet.fc1.weight[~mask] == 0).all()
    assert not torch.equal(lenet.fc1.weight[mask], kept_before[mask])  # the kept weights did train


def test_state_dict_uses_torch_names_and_round_trips_exactly(lenet):
    prune(lenet, 0.7)
    state = lenet.state_dict()
    assert {"fc1.weight_orig", "fc1.weight_mask"} <= set(state) and "fc1.weight" not in state
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = M.load_masked_state_dict(pl.build_model("lenet300"), torch.load(buffer, weights_only=True))
    assert same(snapshot(loaded), snapshot(lenet), ordered=True)
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(loaded(x), lenet(x))


def test_a_torch_user_loads_it_with_torch_prune_alone(lenet):
    prune(lenet, 0.7)
    theirs = pl.build_model("lenet300")
    for name in ("fc1", "fc2", "fc3"):
        torch_prune.identity(theirs.get_submodule(name), "weight")
    theirs.load_state_dict(lenet.state_dict())
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(theirs(x), lenet(x))


@pytest.mark.parametrize("amount", [0.2, 0.5, 0.9])
def test_layerwise_magnitude_masks_equal_torch_l1_unstructured(lenet, amount):
    prune(lenet, amount)
    for name in ("fc1", "fc2", "fc3"):
        ref = pl.load_pretrained("lenet300").get_submodule(name)
        torch_prune.l1_unstructured(ref, "weight", amount=amount)
        assert torch.equal(ref.weight_mask.bool(), M.get_masks(lenet)[f"{name}.weight"])


def test_global_magnitude_masks_equal_torch_global_unstructured(lenet):
    prune(lenet, 0.8, scope="global")
    ref = pl.load_pretrained("lenet300")
    torch_prune.global_unstructured([(ref.get_submodule(n), "weight") for n in ("fc1", "fc2", "fc3")],
                                    pruning_method=torch_prune.L1Unstructured, amount=0.8)
    for name in ("fc1", "fc2", "fc3"):
        assert torch.equal(ref.get_submodule(name).weight_mask.bool(), M.get_masks(lenet)[f"{name}.weight"])
    per_layer = [1 - float(m.float().mean()) for m in M.get_masks(lenet).values()]
    assert max(per_layer) - min(per_layer) > 0.1  # global scope lets layers differ


def test_commit_makes_it_permanent_like_torch_prune_remove(lenet):
    prune(lenet, 0.5)
    expected = lenet.fc1.weight_orig * lenet.fc1.weight_mask
    M.commit(lenet)
    assert isinstance(lenet.fc1.weight, nn.Parameter) and torch.equal(lenet.fc1.weight, expected)
    assert not M.masked_parameters(lenet) and "fc1.weight_orig" not in lenet.state_dict()


def test_bad_masks_are_refused_before_any_is_applied(lenet):
    before = snapshot(lenet)
    good = torch.ones(300, 784, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"mask for 'fc2.weight' must have the parameter's shape \[100, 300\]"):
        M.set_masks(lenet, {"fc1.weight": good, "fc2.weight": torch.ones(3, 3)})
    with pytest.raises(ValueError, match="no parameter 'fc9.weight'.*Did you mean 'fc3.weight'"):
        M.set_masks(lenet, {"fc9.weight": good})
    with pytest.raises(ValueError, match="only 0 and 1"):
        M.set_masks(lenet, {"fc1.weight": good.float() * 0.5})
    assert same(snapshot(lenet), before, ordered=True)


def test_resetting_a_parameter_without_a_mask_names_the_masked_ones_and_changes_nothing(lenet):
    before = snapshot(lenet)
    with pytest.raises(ValueError, match=r"Cannot reset 'fc1.weight': no mask.*No parameter of LeNet300 has a mask.*"
                                         r"added by prunelab.prune"):
        M.reset(lenet, ["fc1.weight"])
    assert same(snapshot(lenet), before, ordered=True)
    prune(lenet, 0.5, layers=["fc2"])
    before = snapshot(lenet)
    with pytest.raises(ValueError, match=r"Cannot reset 'fc1.weight', 'fc3.bias'.*masked parameters are fc2.weight\."):
        M.reset(lenet, ["fc2.weight", "fc1.weight", "fc3.bias"])  # fc2.weight is not reset either
    with pytest.raises(ValueError, match="no parameter 'fc9.weight'"):
        M.reset(lenet, ["fc2.weight", "fc9.weight"])
    with pytest.raises(TypeError, match=r"list of parameter names, e.g. \['fc2.weight'\]"):
        M.reset(lenet, "fc2.weight")
    assert same(snapshot(lenet), before, ordered=True) and M.masked_parameters(lenet) == ["fc2.weight"]


def test_a_masked_model_can_be_copied_after_a_forward_pass_with_gradients(lenet):
    prune(lenet, 0.5)
    lenet(torch.randn(2, 1, 28, 28)).sum().backward()  # the effective weights are now non-leaf tensors
    twin = M.copy_model(lenet)
    assert same(snapshot(twin), snapshot(lenet), ordered=True)
    M.reset(twin)
    assert M.masked_parameters(lenet) and not M.masked_parameters(twin)


# ------------------------------------------------------------------------------------------------ effective tensors

def test_effective_is_orig_times_mask_detached_and_the_plain_tensor_when_unmasked(lenet):
    assert torch.equal(M.effective(lenet.fc1), lenet.fc1.weight) and M.effective(lenet.fc1, "bias") is not None
    prune(lenet, 0.8)
    W = M.effective(lenet.fc1)
    assert torch.equal(W, lenet.fc1.weight_orig * lenet.fc1.weight_mask) and not W.requires_grad
    assert M.effective(nn.Linear(3, 2, bias=False), "bias") is None


def test_set_effective_writes_the_original_keeps_the_mask_and_refreshes_now(lenet):
    prune(lenet, 0.8)
    mask = lenet.fc1.weight_mask.clone()
    M.set_effective(lenet.fc1, torch.ones_like(mask))
    assert torch.equal(lenet.fc1.weight_orig, torch.ones_like(mask)) and torch.equal(lenet.fc1.weight_mask, mask)
    assert torch.equal(lenet.fc1.weight, mask)                           # refreshed before any forward
    plain = nn.Linear(3, 2)
    M.set_effective(plain, torch.zeros(2, 3))                            # an unmasked layer: written in place
    assert not plain.weight.any() and isinstance(plain.weight, nn.Parameter)


def test_effective_state_dict_folds_masks_in_and_loads_into_an_unmasked_model(lenet):
    prune(lenet, 0.9)
    for state in (M.effective_state_dict(lenet), M.effective_state_dict(lenet.state_dict())):  # model or saved dict
        assert list(state) and not any(k.endswith(("_orig", "_mask")) for k in state)
        assert torch.equal(state["fc1.weight"], lenet.fc1.weight_orig * lenet.fc1.weight_mask)
        assert not state["fc1.weight"].signbit().logical_and(state["fc1.weight"] == 0).any()  # zeros are +0.0
        fresh = pl.build_model("lenet300", seed=1)
        fresh.load_state_dict(state)
        x = torch.randn(5, 1, 28, 28)
        assert torch.equal(fresh(x), lenet(x))


def test_load_effective_state_dict_checks_masks_keys_and_shapes_before_copying(lenet):
    prune(lenet, 0.9)
    state = M.effective_state_dict(lenet)
    fresh = pl.build_model("lenet300", seed=1)
    assert M.load_effective_state_dict(fresh, state) is fresh and torch.equal(fresh.fc1.weight, lenet.fc1.weight)
    for target, message in [(lenet, "unmasked"), (pl.build_model("lenet5"), "does not fit this LeNet5")]:
        kept = snapshot(target)
        with pytest.raises(ValueError, match=message):
            M.load_effective_state_dict(target, state, what="load_quantized")
        assert same(kept, snapshot(target))


def test_a_pruned_transformer_trains_and_its_masked_entries_stay_zero():
    model = pl.build_model("vit_tiny")       # MultiheadAttention reads out_proj.weight without calling out_proj
    train_set = pl.load_fashion_mnist("train").subset(256)
    test_set = pl.load_fashion_mnist("test").subset(128)
    pl.prune(model, 0.5)
    M.set_masks(model, {"encoder.layers.0.self_attn.in_proj_weight": torch.rand(192, 64) > 0.5})
    assert "encoder.layers.1.self_attn.out_proj.weight" in M.get_masks(model)
    pl.train(model, train_set, epochs=2, batch_size=64, progress=False, device="cpu")   # no stale weight
    for name, mask in M.get_masks(model).items():
        module, tensor_name = name.rsplit(".", 1)
        assert (M.effective(model.get_submodule(module), tensor_name)[~mask] == 0).all(), name
    committed = M.commit(M.copy_model(model))
    # evaluate runs without autograd: the encoder layers' fast path reads the weights directly
    assert pl.evaluate(model, test_set) == pl.evaluate(committed, test_set)
