"""Schedules, weight resets and sparsity regularisers."""

import pytest
import torch

import prunelab as pl
from prunelab import masks as M
from prunelab.pruning import prune
from prunelab.regularization import group_lasso_penalty, l1_penalty, l2_penalty, with_penalty
from prunelab.resets import random_reinit, rewind, snapshot_weights
from prunelab.schedules import cubic_sparsity, gradual_pruning, iterative_pruning, iterative_sparsities


def test_cubic_schedule_is_zhu_and_gupta():
    s = [cubic_sparsity(t, 0.0, 0.9, t0=10, n=5, dt=4) for t in range(0, 40)]
    assert s[0] == s[10] == 0.0 and s[30] == s[39] == pytest.approx(0.9)
    assert s[20] == pytest.approx(0.9 + (0.0 - 0.9) * (1 - 10 / 20) ** 3)
    steps = [b - a for a, b in zip(s[10:31], s[11:31])]
    assert all(x >= 0 for x in steps) and steps[0] > steps[-1]  # fast first, then slowly


def test_iterative_sparsities_remove_the_same_fraction_of_what_is_left():
    s = iterative_sparsities(0.875, 3)
    assert s == pytest.approx([0.5, 0.75, 0.875])
    with pytest.raises(ValueError, match="s_final must be a number in"):
        iterative_sparsities(1.0, 3)


def test_iterative_pruning_masks_only_shrink_and_fine_tuning_recovers(train_set, test_set):
    model = pl.load_pretrained("lenet300")
    history = iterative_pruning(model, train_set.subset(6000), test_set, [0.7, 0.9], epochs_per_round=[1, 2],
                                lr=0.01, scope="global")
    masks = M.get_masks(model)
    assert [round(h.sparsity, 3) for h in history] == [0.7, 0.9]
    assert history[-1].accuracy_tuned > history[-1].accuracy_pruned + 0.01  # fine-tuning recovers
    # a second, lower target keeps what is pruned pruned
    prune(model, 0.5, keep_pruned=True, scope="global")
    assert all(not (M.get_masks(model)[k] & ~masks[k]).any() for k in masks)
    assert M.mask_sparsity(M.get_masks(model)) == pytest.approx(0.9, abs=1e-3)


def test_gradual_pruning_follows_the_cubic_and_reaches_the_target(train_set):
    model = pl.load_pretrained("lenet300")
    data = train_set.subset(2560)
    logs, trace = gradual_pruning(model, data, 0.8, epochs=4, prune_every=5, lr=0.005, batch_size=128)
    targets = [s for _, s in trace]
    assert targets == sorted(targets) and targets[-1] == pytest.approx(0.8)
    assert M.mask_sparsity(M.get_masks(model)) == pytest.approx(0.8, abs=1e-3)
    assert len(logs) == 4


def test_rewind_restores_the_initial_values_under_the_same_mask():
    theta_0 = snapshot_weights(pl.build_model("lenet300", seed=0))
    model = pl.load_pretrained("lenet300")
    masks = prune(model, 0.8)
    rewind(model, theta_0)
    assert torch.equal(model.fc1.weight_orig, theta_0["fc1.weight"])
    assert torch.equal(M.get_masks(model)["fc1.weight"], masks["fc1.weight"])
    assert torch.equal(model.fc1.weight, theta_0["fc1.weight"] * masks["fc1.weight"])
    random_reinit(model, pl.build_model("lenet300", seed=1))
    assert torch.equal(model.fc2.weight_orig, pl.build_model("lenet300", seed=1).fc2.weight)
    with pytest.raises(ValueError, match="do not fit the model"):
        rewind(model, snapshot_weights(pl.build_model("lenet5")))


def test_penalties_on_a_hand_made_model():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, -4.0], [0.0, 1.0]]))
    assert float(l1_penalty(model).detach()) == 8.0
    assert float(l2_penalty(model).detach()) == 26.0
    assert float(group_lasso_penalty(model).detach()) == 6.0  # ‖(3, −4)‖ + ‖(0, 1)‖
    with pytest.raises(ValueError, match="lam"):
        with_penalty(l1_penalty, model, -1.0)


def test_l1_regularisation_makes_more_weights_near_zero(train_set):
    data = train_set.subset(4000)
    small = {}
    for lam in (0.0, 1e-4):
        model = pl.build_model("lenet300")
        pl.train(model, data, epochs=2, lr=0.05, loss_fn=with_penalty(l1_penalty, model, lam), progress=False)
        small[lam] = float((model.fc1.weight.abs() < 1e-3).float().mean())
    assert small[1e-4] > 2 * small[0.0]


def test_inherited_values_are_the_mean_of_kept_neighbours():
    from prunelab.resets import inherited_values

    W = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    keep = torch.tensor([[True, True, True], [True, False, True], [True, True, False]])
    got = inherited_values(W, keep)
    assert got[1, 1] == (2 + 4 + 6 + 8) / 4           # all four neighbours kept
    assert got[2, 2] == (6 + 8) / 2                     # only two neighbours exist, both kept
    assert torch.equal(got[keep], W[keep])
    lonely = inherited_values(torch.tensor([[5.0, 7.0]]), torch.tensor([[False, False]]))
    assert torch.equal(lonely, torch.zeros(1, 2))
    assert torch.equal(inherited_values(torch.tensor([1.0, 0.0, 3.0]), torch.tensor([True, False, True])),
                       torch.tensor([1.0, 2.0, 3.0]))


def test_inherit_fills_pruned_weights_and_removes_the_masks():
    from prunelab.resets import inherit, inherited_values

    model = pl.load_pretrained("lenet300")
    pl.prune(model, 0.7)
    W, keep = model.fc1.weight_orig.detach().clone(), model.fc1.weight_mask.bool()
    inherit(model)
    assert pl.masks.masked_parameters(model) == []
    assert torch.equal(model.fc1.weight[keep], W[keep])
    assert torch.equal(model.fc1.weight.detach(), inherited_values(W, keep))
    assert (model.fc1.weight[~keep] != W[~keep]).any()
    with pytest.raises(ValueError, match="no masks"):
        inherit(model)
