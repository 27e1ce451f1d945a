"""Granularity, criteria, thresholds and scope: each checked against a hand computation."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunelab as pl
from conftest import same, snapshot
from prunelab import masks as M
from prunelab.pruning import prune, replace_with_identity
from prunelab.scores import loss_gradients, magnitude, taylor, unit_norm
from prunelab.thresholds import mask_from_threshold, threshold_for_sparsity, threshold_from_std



def test_threshold_formulas_on_a_hand_made_tensor():
    W = torch.tensor([[0.5, -0.1, 2.0], [-3.0, 0.2, -0.05]])
    scores = magnitude(W)
    v_thr = threshold_for_sparsity(scores, 0.5)  # k = 3 smallest of |W|: 0.05, 0.1, 0.2
    assert v_thr == pytest.approx(0.2)
    assert mask_from_threshold(scores, v_thr).tolist() == [[True, False, True], [True, False, False]]
    assert threshold_for_sparsity(scores, 0.0) == -math.inf
    assert threshold_from_std(W, 2.0) == pytest.approx(2.0 * W.std().item())
    assert unit_norm(W, 1).tolist() == pytest.approx([2.6, 3.25])
    assert unit_norm(W, 2).tolist() == pytest.approx([W[0].norm().item(), W[1].norm().item()])


def test_quality_threshold_is_han_et_al_q_sigma(test_set):
    model = pl.load_pretrained("lenet300")
    masks = pl.pruning.quality_masks(model, 1.0)
    W = model.fc1.weight
    assert torch.equal(masks["fc1.weight"], W.abs() > W.std())


def test_neuron_pruning_zeroes_rows_and_biases_so_the_neuron_outputs_zero(test_set):
    model = pl.load_pretrained("lenet300")
    masks = prune(model, 0.5, granularity="neuron", criterion="l2")
    assert set(masks) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}  # never the class outputs
    dead = ~masks["fc1.bias"]
    assert int(dead.sum()) == 150
    expected = unit_norm(M.original(model, "fc1.weight"), 2).argsort()[:150]
    assert set(dead.nonzero().flatten().tolist()) == set(expected.tolist())
    hidden = model.relu1(model.fc1(model.flatten(test_set.normalized()[:64])))
    assert (hidden[:, dead] == 0).all() and (hidden[:, ~dead] != 0).any()


def test_channel_pruning_masks_the_following_batchnorm_so_channels_output_zero(test_set):
    model = pl.load_pretrained("vgg_small")
    masks = prune(model, 0.5, granularity="channel", criterion="l1")
    assert {"conv1.weight", "bn1.weight", "bn1.bias", "conv6.weight"} <= set(masks)
    assert all(int(masks[f"bn{i}.weight"].sum()) == model.get_submodule(f"conv{i}").out_channels // 2
               for i in range(1, 7))
    x = test_set.normalized()[:16]
    out = model.relu2(model.bn2(model.conv2(model.relu1(model.bn1(model.conv1(x))))))
    assert (out[:, ~masks["bn2.weight"]] == 0).all()


def test_n_m_keeps_exactly_n_of_every_m():
    model = pl.load_pretrained("lenet5")
    masks = prune(model, 0.0, granularity="n:m", n=2, m=4)
    assert "conv1.weight" not in masks  # 25 inputs per filter: not divisible by 4, skipped
    for name, mask in masks.items():
        groups = mask.flatten(1).reshape(mask.shape[0], -1, 4).sum(2)
        assert (groups == 2).all(), name
    with pytest.raises(ValueError, match="'conv1' has 25 inputs per unit, not divisible by M=4"):
        prune(model, 0.0, granularity="n:m", layers=["conv1"])


def test_per_layer_sparsity_dictionary_leaves_other_layers_dense():
    model = pl.load_pretrained("lenet300")
    masks = prune(model, {"fc1": 0.9, "fc2": 0.5})
    assert set(masks) == {"fc1.weight", "fc2.weight"}
    assert 1 - masks["fc1.weight"].float().mean().item() == pytest.approx(0.9, abs=1e-3)
    assert 1 - masks["fc2.weight"].float().mean().item() == pytest.approx(0.5, abs=1e-3)


def test_gradients_match_autograd_and_taylor_is_w_times_g(train_set):
    model = pl.load_pretrained("lenet300")
    data = train_set.subset(300)
    g = loss_gradients(model, data, batch_size=128)
    model.zero_grad()
    F.cross_entropy(model(data.normalized()), data.labels).backward()
    torch.testing.assert_close(g["fc2.weight"], model.fc2.weight.grad, rtol=1e-4, atol=1e-7)
    assert torch.equal(taylor(model.fc2.weight, g["fc2.weight"]), (model.fc2.weight * g["fc2.weight"]).abs())


def test_gradient_criteria_use_the_original_weights_even_when_masked(train_set):
    data = train_set.subset(256)
    model = pl.load_pretrained("lenet300")
    fresh = prune(model, 0.5, criterion="taylor", data=data)
    again = prune(model, 0.5, criterion="taylor", data=data)  # computed with the 0.5 mask in place
    assert all(torch.equal(fresh[k], again[k]) for k in fresh)


@pytest.mark.parametrize("criterion", ["magnitude", "gradient", "taylor", "random"])
def test_every_weight_criterion_reaches_the_asked_sparsity(criterion, train_set):
    model = pl.load_pretrained("lenet300")
    masks = prune(model, 0.6, criterion=criterion, data=train_set.subset(256))
    assert M.mask_sparsity(masks) == pytest.approx(0.6, abs=1e-3)


def test_magnitude_beats_random_at_equal_sparsity(test_set):
    accuracy = {}
    for criterion in ("magnitude", "random"):
        model = pl.load_pretrained("lenet300")
        prune(model, 0.8, criterion=criterion)
        accuracy[criterion] = pl.evaluate(model, test_set).accuracy
    assert accuracy["magnitude"] > 0.75 and accuracy["random"] < 0.5, accuracy


@pytest.mark.parametrize("kwargs, message", [
    ({"sparsity": 1.0}, r"sparsity must be a number in \[0, 1\)"),
    ({"sparsity": -0.1}, r"sparsity must be a number in \[0, 1\)"),
    ({"sparsity": "0.5"}, r"sparsity must be a number in \[0, 1\)"),
    ({"sparsity": 0.5, "layers": ["fc4"]}, "Unknown layer 'fc4'.*Did you mean"),
    ({"sparsity": {"fc1": 0.5, "fc7": 0.2}}, "Unknown layer 'fc7'"),
    ({"sparsity": 0.5, "granularity": "neurons"}, "granularity must be one of.*Did you mean 'neuron'"),
    ({"sparsity": 0.5, "scope": "globl"}, "scope must be one of"),
    ({"sparsity": 0.5, "granularity": "n:m", "n": 4, "m": 4}, "N:M needs integers 0 < N < M"),
    ({"sparsity": 0.5, "granularity": "n:m", "layers": ["fc2"], "m": 7}, "'fc2' has 300 inputs per unit"),
    ({"sparsity": 0.5, "criterion": "gradient"}, "needs data"),
    ({"sparsity": 0.5, "criterion": "taylor", "granularity": "neuron"}, "needs data"),
    ({"sparsity": 0.5, "granularity": "channel"}, r"no Conv2d layer.*Linear layers \(fc1, fc2\).*granularity='neuron'"),
    ({"sparsity": 0.5, "granularity": "neuron", "layers": ["fc1"], "criterion": "l3"}, "criterion for neurons"),
    ({"sparsity": {"fc1": 0.5}, "scope": "global"}, "Global scope takes one sparsity"),
])
def test_bad_input_is_explained_and_the_model_left_as_it_was(kwargs, message):
    model = pl.load_pretrained("lenet300")
    prune(model, 0.3)
    before, masks = snapshot(model), M.get_masks(model)
    with pytest.raises(ValueError, match=message):
        prune(model, **kwargs)
    after = snapshot(model)
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(masks[k], v) for k, v in M.get_masks(model).items())


def test_unit_pruning_of_the_wrong_layer_type_suggests_the_other_granularity():
    model = pl.build_model("lenet5")
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"neuron pruning applies to Linear.*\['conv1'\].*granularity='channel'"):
        prune(model, 0.5, granularity="neuron", layers=["conv1"])
    with pytest.raises(ValueError, match=r"channel pruning applies to Conv2d.*\['fc1'\].*granularity='neuron'"):
        prune(model, 0.5, granularity="channel", layers=["fc1"])
    with pytest.raises(ValueError, match=r"VGGSmall has no Linear layer.*Conv2d layers \(conv1, .* and 2 more\).*"
                                         r"granularity='channel'"):
        prune(pl.build_model("vgg_small"), 0.5, granularity="neuron")
    assert same(snapshot(model), before, ordered=True)


X = torch.zeros(8, 1, 28, 28)
Y = torch.zeros(8, dtype=torch.long)


@pytest.mark.parametrize("granularity, criterion", [("weight", "gradient"), ("weight", "taylor"), ("neuron", "taylor"),
                                                    ("neuron", "mean_activation"), ("neuron", "max_activation"),
                                                    ("neuron", "apoz"), ("neuron", "loss_change")])
@pytest.mark.parametrize("data, got", [(X.numpy(), r"a numpy\.ndarray of shape \[8, 1, 28, 28\]"),
                                       (X, r"a torch\.Tensor of shape \[8, 1, 28, 28\]"),
                                       ((X, Y, Y), r"a tuple of \(torch\.Tensor, torch\.Tensor, torch\.Tensor\)")])
def test_criteria_needing_data_refuse_what_is_not_an_image_set(granularity, criterion, data, got):
    model = pl.build_model("lenet300")
    prune(model, 0.3)
    before = snapshot(model)
    message = rf"The '{criterion}' criterion needs images with labels: an ImageSet.*a pair \(x, y\).*got {got}"
    with pytest.raises(TypeError, match=message):
        prune(model, 0.5, granularity=granularity, criterion=criterion, data=data)
    assert same(snapshot(model), before, ordered=True)


def test_criteria_needing_data_refuse_an_empty_image_set():
    model = pl.build_model("lenet300")
    before = snapshot(model)
    empty = pl.ImageSet(torch.zeros(0, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    for granularity, criterion in [("weight", "taylor"), ("neuron", "apoz"), ("neuron", "loss_change")]:
        with pytest.raises(ValueError, match=f"'{criterion}' criterion got an ImageSet with no images"):
            prune(model, 0.5, granularity=granularity, criterion=criterion, data=empty)
    with pytest.raises(TypeError, match=r"Gradient-based scores need.*ImageSet.*got a numpy\.ndarray"):
        loss_gradients(model, X.numpy())
    assert same(snapshot(model), before, ordered=True)


def test_nothing_prunable_and_nan_weights_are_refused():
    with pytest.raises(ValueError, match="has nothing prunable"):
        prune(nn.Sequential(nn.Flatten(), nn.ReLU()), 0.5)
    model = pl.build_model("lenet300")
    with torch.no_grad():
        model.fc2.weight[0, 0] = float("nan")
    before = snapshot(model)
    with pytest.raises(ValueError, match="'fc2.weight' holds NaN or inf"):
        prune(model, 0.5)
    assert not M.masked_parameters(model)
    assert all(torch.equal(before[k], v, ) or k == "fc2.weight" for k, v in snapshot(model).items())


def test_replace_a_residual_block_with_identity_but_not_a_shape_changing_one():
    model = pl.build_model("resnet18").eval()
    smaller = replace_with_identity(model, "layer1.1")
    assert isinstance(smaller.layer1[1], nn.Identity) and not isinstance(model.layer1[1], nn.Identity)
    assert smaller(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"'layer2.0'.*maps \[64, 7, 7\] to \[128, 4, 4\]"):
        replace_with_identity(model, "layer2.0")
    with pytest.raises(ValueError, match=r"'fc2'.*maps \[300\] to \[100\]"):
        replace_with_identity(pl.build_model("lenet300"), "fc2")
    with pytest.raises(ValueError, match="no submodule 'layer9'"):
        replace_with_identity(model, "layer9")


@pytest.mark.parametrize("criterion", ["mean_activation", "max_activation", "apoz", "loss_change"])
def test_data_criteria_prune_neurons_and_need_data(criterion, train_set):
    model = pl.load_pretrained("lenet300")
    with pytest.raises(ValueError, match="needs data"):
        prune(model, 0.3, granularity="neuron", criterion=criterion)
    assert not M.masked_parameters(model)
    masks = prune(model, 0.3, granularity="neuron", criterion=criterion, data=train_set.subset(512))
    assert int((~masks["fc1.bias"]).sum()) == 90 and int((~masks["fc2.bias"]).sum()) == 30


def test_loss_change_criterion_removes_the_units_whose_removal_costs_least(train_set):
    from prunelab.data_criteria import measured_loss_change

    data = train_set.subset(512)
    model = pl.load_pretrained("lenet300")
    dL = measured_loss_change(model, "fc2", data)
    masks = prune(model, 0.2, granularity="neuron", criterion="loss_change", layers=["fc2"], data=data)
    assert set((~masks["fc2.bias"]).nonzero().flatten().tolist()) == set(dL.argsort()[:20].tolist())


def test_exact_count_with_ties_equals_the_threshold_rule_without_them():
    from prunelab.thresholds import mask_for_sparsity

    tied = torch.tensor([0.0, 0.5, 0.0, 0.0, 1.0, 0.0])
    assert mask_for_sparsity(tied, 0.5).tolist() == [False, True, False, False, True, True]
    scores = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask_for_sparsity(scores, 0.37), mask_from_threshold(scores, threshold_for_sparsity(scores, 0.37)))


def test_split_by_layer_gives_each_layer_its_part_of_a_global_mask():
    from prunelab.thresholds import split_by_layer

    flat = torch.arange(2 * 3 + 4)
    parts = split_by_layer(flat, {"a": (2, 3), "b": torch.Size([4])})
    assert parts["a"].tolist() == [[0, 1, 2], [3, 4, 5]] and parts["b"].tolist() == [6, 7, 8, 9]
    with pytest.raises(ValueError, match="10 entries cannot be split into layers holding 11"):
        split_by_layer(flat, {"a": (2, 3), "b": (5,)})


def test_expand_units_repeats_each_units_flag_over_its_row_or_filter():
    from prunelab.pruning import expand_units

    keep = torch.tensor([True, False, True])
    assert expand_units(keep, (3, 2, 1, 1))[:, :, 0, 0].tolist() == [[True, True], [False, False], [True, True]]
    assert torch.equal(expand_units(keep, (3,)), keep)


def test_head_pruning_removes_whole_heads_exactly():
    model = pl.build_model("vit_tiny").eval()
    attn = "encoder.layers.0.self_attn"
    masks = prune(model, 0.5, granularity="head", layers=[attn])
    mha = model.get_submodule(attn)
    H, d, E = mha.num_heads, mha.head_dim, mha.embed_dim
    kept = masks[f"{attn}.out_proj.weight"].any(0).view(H, d).any(1)
    assert int(kept.sum()) == H // 2 and set(masks) == {f"{attn}.in_proj_weight", f"{attn}.in_proj_bias",
                                                        f"{attn}.out_proj.weight"}
    # the same heads lose their rows of W_q, W_k and W_v
    rows = masks[f"{attn}.in_proj_weight"].all(1).view(3, H, d)
    assert (rows.all(2) == kept).all() and (~rows.any(2) == ~kept).all()
    # scores: the L1 norm of each head's weights; the lowest go
    W, W_o = M.original(model, f"{attn}.in_proj_weight"), M.original(model, f"{attn}.out_proj.weight")
    norms = W.abs().sum(1).view(3, H, d).sum((0, 2)) + W_o.abs().sum(0).view(H, d).sum(1)
    assert set(norms.argsort()[H // 2:].tolist()) == set(kept.nonzero().flatten().tolist())
    # a removed head adds exactly nothing: attention computed by hand with those heads' outputs dropped
    q = torch.randn(2, 16, E)
    B, L = q.shape[:2]
    Q, K, V = (q @ W[i * E:(i + 1) * E].T + mha.in_proj_bias_orig[i * E:(i + 1) * E] for i in range(3))
    Q, K, V = (t.view(B, L, H, d).transpose(1, 2) for t in (Q, K, V))                     # [B, H, L, d]
    heads = torch.softmax(Q @ K.transpose(-1, -2) / d ** 0.5, -1) @ V * kept.view(1, H, 1, 1)
    expected = heads.transpose(1, 2).reshape(B, L, E) @ W_o.T + mha.out_proj.bias
    assert torch.allclose(mha(q, q, q, need_weights=False)[0], expected, atol=1e-5)
    macs = pl.metrics.count_macs(model).layers[f"{attn}.attention"]
    assert macs.effective * 2 == macs.dense


def test_head_pruning_needs_attention_and_says_what_is_wrong():
    model = pl.build_model("vit_tiny")
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"'encoder\.layers\.0' is not an attention module of TinyViT.*"
                                         r"Did you mean 'encoder\.layers\.0\.self_attn'"):
        prune(model, 0.5, granularity="head", layers=["encoder.layers.0"])
    with pytest.raises(ValueError, match="every head"):
        prune(model, 0.9, granularity="head")
    with pytest.raises(ValueError, match="criterion for heads must be one of 'magnitude', 'l1'"):
        prune(model, 0.5, granularity="head", criterion="taylor")
    assert same(snapshot(model), before, ordered=True)
    with pytest.raises(ValueError, match="has no attention whose heads.*granularity='weight' or 'neuron'"):
        prune(pl.build_model("lenet300"), 0.5, granularity="head")


def test_head_pruning_finds_the_heads_of_a_written_out_attention():
    torch.manual_seed(0)
    gpt = pl.models.TinyGPT(20, block_size=16, embed_dim=32, depth=2, heads=4).eval()
    attn = "blocks.0.attn"                                       # CausalSelfAttention: Linears qkv and proj
    masks = prune(gpt, 0.5, granularity="head", layers=[attn])
    assert set(masks) == {f"{attn}.qkv.weight", f"{attn}.qkv.bias", f"{attn}.proj.weight"}
    module = gpt.get_submodule(attn)
    H, E = module.heads, module.proj.in_features
    d = E // H
    kept = masks[f"{attn}.proj.weight"].any(0).view(H, d).any(1)
    assert int(kept.sum()) == H // 2
    # by hand: causal attention per head with the removed heads' outputs dropped, from the original weights
    W, b = M.original(gpt, f"{attn}.qkv.weight"), M.original(gpt, f"{attn}.qkv.bias")
    W_o = M.original(gpt, f"{attn}.proj.weight")
    x = torch.randn(2, 8, E)
    B, T = x.shape[:2]
    q, k, v = (x @ W[i * E:(i + 1) * E].T + b[i * E:(i + 1) * E] for i in range(3))
    q, k, v = (t.view(B, T, H, d).transpose(1, 2) for t in (q, k, v))                 # [B, H, T, d]
    scores = (q @ k.transpose(-1, -2) / d ** 0.5).masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
    y = torch.softmax(scores, -1) @ v * kept.view(1, H, 1, 1)
    expected = y.transpose(1, 2).reshape(B, T, E) @ W_o.T + module.proj.bias
    assert torch.allclose(module(x), expected, atol=1e-5)
    assert set(pl.pruning.attention_layers(gpt)) == {"blocks.0.attn", "blocks.1.attn"}
