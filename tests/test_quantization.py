"""Quantization against known answers: S and Z by hand, errors within S/2, exact zeros, k-bit files that
really shrink and load back exactly the fake-quantized weights."""

import math

import pytest
import torch
from torch import nn

import prunelab as pl
from conftest import snapshot, same
from prunelab import quantization as Q




@pytest.fixture(scope="module")
def lenet():
    return pl.load_pretrained("lenet300")


# ------------------------------------------------------------------------------------------------ the formulas

def test_affine_params_on_a_hand_example():
    # r in [-1, 3], 2 bits: q in [0, 3], S = 4 / 3, Z = round(0 - (-1) / (4/3)) = round(0.75) = 1
    S, Z = Q.affine_params(-1.0, 3.0, 2)
    assert S.item() == pytest.approx(4 / 3) and Z.item() == 1
    r = torch.tensor([-1.0, 0.0, 0.6, 1.4, 3.0])
    q = Q.quantize(r, S, Z, 0, 3)
    assert q.tolist() == [0, 1, 1, 2, 3] and q.dtype == torch.int32
    assert torch.allclose(Q.dequantize(q, S, Z), torch.tensor([-4 / 3, 0, 0, 4 / 3, 8 / 3]))


def test_symmetric_params_on_a_hand_example():
    S, Z = Q.symmetric_params(2.0, 3)              # q in [-3, 3], S = 2 / 3
    assert Q.qrange(3, "symmetric") == (-3, 3) and S.item() == pytest.approx(2 / 3) and Z.item() == 0
    q = Q.quantize(torch.tensor([-2.0, -0.3, 0.0, 0.4, 5.0]), S, Z, -3, 3)
    assert q.tolist() == [-3, 0, 0, 1, 3]
    assert Q.qrange(8, "symmetric") == (-127, 127) and Q.qrange(8, "affine") == (0, 255)


@pytest.mark.parametrize("r_min, r_max", [(-1.0, 3.0), (0.3, 2.0), (-5.0, -0.1), (-0.77, 0.123)])
@pytest.mark.parametrize("bits", [1, 2, 3, 8])
def test_zero_is_exactly_representable_in_affine(r_min, r_max, bits):
    S, Z = Q.affine_params(r_min, r_max, bits)
    q = Q.quantize(torch.zeros(3), S, Z, *Q.qrange(bits, "affine"))
    assert torch.equal(Q.dequantize(q, S, Z), torch.zeros(3))


@pytest.mark.parametrize("scheme", ["affine", "symmetric"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_round_trip_error_is_at_most_half_a_step_inside_the_range(scheme, bits):
    r = torch.randn(1000, generator=torch.Generator().manual_seed(bits)) * 3 + 1
    qt = Q.quantize_tensor(r, bits, scheme=scheme)
    assert (r - qt.dequantize()).abs().max() <= qt.S / 2 * (1 + 1e-5)


def test_binary_one_bit_symmetric_is_sign_quantization():
    W = torch.tensor([[-2.0, -0.1, 0.3, 4.0]])
    qt = Q.quantize_tensor(W, 1, scheme="symmetric")
    assert qt.q.tolist() == [[-1, -1, 1, 1]] and qt.S.item() == 2.0       # S = absmax / 2
    with pytest.raises(ValueError, match="no zero level"):
        Q.quantize_tensor(torch.tensor([0.0, 1.0]), 1, scheme="symmetric")



def test_binarize_on_a_hand_example():
    W = torch.tensor([[-2.0, -0.1, 0.3, 4.0]])
    qt = Q.binarize(W)
    assert qt.q.tolist() == [[-1, -1, 1, 1]] and qt.S.item() == pytest.approx(1.6)   # α* = (2 + 0.1 + 0.3 + 4) / 4
    assert qt.bits == 1 and qt.scheme == "symmetric" and qt.Z.item() == 0
    assert torch.allclose(qt.dequantize(), torch.tensor([[-1.6, -1.6, 1.6, 1.6]]))
    with pytest.raises(ValueError, match="no zero level"):
        Q.binarize(torch.tensor([0.0, 1.0]))


def _binary_sse(W, alpha):
    """‖W − α sign(W)‖², α a float or a tensor that broadcasts over W."""
    return float(((W - alpha * torch.where(W >= 0, 1.0, -1.0)) ** 2).sum())


@pytest.mark.parametrize("seed", range(4))
def test_binarize_scale_is_mean_abs_and_beats_max_over_2_and_any_other_alpha(seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(16, 50, generator=g) * (seed + 1) * 0.1 + 0.05 * seed       # some shifted, not symmetric
    if seed % 2:
        W = W ** 3                                                              # heavy tails, like trained weights
    qt = Q.binarize(W)
    alpha_star = W.abs().mean()
    assert torch.allclose(qt.S, alpha_star) and qt.S.dim() == 0
    assert torch.equal(qt.dequantize(), alpha_star * torch.where(W >= 0, 1.0, -1.0))
    best = _binary_sse(W, qt.S)
    assert best < _binary_sse(W, W.abs().max() / 2)                 # beats 1-bit symmetric's max|r| / 2 ...
    assert best < Q.quantization_error(W, 1, scheme="symmetric")["mse"] * W.numel()   # ... as quantize_tensor has it
    alphas = torch.linspace(0, float(W.abs().max()), 2001)           # ... and every α of a fine search
    assert all(best <= _binary_sse(W, a) * (1 + 1e-6) for a in alphas.tolist())
    assert best < min(_binary_sse(W, alpha_star * 0.99), _binary_sse(W, alpha_star * 1.01))


def test_binarize_per_channel_has_one_mean_abs_per_row_and_is_optimal_row_by_row():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(4, 64, generator=g) * torch.tensor([[100.0], [1.0], [0.01], [0.001]])
    qt = Q.binarize(W, per_channel=True)
    assert qt.S.shape == (4, 1) and qt.Z.shape == (4, 1)
    assert torch.allclose(qt.S.flatten(), W.abs().mean(dim=1))       # α*_c = mean|W_c|
    for c in range(4):                                               # each row is its own per-tensor binarization
        assert torch.allclose(qt.dequantize()[c], Q.binarize(W[c]).dequantize())
        row_best = _binary_sse(W[c], qt.S[c])
        assert all(row_best <= _binary_sse(W[c], a) * (1 + 1e-6)
                   for a in torch.linspace(0, float(W[c].abs().max()), 501).tolist())
    per_tensor, per_channel = _binary_sse(W, Q.binarize(W).S), _binary_sse(W, qt.S)
    assert per_channel < per_tensor
    assert per_channel < _binary_sse(W, Q.quantize_tensor(W, 1, scheme="symmetric", per_channel=True).S)
    conv = Q.binarize(torch.randn(3, 2, 3, 3, generator=g), per_channel=True)
    assert conv.S.shape == (3, 1, 1, 1)


def test_per_channel_beats_per_tensor_when_rows_have_very_different_scales():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(4, 64, generator=g) * torch.tensor([[100.0], [1.0], [0.01], [0.001]])
    for scheme in ("affine", "symmetric"):
        per_tensor = Q.quantization_error(W, 4, scheme=scheme, per_channel=False)
        per_channel = Q.quantization_error(W, 4, scheme=scheme, per_channel=True)
        assert per_channel["mse"] < per_tensor["mse"] and per_channel["sqnr_db"] > per_tensor["sqnr_db"]
        qt = Q.quantize_tensor(W, 4, scheme=scheme, per_channel=True)
        assert qt.S.shape == (4, 1)
    # the small rows are wiped out per tensor, kept per channel
    assert torch.equal(Q.fake_quantize(W, 4, per_channel=False)[3], torch.zeros(64))
    assert Q.fake_quantize(W, 4, per_channel=True)[3].count_nonzero() > 0


def test_group_quantization_gives_every_group_of_a_row_its_own_scale():
    W = torch.tensor([[0.9, -0.3, 4.0, 1.1, 0.2]])
    # 3-bit symmetric, q in [-3, 3]; groups of 2 columns (the last one narrower): S = 0.3, 4/3 and 0.2/3
    grouped = Q.fake_quantize_groups(W, 3, group_size=2)
    assert torch.allclose(grouped, torch.tensor([[0.9, -0.3, 4.0, 4 / 3, 0.2]]))
    # one group per row: S = 4/3 for all, the small weights round to 0 or one step
    per_row = Q.fake_quantize_groups(W, 3)
    assert torch.allclose(per_row, torch.tensor([[4 / 3, 0.0, 4.0, 4 / 3, 0.0]]))
    assert torch.equal(per_row, Q.fake_quantize(W, 3, per_channel=True))
    g = torch.Generator().manual_seed(0)
    W = torch.randn(8, 64, generator=g) * torch.linspace(0.01, 10, 64)    # input columns of very different sizes
    errors = [float(((W - Q.fake_quantize_groups(W, 4, group_size=s)) ** 2).sum()) for s in (None, 32, 8)]
    assert errors[0] > errors[1] > errors[2]
    for bad in (0, -8, 4.0, True):
        with pytest.raises(ValueError, match="group_size must be a positive integer"):
            Q.fake_quantize_groups(W, 4, group_size=bad)
    with pytest.raises(ValueError, match=r"W \[out, in\], got shape \[3, 2, 3, 3\]"):
        Q.fake_quantize_groups(torch.randn(3, 2, 3, 3), 4, group_size=2)


def test_quantization_error_known_answer():
    W = torch.tensor([1.0, -1.0, 0.5])                 # 2-bit symmetric: S = 1, q = [1, -1, 0] (0.5 rounds to 0)
    err = Q.quantization_error(W, 2, scheme="symmetric")
    assert err["mse"] == pytest.approx(0.25 / 3) and err["max_abs_error"] == pytest.approx(0.5)
    assert err["sqnr_db"] == pytest.approx(10 * math.log10(2.25 / 0.25))


@pytest.mark.parametrize("bits", [0, 9, -1, 2.0, True, "4"])
def test_bits_outside_1_to_8_are_refused_and_the_model_untouched(bits, lenet):
    before = snapshot(lenet)
    with pytest.raises(ValueError, match="from 1 to 8"):
        Q.fake_quantize_model(lenet, bits, per_channel=True)
    with pytest.raises(ValueError, match="from 1 to 8"):
        Q.quantized_file_bytes(lenet, bits, per_channel=True)
    assert same(before, snapshot(lenet))


def test_unknown_scheme_and_layer_are_refused(lenet):
    with pytest.raises(ValueError, match="scheme"):
        Q.fake_quantize_model(lenet, 4, scheme="asymmetric", per_channel=True)
    with pytest.raises(ValueError, match="fc2"):
        Q.fake_quantize_model(lenet, 4, layers=["fc22"], per_channel=True)


# ------------------------------------------------------------------------------------------------ bit packing

@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [1, 7, 13, 1001])
def test_pack_unpack_round_trip_with_odd_lengths(bits, n):
    q = torch.randint(0, 2 ** bits, (n,), generator=torch.Generator().manual_seed(n * 10 + bits))
    packed = Q.pack_bits(q, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n * bits / 8)
    assert torch.equal(Q.unpack_bits(packed, bits, n).long(), q)


def test_pack_bits_known_bytes_and_bad_codes():
    assert Q.pack_bits(torch.tensor([1, 2, 3, 0]), 2).tolist() == [0b01101100]
    assert Q.pack_bits(torch.tensor([5, 3, 7]), 3).tolist() == [0b10101111, 0b10000000]   # 101 011 111 0...
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        Q.pack_bits(torch.tensor([4]), 2)
    with pytest.raises(TypeError):
        Q.pack_bits(torch.tensor([0.5]), 2)


# ------------------------------------------------------------------------------------------------ models and files

def test_fake_quantized_lenet_at_8_bits_keeps_accuracy_and_pruned_zeros(lenet, test_set):
    base = pl.evaluate(lenet, test_set).accuracy
    before = snapshot(lenet)
    for scheme in ("affine", "symmetric"):
        assert pl.evaluate(Q.fake_quantize_model(lenet, 8, scheme=scheme, per_channel=True), test_set).accuracy > base - 0.005
    pruned = pl.masks.copy_model(lenet)
    pl.prune(pruned, 0.9)
    pruned_before = snapshot(pruned)
    for scheme in ("affine", "symmetric"):
        for bits in (8, 4, 1) if scheme == "affine" else (8, 2):
            fq = Q.fake_quantize_model(pruned, bits, scheme=scheme, per_channel=True)
            for name in ("fc1", "fc2", "fc3"):
                W0, W1 = pl.masks.effective(pruned.get_submodule(name)), fq.get_submodule(name).weight
                assert torch.equal(W1[W0 == 0], torch.zeros(int((W0 == 0).sum())))
            assert pl.metrics.global_sparsity(fq) >= 0.9
    assert same(before, snapshot(lenet)) and same(pruned_before, snapshot(pruned))


def test_quantized_file_round_trip_is_exact_and_torch_loadable(lenet, tmp_path):
    pruned = pl.masks.copy_model(lenet)
    pl.prune(pruned, 0.5)
    for bits, scheme, per_channel in [(8, "affine", True), (3, "symmetric", False), (1, "affine", True)]:
        path = Q.save_quantized(pruned, bits, tmp_path / "q.pt", scheme=scheme, per_channel=per_channel)
        payload = torch.load(path, weights_only=True)
        assert payload["quantized"]["fc1.weight"]["codes"].dtype == torch.uint8
        loaded = Q.load_quantized(path, pl.build_model("lenet300"))
        expected = pl.masks.effective_state_dict(
            Q.fake_quantize_model(pruned, bits, scheme=scheme, per_channel=per_channel))
        assert same(snapshot(loaded), expected)


def test_load_refuses_a_masked_model_or_a_foreign_file(lenet, tmp_path):
    path = Q.save_quantized(lenet, 4, tmp_path / "q.pt", per_channel=True)
    masked = pl.build_model("lenet300")
    pl.prune(masked, 0.5)
    with pytest.raises(ValueError, match="unmasked"):
        Q.load_quantized(path, masked)
    torch.save(lenet.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="save_quantized"):
        Q.load_quantized(tmp_path / "plain.pt", pl.build_model("lenet300"))


def test_files_shrink_with_bits_and_4_bits_is_about_an_eighth_of_float32(lenet):
    dense = pl.metrics.file_bytes(lenet)
    sizes = {bits: Q.quantized_file_bytes(lenet, bits, per_channel=True) for bits in range(1, 9)}
    assert all(sizes[b] < sizes[b + 1] for b in range(1, 8)) and sizes[8] < dense
    n_weights = sum(layer.weight.numel() for layer in pl.masks.prunable_layers(lenet).values())
    assert sizes[4] - n_weights // 2 < 10_000                       # codes + S, Z, biases and pickle overhead
    assert dense / 8 < sizes[4] < dense / 7


def test_quantization_report_covers_every_layer_and_improves_with_bits(lenet):
    r4, r8 = Q.quantization_report(lenet, 4), Q.quantization_report(lenet, 8)
    assert list(r4) == ["fc1", "fc2", "fc3"]
    assert all(r8[n]["sqnr_db"] > r4[n]["sqnr_db"] + 20 for n in r4)   # ≈ 6 dB per bit


def test_conv_per_channel_has_one_scale_per_filter():
    conv = nn.Conv2d(2, 3, 3)
    qt = Q.quantize_tensor(conv.weight, 4, scheme="affine", per_channel=True)
    assert qt.S.shape == (3, 1, 1, 1) and qt.Z.shape == (3, 1, 1, 1)


# ------------------------------------------------------------------------------------------------ mixed precision

@pytest.fixture(scope="module")
def tiny_curves(train_set):
    """A 2-layer MLP (784 → 16 → 10) trained briefly, its accuracy-vs-bits curves at 2, 3 and 4 bits."""
    from prunelab import mixed_precision as MP
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))
    pl.train(model, train_set.subset(2000, seed=1), epochs=2, lr=0.05, progress=False)
    held_out = train_set.subset(1000, seed=2)
    return model, held_out, MP.bit_curves(model, held_out, (2, 3, 4), per_channel=True)


def brute_force(curves, budget):
    """The highest predicted accuracy over every allocation in budget (ties: fewer bytes), by enumeration."""
    import itertools
    fits = [dict(zip(curves.layers, b)) for b in itertools.product(curves.bits, repeat=len(curves.layers))
            if curves.total_bytes(dict(zip(curves.layers, b))) <= budget]
    return max(fits, key=lambda b: (curves.predicted_accuracy(b), -curves.total_bytes(b)))


def test_layer_bytes_are_the_codes_and_scales_save_quantized_writes(lenet):
    from prunelab import mixed_precision as MP
    for bits, per_channel in [(3, True), (4, False)]:
        entries = Q.encode_quantized(lenet, bits, per_channel=per_channel)["quantized"]
        for name, layer in pl.masks.prunable_layers(lenet).items():
            e = entries[f"{name}.weight"]
            stored = e["codes"].numel() + e["S"].numel() * 4 + e["Z"].numel() * 2
            scales = layer.weight.shape[0] if per_channel else 1
            assert MP.layer_bytes(layer.weight.numel(), bits, scales) == stored


def test_allocation_meets_the_budget_with_offered_widths_and_equals_brute_force(tiny_curves):
    from prunelab import mixed_precision as MP
    _, _, curves = tiny_curves
    assert curves.layers == ["1", "3"] and curves.bits == (2, 3, 4)
    totals = sorted({curves.total_bytes({"1": a, "3": b}) for a in curves.bits for b in curves.bits})
    for budget in sorted({*totals, *(t - 1 for t in totals[1:]), *(t + 37 for t in totals)}):
        best = brute_force(curves, budget)
        for allocation in (MP.allocate_bits_from_curves(curves, budget), MP.allocate_bits_exact(curves, budget)):
            assert allocation.bytes == curves.total_bytes(allocation.bits) <= budget
            assert set(allocation.bits.values()) <= set(curves.bits)
            assert allocation.predicted_accuracy == pytest.approx(curves.predicted_accuracy(best), abs=1e-12)
            assert allocation.bytes == curves.total_bytes(best), budget


def test_the_greedy_finishes_with_the_cheapest_move_instead_of_overshooting():
    from prunelab import mixed_precision as MP
    # a big layer whose 3 -> 2 bits step is a cliff, a small one with a mild step: 1 byte over the budget of
    # (3, 3) from (3, 4) must cost the small layer a little, not the big layer the cliff (drop per byte is lower)
    curves = MP.BitCurves(bits=(2, 3, 4), accuracy={"big": (0.1, 0.8, 0.9), "small": (0.5, 0.85, 0.9)},
                          baseline=0.9, weights={"big": 8000, "small": 80}, scales={"big": 1, "small": 1},
                          scheme="symmetric", per_channel=False, n_images=100)
    budget = curves.total_bytes({"big": 3, "small": 3})
    allocation = MP.allocate_bits_from_curves(curves, budget)
    assert allocation.bits == {"big": 3, "small": 3} == MP.allocate_bits_exact(curves, budget).bits


def test_allocate_bits_leaves_the_model_alone_and_refuses_bad_widths_and_budgets(tiny_curves):
    from prunelab import mixed_precision as MP
    model, held_out, curves = tiny_curves
    before = snapshot(model)
    uniform_3 = curves.total_bytes({"1": 3, "3": 3})
    allocation = MP.allocate_bits(model, held_out, uniform_3, bits=(2, 3, 4), per_channel=True)
    assert same(snapshot(model), before, ordered=True) and allocation.bytes <= uniform_3
    mixed = MP.fake_quantize_mixed(model, allocation.bits, per_channel=True)
    for name, b in allocation.bits.items():
        assert torch.equal(mixed.get_submodule(name).weight,
                           Q.fake_quantize(model.get_submodule(name).weight, b, per_channel=True))
    with pytest.raises(ValueError, match="bits must be an integer from 1 to 8"):
        MP.allocate_bits(model, held_out, uniform_3, bits=(2, 16))
    with pytest.raises(ValueError, match="non-empty list"):
        MP.allocate_bits(model, held_out, uniform_3, bits=4)
    with pytest.raises(ValueError, match="below the"):
        MP.allocate_bits_from_curves(curves, curves.total_bytes({"1": 2, "3": 2}) - 1)
    with pytest.raises(ValueError, match="budget_bytes"):
        MP.allocate_bits(model, held_out, 1.5e4)
