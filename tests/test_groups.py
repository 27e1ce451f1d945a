"""Channel groups: channels tied by residual adds and depthwise convs are found by graph.channel_groups, removed
together by shrink and shrink_groups, and the result matches the masked model and Torch-Pruning's counts."""

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunelab as pl
from prunelab import graph
from prunelab.graph import Reader
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
    bias entries of every producer and gamma and beta of every BatchNorm of the group are zeroed."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for group, idx in removed.items():
            for name in (*group.producers, *group.batchnorms):
                m = masked.get_submodule(name)
                m.weight[idx] = 0
                if m.bias is not None:
                    m.bias[idx] = 0
    return masked


def test_groups_of_a_small_residual_cnn_are_the_expected_ones():
    groups = graph.channel_groups(ResidualCNN())
    assert [(g.channels, g.producers, g.batchnorms, g.consumers, g.blocked) for g in groups[:-1]] == [
        (8, ("stem", "b1_conv2"), ("stem_bn", "b1_bn2"),                       # the stem and block 1 add together
         (Reader("b1_conv1", False), Reader("b2_conv1", False), Reader("down", False)), None),
        (8, ("b1_conv1",), ("b1_bn1",), (Reader("b1_conv2", False),), None),
        (16, ("b2_conv1",), ("b2_bn1",), (Reader("b2_conv2", False),), None),
        (16, ("b2_conv2", "down", "dw"), ("b2_bn2", "down_bn", "dw_bn"),     # + the depthwise conv after the add
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
    assert all(small.get_submodule(b).num_features == len(kept) for b in group.batchnorms)
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
        ("a", "b"), ("bn",), (Reader("b", False), Reader("fc", True)))
    small = shrink(model, {"b": [0, 2, 5]})
    assert small.b.weight.shape == (3, 3, 1, 1) and small.fc.in_features == 3 * 26 * 26
    x = torch.randn(2, 1, 28, 28, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(small(x), zero_channels(model, {group: [1, 3, 4]})(x), rtol=1e-4, atol=1e-5)


def lowest(model, group, ratio):
    """The round(ratio · n) channels of least I_c = sum over producers of ||W_p[c]||_1, computed here by hand."""
    I = sum(model.get_submodule(p).weight.flatten(1).abs().sum(1) for p in group.producers)   # [n]
    return I.argsort(stable=True)[: round(ratio * group.channels)]


@pytest.mark.parametrize("model_name", ["small", "resnet18"])
def test_shrink_groups_matches_the_model_with_the_least_important_channels_zeroed(model_name):
    g = torch.Generator().manual_seed(9)
    model = randomize_batchnorm(ResidualCNN() if model_name == "small" else pl.build_model("resnet18"), g).eval()
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

def torch_pruning_resnet18(ratio):
    tp = pytest.importorskip("torch_pruning")
    model = pl.build_model("resnet18")
    example_inputs = torch.randn(1, 1, 28, 28)
    pruner = tp.pruner.MagnitudePruner(model, example_inputs, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, ignored_layers=[model.fc], global_pruning=False)
    pruner.step()
    return model


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


# ---------------------------------------------------------------------- what cannot be cut, and bad input

class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 4, 3), nn.Conv2d(8, 4, 1)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.pool(self.c(torch.cat([self.a(x), self.b(x)], 1))).flatten(1))


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3, groups=2)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.pool(self.b(self.a(x))).flatten(1))


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
    (Concat, "a", r"concatenated with other tensors by node 'cat' \(torch\.cat\).*not supported yet"),
    (Grouped, "a", r"'b' is a grouped convolution \(groups=2, 8 -> 8 channels\).*not supported yet"),
    (Grouped, "b", r"'b' is a grouped convolution"),
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
    assert shrink_groups(Concat(), 0.5).c.out_channels == 2             # c's group is free: read by fc
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
