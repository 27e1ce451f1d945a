"""The small general helpers every part of the kit uses (prunelab._helpers)."""

import pytest
import torch
from torch import nn

import prunelab as pl
from prunelab._helpers import did_you_mean, in_mode, per_layer, select_layers, temporary_path


def test_did_you_mean_names_the_closest_option_or_nothing():
    assert did_you_mean("fc11", ["fc1", "fc2", "conv1"]) == " Did you mean 'fc1'?"
    assert did_you_mean("zzz", ["fc1", "fc2"]) == ""
    assert did_you_mean(3, [2, 4]) in (" Did you mean '2'?", " Did you mean '4'?", "")   # anything, as text


def test_select_layers_by_name_all_or_without_the_classifier_and_clear_errors():
    model = pl.build_model("lenet300")
    assert list(select_layers(model)) == ["fc1", "fc2", "fc3"]
    assert list(select_layers(model, units=True)) == ["fc1", "fc2"]            # the classes stay
    assert select_layers(model, ["fc2"]) == {"fc2": model.fc2}
    with pytest.raises(ValueError, match=r"Unknown layer 'fc4'. Did you mean 'fc3'\? Prunable layers of LeNet300: fc1"):
        select_layers(model, ["fc4"])
    with pytest.raises(ValueError, match="no layer to prune"):
        select_layers(nn.Sequential(nn.Linear(2, 2)), units=True)


def test_in_mode_restores_every_submodule_also_after_an_error():
    model = pl.build_model("vgg_small").train()
    frozen = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d)).eval()   # a user froze one BN
    before = [m.training for m in model.modules()]
    with in_mode(model, training=False):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before and not frozen.training
    with pytest.raises(RuntimeError), in_mode(model, training=False):
        raise RuntimeError("inside the block")
    assert [m.training for m in model.modules()] == before


def test_per_layer_spreads_one_value_or_checks_a_mapping():
    assert per_layer(4, ["fc1", "fc2"], "bits") == {"fc1": 4, "fc2": 4}
    assert per_layer({"fc2": 5}, ["fc1", "fc2"], "bits") == {"fc1": None, "fc2": 5}
    with pytest.raises(ValueError, match=r"bits given for unknown layer\(s\) \['fc9'\]"):
        per_layer({"fc9": 5}, ["fc1", "fc2"], "bits")


def test_temporary_path_is_gone_afterwards():
    with temporary_path("model.pt") as path:
        torch.save({"x": torch.ones(3)}, path)
        assert path.stat().st_size > 0 and path.name == "model.pt"
    assert not path.exists() and not path.parent.exists()
