"""GPTQ against round-to-nearest: smaller output error on correlated inputs, the same grids, exactly RTN when the
inputs are uncorrelated (H ∝ I), layer by layer from the quantized layers before, and clear errors."""

import pytest
import torch
from torch import nn

import prunelab as pl
from conftest import same, snapshot
from prunelab import masks as M
from prunelab.gptq import gptq, gptq_layer, rtn
from prunelab.one_shot import input_statistics, output_error
from prunelab.quantization import fake_quantize_groups
from test_one_shot import correlated_inputs, gram


def linear(seed=0, sizes=(32, 8)):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(*sizes))


def on_a_grid(values: torch.Tensor, bits: int) -> bool:
    """Whether ``values`` (one row of one group) are S · q for one S > 0 and integers |q| <= 2^(bits−1) − 1."""
    q_max = 2 ** (bits - 1) - 1
    top = float(values.abs().max())
    if top == 0:
        return True
    for k in range(1, q_max + 1):                                   # max |v| = S · k for some k
        q = values.double() / (top / k)
        if torch.allclose(q, q.round(), atol=1e-4) and q.abs().max() <= q_max + 1e-4:
            return True
    return False


@pytest.mark.parametrize("group_size", [None, 8])
@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_keeps_the_outputs_closer_than_round_to_nearest(bits, group_size):
    model, x = linear(), correlated_inputs(n=512, features=32)
    stats = input_statistics(model, x)["0"]
    W = model[0].weight.detach()
    ours = M.effective(gptq(model, x, bits, group_size=group_size)[0])
    nearest = M.effective(rtn(model, bits, group_size=group_size)[0])
    assert torch.equal(nearest, fake_quantize_groups(W, bits, group_size=group_size))
    assert output_error(W, ours, stats) < 0.9 * output_error(W, nearest, stats)     # ‖W X − Ŵ X‖_F


@pytest.mark.parametrize("bits, group_size", [(3, 4), (4, 8), (2, None)])
def test_every_row_of_every_group_lies_on_its_own_grid(bits, group_size):
    W = torch.randn(6, 16, generator=torch.Generator().manual_seed(bits))
    W_hat = gptq_layer(W, gram(correlated_inputs()), bits, group_size=group_size, blocksize=16)
    assert W_hat.shape == W.shape and W_hat.dtype == W.dtype
    for group in W_hat.split(group_size or 16, dim=1):
        for row in group:
            assert len(row.unique()) <= 2 ** bits and on_a_grid(row, bits)
    affine = gptq_layer(W, gram(correlated_inputs()), bits, group_size=group_size, scheme="affine", blocksize=16)
    assert all(len(row.unique()) <= 2 ** bits for group in affine.split(group_size or 16, dim=1) for row in group)


@pytest.mark.parametrize("scheme", ["symmetric", "affine"])
@pytest.mark.parametrize("group_size", [None, 4])
def test_with_uncorrelated_inputs_gptq_is_round_to_nearest_exactly(group_size, scheme):
    W = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    H = torch.eye(16, dtype=torch.float64) * 7                     # X Xᵀ ∝ I: U is diagonal, nothing moves
    for bits in (2, 3, 4, 8):
        assert torch.equal(gptq_layer(W, H, bits, group_size=group_size, scheme=scheme, blocksize=8),
                           fake_quantize_groups(W, bits, group_size=group_size, scheme=scheme))


def test_each_layer_is_quantized_from_the_inputs_of_the_quantized_layers_before_it():
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4)), correlated_inputs()
    before = snapshot(model)
    quantized = gptq(model, x, 3, group_size=4, blocksize=4)
    first = gptq_layer(model[0].weight, gram(x), 3, group_size=4, blocksize=4)
    assert torch.equal(quantized[0].weight, first)
    hidden = torch.relu(nn.functional.linear(x, first, model[0].bias))          # what the quantized layer gives
    assert torch.allclose(quantized[2].weight, gptq_layer(model[2].weight, gram(hidden), 3, group_size=4,
                                                          blocksize=4), atol=1e-6)
    assert same(before, snapshot(model), ordered=True)
    assert torch.equal(quantized[0].bias, model[0].bias)


def test_a_pruned_model_keeps_its_zeros_and_its_masks():
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(16, 8)), correlated_inputs()
    masks = pl.prune(model, 0.5)
    quantized = gptq(model, x, 4, group_size=8, blocksize=16)
    assert torch.equal(M.get_masks(quantized)["0.weight"], masks["0.weight"])
    assert (quantized[0].weight_orig[~masks["0.weight"]] == 0).all()
    assert torch.equal(quantized[0].weight, quantized[0].weight_orig)              # Ŵ has its zeros already


def test_transformers_calibrate_from_token_ids_and_images():
    torch.manual_seed(0)
    gpt = pl.models.TinyGPT(20, block_size=16, embed_dim=32, depth=1, heads=4).eval()
    ids = torch.randint(0, 20, (8, 16))
    quantized = gptq(gpt, ids, 4, group_size=16)
    names = [name for name, m in gpt.named_modules() if isinstance(m, nn.Linear)]
    assert all(not torch.equal(quantized.get_submodule(n).weight, gpt.get_submodule(n).weight) for n in names)
    assert (quantized(ids) - gpt(ids)).abs().max() < 0.5
    vit = pl.build_model("vit_tiny").eval()
    quantized = gptq(vit, torch.randn(4, 1, 28, 28), 8, layers=["encoder.layers.0.self_attn.out_proj"])
    assert len(quantized.encoder.layers[0].self_attn.out_proj.weight[0].unique()) <= 256


def test_bad_arguments_give_clear_errors_and_leave_the_model_alone():
    model, x = linear(), correlated_inputs(features=32)
    before = snapshot(model)
    for bits in (0, 9, 2.5, "4", True):
        with pytest.raises(ValueError, match="bits must be an integer from 1 to 8"):
            gptq(model, x, bits)
    with pytest.raises(ValueError, match="1-bit symmetric is sign quantization"):
        gptq(model, x, 1)
    for group_size in (0, -4, 2.5, True):
        with pytest.raises(ValueError, match="group_size must be a positive integer"):
            gptq(model, x, 4, group_size=group_size)
        with pytest.raises(ValueError, match="group_size must be a positive integer"):
            rtn(model, 4, group_size=group_size)
    with pytest.raises(ValueError, match=r"blocksize \(128\) must be a multiple of group_size \(48\).*blocksize=144"):
        gptq(model, x, 4, group_size=48)
    with pytest.raises(ValueError, match="scheme must be 'affine' or 'symmetric'"):
        gptq(model, x, 4, scheme="asymmetric")
    with pytest.raises(ValueError, match="damp"):
        gptq(model, x, 4, damp=-0.1)
    with pytest.raises(ValueError, match="calibration data"):
        gptq(model, None, 4)
    with pytest.raises(ValueError, match=r"must be \[32, 32\]"):
        gptq_layer(model[0].weight, torch.eye(8), 4)
    with pytest.raises(ValueError, match="keep must be a mask shaped like W"):
        gptq_layer(model[0].weight, torch.eye(32), 4, keep=torch.ones(8, 31, dtype=torch.bool))
    assert same(before, snapshot(model), ordered=True)
