"""Low-rank decomposition against known answers: exact recovery of a rank-2 matrix, the error identity
‖W − A B‖_F / ‖W‖_F = sqrt(Σ_{i>r} σ_i²) / ‖W‖_F, parameter counts r (m + n) + m, the same outputs at full rank
for Linear and Conv2d, masked layers, and bad inputs that leave the model untouched."""

import math
from itertools import pairwise

import pytest
import torch
from conftest import same, snapshot
from torch import nn

import prunelab as pl
from prunelab import lowrank as LR


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def lenet():
    return pl.load_pretrained("lenet300")


# ------------------------------------------------------------------------------------------------ the formulas

def test_rank_two_matrix_is_recovered_exactly_at_rank_two():
    a, b = torch.randn(6, 2, generator=gen(0)), torch.randn(2, 5, generator=gen(1))
    W = a @ b
    A, B = LR.truncated_svd(W, 2)
    assert A.shape == (6, 2) and B.shape == (2, 5) and A.dtype == W.dtype
    assert torch.allclose(A @ B, W, atol=1e-5)
    assert LR.lowrank_error(W, 2) < 1e-6 and LR.lowrank_error(W, 1) > 0.01
    assert LR.rank_for_energy(W, 0.999999) == 2


def test_hand_example():
    W = torch.tensor([[3.0, 0.0], [0.0, 4.0]])          # σ = 4, 3; ‖W‖_F = 5
    A, B = LR.truncated_svd(W, 1)
    assert torch.allclose(A @ B, torch.tensor([[0.0, 0.0], [0.0, 4.0]]), atol=1e-6)
    assert LR.lowrank_error(W, 1) == pytest.approx(3 / 5)
    assert LR.singular_values(W).tolist() == pytest.approx([4.0, 3.0])
    assert LR.rank_for_energy(W, 0.64) == 1 and LR.rank_for_energy(W, 0.65) == 2 and LR.rank_for_energy(W, 1.0) == 2
    assert LR.rank_for_energy(torch.diag(torch.tensor([3.0, 4.0, 0.0])), 1.0) == 2


def test_factors_are_balanced():
    W = torch.randn(7, 9, generator=gen(2))
    A, B = LR.truncated_svd(W, 4)
    sigma = LR.singular_values(W)[:4].float()
    assert torch.allclose(A.T @ A, torch.diag(sigma), atol=1e-4)    # A = U_r Σ_r^{1/2}: AᵀA = Σ_r
    assert torch.allclose(B @ B.T, torch.diag(sigma), atol=1e-4)    # B = Σ_r^{1/2} V_rᵀ: BBᵀ = Σ_r


@pytest.mark.parametrize("shape", [(12, 30), (30, 12), (8, 3, 3, 3)])
def test_error_identity_and_monotone_decrease(shape):
    W = torch.randn(*shape, generator=gen(3))
    sigma = LR.singular_values(W)
    errors = [LR.lowrank_error(W, r) for r in range(1, sigma.numel() + 1)]
    for r, e in enumerate(errors, start=1):
        assert e == pytest.approx(math.sqrt(float(sigma[r:].square().sum())) / float(W.double().norm()), abs=1e-9)
    assert all(e1 > e2 for e1, e2 in pairwise(errors)) and errors[-1] < 1e-12


def test_zero_matrix():
    assert LR.lowrank_error(torch.zeros(3, 4), 2) == 0.0 and LR.rank_for_energy(torch.zeros(3, 4), 0.9) == 1


def test_parameter_counts():
    assert LR.break_even_rank(300, 784) == 216
    assert LR.factorized_parameters(300, 784, 216) < 300 * 784 + 300 <= LR.factorized_parameters(300, 784, 217)
    for bias in (True, False):
        for r in (1, 5, 20):
            low = LR.factorize_linear(nn.Linear(40, 30, bias=bias), r)
            assert pl.count_parameters(low) == LR.factorized_parameters(30, 40, r, bias=bias) == r * 70 + 30 * bias
    conv = LR.factorize_conv2d(nn.Conv2d(4, 16, 3), 5)           # [16, 36]: 5 · (16 + 36) + 16
    assert pl.count_parameters(conv) == LR.factorized_parameters(16, 36, 5) == 276


# ------------------------------------------------------------------------------------------------ the layers

@pytest.mark.parametrize("bias", [True, False])
def test_linear_full_rank_gives_the_same_outputs(bias):
    torch.manual_seed(0)
    layer, x = nn.Linear(20, 7, bias=bias), torch.randn(5, 20, generator=gen(4))
    low = LR.factorize_linear(layer, 7)
    assert isinstance(low, LR.LowRank) and low.rank == 7
    assert low.B.weight.shape == (7, 20) and low.B.bias is None and low.A.weight.shape == (7, 7)
    assert (low.A.bias is not None) == bias
    assert torch.allclose(low(x), layer(x), atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"stride": 2, "padding": 1}, {"dilation": 2, "padding": 2},
                                    {"padding": 1, "padding_mode": "circular"}, {"bias": False}])
def test_conv2d_full_rank_gives_the_same_outputs(kwargs):
    torch.manual_seed(0)
    layer, x = nn.Conv2d(3, 8, 3, **kwargs), torch.randn(2, 3, 11, 11, generator=gen(5))
    low = LR.factorize(layer, 8)                                # [8, 27]: full rank 8
    assert low.B.kernel_size == (3, 3) and low.B.stride == layer.stride and low.A.kernel_size == (1, 1)
    assert low(x).shape == layer(x).shape
    assert torch.allclose(low(x), layer(x), atol=1e-5)


def test_conv2d_output_error_decreases_with_rank():
    torch.manual_seed(0)
    layer, x = nn.Conv2d(2, 16, 3, padding=1), torch.randn(4, 2, 9, 9, generator=gen(6))
    y = layer(x).detach()
    errors = [float((LR.factorize(layer, r)(x) - y).detach().norm()) for r in range(1, 17)]   # [16, 18]: up to 16
    assert all(e1 > e2 for e1, e2 in pairwise(errors)) and errors[-1] < 1e-4 * float(y.norm())


def test_grouped_conv_and_other_layers_are_refused():
    with pytest.raises(ValueError, match="groups=2"):
        LR.factorize(nn.Conv2d(4, 8, 3, groups=2), 2)
    with pytest.raises(TypeError, match="Conv1d"):
        LR.factorize(nn.Conv1d(4, 8, 3), 2)
    with pytest.raises(TypeError, match="factorize_linear takes an nn.Linear"):
        LR.factorize_linear(nn.Conv2d(4, 8, 3), 2)


@pytest.mark.parametrize("r", [0, -1, 8, 2.0, True, "3", None])
def test_bad_rank(r):
    layer = nn.Linear(7, 5)
    before = snapshot(layer)
    with pytest.raises(ValueError, match=r"rank must be an integer from 1 to min\(m, n\) = 5"):
        LR.factorize(layer, r)
    assert same(before, snapshot(layer))


# ------------------------------------------------------------------------------------------------ whole models

def test_decompose_returns_a_new_model_and_leaves_the_original(lenet, test_set):
    before = snapshot(lenet)
    low = LR.decompose(lenet, {"fc1": 300})                     # fc1 [300, 784]: full rank
    assert same(before, snapshot(lenet)) and isinstance(lenet.fc1, nn.Linear)
    assert isinstance(low.fc1, LR.LowRank) and low.fc2 is not lenet.fc2 and not low.fc1.training
    x, _ = next(test_set.batches(256))
    assert torch.allclose(low(x), lenet(x), atol=1e-4)
    small = LR.decompose(lenet, {"fc1": 20})
    assert pl.count_parameters(small) == pl.count_parameters(lenet) - 300 * 784 + 20 * (300 + 784)
    assert sorted(pl.masks.prunable_layers(small)) == ["fc1.A", "fc1.B", "fc2", "fc3"]


def test_one_rank_for_every_layer(lenet):
    low = LR.decompose(lenet, 10)
    assert [low.get_submodule(n).rank for n in ("fc1", "fc2", "fc3")] == [10, 10, 10]
    assert LR.decompose(lenet, 50, layers=["fc2"]).fc2.rank == 50
    before = snapshot(lenet)
    with pytest.raises(ValueError, match=r"Layer 'fc3': rank must be an integer from 1 to min\(m, n\) = 10"):
        LR.decompose(lenet, 20)
    assert same(before, snapshot(lenet))


def test_ranks_for_energy(lenet):
    ranks = LR.ranks_for_energy(lenet, 0.9)
    assert list(ranks) == ["fc1", "fc2", "fc3"]
    for name, r in ranks.items():
        W = lenet.get_submodule(name).weight
        assert LR.lowrank_error(W, r) <= math.sqrt(0.1) + 1e-9                   # energy 0.9: error <= √0.1
        assert r == 1 or LR.lowrank_error(W, r - 1) > math.sqrt(0.1)               # and r is the smallest such


def test_masked_layer_is_factorised_from_its_effective_weights(lenet, test_set):
    pruned = pl.masks.copy_model(lenet)
    pl.prune(pruned, 0.8, layers=["fc1", "fc2"])
    before = snapshot(pruned)
    low = LR.decompose(pruned, {"fc1": 300})
    assert same(before, snapshot(pruned))
    assert not hasattr(low.fc1.A, "weight_mask") and hasattr(low.fc2, "weight_mask")     # fc1 now dense
    x, _ = next(test_set.batches(256))
    assert torch.allclose(low(x), pruned(x), atol=1e-4)
    W = pruned.fc1.weight_orig * pruned.fc1.weight_mask
    assert torch.allclose(low.fc1.A.weight @ low.fc1.B.weight, W, atol=1e-5)           # zeros back at full rank
    W20 = low_rank_product(LR.decompose(pruned, {"fc1": 20}).fc1)
    assert (W20[W == 0] != 0).float().mean() > 0.9                                     # but not at rank 20
    assert W20[:, (W == 0).all(0)].abs().max() < 1e-12      # except inputs pruned whole: ~0 (no σ > 0 sees them)


def low_rank_product(module):
    return (module.A.weight @ module.B.weight).detach()


@pytest.mark.parametrize("ranks, error, match", [
    ({"fc4": 5}, ValueError, "Unknown layer 'fc4'. Did you mean 'fc3'"),
    ({"relu1": 5}, TypeError, "'relu1' is a ReLU"),
    ({"fc1": 0}, ValueError, "Layer 'fc1': rank must be"),
    ({"fc1": 301}, ValueError, r"min\(m, n\) = 300"),
    ({"fc1": 2.5}, ValueError, "rank must be an integer"),
    ({}, ValueError, "ranks is empty"),
])
def test_decompose_bad_input_leaves_the_model_untouched(lenet, ranks, error, match):
    before = snapshot(lenet)
    with pytest.raises(error, match=match):
        LR.decompose(lenet, ranks)
    assert same(before, snapshot(lenet))


def test_decompose_refuses_ranks_and_layers_together(lenet):
    with pytest.raises(ValueError, match="not both"):
        LR.decompose(lenet, {"fc1": 5}, layers=["fc1"])


def test_decompose_conv_model_and_fine_tune(train_set):
    model = pl.build_model("lenet5", seed=0)
    before = snapshot(model)
    low = LR.decompose(model, {"conv2": 6, "fc1": 16})
    assert low.conv2.B.out_channels == 6 and low(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    low_before = snapshot(low)
    pl.train(low, train_set.subset(256, seed=0), epochs=1, device="cpu", progress=False)
    assert not same(low_before, snapshot(low)) and same(before, snapshot(model))
