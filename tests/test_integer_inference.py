"""Integer-only inference against known answers: a 2x2 Linear computed by hand, the fixed-point multiplier
against exact rational arithmetic, every intermediate tensor an integer of its dtype, each layer against the float
formula on the same grids, and the trained models' predictions against the float ones."""

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunelab as pl
from conftest import same, snapshot
from prunelab import integer_inference as II


@pytest.fixture(scope="module")
def validation_set():
    return pl.load_fashion_mnist("validation")


@pytest.fixture(scope="module")
def test_images():
    return pl.load_fashion_mnist("test").subset(2000, seed=0)


def hand_linear():
    """A 2x2 Linear whose weights round to known integers: row 0 S_w = 0.01, q_w = [127, −64]; row 1 S_w = 0.02,
    q_w = [13, 127]."""
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.27, -0.64], [0.254, 2.54]]))
        layer.bias.copy_(torch.tensor([0.5, -1.0]))
    return layer


def grid(S, Z):
    return II.ActivationRange(float("nan"), float("nan"), torch.tensor(S), torch.tensor(Z, dtype=torch.int32))


HAND_RANGES = {"input": grid(0.1, 10), "0": grid(0.05, 100)}      # S_x = 0.1, Z_x = 10; S_y = 0.05, Z_y = 100


# ------------------------------------------------------------------------------------------------ by hand

def test_a_2x2_linear_computed_by_hand():
    model = nn.Sequential(hand_linear())
    integer = II.integer_model(model, HAND_RANGES)
    layer = integer.layers[0]
    assert layer.q_w.tolist() == [[127, -64], [13, 127]] and layer.q_w.dtype == torch.int8
    assert layer.q_b.tolist() == [500, -500]                           # b / (S_w S_x) = 0.5 / 0.001, −1 / 0.002
    assert layer.zero_point_term.tolist() == [10 * 63, 10 * 140]       # Z_x Σ_k q_w[c, k]
    # x = [0.5, −0.3] -> q_x = [5 + 10, −3 + 10] = [15, 7]
    x = torch.tensor([[0.5, -0.3]])
    (_, q_x), (_, acc), (_, q_y) = integer.trace(x)
    assert q_x.tolist() == [[15, 7]]
    # acc_0 = 127·15 − 64·7 − 10·63 + 500 = 1327 = 127·5 + (−64)(−3) + 500; acc_1 = 13·15 + 127·7 − 1400 − 500 = −816
    assert acc.tolist() == [[1327, -816]] and acc.dtype == torch.int32
    # M = S_w S_x / S_y = [0.02, 0.04]: q_y = 100 + round([26.54, −32.64]) = [127, 67]
    torch.testing.assert_close(layer.M, torch.tensor([0.02, 0.04], dtype=torch.float64))
    assert q_y.tolist() == [[127, 67]] and q_y.dtype == torch.uint8
    torch.testing.assert_close(integer(x), torch.tensor([[27 * 0.05, -33 * 0.05]]))
    with torch.no_grad():                                              # the float layer: [1.327, −1.635]
        assert (integer(x) - model(x)).abs().max() < 0.05


def test_a_relu_after_the_layer_is_the_clamp_at_Z_y():
    model = nn.Sequential(hand_linear(), nn.ReLU())
    integer = II.integer_model(model, HAND_RANGES)
    assert len(integer.layers) == 1 and integer.layers[0].relu and integer.layers[0].q_min == 100
    assert integer.trace(torch.tensor([[0.5, -0.3]]))[-1][1].tolist() == [[127, 100]]   # 67 -> Z_y: r = 0


def test_rounding_right_shift_by_hand():
    x = torch.tensor([5, -5, 7, -7, 6, -6], dtype=torch.int64)
    # 2.5 -> 3, −2.5 -> −2 (ties up), 1.75 -> 2, −1.75 -> −2, 1.5 -> 2, −1.5 -> −1
    assert II.rounding_right_shift(x, torch.tensor([1, 1, 2, 2, 2, 2])).tolist() == [3, -2, 2, -2, 2, -1]


def test_fixed_point_by_hand():
    M0_q31, n = II.fixed_point(torch.tensor([0.75, 0.02, 3.0], dtype=torch.float64))
    assert M0_q31.dtype == torch.int32 and n.tolist() == [0, 5, -2]   # 0.02 = 0.64 · 2^−5, 3 = 0.75 · 2^2
    assert M0_q31.tolist() == [3 * 2 ** 29, round(0.64 * 2 ** 31), 3 * 2 ** 29]
    M0_q31, n = II.fixed_point(torch.tensor([1 - 2.0 ** -40], dtype=torch.float64))   # M0 rounds up to 2^31
    assert M0_q31.tolist() == [2 ** 30] and n.tolist() == [-1]


# ------------------------------------------------------------------------------------------------ fixed point

def test_the_fixed_point_multiplier_reproduces_M_times_acc_within_rounding():
    g = torch.Generator().manual_seed(0)
    M = torch.exp(torch.empty(2000, dtype=torch.float64).uniform_(-14, 2, generator=g))   # e^−14 .. e^2
    acc = torch.randint(-2 ** 31, 2 ** 31, (2000,), generator=g, dtype=torch.int64).to(torch.int32)
    acc[:1000] //= 2 ** 16                                             # small accumulators too
    M0_q31, n = II.fixed_point(M)
    assert ((M0_q31 >= 2 ** 30) & (M0_q31.long() < 2 ** 31)).all()
    assert torch.allclose(M0_q31.double() * torch.pow(2.0, -31 - n.double()), M, rtol=2 ** -31, atol=0)
    q = II.fixed_point_multiply(acc, M0_q31, n)                        # round(acc · M), int64, no clamp
    exact = acc.double() * M
    assert ((q.double() - exact).abs() <= 0.5 + exact.abs() * 2 ** -30).all()
    for a, m0, k, got in list(zip(acc.tolist(), M0_q31.tolist(), n.tolist(), q.tolist()))[:300]:
        value = Fraction(a * m0, 2 ** (31 + k))                       # exact rational acc · M0 · 2^−(31 + n)
        assert got == (value + Fraction(1, 2)).__floor__()            # rounded to nearest, ties up


def test_requantize_with_integers_matches_the_float_M_but_for_ties():
    g = torch.Generator().manual_seed(1)
    acc = torch.randint(-50_000, 50_000, (64, 8), generator=g, dtype=torch.int32)
    M = torch.rand(8, generator=g, dtype=torch.float64) * 0.01 + 1e-4
    M0_q31, n = II.fixed_point(M)
    fixed = II.requantize(acc, M0_q31, n, 128, 0, 255)
    real = II.requantize_float(acc, M, 128, 0, 255)
    assert fixed.dtype == real.dtype == torch.uint8
    assert (fixed.int() - real.int()).abs().max() <= 1 and (fixed == real).float().mean() > 0.99


# ------------------------------------------------------------------------------------------------ the kit's models

@pytest.fixture(scope="module")
def integer_models(validation_set):
    """{name: (float model, its integer model)}, calibrated (min-max) on 1,000 validation images."""
    out = {}
    for name in ("lenet300", "lenet5", "vgg_small"):
        model = pl.load_pretrained(name).eval()
        out[name] = model, II.integer_model(model, II.calibrate(model, validation_set.subset(1000, seed=0)))
    return out


@pytest.mark.parametrize("name", ["lenet300", "lenet5", "vgg_small"])
def test_every_intermediate_tensor_is_an_integer_of_its_dtype(integer_models, test_images, name):
    _, integer = integer_models[name]
    x = test_images.normalized()[:16]
    layers = {layer.name: layer for layer in integer.layers}
    for what, q in integer.trace(x):
        if what.endswith(".acc"):
            assert q.dtype == torch.int32, what
        else:
            assert q.dtype == torch.uint8, what                        # [0, 255] by its dtype
            layer = layers.get(what)
            if isinstance(layer, II._IntegerLayer):
                assert int(q.min()) >= layer.q_min and int(q.max()) <= layer.q_max
    for layer in layers.values():
        if isinstance(layer, II._IntegerLayer):
            assert layer.q_w.dtype == torch.int8 and layer.q_w.abs().max() <= 127
            assert layer.q_b.dtype == layer.zero_point_term.dtype == layer.M0_q31.dtype == torch.int32


def true_int32_products(layer, q_x):
    """Σ_k q_w q_x with torch's own int32 operators, where this torch has them on the CPU."""
    w, x = layer.q_w.to(torch.int32), q_x.to(torch.int32)
    if isinstance(layer, II.IntegerLinear):
        return x @ w.T
    x = F.pad(x, layer.pad, value=layer.Z_x)
    return F.conv2d(x, w, None, layer.stride, 0, layer.dilation, layer.groups)


@pytest.mark.parametrize("name", ["lenet300", "lenet5", "vgg_small"])
def test_the_float64_sums_are_the_true_int32_sums(integer_models, test_images, name):
    _, integer = integer_models[name]
    steps = dict(integer.trace(test_images.normalized()[:8]))
    inputs = [("input", None)] + [(layer.name, layer) for layer in integer.layers]
    for (before, _), (_, layer) in zip(inputs, inputs[1:]):
        if isinstance(layer, II._IntegerLayer):
            try:
                truth = true_int32_products(layer, steps[before])
            except (RuntimeError, NotImplementedError):
                pytest.skip("this torch has no int32 matmul / conv on the CPU")
            assert torch.equal(layer.products(steps[before]), truth), layer.name


def check_each_layer_against_the_float_formula(integer, x):
    """q_y against round(y / S_y) + Z_y, y computed in float64 from r̂_x = S_x (q_x − Z_x), Ŵ = S_w q_w and
    b̂ = S_w S_x q_b: the same up to the 31-bit M0 and ties, so at most 1 apart."""
    steps = dict(integer.trace(x))
    names = ["input"] + [layer.name for layer in integer.layers]
    for before, layer in zip(names, integer.layers):
        if not isinstance(layer, II._IntegerLayer):
            continue
        r_x = (steps[before].double() - layer.Z_x) * layer.S_x
        view = (-1,) + (1,) * (layer.q_w.dim() - 1)
        W = layer.q_w.double() * layer.S_w.double().view(view)
        b = layer.q_b.double() * layer.S_w.double() * layer.S_x
        if isinstance(layer, II.IntegerLinear):
            y = F.linear(r_x, W, b)
        else:
            y = F.conv2d(F.pad(r_x, layer.pad), W, b, layer.stride, 0, layer.dilation, layer.groups)
        expected = torch.clamp(torch.round(y / layer.S_y) + layer.Z_y, layer.q_min, layer.q_max)
        difference = (steps[layer.name].double() - expected).abs()
        assert difference.max() <= 1 and (difference == 0).double().mean() > 0.99, layer.name


@pytest.mark.parametrize("name", ["lenet300", "lenet5", "vgg_small"])
def test_each_layer_is_the_float_formula_on_the_same_grids(integer_models, test_images, name):
    check_each_layer_against_the_float_formula(integer_models[name][1], test_images.normalized()[:8])


def test_strides_groups_same_padding_a_lone_relu_and_batchnorm():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding="same"), nn.MaxPool2d(2), nn.ReLU(),
                          nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Flatten(), nn.Dropout(0.5), nn.Linear(6 * 7 * 7, 5))
    with torch.no_grad():
        model[4].running_mean.uniform_(-0.5, 0.5, generator=g)
        model[4].running_var.uniform_(0.5, 2.0, generator=g)
    model.eval()
    images = (torch.randn(64, 1, 28, 28, generator=g), torch.zeros(64, dtype=torch.long))
    integer = II.integer_model(model, II.calibrate(model, images))
    kinds = [type(layer).__name__ for layer in integer.layers]
    assert kinds == ["IntegerConv2d", "IntegerMaxPool2d", "IntegerReLU", "IntegerConv2d", "IntegerFlatten",
                     "IntegerLinear"]
    assert integer.layers[0].pad == (1, 1, 1, 1) and integer.layers[3].relu
    check_each_layer_against_the_float_formula(integer, images[0][:16])
    with torch.no_grad():
        logits = model(images[0][:16])
    assert (integer(images[0][:16]) - logits).abs().max() < 0.05 * logits.abs().max()


@pytest.mark.parametrize("method", ["minmax", "percentile"])
@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_integer_only_predictions_agree_with_the_float_model(validation_set, test_images, name, method):
    # measured on these 2,000 test images (1,000 validation images to calibrate): agreement 99.50–99.70%,
    # integer-only minus float accuracy −0.20 to +0.10 points; integers are exact, but calibration runs the float
    # model, whose last bits (and so S, Z) can differ on another CPU: hence the margin
    model = pl.load_pretrained(name).eval()
    integer = II.integer_model(model, II.calibrate(model, validation_set.subset(1000, seed=0), method=method))
    result = integer.compare_with(model, test_images)
    assert result.images == 2000
    assert result.float_accuracy == pl.evaluate(model, test_images).accuracy
    assert result.agreement >= 0.98, result.describe()
    assert abs(result.integer_accuracy - result.float_accuracy) <= 0.01, result.describe()
    few = test_images.subset(200, seed=1)                              # evaluate takes it as a model
    assert pl.evaluate(integer, few).accuracy == integer.compare_with(model, few).integer_accuracy


def test_vgg_small_with_batchnorm_folded_agrees(integer_models, test_images):
    model, integer = integer_models["vgg_small"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in integer.modules())
    result = integer.compare_with(model, test_images.subset(300, seed=1))
    assert result.agreement >= 0.97, result.describe()                 # measured 99.60% on 2,000 images


# ------------------------------------------------------------------------------------------------ calibration

def test_calibration_ranges(validation_set):
    model = pl.load_pretrained("lenet5")
    before = snapshot(model)
    images = validation_set.subset(500, seed=0)
    minmax = II.calibrate(model, images)
    percentile = II.calibrate(model, images, method="percentile", p=99.9)
    assert list(minmax) == ["input", "conv1", "conv2", "fc1", "fc2", "fc3"]
    x = images.normalized()
    assert (minmax["input"].r_min, minmax["input"].r_max) == (float(x.min()), float(x.max()))
    for name in ("conv1", "conv2", "fc1", "fc2"):                     # after their ReLU: r ≥ 0, Z = 0
        assert minmax[name].r_min == 0 and int(minmax[name].Z) == 0
    for name, r in percentile.items():
        assert minmax[name].r_min <= r.r_min <= r.r_max <= minmax[name].r_max
    assert percentile["fc1"].r_max < minmax["fc1"].r_max
    assert same(before, snapshot(model))                               # the model is not changed


def test_percentile_range_by_hand():
    r = torch.arange(1, 10_001, dtype=torch.float32)                   # 1 .. 10,000
    assert II.percentile_range(r, 99.9) == (10.0, 9990.0)
    assert II.percentile_range(r, 100) == (1.0, 10_000.0) == II.minmax_range(r)


# ------------------------------------------------------------------------------------------------ bad inputs

def test_unsupported_layers_are_named():
    images = (torch.randn(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    bad = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Sigmoid(), nn.Linear(10, 10))
    with pytest.raises(TypeError, match=r"layer '2' is a Sigmoid.*Supported: Conv2d, Linear"):
        II.calibrate(bad, images)
    lone_bn = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.BatchNorm1d(10), nn.Linear(10, 10))
    with pytest.raises(TypeError, match="BatchNorm1d"):
        II.integer_model(lone_bn, {})
    with pytest.raises(TypeError, match="nn.Sequential.*TinyViT"):
        II.calibrate(pl.build_model("vit_tiny"), images)
    with pytest.raises(TypeError, match="no Conv2d or Linear"):
        II.calibrate(nn.Sequential(nn.Flatten(), nn.ReLU()), images)


def test_bad_arguments_say_what_to_pass(validation_set):
    model = pl.load_pretrained("lenet300")
    images = validation_set.subset(10)
    with pytest.raises(ValueError, match="'minmax' or 'percentile'"):
        II.calibrate(model, images, method="min-max")
    with pytest.raises(ValueError, match="p must be a percentile"):
        II.calibrate(model, images, method="percentile", p=0.9999)
    with pytest.raises(TypeError, match="needs images with labels"):
        II.calibrate(model, "validation")
    with pytest.raises(ValueError, match="batch_size"):
        II.calibrate(model, images, batch_size=0)
    with pytest.raises(OverflowError, match="at most 66,311 inputs"):
        II.integer_model(nn.Sequential(nn.Linear(70_000, 2)), {"input": grid(0.1, 0), "0": grid(0.1, 0)})
    with pytest.raises(ValueError, match="calibrate\\(model, data\\).*missing fc3"):
        II.integer_model(model, {k: v for k, v in II.calibrate(model, images).items() if k != "fc3"})
    integer = II.integer_model(model, II.calibrate(model, images))
    with pytest.raises(TypeError, match="float images"):
        integer(images.images)
    with pytest.raises(ValueError, match=r"\[2\^-31, 2\^30\)"):
        II.fixed_point(torch.tensor([0.0]))
