"""The model's traced graph: layer nodes, units, per-unit activations, the BatchNorm after a conv and the routes
from a layer to its readers, each checked on a small model whose answer is known."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunelab as pl
from prunelab import graph, pruning
from prunelab.graph import GraphError

V = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0])   # one value per unit [5]


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else x       # control flow on a tensor value


class Shared(nn.Module):
    """``fc`` is called twice; ``unused`` never."""

    def __init__(self):
        super().__init__()
        self.fc, self.unused, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.fc(self.fc(x)))


class Activations(nn.Module):
    """The three spellings of an activation in forward: a module, a function with an argument, a method."""

    def __init__(self):
        super().__init__()
        self.act = nn.Hardswish()

    def forward(self, x):
        return self.act(x), F.leaky_relu(x, 0.2), x.relu(), x + 1, torch.add(x, x)


def test_units_are_output_features_or_output_channels():
    assert graph.units(nn.Linear(3, 5)) == 5
    assert graph.units(nn.Conv2d(3, 7, kernel_size=3)) == 7
    with pytest.raises(TypeError, match="nn.Linear or nn.Conv2d, not of a BatchNorm2d"):
        graph.units(nn.BatchNorm2d(4))


ELEMENTWISE_OPS = {**{kind.__name__: kind() for kind in graph.ELEMENTWISE_MODULES},
                   **{f"{fn.__module__}.{fn.__name__}": fn for fn in graph.ELEMENTWISE_FUNCTIONS},
                   **{f"Tensor.{name}": lambda v, name=name: getattr(v, name)() for name in graph.ELEMENTWISE_METHODS}}


@pytest.mark.parametrize("name", ELEMENTWISE_OPS)
def test_every_elementwise_op_maps_a_constant_per_unit_one_by_one(name):
    op = ELEMENTWISE_OPS[name]
    out = op(V.clone())                                                     # [5] -> [5]
    assert out.shape == V.shape
    torch.testing.assert_close(out, torch.cat([op(V[k:k + 1].clone()) for k in range(len(V))]))


def test_elementwise_op_keeps_the_nodes_own_arguments_and_refuses_two_tensor_inputs():
    gm = graph.trace(Activations(), "test")
    op = {node.name: graph.elementwise_op(gm, node) for node in gm.graph.nodes if node.op != "output"}
    assert torch.equal(op["act"](V), F.hardswish(V))
    assert torch.equal(op["leaky_relu"](V), F.leaky_relu(V, 0.2))           # slope 0.2, not the default 0.01
    assert op["leaky_relu"](torch.tensor([-1.0])).item() == pytest.approx(-0.2)
    assert torch.equal(op["relu"](V), V.clamp(min=0))
    assert op["add"] is None and op["add_1"] is None and op["x"] is None
    assert [graph.is_elementwise(gm, n) for n in gm.graph.nodes if n.op != "output"] == [
        False, True, True, True, False, False]


def test_following_batchnorm_on_lenet5_and_vgg_small():
    assert graph.following_batchnorm(pl.build_model("lenet5")) == {}
    assert graph.following_batchnorm(pl.build_model("vgg_small")) == {f"conv{i}": f"bn{i}" for i in range(1, 7)}
    assert pruning.following_batchnorm is graph.following_batchnorm


def test_an_untraceable_model_is_a_type_error_naming_what_needed_the_graph():
    with pytest.raises(TypeError, match=r"shrink follows the dataflow of Untraceable.*symbolic_trace failed.*"
                                        r"data-dependent control flow"):
        graph.trace(Untraceable(), "shrink")
    with pytest.raises(TypeError, match="following_batchnorm follows the dataflow of Untraceable"):
        graph.following_batchnorm(Untraceable())


def test_a_layer_called_twice_or_never_has_no_node():
    gm = graph.trace(Shared(), "test")
    assert graph.layer_node(gm, "out").target == "out"
    with pytest.raises(GraphError, match=r"layer 'fc' is called 2 times in Shared\.forward \(a shared layer\)"):
        graph.layer_node(gm, "fc")
    with pytest.raises(ValueError, match=r"layer 'unused' is never called in Shared\.forward"):
        graph.layer_nodes(gm, ["out", "unused"])
    with pytest.raises(GraphError, match="called 2 times"):
        graph.routes(gm, "fc")
    with pytest.raises(GraphError, match="never called"):
        graph.routes(gm, "unused")


def test_sole_user_is_the_one_node_reading_a_value():
    gm = graph.trace(pl.build_model("lenet5"), "test")
    conv1 = graph.layer_node(gm, "conv1")
    assert graph.sole_user(conv1).target == "relu1"
    assert graph.sole_user(graph.layer_node(gm, "fc3")).op == "output"
    gm = graph.trace(Activations(), "test")
    x = next(n for n in gm.graph.nodes if n.op == "placeholder")
    assert graph.sole_user(x) is None                                        # five nodes read x


def test_routes_pass_batchnorm_activations_pooling_and_flatten():
    gm = graph.trace(pl.build_model("vgg_small"), "test")
    (route,) = graph.routes(gm, "conv6")                        # conv6 -> bn6 -> relu6 -> pool3 -> flatten -> fc
    assert (route.reader, route.flat) == ("fc", True)
    assert [name for name, _ in route.chain] == ["bn6", None]
    assert torch.equal(route.chain[1][1](V), V.clamp(min=0))
    (route,) = graph.routes(gm, "conv1")
    assert (route.reader, route.flat) == ("conv2", False)


@pytest.mark.parametrize("model_name, layer, match", [
    ("resnet18", "layer1.0.conv2", "tied by a residual connection"),
    ("lenet300", "fc3", "outputs of the model"),
])
def test_routes_stop_at_a_residual_add_and_at_the_models_output(model_name, layer, match):
    gm = graph.trace(pl.build_model(model_name), "test")
    with pytest.raises(GraphError, match=match):
        graph.routes(gm, layer)


def test_a_layer_inside_a_module_fx_does_not_enter_is_named_with_the_way_out():
    model = pl.build_model("vit_tiny")
    gm = graph.trace(model, "test")
    with pytest.raises(graph.GraphError, match=r"'encoder\.layers\.0\.linear1' runs inside 'encoder' \(a "
                                               r"TransformerEncoder\).*granularity='weight'"):
        graph.layer_node(gm, "encoder.layers.0.linear1")
    assert graph.layer_node(gm, "head").target == "head"
