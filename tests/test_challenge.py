"""The capstone checker: real file sizes, accuracy re-measured, every kit format recognised, clear verdicts
and clear errors for bad submissions."""

import pytest
import torch

import prunelab as pl
from prunelab import challenge as C
from prunelab import compressed_file as CF
from prunelab import quantization as Q
from prunelab import weight_sharing as WS


@pytest.fixture(scope="module")
def lenet():
    return pl.load_pretrained("lenet300")


@pytest.fixture(scope="module")
def test_data():
    return pl.load_fashion_mnist("test").subset(1000, seed=0)


def test_dense_file_is_measured_on_disk_and_reevaluated(lenet, test_data, tmp_path):
    path = tmp_path / "dense.pt"
    torch.save(lenet.state_dict(), path)
    result = C.check_submission(path, budget_bytes=50_000, accuracy_floor=0.5, data=test_data)
    expected = pl.evaluate(lenet, test_data)
    assert result.format == "dense" and result.path == path
    assert result.bytes == path.stat().st_size > 1_000_000
    assert (result.accuracy, result.correct, result.total) == (expected.accuracy, expected.correct, 1000)
    assert result.meets_floor and not result.fits_budget and not result.passed
    assert result.bytes_over == result.bytes - 50_000
    assert f"{result.bytes_over:,} bytes over the budget of 50,000" in result.message
    assert result.message.startswith("FAIL")


def test_accuracy_shortfall_is_reported_in_points(lenet, test_data, tmp_path):
    path = tmp_path / "dense.pt"
    torch.save(lenet.state_dict(), path)
    result = C.check_submission(path, budget_bytes=10_000_000, accuracy_floor=1.0, data=test_data)
    assert result.fits_budget and not result.meets_floor and not result.passed
    assert result.points_under == pytest.approx(100 * (1 - result.accuracy))
    assert f"{result.points_under:.2f} points under the floor of 100.00%" in result.message


def test_a_passing_submission(lenet, test_data, tmp_path):
    path = tmp_path / "dense.pt"
    torch.save(lenet.state_dict(), path)
    result = C.check_submission(path, budget_bytes=2_000_000, accuracy_floor=0.5, data=test_data)
    assert result.passed and result.message.startswith("PASS") and "to spare" in result.message
    assert str(result) == result.message


def test_a_model_is_checked_as_a_dense_file(lenet, test_data):
    result = C.check_submission(lenet, budget_bytes=50_000, accuracy_floor=0.5, data=test_data)
    assert result.path is None and result.format == "dense"
    assert result.bytes == pl.metrics.file_bytes(lenet, "dense")


def test_every_kit_format_is_recognised_and_loads_the_same_weights(lenet, test_data, tmp_path):
    model = pl.masks.copy_model(lenet)
    pl.prune(model, 0.9, scope="global")
    want = pl.evaluate(model, test_data).accuracy
    files = {}
    torch.save(model.state_dict(), files.setdefault("dense", tmp_path / "masked.pt"))   # _orig/_mask folded
    for encoding in ("bitmask", "csr"):
        torch.save(pl.metrics.encode_weights(model, encoding), files.setdefault(encoding, tmp_path / f"{encoding}.pt"))
    CF.save_compressed(model, None, files.setdefault("deep_compression", tmp_path / "m.plc"))
    for fmt, path in files.items():
        assert C.detect_format(path) == fmt
        result = C.check_submission(path, budget_bytes=10**7, accuracy_floor=0.0, data=test_data)
        assert result.format == fmt and result.accuracy == want and result.bytes == path.stat().st_size
    Q.save_quantized(lenet, 8, tmp_path / "q.pt", per_channel=True)
    _, q_model = C.load_submission(tmp_path / "q.pt")
    assert C.detect_format(tmp_path / "q.pt") == "quantized"
    assert torch.equal(q_model.fc1.weight, Q.fake_quantize_model(lenet, 8, per_channel=True).fc1.weight)
    shared, books = WS.share_weights(lenet, 2, ["fc3"], iters=5)
    WS.save_shared(shared, books, tmp_path / "s.pt")
    fmt, s_model = C.load_submission(tmp_path / "s.pt")
    assert fmt == "shared" and torch.equal(s_model.fc3.weight, shared.fc3.weight)


def test_the_final_score_is_on_the_test_set_and_choices_are_checked_on_validation(lenet, tmp_path):
    path = tmp_path / "dense.pt"
    torch.save(lenet.state_dict(), path)
    final = C.check_submission(path, budget_bytes=2_000_000, accuracy_floor=0.5)
    assert final.scored_on == "test" and final.total == 10_000
    assert final.accuracy == pl.evaluate(lenet, pl.load_fashion_mnist("test")).accuracy
    assert "10,000 test images right: the final score, on data no choice was tuned on" in final.message
    while_building = C.check_submission(lenet, budget_bytes=2_000_000, accuracy_floor=0.5, data="validation")
    assert while_building.scored_on == "validation" and while_building.total == 5_000 and while_building.path is None
    assert "5,000 validation images right; the final score is on the test set" in while_building.message
    with pytest.raises(ValueError, match="data must be 'test', 'validation' or your own images.*got 'train'"):
        C.check_submission(path, budget_bytes=1000, accuracy_floor=0.5, data="train")


def test_bad_submissions_give_clear_errors(test_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="No submission file"):
        C.check_submission(tmp_path / "missing.pt", budget_bytes=1000, accuracy_floor=0.5, data=test_data)
    torch.save(pl.build_model("lenet5").state_dict(), tmp_path / "lenet5.pt")
    with pytest.raises(ValueError, match="does not hold a lenet300 model: missing fc1.weight|fc1.weight: file"):
        C.check_submission(tmp_path / "lenet5.pt", budget_bytes=1000, accuracy_floor=0.5, data=test_data)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a model file the checker can read"):
        C.check_submission(tmp_path / "junk.pt", budget_bytes=1000, accuracy_floor=0.5, data=test_data)
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a dict"):
        C.load_submission(tmp_path / "list.pt")
    with pytest.raises(ValueError, match="fraction"):
        C.check_submission(tmp_path / "lenet5.pt", budget_bytes=1000, accuracy_floor=89, data=test_data)
    with pytest.raises(ValueError, match="budget_bytes"):
        C.check_submission(tmp_path / "lenet5.pt", budget_bytes=0, accuracy_floor=0.5, data=test_data)
    with pytest.raises(TypeError, match="file path or an nn.Module"):
        C.check_submission(42, budget_bytes=1000, accuracy_floor=0.5, data=test_data)
