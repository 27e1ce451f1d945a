import pytest
import torch
from torch import nn

import prunelab as pl


@pytest.mark.parametrize("name", list(pl.MODELS))
def test_every_model_maps_a_batch_of_images_to_ten_logits(name):
    model = pl.build_model(name).eval()
    with torch.no_grad():
        logits = model(torch.randn(7, 1, 28, 28))
    assert logits.shape == (7, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name, params", [("lenet300", 266_610), ("lenet5", 61_706), ("vgg_small", 77_786),
                                          ("resnet18", 11_175_370), ("vit_tiny", 71_946)])
def test_parameter_counts_are_the_documented_ones(name, params):
    assert pl.count_parameters(pl.build_model(name)) == params
    assert f"{params:,}" in pl.models.__doc__


def test_lenet300_is_the_784_300_100_10_mlp():
    layers = [m for m in pl.build_model("lenet300").modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(784, 300), (300, 100), (100, 10)]


def test_vgg_small_has_batchnorm_after_every_conv_and_custom_widths():
    model = pl.VGGSmall(widths=(8, 16, 24))
    convs = [n for n, m in model.named_children() if isinstance(m, nn.Conv2d)]
    assert convs == [f"conv{i}" for i in range(1, 7)]
    assert all(isinstance(getattr(model, f"bn{i}"), nn.BatchNorm2d) for i in range(1, 7))
    assert model.fc.in_features == 24 * 3 * 3
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_resnet18_is_torchvisions_own_class_with_residual_blocks():
    from torchvision.models import ResNet
    from torchvision.models.resnet import BasicBlock

    model = pl.build_model("resnet18")
    assert type(model) is ResNet
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 8
    assert model.conv1.in_channels == 1


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (pl.build_model("lenet5", seed=s).state_dict() for s in (3, 3, 4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_building_a_model_leaves_the_global_random_state_alone():
    before = torch.random.get_rng_state()
    pl.build_model("lenet300", seed=123)
    assert torch.equal(before, torch.random.get_rng_state())


def test_unknown_model_name_lists_the_known_ones_and_the_closest():
    with pytest.raises(ValueError, match=r"Unknown model 'lenet-5'.*lenet300, lenet5.*Did you mean 'lenet5'\?"):
        pl.build_model("lenet-5")
