"""Channel groups: channels tied by residual adds and depthwise convs, read at an offset after a torch.cat, and cut
into runs by grouped convs, are found by graph.channel_groups, removed together by shrink and shrink_groups, and the
result matches the masked model and Torch-Pruning's counts."""

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunelab as pl
from prunelab import graph
from prunelab.graph import Norm, Reader
from conftest import randomize_batchnorm, same, snapshot
from prunelab.shrink import group_importance, shrink, shrink_groups


class ResidualCNN(nn.Module):
    """stem conv-bn-relu (8) -> block 1 (8 -> 8, identity shortcut) -> block 2 (8 -> 16, stride 2, 1x1 downsample
    conv + BatchNorm on the shortcut) -> depthwise 3x3 conv-bn-relu (16) -> 1x1 conv (24) -> global pool -> Linear."""

    def __init__(self):
        super().__init__()
        self.stem, self.stem_bn = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.b1_conv1, self.b1_bn1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.b1_conv2, self.b1_bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.b2_conv1, self.b2_bn1 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
        self.b2_conv2, self.b2_bn2 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.down, self.down_bn = nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16)
        self.dw, self.dw_bn = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 24, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))                                  # [B, 8, 28, 28]
        y = F.relu(self.b1_bn1(self.b1_conv1(x)))
        x = F.relu(self.b1_bn2(self.b1_conv2(y)) + x)                           # block 1: + identity
        y = F.relu(self.b2_bn1(self.b2_conv1(x)))                               # [B, 16, 14, 14]
        x = F.relu(self.b2_bn2(self.b2_conv2(y)) + self.down_bn(self.down(x)))  # block 2: + downsample(x)
        x = F.relu(self.dw_bn(self.dw(x)))                                      # depthwise: channel c -> c
        x = F.relu(self.pw(x))                                                  # [B, 24, 14, 14]
        return self.fc(torch.flatten(self.pool(x), 1))                          # [B, 10]


def zero_channels(model, removed):
    """A copy of ``model`` where the channels ``removed[group]`` of each group output exactly 0: the filters and
    bias entries of every producer and gamma and beta of every BatchNorm of the group (at its offset, after a
    torch.cat) are zeroed."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for group, idx in removed.items():
            idx = torch.as_tensor(idx)
            for name, offset in [(p, 0) for p in group.producers] + list(group.batchnorms):
                m = masked.get_submodule(name)
                m.weight[offset + idx] = 0
                if m.bias is not None:
                    m.bias[offset + idx] = 0
    return masked


def test_groups_of_a_small_residual_cnn_are_the_expected_ones():
    groups = graph.channel_groups(ResidualCNN())
    assert [(g.channels, g.producers, g.batchnorms, g.consumers, g.blocked) for g in groups[:-1]] == [
        (8, ("stem", "b1_conv2"), (Norm("stem_bn"), Norm("b1_bn2")),           # the stem and block 1 add together
         (Reader("b1_conv1", False), Reader("b2_conv1", False), Reader("down", False)), None),
        (8, ("b1_conv1",), (Norm("b1_bn1"),), (Reader("b1_conv2", False),), None),
        (16, ("b2_conv1",), (Norm("b2_bn1"),), (Reader("b2_conv2", False),), None),
        (16, ("b2_conv2", "down", "dw"), (Norm("b2_bn2"), Norm("down_bn"), Norm("dw_bn")),   # + the depthwise conv
         (Reader("pw", False),), None),
        (24, ("pw",), (), (Reader("fc", True),), None),                       # through pooling and flatten
    ]
    fc = groups[-1]
    assert fc.producers == ("fc",) and fc.consumers == ()
    assert "reach the model's output (node 'output')" in fc.blocked


def test_resnet18_has_one_group_per_stage_and_one_per_block_interior():
    groups = graph.channel_groups(pl.build_model("resnet18"))
    stages = [g.producers for g in groups if len(g.producers) > 1]
    assert stages == [("conv1", "layer1.0.conv2", "layer1.1.conv2")] + [
        (f"layer{s}.0.conv2", f"layer{s}.0.downsample.0", f"layer{s}.1.conv2") for s in (2, 3, 4)]
    assert [g.producers for g in groups if len(g.producers) == 1][:-1] == [
        (f"layer{s}.{b}.conv1",) for s in range(1, 5) for b in range(2)]
    assert groups[-1].producers == ("fc",) and groups[-1].blocked
    assert Reader("fc", True) in groups[-3].consumers          # stage 4's stream is read by fc, across flatten
    assert [g.channels for g in groups if not g.blocked] == [64, 64, 64, 128, 128, 128, 256, 256, 256, 512, 512, 512]


@pytest.mark.parametrize("index", range(5))
def test_shrinking_one_group_of_the_small_cnn_matches_zeroing_it(index):
    g = torch.Generator().manual_seed(index)
    model = randomize_batchnorm(ResidualCNN(), g).eval()
    before = snapshot(model)
    group = graph.channel_groups(model)[index]
    order = torch.randperm(group.channels, generator=g)
    kept, removed = order[: group.channels // 2].sort().values, order[group.channels // 2:]
    name = group.producers[-1]                                  # any producer of the group names it

    small = shrink(model, {name: kept})
    x = torch.randn(4, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(small(x), zero_channels(model, {group: removed})(x), rtol=1e-4, atol=1e-5)
    assert all(small.get_submodule(p).out_channels == len(kept) for p in group.producers)
    assert all(small.get_submodule(b.name).num_features == len(kept) for b in group.batchnorms)
    assert same(snapshot(model), before)


def test_a_depthwise_conv_loses_its_input_and_output_channels_together():
    small = shrink(ResidualCNN(), {"dw": [0, 3, 5]})
    assert (small.dw.in_channels, small.dw.out_channels, small.dw.groups) == (3, 3, 3)
    assert small.dw.weight.shape == (3, 1, 3, 3) and small.down.out_channels == small.b2_conv2.out_channels == 3
    assert small.b2_conv2.in_channels == 16 and small.pw.in_channels == 3


class PreNorm(nn.Module):
    """b reads and writes the same channels (y + b(y)), the BatchNorm comes after the add, fc reads them flattened
    (S = 26 * 26 features per channel)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.bn = nn.Conv2d(1, 6, 3), nn.Conv2d(6, 6, 1), nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 26 * 26, 3)

    def forward(self, x):
        y = self.a(x)                                           # [B, 6, 26, 26]
        return self.fc(torch.flatten(self.bn(y + self.b(y)), 1))


def test_a_conv_that_reads_and_writes_its_own_group_loses_rows_and_columns_alike():
    g = torch.Generator().manual_seed(10)
    model = randomize_batchnorm(PreNorm(), g).eval()
    (group, _) = graph.channel_groups(model)
    assert (group.producers, group.batchnorms, group.consumers) == (
        ("a", "b"), (Norm("bn"),), (Reader("b", False), Reader("fc", True, S=26 * 26)))
    small = shrink(model, {"b": [0, 2, 5]})
    assert small.b.weight.shape == (3, 3, 1, 1) and small.fc.in_features == 3 * 26 * 26
    x = torch.randn(2, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(small(x), zero_channels(model, {group: [1, 3, 4]})(x), rtol=1e-4, atol=1e-5)


def lowest(model, group, ratio):
    """The round(ratio · n) channels of least I_c = sum over producers of ||W_p[c]||_1, computed here by hand; with
    B runs (grouped convs), the round(ratio · n / B) positions of least mean I_c over the runs, in every run."""
    I = sum(model.get_submodule(p).weight.flatten(1).abs().sum(1) for p in group.producers)   # [n]
    b = group.channels // group.blocks
    positions = I.view(group.blocks, b).mean(0).argsort(stable=True)[: round(ratio * b)]
    return (torch.arange(group.blocks)[:, None] * b + positions).flatten()


@pytest.mark.parametrize("model_name", ["small", "resnet18", "dense", "inception", "resnext"])
def test_shrink_groups_matches_the_model_with_the_least_important_channels_zeroed(model_name):
    g = torch.Generator().manual_seed(9)
    make = {"small": ResidualCNN, "resnet18": lambda: pl.build_model("resnet18"), "resnext": ResNeXtCNN,
            **CONCATENATING}[model_name]
    model = randomize_batchnorm(make(), g).eval()           # CONCATENATING, ResNeXtCNN: below
    before = snapshot(model)
    groups = [grp for grp in graph.channel_groups(model) if not grp.blocked]

    small = shrink_groups(model, 0.5)
    masked = zero_channels(model, {grp: lowest(model, grp, 0.5) for grp in groups})
    x = torch.randn(2, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-4, atol=1e-5)
    assert all(small.get_submodule(p).out_channels == grp.channels // 2 for grp in groups for p in grp.producers)
    assert same(snapshot(model), before)


def test_group_importance_sums_the_l1_norms_of_every_producer():
    model = ResidualCNN()
    group = graph.channel_groups(model)[3]                  # b2_conv2, down, dw
    expected = sum(model.get_submodule(p).weight.flatten(1).abs().sum(1) for p in ("b2_conv2", "down", "dw"))
    torch.testing.assert_close(group_importance(model, group), expected)


def test_shrink_groups_leaves_ignored_and_blocked_groups_whole():
    model = ResidualCNN()
    small = shrink_groups(model, 0.25, ignore=["down"])
    assert small.b2_conv2.out_channels == small.dw.groups == 16 and small.pw.in_channels == 16   # ignored
    assert small.stem.out_channels == small.b1_conv1.out_channels == 6 and small.b2_conv1.out_channels == 12
    assert small.pw.out_channels == 18 and small.fc.in_features == 18 and small.fc.out_features == 10
    unchanged = shrink_groups(model, 0.0)
    assert pl.count_parameters(unchanged) == pl.count_parameters(model) and unchanged is not model


# ---------------------------------------------------------------------- against Torch-Pruning

def torch_pruning_magnitude(model, ratio):
    """``model`` pruned in place by Torch-Pruning's MagnitudePruner: L1 magnitude, ``pruning_ratio=ratio`` in every
    group (local), the classifier ``fc`` ignored."""
    tp = pytest.importorskip("torch_pruning")
    pruner = tp.pruner.MagnitudePruner(model, torch.randn(1, 1, 28, 28),
                                       importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
                                       ignored_layers=[model.fc], global_pruning=False)
    pruner.step()
    return model


def torch_pruning_resnet18(ratio):
    return torch_pruning_magnitude(pl.build_model("resnet18"), ratio)


def widths(model):
    return {name: (m.in_channels, m.out_channels) if isinstance(m, nn.Conv2d) else (m.in_features, m.out_features)
            for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_resnet18_counts_match_torch_pruning_magnitude_pruner(ratio):
    """Torch-Pruning builds the same 12 groups (and leaves fc's outputs, ignored there, whole) and removes
    n - int(n · (1 - ratio)) channels of each, which equals our round(ratio · n) for ResNet-18's widths (multiples
    of 64) at these ratios. Its importance also counts the consumers' input weights and BatchNorm gammas, so it may
    choose other channels; the counts, which depend only on how many go, agree exactly."""
    model = pl.build_model("resnet18")
    ours, theirs = shrink_groups(model, ratio), torch_pruning_resnet18(ratio)
    assert widths(ours) == widths(theirs)
    for count in (pl.count_parameters, lambda m: pl.metrics.count_macs(m, (1, 1, 28, 28)).dense):
        assert math.isclose(count(ours), count(theirs), rel_tol=0.03)
    assert pl.count_parameters(model) == 11_175_370


# ---------------------------------------------------------------------- concatenation: groups side by side

class DenseLayer(nn.Module):
    """DenseNet's layer: x [B, C, H, W] -> cat([x, conv2(relu(bn2(conv1(relu(bn1(x))))))]) [B, C + growth, H, W]."""

    def __init__(self, c_in, growth=8, width=16):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, width, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(width), nn.Conv2d(width, growth, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat([x, y], 1)


class DenseCNN(nn.Module):
    """stem conv (16) -> 3 dense layers (16 -> 40: each adds 8 channels, read through the next layers' BatchNorms)
    -> transition bn-relu-1x1 conv (24) and average pool -> 2 dense layers (24 -> 40) -> bn-relu, global pool -> fc."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.block1 = nn.Sequential(*(DenseLayer(c) for c in (16, 24, 32)))
        self.trans_bn, self.trans = nn.BatchNorm2d(40), nn.Conv2d(40, 24, 1, bias=False)
        self.block2 = nn.Sequential(*(DenseLayer(c) for c in (24, 32)))
        self.norm, self.fc = nn.BatchNorm2d(40), nn.Linear(40, 10)

    def forward(self, x):
        x = self.block1(self.stem(x))                                           # [B, 40, 28, 28]
        x = F.avg_pool2d(self.trans(F.relu(self.trans_bn(x))), 2)              # [B, 24, 14, 14]
        x = self.block2(x)                                                      # [B, 40, 14, 14]
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.norm(x)), 1), 1))


def conv_bn_relu(c_in, c_out, k):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class InceptionCNN(nn.Module):
    """stem (16) -> four branches side by side: 1x1 (8) | 1x1 -> 3x3 (12) | 1x1 -> a cat of two 3x3 (4 + 8: a
    nested cat) | max pool -> 1x1 (4) = [B, 36, 28, 28] -> 1x1 conv (16) -> spatial mean -> fc."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(1, 16, 3)
        self.b1 = conv_bn_relu(16, 8, 1)
        self.b2 = nn.Sequential(conv_bn_relu(16, 8, 1), conv_bn_relu(8, 12, 3))
        self.b3, self.b3_a, self.b3_b = conv_bn_relu(16, 8, 1), conv_bn_relu(8, 4, 3), conv_bn_relu(8, 8, 3)
        self.pool, self.b4 = nn.MaxPool2d(3, 1, 1), conv_bn_relu(16, 4, 1)
        self.mix, self.fc = conv_bn_relu(36, 16, 1), nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.b3(x)
        b3 = torch.cat([self.b3_a(y), self.b3_b(y)], 1)                               # [B, 12, 28, 28]
        x = torch.cat([self.b1(x), self.b2(x), b3, self.b4(self.pool(x))], 1)        # [B, 36, 28, 28]
        return self.fc(self.mix(x).mean((2, 3)))


CONCATENATING = {"dense": DenseCNN, "inception": InceptionCNN}


def test_a_cat_puts_each_input_group_at_its_offset_in_what_reads_it():
    groups = {g.producers[0]: g for g in graph.channel_groups(DenseCNN())}
    stem, first = groups["stem"], groups["block1.0.conv2"]                 # cat([stem, first, second, third])
    assert (stem.channels, stem.blocked, first.channels, first.blocked) == (16, None, 8, None)
    assert first.batchnorms == (Norm("block1.1.bn1", 16), Norm("block1.2.bn1", 16), Norm("trans_bn", 16))
    assert first.consumers == (Reader("block1.1.conv1", False, 16), Reader("block1.2.conv1", False, 16),
                               Reader("trans", False, 16))
    assert groups["block1.2.conv2"].consumers == (Reader("trans", False, 32),)
    assert groups["block2.1.conv2"].batchnorms == (Norm("norm", 32),)
    assert groups["block2.1.conv2"].consumers == (Reader("fc", True, 32),)     # through pooling and flatten
    offsets = {g.producers[0]: g.consumers for g in graph.channel_groups(InceptionCNN())}
    assert [offsets[p] for p in ("b1.0", "b2.1.0", "b3_a.0", "b3_b.0", "b4.0")] == [
        (Reader("mix.0", False, offset),) for offset in (0, 8, 20, 24, 32)]    # 8 + 12, then the nested cat's 4


@pytest.mark.parametrize("model_name, index", [("dense", i) for i in range(12)] + [("inception", i) for i in range(9)])
def test_shrinking_one_group_of_a_concatenating_cnn_matches_zeroing_it(model_name, index):
    g = torch.Generator().manual_seed(20 + index)
    model = randomize_batchnorm(CONCATENATING[model_name](), g).eval()
    before = snapshot(model)
    group = [grp for grp in graph.channel_groups(model) if not grp.blocked][index]
    order = torch.randperm(group.channels, generator=g)
    kept, removed = order[: group.channels // 2].sort().values, order[group.channels // 2:]

    small = shrink(model, {group.producers[0]: kept})
    x = torch.randn(4, 1, 28, 28, generator=g)
    with torch.no_grad():
        assert torch.allclose(small(x), zero_channels(model, {group: removed})(x), rtol=1e-4, atol=1e-5)
    assert all(small.get_submodule(b.name).num_features == model.get_submodule(b.name).num_features - len(removed)
               for b in group.batchnorms)
    assert same(snapshot(model), before)


@pytest.mark.parametrize("model_name", ["dense", "inception"])
@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_concatenating_cnn_counts_match_torch_pruning_magnitude_pruner(model_name, ratio):
    """Torch-Pruning also keeps each input of a cat its own group (its ConcatPruner slices what reads the cat at each
    input's offset), and every width here times ratio is whole, so both remove the same number of channels from
    every group: every layer ends with the same shape, and parameters and MACs agree exactly."""
    make = CONCATENATING[model_name]
    ours, theirs = shrink_groups(make(), ratio), torch_pruning_magnitude(make(), ratio)
    assert widths(ours) == widths(theirs)
    assert {n: m.num_features for n, m in ours.named_modules() if isinstance(m, nn.BatchNorm2d)} == {
        n: m.num_features for n, m in theirs.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert pl.count_parameters(ours) == pl.count_parameters(theirs) < pl.count_parameters(make())
    macs = [pl.metrics.count_macs(m, (1, 1, 28, 28)).dense for m in (ours, theirs)]
    assert macs[0] == macs[1]


class TwoTowers(nn.Module):
    """Two Linear towers whose features are concatenated (dim=-1), normalised by a BatchNorm1d, then read by fc."""

    def __init__(self, dim=-1):
        super().__init__()
        self.a, self.b, self.bn, self.fc = nn.Linear(16, 6), nn.Linear(16, 4), nn.BatchNorm1d(10), nn.Linear(10, 3)
        self.dim = dim

    def forward(self, x):
        x = x.flatten(1)                                                        # [B, 16]
        return self.fc(torch.relu(self.bn(torch.cat([self.a(x), torch.tanh(self.b(x))], self.dim))))


def test_concatenated_features_shrink_at_their_offset():
    g = torch.Generator().manual_seed(30)
    model = TwoTowers().eval()
    with torch.no_grad():
        model.bn.running_mean.copy_(torch.randn(10, generator=g))
        model.bn.weight.copy_(torch.rand(10, generator=g) + 0.5)
    a, b = graph.channel_groups(model)[:2]
    assert (a.batchnorms, a.consumers) == ((Norm("bn", 0),), (Reader("fc", True, 0),))
    assert (b.batchnorms, b.consumers) == ((Norm("bn", 6),), (Reader("fc", True, 6),))
    small = shrink(model, {"a": [0, 2, 3], "b": [1, 3]})
    assert small.bn.num_features == small.fc.in_features == 5
    x = torch.randn(8, 1, 4, 4, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(small(x), zero_channels(model, {a: [1, 4, 5], b: [0, 2]})(x), rtol=1e-4,
                                   atol=1e-5)
    assert re.search(r"node 'cat' concatenates it along dim 1, not along its channels \(dim -1 of features\).*"
                     r"write torch\.cat\(\.\.\., dim=-1\)", graph.channel_groups(TwoTowers(dim=1))[0].blocked)


def test_channels_to_keep_finds_a_dense_layers_channels_masked_after_every_cat():
    """A dense layer's channel is zero for its readers when its filter is zero and every BatchNorm that normalises
    the cats it sits in has gamma = beta = 0 at its offset: channels_to_keep finds it, and shrink gives the same
    function."""
    g = torch.Generator().manual_seed(31)
    model = randomize_batchnorm(DenseCNN(), g).eval()
    group = next(grp for grp in graph.channel_groups(model) if grp.producers == ("block1.0.conv2",))
    masked = zero_channels(model, {group: [1, 6]})
    found = pl.shrink.channels_to_keep(masked)
    assert list(found) == ["block1.0.conv2"] and found["block1.0.conv2"].tolist() == [0, 2, 3, 4, 5, 7]
    x = torch.randn(2, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(shrink(masked, found)(x), masked(x), rtol=1e-4, atol=1e-5)
    partly = copy.deepcopy(masked)
    with torch.no_grad():
        partly.trans_bn.bias[16 + 1] = 0.5                   # the transition conv reads channel 1 as 0.5 again
    assert pl.shrink.channels_to_keep(partly)["block1.0.conv2"].tolist() == [0, 1, 2, 3, 4, 5, 7]


# ---------------------------------------------------------------------- grouped convs: runs at the same positions

class ResNeXtCNN(nn.Module):
    """A ResNeXt bottleneck (1x1, 3x3 in 4 groups, 1x1, added to the stem's channels), then a grouped conv that
    widens 16 -> 48 channels in 8 groups (2 inputs -> 6 outputs each)."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv1, self.bn1 = nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 32, 3, padding=1, groups=4), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, 16, 1), nn.BatchNorm2d(16)
        self.widen, self.bn4 = nn.Conv2d(16, 48, 3, stride=2, groups=8), nn.BatchNorm2d(48)
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))                                      # [B, 16, 28, 28]
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))                                     # [B, 32, 28, 28]
        x = F.relu(x + self.bn3(self.conv3(y)))
        x = F.relu(self.bn4(self.widen(x)))                                     # [B, 48, 13, 13]
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_a_grouped_conv_cuts_the_channels_it_reads_and_writes_into_runs():
    groups = {g.producers[0]: g for g in graph.channel_groups(ResNeXtCNN())}
    assert {p: (g.channels, g.blocks) for p, g in groups.items()} == {
        "stem": (16, 8), "conv1": (32, 4), "conv2": (32, 4), "widen": (48, 8), "fc": (10, 1)}
    assert groups["stem"].producers == ("stem", "conv3") and Reader("widen", False) in groups["stem"].consumers


def same_positions_in_every_run(group, g):
    """Random kept channels of ``group``: half the positions of a run, the same in every run."""
    b = group.channels // group.blocks
    positions = torch.randperm(b, generator=g)[: max(1, b // 2)].sort().values
    kept = (torch.arange(group.blocks)[:, None] * b + positions).flatten()
    return kept, torch.tensor(sorted(set(range(group.channels)) - set(kept.tolist())))


@pytest.mark.parametrize("index", range(4))
def test_shrinking_one_group_of_a_resnext_matches_zeroing_it(index):
    g = torch.Generator().manual_seed(30 + index)
    model = randomize_batchnorm(ResNeXtCNN(), g).eval()
    before = snapshot(model)
    group = graph.channel_groups(model)[index]
    kept, removed = same_positions_in_every_run(group, g)

    small = shrink(model, {group.producers[-1]: kept})
    x = torch.randn(4, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(small(x), zero_channels(model, {group: removed})(x), rtol=1e-4, atol=1e-5)
    assert all(small.get_submodule(p).out_channels == len(kept) for p in group.producers)
    assert {m.groups for m in small.modules() if isinstance(m, nn.Conv2d)} == {1, 4, 8}       # groups stay
    assert same(snapshot(model), before)


def test_keep_with_other_positions_in_another_run_is_refused_and_says_which_conv():
    model = ResNeXtCNN()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"Cannot shrink 'conv1' with these indices: the grouped convolution\(s\) "
                                         r"conv2 cut its 32 channels into 4 runs of 8.*positions \[0, 1\] of run 0 "
                                         r"but \[0, 2\] of run 1"):
        shrink(model, {"conv1": [0, 1, 8, 10, 16, 17, 24, 25]})
    assert same(snapshot(model), before)
    small = shrink(model, {"conv1": [0, 1, 8, 9, 16, 17, 24, 25]})
    assert small.conv2.weight.shape == (32, 2, 3, 3) and small.conv2.groups == 4


def test_channels_to_keep_removes_a_position_only_where_every_run_reads_zero():
    masked = ResNeXtCNN()
    with torch.no_grad():
        masked.conv1.weight[[3, 11, 19, 27]] = 0                    # position 3 of all 4 runs of 8
        masked.conv1.bias[[3, 11, 19, 27]] = 0
        masked.conv1.weight[5] = masked.conv1.bias[5] = 0           # position 5 of run 0 only: stays
    keep = pl.shrink.channels_to_keep(masked)
    assert keep["conv1"].tolist() == [c for c in range(32) if c % 8 != 3]
    small = shrink(masked, keep)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(small.eval()(x), masked.eval()(x), rtol=1e-4, atol=1e-5)


def test_a_channel_masked_resnext_saves_shrunk_and_loads_into_a_fresh_one(tmp_path):
    g = torch.Generator().manual_seed(40)
    model = randomize_batchnorm(ResNeXtCNN(), g).eval()
    removed = torch.tensor([2, 5, 10, 13, 18, 21, 26, 29, 1])          # positions 2 and 5 of every run of 8; 1 once
    kept = torch.ones(32, dtype=torch.bool)
    kept[removed] = False
    pl.masks.set_masks(model, {"conv1.weight": kept[:, None, None, None].expand(32, 16, 1, 1).float(),
                               "conv1.bias": kept.float(), "bn1.weight": kept.float(), "bn1.bias": kept.float()})
    record = pl.export.save_for_pytorch(model, tmp_path / "resnext.pt", shrink_units=True)
    loaded = pl.export.load_for_pytorch(tmp_path / "resnext.pt", ResNeXtCNN().eval())
    x = torch.randn(2, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-5)
    assert record.widths == {"conv1": 24}
    assert loaded.conv2.weight.shape == (32, 6, 3, 3) and loaded.conv2.groups == 4


def test_resnext_counts_match_torch_pruning_magnitude_pruner():
    """Torch-Pruning also removes the same positions from every group of a grouped conv (its importance averaged
    over the groups), so at 0.5, where every run's half is whole, each layer ends with the same shape."""
    ours, theirs = shrink_groups(ResNeXtCNN(), 0.5), torch_pruning_magnitude(ResNeXtCNN(), 0.5)
    assert widths(ours) == widths(theirs)
    assert {n: m.groups for n, m in ours.named_modules() if isinstance(m, nn.Conv2d)} == {
        "stem": 1, "conv1": 1, "conv2": 4, "conv3": 1, "widen": 8}
    assert pl.count_parameters(ours) == pl.count_parameters(theirs) == 1_586
    macs = [pl.metrics.count_macs(m, (1, 1, 28, 28)).dense for m in (ours, theirs)]
    assert macs[0] == macs[1]


# ---------------------------------------------------------------------- what cannot be cut, and bad input

class Concat(nn.Module):
    """c reads a and b concatenated along the channels (how="channels": supported); refused: along the width
    (how="width"), with the model's input (how="input"), the cat's output added to d's (how="residual"), or read
    by a grouped conv (how="grouped")."""

    def __init__(self, how="channels"):
        super().__init__()
        self.a, self.b, self.d = (nn.Conv2d(1, k, 3, padding=1) for k in (4, 4, 8))
        self.c = nn.Conv2d({"width": 4, "input": 9}.get(how, 8), 4, 1, groups=2 if how == "grouped" else 1)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 2)
        self.how = how

    def forward(self, x):
        a, b = self.a(x), self.b(x)                                     # [B, 4, 28, 28] each
        if self.how == "width":
            y = torch.cat([a, b], 3)                                    # [B, 4, 28, 56]: side by side in W
        elif self.how == "input":
            y = torch.cat([x, a, b], 1)                                 # [B, 1 + 8, 28, 28]
        else:
            y = torch.cat([a, b], 1)                                    # [B, 8, 28, 28]
        if self.how == "residual":
            y = y + self.d(x)
        return self.fc(self.pool(self.c(y)).flatten(1))


class Gated(nn.Module):
    """a's channels are multiplied by a gate: a product, which the graph does not follow."""

    def __init__(self):
        super().__init__()
        self.a, self.gate, self.fc = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(self.a(x) * torch.sigmoid(self.gate(x)))


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.twice, self.fc = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.twice(self.twice(self.a(x))))


@pytest.mark.parametrize("make, name, match", [
    (lambda: Concat("width"), "a", r"node 'cat' concatenates it along dim 3, not along its channels \(dim 1 of "
                                   r"maps \[B, C, H, W\]\)"),
    (lambda: Concat("input"), "b", r"node 'cat' concatenates it with the model's input \(node 'x'\), whose number "
                                   r"of channels no layer says"),
    (lambda: Concat("residual"), "a", r"node 'add' reads a torch\.cat's output, whose channels belong to several "
                                      r"groups.*not supported yet"),
    (lambda: Concat("residual"), "d", r"node 'add' reads a torch\.cat's output"),
    (lambda: Concat("grouped"), "a", r"the grouped convolution 'c' reads a torch\.cat's output.*not supported yet"),
    (Gated, "a", r"cannot be followed through call_function 'mul' \(node 'mul'\)"),
    (Shared, "a", r"layer 'twice' is called 2 times in forward \(a shared layer\)"),
    (ResidualCNN, "fc", r"reach the model's output \(node 'output'\)"),
])
def test_a_group_that_cannot_be_cut_says_which_node_stops_it(make, name, match):
    model = make()
    group = next(g for g in graph.channel_groups(model) if name in g.producers)
    assert re.search(match, group.blocked)
    before = snapshot(model)
    with pytest.raises(ValueError, match=rf"Cannot shrink '{name}': .*{match}"):
        shrink(model, {name: [0]})
    assert same(snapshot(model), before)
    assert pl.count_parameters(shrink_groups(model, 0.5)) <= pl.count_parameters(model)   # the rest still shrinks


def test_the_cut_groups_of_the_blocked_examples():
    small = shrink_groups(Concat(), 0.5)                                # along the channels: every group is free
    assert (small.a.out_channels, small.b.out_channels, small.c.in_channels, small.c.out_channels) == (2, 2, 4, 2)
    assert shrink_groups(Concat("residual"), 0.5).c.out_channels == 2  # c's group is free: read by fc
    assert shrink_groups(Gated(), 0.5).gate.out_features == 6           # both sides of the product stay
    assert shrink_groups(Shared(), 0.5).a.out_features == 4


@pytest.mark.parametrize("kwargs, error, match", [
    ({"ratio": -0.1}, ValueError, r"ratio must be a number in \[0, 1\).*got -0\.1"),
    ({"ratio": 1.0}, ValueError, r"ratio must be a number in \[0, 1\).*1 would remove everything"),
    ({"ratio": 1.5}, ValueError, r"ratio must be a number in \[0, 1\)"),
    ({"ratio": float("nan")}, ValueError, r"ratio must be a number in \[0, 1\)"),
    ({"ratio": "0.5"}, ValueError, r"ratio must be a number in \[0, 1\)"),
    ({"ratio": True}, ValueError, r"ratio must be a number in \[0, 1\)"),
    ({"ratio": 0.5, "ignore": ["layer1.0.conv9"]}, ValueError, r"Unknown layer 'layer1\.0\.conv9'\. Did you mean"),
    ({"ratio": 0.5, "ignore": "fc"}, TypeError, r"ignore must be a list of layer names.*\['fc'\]"),
    ({"ratio": 0.5, "importance": "l2"}, ValueError, r"importance must be 'l1'"),
])
def test_shrink_groups_bad_input_says_what_is_wrong_and_leaves_the_model_untouched(kwargs, error, match):
    model = pl.build_model("resnet18")
    before = snapshot(model)
    with pytest.raises(error, match=match):
        shrink_groups(model, **kwargs)
    assert same(snapshot(model), before)


@pytest.mark.parametrize("keep, match", [
    ({"layer1.0.conv3": [0]}, r"no layer 'layer1\.0\.conv3'\. Did you mean 'layer1\.0\.conv2'\?"),
    ({"layer1.0.bn2": [0]}, r"'layer1\.0\.bn2' is a BatchNorm2d"),
    ({"fc": [0]}, r"Cannot shrink 'fc': .*outputs of the model.*can remove here: conv1, layer1\.0\.conv2"),
])
def test_shrink_bad_names_on_resnet18_leave_it_untouched(keep, match):
    model = pl.build_model("resnet18")
    before = snapshot(model)
    with pytest.raises(ValueError, match=match):
        shrink(model, keep)
    assert same(snapshot(model), before)


class MeanPooled(nn.Module):
    """Global average pooling written as x.mean((2, 3)), as people often do: channel c becomes feature c."""

    def __init__(self, dims=(2, 3), keepdim=False):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.Linear(8, 4)
        self.dims, self.keepdim = dims, keepdim

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.mean(self.dims, keepdim=self.keepdim).flatten(1))


@pytest.mark.parametrize("dims", [(2, 3), (-1, -2)])
def test_a_spatial_mean_passes_channels_to_the_linear_that_reads_them(dims):
    g = torch.Generator().manual_seed(0)
    model = randomize_batchnorm(MeanPooled(dims), g).eval()
    group = graph.channel_groups(model)[0]
    assert group.blocked is None and group.consumers == (Reader("fc", True),)
    kept, removed = torch.tensor([0, 2, 5]), torch.tensor([1, 3, 4, 6, 7])
    small = shrink(model, {"conv": kept})
    assert small.fc.in_features == 3
    x = torch.randn(4, 1, 6, 6, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(small(x), zero_channels(model, {group: removed})(x), rtol=1e-4, atol=1e-5)


def test_a_mean_over_other_dimensions_or_keeping_them_is_not_followed():
    assert graph.channel_groups(MeanPooled((1, 2)))[0].blocked is not None      # averages channels together
    assert graph.channel_groups(MeanPooled((2, 3), keepdim=True))[0].blocked is not None
