"""One-shot pruning from calibration data (Wanda, SparseGPT): statistics, masks and updates vs hand computations."""

import pytest
import torch
from torch import nn

import prunelab as pl
from conftest import same, snapshot
from prunelab import masks as M
from prunelab import one_shot
from prunelab.one_shot import input_statistics, output_error, sparsegpt, sparsegpt_layer


def mlp(seed=0, sizes=(8, 12, 4)):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(sizes[0], sizes[1]), nn.ReLU(), nn.Linear(sizes[1], sizes[2]))


def correlated_inputs(n=256, features=16, seed=0):
    """x [n, features]: features mixed from fewer sources, with different scales, so X Xᵀ is far from diagonal."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, features // 2, generator=g)
    mixing = torch.randn(features // 2, features, generator=g)
    scales = torch.linspace(0.2, 3.0, features)
    return (z @ mixing + 0.1 * torch.randn(n, features, generator=g)) * scales


def gram(X):
    X = X.reshape(-1, X.shape[-1]).double()
    return X.T @ X


# ---------------------------------------------------------------- statistics

def test_statistics_of_a_two_layer_mlp_equal_a_hand_computation():
    model = mlp().train()
    x = torch.randn(10, 8)
    before = snapshot(model)
    stats = input_statistics(model, x)
    hidden = torch.relu(model[0](x)).detach()                               # the inputs of the second Linear
    assert list(stats) == ["0", "2"]
    for name, X in (("0", x), ("2", hidden)):
        assert stats[name].n == 10
        assert torch.allclose(stats[name].gram, gram(X), rtol=1e-12, atol=1e-12)
        assert torch.allclose(stats[name].norm, X.double().norm(dim=0), rtol=1e-12)
    # images with labels work as well (float images are used as given), and the model is left as it was
    assert torch.equal(input_statistics(model, (x, torch.zeros(10, dtype=torch.long)))["2"].gram, stats["2"].gram)
    assert model.training and same(before, snapshot(model))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_statistics_of_vit_tiny_flatten_tokens_and_see_into_attention():
    vit = pl.build_model("vit_tiny").eval()
    x = torch.randn(3, 1, 28, 28)
    stats = input_statistics(vit, x)
    layer, attention = vit.encoder.layers[0], vit.encoder.layers[0].self_attn
    with torch.no_grad():                                                   # the first block by hand
        tokens = vit.patch(x).flatten(2).transpose(1, 2) + vit.position    # [B, T, E]
        B, T, E = tokens.shape
        H, d = attention.num_heads, E // attention.num_heads
        qkv = layer.norm1(tokens) @ attention.in_proj_weight.T + attention.in_proj_bias
        q, k, v = (z.view(B, T, H, d).transpose(1, 2) for z in qkv.chunk(3, dim=-1))   # [B, H, T, d]
        A = ((q @ k.transpose(-2, -1) / d ** 0.5).softmax(-1) @ v).transpose(1, 2).reshape(B, T, E)
        X1 = layer.norm2(tokens + attention.out_proj(A))                    # the input of linear1, [B, T, E]
    out_proj, linear1 = stats["encoder.layers.0.self_attn.out_proj"], stats["encoder.layers.0.linear1"]
    assert out_proj.n == linear1.n == B * T and stats["head"].n == B
    assert torch.allclose(out_proj.gram, gram(A), rtol=1e-4, atol=1e-4)
    assert torch.allclose(linear1.gram, gram(X1), rtol=1e-4, atol=1e-3)
    assert set(stats) == {name for name, m in vit.named_modules() if isinstance(m, nn.Linear)}


def test_a_linear_that_never_runs_is_an_error_that_names_it():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = nn.Linear(4, 3), nn.Linear(4, 3)

        def forward(self, x):
            return self.used(x)

    model, x = Unused(), torch.randn(5, 4)
    with pytest.raises(ValueError, match="'spare' never ran.*layers=\\['used'\\]"):
        input_statistics(model, x)
    with pytest.raises(ValueError, match="'spare' never ran"):
        pl.prune(model, 0.5, criterion="wanda", data=x)
    assert M.masked_parameters(model) == []
    assert list(input_statistics(model, x, ["used"])) == ["used"]


# ---------------------------------------------------------------- Wanda

def test_wanda_removes_the_lowest_weight_times_input_norm_in_every_row():
    model = nn.Sequential(nn.Linear(8, 6))
    x = torch.randn(32, 8) * torch.tensor([0.1, 5, 1, 0.5, 2, 0.01, 3, 1])
    masks = pl.prune(model, 0.4, criterion="wanda", data=x)
    S = M.original(model, "0.weight").detach().abs() * x.norm(dim=0)       # S_ij = |W_ij| · ‖X_j‖₂
    expected = torch.ones(6, 8, dtype=torch.bool)
    for i in range(6):
        expected[i, S[i].argsort()[:3]] = False                            # round(0.4 · 8) = 3 per row
    assert torch.equal(masks["0.weight"], expected)
    assert (~masks["0.weight"]).sum(1).tolist() == [3] * 6


def test_with_equal_input_norms_wanda_is_magnitude_per_row():
    model = nn.Sequential(nn.Linear(8, 6))
    x = torch.randint(0, 2, (16, 8)).float() * 2 - 1                       # ±1: every ‖X_j‖ = 4
    wanda = pl.prune(model, 0.5, criterion="wanda", data=x)["0.weight"]
    magnitude = pl.prune(model, 0.5, scope="row")["0.weight"]
    W = M.original(model, "0.weight").detach().abs()
    assert torch.equal(wanda, magnitude)
    assert torch.equal(wanda, W >= W.sort(1).values[:, 4:5])                 # the 4 largest |W_ij| of each row


def test_wanda_two_of_four_and_on_a_transformer():
    model = mlp(sizes=(16, 8, 4))
    x = correlated_inputs()
    masks = pl.prune(model, 0, granularity="n:m", n=2, m=4, criterion="wanda", data=x)
    for keep in masks.values():
        assert (keep.view(keep.shape[0], -1, 4).sum(2) == 2).all()         # exactly 2 of every 4 per row
    S = M.original(model, "0.weight").detach().abs() * x.norm(dim=0)
    assert torch.equal(masks["0.weight"], pl.pruning.nm_masks({"0": S}, 2, 4)["0"])
    # vit_tiny: every Linear, out_proj included, each row to exactly half; the patch convolution stays dense
    vit = pl.build_model("vit_tiny")
    masks = pl.prune(vit, 0.5, criterion="wanda", data=torch.randn(4, 1, 28, 28))
    assert set(masks) == {f"{name}.weight" for name, m in vit.named_modules() if isinstance(m, nn.Linear)}
    assert all(((~k).sum(1) == k.shape[1] // 2).all() for k in masks.values())


def test_wanda_scores_come_from_the_original_weights_and_errors_leave_the_model_alone():
    model, x = mlp(), torch.randn(20, 8)
    fresh = pl.prune(mlp(), 0.5, criterion="wanda", data=x)
    pl.prune(model, 0.9)
    assert all(torch.equal(fresh[k], v) for k, v in pl.prune(model, 0.5, criterion="wanda", data=x).items())
    M.reset(model)
    before = snapshot(model)
    with pytest.raises(ValueError, match="calibration data"):
        pl.prune(model, 0.5, criterion="wanda")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        pl.prune(model, 1.0, criterion="wanda", data=x)
    with pytest.raises(ValueError, match="floating-point"):
        pl.prune(model, 0.5, criterion="wanda", data=torch.zeros(4, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="one per unit"):
        pl.prune(model, 0.5, granularity="neuron", scope="row")
    assert same(before, snapshot(model)) and M.masked_parameters(model) == []


# ---------------------------------------------------------------- SparseGPT

def test_sparsegpt_at_sparsity_zero_changes_nothing():
    model, x = mlp(), correlated_inputs(features=8)
    pruned = sparsegpt(model, x, 0.0)
    for name in ("0", "2"):
        assert torch.equal(pruned.get_submodule(name).weight, model.get_submodule(name).weight)
    assert torch.equal(pruned(x), model(x))


def test_sparsegpt_reconstructs_the_outputs_better_than_magnitude_and_wanda():
    model, x = nn.Sequential(nn.Linear(16, 8)), correlated_inputs()
    before = snapshot(model)
    stats = input_statistics(model, x)["0"]
    W = model[0].weight.detach().clone()

    def error(pruned):
        return output_error(W, M.effective(pruned[0]), stats)              # ‖W X − Ŵ X‖_F

    magnitude, wanda = M.copy_model(model), M.copy_model(model)
    pl.prune(magnitude, 0.5)
    pl.prune(wanda, 0.5, criterion="wanda", data=x)
    ours = sparsegpt(model, x, 0.5)
    assert error(ours) < 0.8 * min(error(magnitude), error(wanda))
    assert error(ours) == pytest.approx(float((x @ W.T - x @ M.effective(ours[0]).T).norm()), rel=1e-4)
    assert same(before, snapshot(model), ordered=True) and M.masked_parameters(model) == []
    assert ((~M.get_masks(ours)["0.weight"]).sum(1) == 8).all()


def test_removing_one_weight_is_the_least_squares_optimum_of_the_others():
    """Optimal Brain Surgeon: with the first weight removed, the others move to the best fit of the outputs."""
    x = correlated_inputs(n=64, features=4)
    W = torch.tensor([[0.001, 1.0, -2.0, 0.7]])
    W_new, keep = sparsegpt_layer(W, gram(x), 0.25, damp=0)
    assert keep.tolist() == [[False, True, True, True]]
    best = torch.linalg.lstsq(x[:, 1:].double(), (x @ W.T).double()).solution.T    # argmin ‖W X − Ŵ X‖, ŵ₀ = 0
    assert torch.allclose((W_new * keep)[:, 1:].double(), best, rtol=1e-5, atol=1e-6)


def test_sparsegpt_reaches_exactly_the_asked_sparsity_per_row_and_n_of_m():
    model, x = mlp(sizes=(20, 12, 4)), correlated_inputs(features=20)
    pruned = sparsegpt(model, x, 0.3, blocksize=8)                         # blocks of 8, 8, 4 columns
    masks = M.get_masks(pruned)
    assert ((~masks["0.weight"]).sum(1) == 6).all() and ((~masks["2.weight"]).sum(1) == 4).all()
    two_four = M.get_masks(sparsegpt(model, x, 0.0, n=2, m=4, blocksize=8))
    for keep in two_four.values():
        assert (keep.view(keep.shape[0], -1, 4).sum(2) == 2).all()


def test_the_copy_holds_masks_over_the_updated_weights():
    model, x = mlp(), correlated_inputs(features=8)
    pruned = sparsegpt(model, x, 0.5)
    layer = pruned[0]
    keep = layer.weight_mask.bool()
    assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)
    assert not torch.equal(layer.weight_orig[keep], model[0].weight[keep])  # the kept weights moved
    assert torch.allclose(pruned(x), nn.functional.linear(torch.relu(pruned[0](x)), pruned[2].weight, pruned[2].bias))
    M.reset(pruned)
    assert torch.equal(pruned[0].weight, layer.weight)                      # the updated dense weights, not W
    # a masked model: SparseGPT starts from its original weights, as prune does
    pl.prune(model, 0.9)
    again = sparsegpt(model, x, 0.5)
    assert torch.equal(M.effective(again[2]), M.effective(sparsegpt(mlp(), x, 0.5)[2]))


def test_sparsegpt_refuses_bad_inputs_and_leaves_the_model_alone():
    model, x = mlp(), torch.randn(16, 8)
    before = snapshot(model)
    for sparsity in (1.0, -0.1, "0.5"):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            sparsegpt(model, x, sparsity)
    with pytest.raises(ValueError, match="calibration data"):
        sparsegpt(model, None, 0.5)
    with pytest.raises(ValueError, match="both n and m"):
        sparsegpt(model, x, 0.5, n=2)
    with pytest.raises(ValueError, match="multiple of M=4"):
        sparsegpt(model, x, 0.5, n=2, m=4, blocksize=6)
    with pytest.raises(ValueError, match="damp"):
        sparsegpt(model, x, 0.5, damp=-1)
    with pytest.raises(ValueError, match="'1' is a ReLU, not an nn.Linear"):
        sparsegpt(model, x, 0.5, layers=["1"])
    assert same(before, snapshot(model), ordered=True) and M.masked_parameters(model) == []
    convs = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match="has no nn.Linear"):
        sparsegpt(convs, torch.randn(2, 1, 5, 5), 0.5)
    with pytest.raises(ValueError, match="has no nn.Linear"):
        pl.prune(convs, 0.5, criterion="wanda", data=torch.randn(2, 1, 5, 5))
    assert M.masked_parameters(convs) == []


# ---------------------------------------------------------------- the machinery SparseGPT and GPTQ share

def test_inverse_hessian_cholesky_is_the_upper_factor_of_the_damped_inverse():
    G = gram(correlated_inputs(n=64, features=6))
    G[:, 2] = G[2, :] = 0                                                   # input 2 was always 0
    U, dead = one_shot.inverse_hessian_cholesky(G, damp=0.1)
    H = 2 * G
    H[2, 2] = 1
    H += 0.1 * H.diagonal().mean() * torch.eye(6, dtype=torch.float64)    # H = 2 X Xᵀ + λI
    assert dead.tolist() == [False, False, True, False, False, False]
    assert torch.equal(U, U.triu()) and torch.allclose(U.T @ U, torch.linalg.inv(H), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="damp must be a finite number >= 0"):
        one_shot.inverse_hessian_cholesky(G, damp=float("nan"))


def test_wanda_and_sparsegpt_calibrate_a_language_model_from_token_ids():
    torch.manual_seed(0)
    gpt = pl.models.TinyGPT(20, block_size=16, embed_dim=32, depth=1, heads=4).eval()
    ids = torch.randint(0, 20, (8, 16))
    stats = input_statistics(gpt, ids)
    assert stats["blocks.0.attn.qkv"].n == 8 * 16 and list(stats)[-1] == "head"
    pruned = sparsegpt(gpt, ids, 0.5)
    assert M.mask_sparsity(M.get_masks(pruned)) == pytest.approx(0.5)
    masks = pl.prune(gpt, 0.5, criterion="wanda", data=ids)
    assert all(((~k).sum(1) == k.shape[1] // 2).all() for k in masks.values())
    with pytest.raises(ValueError, match="int64 token ids"):
        sparsegpt(gpt, ids.int(), 0.5)
