"""shrink removes units for real: the smaller model computes what the masked one computes, with fewer parameters."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import prunelab as pl
from conftest import randomize_batchnorm, same, snapshot
from prunelab.shrink import channels_to_keep, shrink, shrinkable_layers


def half(n, g):
    """n // 2 distinct unit indices out of n, at random (sorted)."""
    return torch.randperm(n, generator=g)[: n // 2].sort().values


def masked_equivalent(model, keep, bn_of=lambda name: None):
    """A copy of ``model`` masked as prunelab masks units: the removed rows/filters, their bias entries and
    the following BatchNorm's weight and bias are 0 (torch.nn.utils.prune representation)."""
    masked = copy.deepcopy(model)
    for name, idx in keep.items():
        layer = masked.get_submodule(name)
        unit = torch.zeros(layer.weight.shape[0])
        unit[idx] = 1
        bn = masked.get_submodule(bn_of(name)) if bn_of(name) else None
        for module, tensor in [(layer, "weight"), (layer, "bias"), (bn, "weight"), (bn, "bias")]:
            if module is not None and getattr(module, tensor) is not None:
                shape = (-1,) + (1,) * (getattr(module, tensor).dim() - 1)
                prune.custom_from_mask(module, tensor, unit.view(shape).expand_as(getattr(module, tensor)))
    return masked


VGG_BN = lambda name: name.replace("conv", "bn")  # noqa: E731  conv{i} -> bn{i}


@pytest.mark.parametrize("pretrained", [False, True])
def test_vgg_small_half_channels_matches_the_masked_model(pretrained, test_set):
    g = torch.Generator().manual_seed(0)
    model = pl.load_pretrained("vgg_small") if pretrained else randomize_batchnorm(pl.build_model("vgg_small"), g)
    model.eval()
    widths = [16, 16, 32, 32, 64, 64]
    keep = {f"conv{i}": half(w, g) for i, w in enumerate(widths, start=1)}
    before = snapshot(model)

    small = shrink(model, keep)
    masked = masked_equivalent(model, keep, VGG_BN).eval()
    x = test_set.normalized()[:64] if pretrained else torch.randn(16, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-4, atol=1e-5)

    convs = 1 * 8 * 9 + 8 * 8 * 9 + 8 * 16 * 9 + 16 * 16 * 9 + 16 * 32 * 9 + 32 * 32 * 9   # no conv bias
    bns = 2 * (8 + 8 + 16 + 16 + 32 + 32)
    fc = 32 * 3 * 3 * 10 + 10
    assert pl.count_parameters(small) == convs + bns + fc == 21_042
    assert pl.count_parameters(model) == 77_786 and same(snapshot(model), before)
    assert small.fc.in_features == 32 * 9 and small.bn6.running_mean.shape == (32,)
    assert type(small) is type(model) and not small.training


def test_shrinking_a_masked_model_gives_plain_effective_weights_and_leaves_the_masks_alone():
    g = torch.Generator().manual_seed(1)
    model = randomize_batchnorm(pl.build_model("vgg_small"), g).eval()
    keep = {f"conv{i}": half(w, g) for i, w in enumerate([16, 16, 32, 32, 64, 64], start=1)}
    masked = masked_equivalent(model, keep, VGG_BN)
    masked(torch.randn(2, 1, 28, 28, generator=g))        # with grad: `weight` is now a non-leaf tensor
    before = snapshot(masked)

    small = shrink(masked, keep)
    x = torch.randn(8, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-4, atol=1e-5)
    assert not any(k.endswith(("_orig", "_mask")) for k in small.state_dict())
    assert all(not m._forward_pre_hooks for m in small.modules())
    assert all(isinstance(p, nn.Parameter) for p in [small.conv1.weight, small.bn1.weight, small.bn1.bias])
    assert same(snapshot(masked), before) and hasattr(masked.conv1, "weight_mask")


def test_lenet300_neuron_removal_matches_zeroed_rows_and_bias_entries():
    g = torch.Generator().manual_seed(2)
    model = pl.build_model("lenet300")
    keep = {"fc1": torch.randperm(300, generator=g)[:150], "fc2": torch.randperm(100, generator=g)[:50]}
    small = shrink(model, keep)
    x = torch.randn(32, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked_equivalent(model, keep)(x), rtol=1e-4, atol=1e-5)
    assert [(m.in_features, m.out_features) for m in (small.fc1, small.fc2, small.fc3)] == [(784, 150), (150, 50),
                                                                                             (50, 10)]
    assert pl.count_parameters(small) == (784 * 150 + 150) + (150 * 50 + 50) + (50 * 10 + 10) == 125_810
    # kept units in their original order: row j of the small fc1 is row keep[j] (sorted) of the big one
    torch.testing.assert_close(small.fc1.weight, model.fc1.weight[keep["fc1"].sort().values])


def test_lenet5_conv_channels_feed_fc1_across_flatten_as_25_columns_each():
    g = torch.Generator().manual_seed(3)
    model = pl.build_model("lenet5")
    keep = {"conv1": [0, 2, 5], "conv2": half(16, g)}
    small = shrink(model, keep)
    x = torch.randn(16, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked_equivalent(model, keep)(x), rtol=1e-4, atol=1e-5)
    assert small.conv2.in_channels == 3 and small.fc1.in_features == 8 * 5 * 5
    c = int(keep["conv2"][1])  # the second kept channel is columns 25..49 of the small fc1
    torch.testing.assert_close(small.fc1.weight[:, 25:50], model.fc1.weight[:, 25 * c: 25 * c + 25])
    assert pl.count_parameters(small) == (25 * 3 + 3) + (3 * 25 * 8 + 8) + (200 * 120 + 120) + (120 * 84 + 84) + 850


def test_resnet18_internal_channels_of_every_basic_block_match_the_masked_model():
    g = torch.Generator().manual_seed(4)
    model = randomize_batchnorm(pl.build_model("resnet18"), g).eval()
    blocks = [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    widths = [64, 64, 128, 128, 256, 256, 512, 512]
    keep = {f"{blk}.conv1": half(w, g) for blk, w in zip(blocks, widths)}
    before = snapshot(model)

    small = shrink(model, keep)
    masked = masked_equivalent(model, keep, lambda name: name.replace("conv1", "bn1")).eval()
    x = torch.randn(4, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-4, atol=1e-4)

    c_in = [64, 64, 64, 128, 128, 256, 256, 512]   # input channels of each block's conv1
    removed = sum(ci * (w // 2) * 9 + 2 * (w // 2) + (w // 2) * w * 9 for ci, w in zip(c_in, widths))
    assert pl.count_parameters(small) == 11_175_370 - removed
    assert small.layer3[0].conv2.in_channels == 128 and small.layer3[0].bn1.num_features == 128
    assert same(snapshot(model), before)


@pytest.mark.parametrize("name, stage", [("layer1.0.conv2", 1), ("layer2.0.downsample.0", 2), ("conv1", 1)])
def test_resnet18_channels_tied_by_a_residual_add_shrink_with_their_whole_group(name, stage):
    g = torch.Generator().manual_seed(8)
    model = randomize_batchnorm(pl.build_model("resnet18"), g).eval()
    before = snapshot(model)
    group = next(grp for grp in pl.graph.channel_groups(model) if name in grp.producers)
    keep = half(group.channels, g)

    small = shrink(model, {name: keep})
    bn_of = pl.graph.following_batchnorm(model)           # conv -> the BatchNorm right after it
    masked = masked_equivalent(model, {p: keep for p in group.producers}, bn_of.get).eval()
    x = torch.randn(2, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-4, atol=1e-4)
    blocks = [f"layer{stage}.{b}" for b in range(2)]       # the stage's stream: every conv2 and what adds into it
    assert set(group.producers) >= {f"{blk}.conv2" for blk in blocks}
    assert all(small.get_submodule(p).out_channels == group.channels // 2 for p in group.producers)
    assert all(small.get_submodule(r.name).in_channels == group.channels // 2 for r in group.consumers)
    assert same(snapshot(model), before)


def test_two_layers_of_one_group_must_keep_the_same_channels():
    model = pl.build_model("resnet18")
    same = shrink(model, {"layer1.0.conv2": [0, 1], "conv1": [0, 1]})             # one group, the same keep: fine
    assert same.conv1.out_channels == same.layer1[1].conv2.out_channels == 2
    with pytest.raises(ValueError, match=r"'layer1\.0\.conv2' and 'conv1' write the same channels \(one group: "
                                         r"conv1, layer1\.0\.conv2, layer1\.1\.conv2\).*different indices"):
        shrink(model, {"layer1.0.conv2": [0, 1], "conv1": [0, 2]})


@pytest.mark.parametrize("model_name, layer", [("vgg_small", "fc"), ("lenet300", "fc3"), ("resnet18", "fc")])
def test_the_classifier_outputs_cannot_be_removed(model_name, layer):
    with pytest.raises(ValueError, match=rf"Cannot shrink '{layer}'.*outputs of the model"):
        shrink(pl.build_model(model_name), {layer: [0, 1]})


def test_shrinkable_layers_are_the_untied_hidden_layers():
    assert shrinkable_layers(pl.build_model("lenet300")) == ["fc1", "fc2"]
    assert shrinkable_layers(pl.build_model("vgg_small")) == [f"conv{i}" for i in range(1, 7)]
    assert shrinkable_layers(pl.build_model("resnet18")) == [f"layer{s}.{b}.conv1" for s in range(1, 5)
                                                             for b in range(2)]


@pytest.mark.parametrize("keep, error, match", [
    ({"cnov1": [0]}, ValueError, r"no layer 'cnov1'\. Did you mean 'conv1'\?.*conv1, conv2"),
    ({"bn1": [0]}, ValueError, r"'bn1' is a BatchNorm2d.*Name one of conv1"),
    ({"conv1": [0, 16]}, ValueError, r"out of range: \[16\]; 'conv1' has 16 units, indices 0\.\.15"),
    ({"conv1": [-1, 2]}, ValueError, r"out of range: \[-1\]"),
    ({"conv1": [3, 1, 3]}, ValueError, r"unit\(s\) \[3\] more than once"),
    ({"conv1": []}, ValueError, r"empty.*at least one"),
    ({"conv1": torch.tensor([0.0, 1.0])}, TypeError, r"integer tensor"),
    ({"conv1": torch.ones(15, dtype=torch.bool)}, ValueError, r"boolean keep-mask of shape \[15\].*shape \[16\]"),
    ({"conv1": [0.5]}, TypeError, r"list of ints"),
    ([("conv1", [0])], TypeError, r"keep must be a dict"),
])
def test_bad_input_says_what_is_wrong_and_leaves_the_model_untouched(keep, error, match):
    model = pl.build_model("vgg_small")
    before = snapshot(model)
    with pytest.raises(error, match=match):
        shrink(model, keep)
    assert same(snapshot(model), before)


def test_a_boolean_keep_mask_shrinks_like_the_indices_it_keeps():
    model = pl.build_model("vgg_small").eval()
    mask = torch.arange(16) % 3 != 0
    x = torch.randn(2, 1, 28, 28)
    by_mask, by_index = shrink(model, {"conv1": mask}), shrink(model, {"conv1": mask.nonzero().flatten()})
    assert by_mask.conv1.out_channels == int(mask.sum()) == by_index.conv1.out_channels
    assert torch.equal(by_mask(x), by_index(x))


def test_channels_to_keep_turns_a_unit_masked_model_into_real_removal():
    g = torch.Generator().manual_seed(5)
    model = randomize_batchnorm(pl.build_model("vgg_small"), g).eval()
    keep = {f"conv{i}": half(w, g) for i, w in enumerate([16, 16, 32, 32, 64, 64], start=1)}
    masked = masked_equivalent(model, keep, VGG_BN)

    found = channels_to_keep(masked)
    assert found.keys() == keep.keys() and all(torch.equal(found[k], keep[k]) for k in keep)
    small = shrink(masked, found)
    x = torch.randn(8, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-4, atol=1e-5)
    assert channels_to_keep(model) == {}   # nothing masked, nothing to remove


def test_channels_to_keep_removes_only_units_whose_output_is_exactly_zero():
    model = pl.build_model("lenet300")
    with torch.no_grad():
        model.fc1.weight[[3, 7]] = 0          # zero rows; unit 7 also has zero bias, unit 3 outputs relu(b_3)
        model.fc1.bias[7] = 0
        model.fc1.bias[3] = 0.5
        model.fc2.weight[:] = 0               # every unit of fc2 dead: one is kept, a layer needs a unit
        model.fc2.bias[:] = -1.0              # ... and ReLU(-1) = 0, so they all hand on 0
    keep = channels_to_keep(model)
    assert torch.equal(keep["fc1"], torch.tensor([i for i in range(300) if i != 7]))
    assert torch.equal(keep["fc2"], torch.tensor([0]))
    small = shrink(model, keep)
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x))
    assert channels_to_keep(model, threshold=10.0).keys() == {"fc1", "fc2"}
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0"):
        channels_to_keep(model, threshold=-1.0)


def test_channels_to_keep_removes_whole_residual_channels_of_resnet18():
    """Channel c of a stage's stream hands on 0 when every producer of the stage (the stem or downsample conv and
    each block's conv2) has filter c zeroed and its BatchNorm gamma = beta = 0; each block's conv1 alone likewise."""
    g = torch.Generator().manual_seed(7)
    model = randomize_batchnorm(pl.models.resnet18(), g).eval()
    groups = [grp for grp in pl.graph.channel_groups(model) if not grp.blocked]
    keep = {grp.producers[0]: half(grp.channels, g) for grp in groups}
    bn_of = pl.graph.following_batchnorm(model)           # conv -> the BatchNorm right after it
    masked = masked_equivalent(model, {p: keep[grp.producers[0]] for grp in groups for p in grp.producers},
                               bn_of.get).eval()

    found = channels_to_keep(masked)
    assert list(found) == list(keep) and all(torch.equal(found[k], keep[k]) for k in keep)
    assert {"conv1", "layer2.0.conv2", "layer3.0.conv2", "layer4.0.conv2"} <= found.keys()   # the four streams
    small = shrink(masked, found)
    x = torch.randn(2, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-4, atol=1e-4)
    assert pl.count_parameters(small) == pl.count_parameters(shrink(model, keep)) < 0.3 * pl.count_parameters(model)


def test_channels_to_keep_keeps_residual_channels_that_some_producer_still_writes():
    g = torch.Generator().manual_seed(7)
    model = randomize_batchnorm(pl.models.resnet18(), g).eval()
    keep = {"layer1.0.conv1": half(64, g), "layer1.0.conv2": half(64, g)}          # one of stage 1's 3 producers
    keep |= {p: half(128, g) for p in ("layer2.0.conv2", "layer2.0.downsample.0")}  # 2 of stage 2's 3
    masked = masked_equivalent(model, keep, pl.graph.following_batchnorm(model).get)
    found = channels_to_keep(masked)
    assert list(found) == ["layer1.0.conv1"] and torch.equal(found["layer1.0.conv1"], keep["layer1.0.conv1"])
    x = torch.randn(2, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(shrink(masked, found)(x), masked(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["vgg_small", "resnet18"])
def test_fold_batchnorm_matches_the_model_in_eval_mode_and_leaves_it_alone(name):
    from prunelab.shrink import fold_batchnorm

    model = (pl.load_pretrained(name) if name == "vgg_small" else pl.build_model(name)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
