"""Metrics against known answers: hand-made models, hand formulas, mask counts, and files that decode exactly."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import prunelab as pl
from prunelab import metrics as M


def tiny():
    """Linear(4, 3) -> ReLU -> Linear(3, 2): W1 has 3 zeros of 12, W2 3 of 6, one bias entry is 0."""
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1., 0., 2., 3.], [0., -1., 4., 5.], [6., 7., 0., 8.]]))
        model[0].bias.copy_(torch.tensor([1., 0., -1.]))
        model[2].weight.copy_(torch.tensor([[0., 1., 0.], [2., 0., 3.]]))
        model[2].bias.copy_(torch.tensor([0.5, -0.5]))
    return model


def pruned_lenet300(amount, seed=0):
    """LeNet-300-100 (random init) with torch's global L1 unstructured pruning at ``amount``."""
    model = pl.build_model("lenet300", seed=seed)
    prune.global_unstructured([(model.fc1, "weight"), (model.fc2, "weight"), (model.fc3, "weight")],
                              pruning_method=prune.L1Unstructured, amount=amount)
    return model


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def no_hooks(model):
    return all(not m._forward_hooks for m in model.modules())


# ------------------------------------------------------------------------------------------------ sparsity, counts

def test_sparsity_counts_exact_zeros_only():
    assert M.sparsity(torch.tensor([0., 1e-30, -0.0, 2.])) == 0.5
    assert M.sparsity(torch.zeros(3, 3)) == 1.0 and M.sparsity(torch.ones(5)) == 0.0
    with pytest.raises(ValueError, match="empty"):
        M.sparsity(torch.empty(0))


def test_sparsity_takes_a_numpy_array_too():
    assert M.sparsity(np.array([[0.0, 1.5], [-0.0, 2.0]])) == 0.5
    assert M.sparsity(np.zeros(7, dtype=np.int64)) == 1.0
    with pytest.raises(ValueError, match="empty"):
        M.sparsity(np.array([]))


def test_hand_made_model_sparsity_and_parameter_counts():
    model = tiny()
    assert M.layer_sparsity(model) == {"0": 3 / 12, "2": 3 / 6}
    assert M.global_sparsity(model) == pytest.approx(6 / 18)
    counts = M.parameter_counts(model)
    assert counts.total == 12 + 3 + 6 + 2 == pl.count_parameters(model)
    assert counts.nonzero == 23 - 6 - 1                         # 6 zero weights, 1 zero bias
    assert counts.layers == {"0": (12, 9), "2": (6, 3)}
    assert counts.compression == pytest.approx(23 / 16)


def test_masked_weights_count_as_zero_and_the_mask_is_read_not_changed():
    model = tiny()
    mask = torch.tensor([[1., 1., 1., 0.], [1., 1., 1., 1.], [0., 1., 1., 1.]])   # masks out 3. and 6.
    prune.custom_from_mask(model[0], "weight", mask)
    before = snapshot(model)
    assert M.layer_sparsity(model)["0"] == 5 / 12
    assert M.global_sparsity(model) == pytest.approx(8 / 18)
    counts = M.parameter_counts(model)
    assert counts.total == 23 and counts.nonzero == 14 and counts.layers["0"] == (12, 7)
    assert M.count_macs(model, (1, 4)).layers["0"] == (12, 7)
    assert same(before, snapshot(model)) and hasattr(model[0], "weight_mask")


# ------------------------------------------------------------------------------------------------ MACs

def test_hand_made_model_macs():
    macs = M.count_macs(tiny(), input_shape=(1, 4))
    assert macs.layers == {"0": (12, 9), "2": (6, 3)}
    assert (macs.dense, macs.effective, macs.flops, macs.effective_flops) == (18, 12, 36, 24)


def test_lenet300_dense_macs_are_784x300_plus_300x100_plus_100x10_per_image_whatever_the_batch():
    model = pl.build_model("lenet300")
    macs = M.count_macs(model)
    assert macs.dense == macs.effective == 784 * 300 + 300 * 100 + 100 * 10 == 266_200
    assert list(macs.layers) == ["fc1", "fc2", "fc3"]
    assert M.count_macs(model, (8, 1, 28, 28)) == macs


def test_vgg_small_macs_follow_the_conv_formula():
    # H_out * W_out * C_out * C_in * 3 * 3 per conv: 28x28 for conv1-2, 14x14 for conv3-4, 7x7 for conv5-6
    convs = [(28, 1, 16), (28, 16, 16), (14, 16, 32), (14, 32, 32), (7, 32, 64), (7, 64, 64)]
    expected = {f"conv{i}": hw * hw * c_out * c_in * 9 for i, (hw, c_in, c_out) in enumerate(convs, start=1)}
    expected["fc"] = 64 * 3 * 3 * 10
    macs = M.count_macs(pl.build_model("vgg_small"))
    assert {k: v.dense for k, v in macs.layers.items()} == expected
    assert macs.dense == sum(expected.values()) == 7_344_000


def test_grouped_conv_counts_c_in_over_groups():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2))
    assert M.count_macs(model, (1, 4, 10, 10)).dense == 10 * 10 * 8 * (4 // 2) * 3 * 3


def test_resnet18_macs_work_and_leave_the_model_as_it_was():
    model = pl.build_model("resnet18").train()
    before = snapshot(model)                                 # BN running statistics included
    macs = M.count_macs(model)
    assert macs.layers["conv1"].dense == 14 * 14 * 64 * 1 * 7 * 7   # stride 2: 28 -> 14
    assert macs.layers["fc"].dense == 512 * 10
    assert len(macs.layers) == 21 and macs.dense == macs.effective == sum(v.dense for v in macs.layers.values())
    assert model.training and all(m.training for m in model.modules())
    assert same(before, snapshot(model)) and no_hooks(model)


def test_pruned_lenet300_effective_macs_and_nonzero_params_equal_the_mask_counts():
    model = pruned_lenet300(0.9)
    kept = {name: int(getattr(model, name).weight_mask.sum()) for name in ("fc1", "fc2", "fc3")}
    assert sum(kept.values()) == round(0.1 * 266_200)
    macs = M.count_macs(model)
    assert macs.dense == 266_200
    assert {k: v.effective for k, v in macs.layers.items()} == kept
    biases = sum(int(getattr(model, name).bias.count_nonzero()) for name in ("fc1", "fc2", "fc3"))
    counts = M.parameter_counts(model)
    assert counts.total == 266_610 and counts.nonzero == sum(kept.values()) + biases
    assert M.global_sparsity(model) == pytest.approx(0.9)


def test_count_macs_on_a_wrong_input_shape_is_a_value_error_and_leaves_no_hooks():
    model = pl.build_model("lenet5").train()
    with pytest.raises(ValueError, match=r"cannot run on an input of shape \(1, 3, 28, 28\)"):
        M.count_macs(model, (1, 3, 28, 28))
    with pytest.raises(ValueError, match="batch dimension"):
        M.count_macs(model, (28,))
    assert no_hooks(model) and model.training


# ------------------------------------------------------------------------------------------------ bytes

@pytest.mark.parametrize("encoding", M.ENCODINGS)
@pytest.mark.parametrize("amount", [0.0, 0.9])
def test_saved_file_decodes_to_exactly_the_effective_weights(tmp_path, encoding, amount):
    model = pruned_lenet300(amount)
    path = tmp_path / "model.pt"
    torch.save(M.encode_weights(model, encoding), path)
    assert path.stat().st_size == M.file_bytes(model, encoding)      # the measured bytes are this file's
    decoded = M.decode_weights(torch.load(path, weights_only=True))
    effective = pl.masks.effective_state_dict(model)
    assert same(decoded, effective)
    assert torch.equal(decoded["fc1.weight"].view(torch.int32), effective["fc1.weight"].view(torch.int32))  # bits
    fresh = pl.build_model("lenet300", seed=1)
    fresh.load_state_dict(decoded)
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(fresh(x), model(x))


def test_conv_weights_round_trip_and_csr_uses_the_smallest_index_dtypes():
    model = pl.build_model("lenet5")
    prune.l1_unstructured(model.conv2, "weight", amount=0.7)
    for encoding in ("bitmask", "csr"):
        assert same(M.decode_weights(M.encode_weights(model, encoding)), pl.masks.effective_state_dict(model))
    csr = M.encode_weights(model, "csr")["sparse"]
    assert csr["conv2.weight"]["cols"].dtype == torch.uint8        # 6 * 5 * 5 = 150 columns
    assert csr["fc1.weight"]["cols"].dtype == torch.uint16         # 400 columns
    assert csr["fc1.weight"]["row_ptr"].dtype == torch.uint16      # 48,000 nonzeros
    assert csr["conv1.weight"]["row_ptr"].dtype == torch.uint8     # 150 nonzeros


def test_bitmask_and_csr_are_smaller_than_dense_at_90_percent_sparsity_and_csr_larger_at_0():
    sparse = M.size_report(pruned_lenet300(0.9))
    dense = M.size_report(pl.build_model("lenet300"))
    assert sparse["bitmask"].bytes < sparse["dense"].bytes / 5
    assert sparse["csr"].bytes < sparse["dense"].bytes / 5
    assert dense["csr"].bytes >= dense["dense"].bytes and dense["bitmask"].bytes >= dense["dense"].bytes
    # the dense file is the same size whatever the sparsity: zeros take 4 bytes like any float32
    assert abs(sparse["dense"].bytes - dense["dense"].bytes) < 100
    # bitmask payload: 4 bytes per kept weight + 1 bit per weight, plus the file format's overhead
    assert sparse["bitmask"].bytes - (4 * 26_620 + 266_200 // 8 + 4 * 410) < 10_000


def test_gzip_shrinks_a_sparse_dense_file_but_hardly_an_unpruned_one():
    sparse, unpruned = pruned_lenet300(0.9), pl.build_model("lenet300")
    assert M.file_bytes(sparse, compress=True) < M.file_bytes(sparse) / 5
    assert M.file_bytes(unpruned, compress=True) > M.file_bytes(unpruned) * 0.8
    report = M.size_report(sparse)
    assert report["dense"].gzip_bytes == M.file_bytes(sparse, "dense", compress=True)
    assert report["dense"].compression > 5


def test_unknown_encoding_is_a_value_error_naming_the_known_ones():
    model = pruned_lenet300(0.5)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"Unknown encoding 'CSR'.*dense, bitmask, csr.*Did you mean 'csr'"):
        M.file_bytes(model, "CSR")
    assert same(before, snapshot(model))


def test_a_model_with_nothing_prunable_is_a_value_error():
    model = nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3))
    for metric in (M.layer_sparsity, M.global_sparsity, M.parameter_counts, M.count_macs, M.file_bytes,
                   M.size_report):
        with pytest.raises(ValueError, match="nothing prunable"):
            metric(model)


# ------------------------------------------------------------------------------------------------ latency

def test_latency_is_positive_and_the_mode_of_every_submodule_is_restored():
    model = pl.build_model("vgg_small").train()
    model.bn1.eval()                                           # a mixed mode must survive too
    before = snapshot(model)
    result = M.measure_latency(model, torch.randn(2, 1, 28, 28), repeats=3, warmup=1)
    assert 0 < result.min_ms <= result.median_ms <= result.p90_ms
    assert len(result.times_ms) == result.repeats == 3 and result.batch_size == 2 and result.images_per_s > 0
    assert model.training and not model.bn1.training and model.bn2.training
    assert same(before, snapshot(model))                       # eval mode: BN statistics not updated


def test_latency_default_input_is_a_batch_of_256_images_and_keeps_eval_mode():
    model = pruned_lenet300(0.5).eval()
    rng = torch.random.get_rng_state()
    result = M.measure_latency(model, repeats=2, warmup=0)
    assert result.batch_size == 256 and result.median_ms > 0
    assert not model.training and torch.equal(rng, torch.random.get_rng_state())


@pytest.mark.parametrize("kwargs, message", [({"repeats": 0}, "repeats"), ({"repeats": -3}, "repeats"),
                                             ({"warmup": -1}, "warmup")])
def test_latency_rejects_non_positive_repeats(kwargs, message):
    model = tiny().train()
    with pytest.raises(ValueError, match=message):
        M.measure_latency(model, torch.randn(1, 4), **kwargs)
    assert model.training


def test_latency_input_must_be_a_tensor():
    with pytest.raises(TypeError, match="Tensor"):
        M.measure_latency(tiny(), [[1.0, 2.0, 3.0, 4.0]])


def test_measuring_leaves_a_masked_model_prunable_as_torch_knows_it():
    model = pruned_lenet300(0.5)
    before = snapshot(model)
    M.count_macs(model)
    M.size_report(model)
    M.measure_latency(model, repeats=1, warmup=0)
    assert same(before, snapshot(model)) and no_hooks(model)
    prune.remove(model.fc1, "weight")                           # torch's own API still works afterwards
    assert M.layer_sparsity(model)["fc1"] == M.sparsity(model.fc1.weight)


def test_macs_and_latency_take_the_input_shape_from_the_data():
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4))
    images = torch.randint(0, 256, (300, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = (images, torch.arange(300) % 4)
    macs = pl.metrics.count_macs(model, data=data)
    assert macs.dense == 16 * 16 * 8 * 3 * 9 + 8 * 4 == pl.metrics.count_macs(model, (1, 3, 16, 16)).dense
    assert pl.metrics.measure_latency(model, data=data, repeats=2).batch_size == 256
    with pytest.raises(ValueError, match=r"cannot run on a batch of shape \[256, 1, 28, 28\].*data=its images"):
        pl.metrics.measure_latency(model, repeats=2)
    with pytest.raises(ValueError, match=r"cannot run on an input of shape \(1, 1, 28, 28\).*data=its images"):
        pl.metrics.count_macs(model)


def test_macs_count_attention_its_projections_and_products():
    model = pl.build_model("vit_tiny")
    L, E = 16, 64                                    # 16 tokens of 7x7 patches, embedding 64
    macs = pl.metrics.count_macs(model)
    attn = "encoder.layers.0.self_attn"
    assert macs.layers[f"{attn}.in_proj"].dense == 3 * L * E * E
    assert macs.layers[f"{attn}.attention"].dense == 2 * L * L * E    # Q Kᵀ and the weighted sum of V
    assert macs.layers[f"{attn}.out_proj"].dense == L * E * E
    assert macs.layers["encoder.layers.1.linear1"].dense == L * E * 2 * E
    pl.prune(model, 0.5, layers=[f"{attn}.out_proj"])
    pl.masks.set_masks(model, {f"{attn}.in_proj_weight": torch.arange(3 * E * E).view(3 * E, E) % 4 != 0})
    pruned = pl.metrics.count_macs(model)
    assert pruned.layers[f"{attn}.out_proj"].effective == L * E * E // 2
    assert pruned.layers[f"{attn}.in_proj"].effective == 3 * L * E * E * 3 // 4


def test_macs_count_the_products_of_a_written_out_attention_and_its_heads_left():
    gpt = pl.models.TinyGPT(20, block_size=16, embed_dim=32, depth=2, heads=4)
    T, E = 16, 32
    assert pl.metrics.count_macs(gpt, (1, T)).layers["blocks.0.attn.attention"].dense == 2 * T * T * E
    pl.prune(gpt, 0.5, granularity="head", layers=["blocks.0.attn"])
    products = pl.metrics.count_macs(gpt, (1, T)).layers
    assert products["blocks.0.attn.attention"].effective * 2 == products["blocks.0.attn.attention"].dense
    assert products["blocks.1.attn.attention"].effective == products["blocks.1.attn.attention"].dense
