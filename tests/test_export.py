"""Taking a pruned model home: plain PyTorch files (masks committed, units shrunk) and ONNX files that
ONNX Runtime runs with PyTorch's outputs."""

import warnings

import onnx
import onnxruntime as ort
import pytest
import torch

import prunelab as pl
from prunelab import export as E
from prunelab.shrink import channels_to_keep

X = torch.randn(7, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def state_of(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def masked_lenet():
    model = pl.load_pretrained("lenet300")
    pl.prune(model, 0.9)
    return model.eval()


@pytest.fixture(scope="module")
def channel_pruned_vgg():
    model = pl.load_pretrained("vgg_small")
    pl.prune(model, 0.5, granularity="channel")
    return model.eval()


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory, masked_lenet, channel_pruned_vgg):
    """Each model exported once for the ONNX tests: {name: (model, path)}."""
    folder = tmp_path_factory.mktemp("onnx")
    models = {"lenet300": masked_lenet, "vgg_small": channel_pruned_vgg}
    return {name: (m, E.export_onnx(m, folder / f"{name}.onnx", X[:3])) for name, m in models.items()}


# ---------------------------------------------------------------------------------------------- PyTorch files

def test_a_masked_lenet_loads_into_a_plain_model_with_torch_alone(tmp_path, masked_lenet):
    before = state_of(masked_lenet)
    record = E.save_for_pytorch(masked_lenet, tmp_path / "lenet.pt")
    plain = pl.build_model("lenet300").eval()
    plain.load_state_dict(torch.load(tmp_path / "lenet.pt", weights_only=True)["state_dict"])
    with torch.no_grad():
        assert torch.equal(plain(X), masked_lenet(X))
    assert record.path == tmp_path / "lenet.pt" and record.bytes == (tmp_path / "lenet.pt").stat().st_size
    assert record.kept_units == {} and record.widths == {}
    assert same_state(before, state_of(masked_lenet))                      # the user's model: still masked, same
    assert pl.masks.masked_parameters(masked_lenet)
    assert [p.name for p in tmp_path.iterdir()] == ["lenet.pt"]             # no temporary files left behind


def test_the_file_holds_plain_types_and_tensors_only(tmp_path, masked_lenet):
    E.save_for_pytorch(masked_lenet, tmp_path / "lenet.pt")
    payload = torch.load(tmp_path / "lenet.pt", weights_only=True)
    assert payload.keys() == {"format", "version", "state_dict", "kept_units", "widths"}
    assert payload["format"] == "prunelab-export" and payload["version"] == 1
    assert payload["state_dict"].keys() == pl.build_model("lenet300").state_dict().keys()
    W = payload["state_dict"]["fc1.weight"]
    assert type(W) is torch.Tensor and (W == 0).float().mean() == pytest.approx(0.9, abs=1e-3)
    assert not torch.signbit(W[W == 0]).any()                               # masked zeros are +0.0


def test_a_shrunk_vgg_is_smaller_records_its_widths_and_rebuilds(tmp_path, channel_pruned_vgg):
    masked = channel_pruned_vgg
    before = state_of(masked)
    full = E.save_for_pytorch(masked, tmp_path / "masked.pt")
    small = E.save_for_pytorch(masked, tmp_path / "small.pt", shrink_units=True)
    keep = channels_to_keep(masked)
    assert small.bytes < 0.5 * full.bytes
    assert small.kept_units == {name: idx.tolist() for name, idx in keep.items()}
    assert small.widths == {f"conv{i}": n for i, n in enumerate((8, 8, 16, 16, 32, 32), start=1)}
    payload = torch.load(tmp_path / "small.pt", weights_only=True)
    assert payload["widths"] == small.widths and payload["kept_units"] == small.kept_units

    rebuilt = E.load_for_pytorch(tmp_path / "small.pt", pl.build_model("vgg_small")).eval()
    assert rebuilt.conv3.out_channels == 16 and rebuilt.bn3.num_features == 16 and rebuilt.conv4.in_channels == 16
    assert pl.count_parameters(rebuilt) < 0.3 * pl.count_parameters(pl.build_model("vgg_small"))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(X), masked(X), atol=1e-5, rtol=0)
    assert same_state(before, state_of(masked))


def test_load_for_pytorch_of_an_unshrunk_file_returns_a_new_model(tmp_path, masked_lenet):
    E.save_for_pytorch(masked_lenet, tmp_path / "lenet.pt")
    template = pl.build_model("lenet300")
    before = state_of(template)
    loaded = E.load_for_pytorch(tmp_path / "lenet.pt", template)
    assert loaded is not template and same_state(before, state_of(template))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(X), masked_lenet(X))


def test_scripting_needs_committed_masks(tmp_path, channel_pruned_vgg):
    committed = pl.masks.commit(pl.masks.copy_model(channel_pruned_vgg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)                       # torch.jit.script is deprecated
        scripted = torch.jit.script(committed)
    with torch.no_grad():
        assert torch.equal(scripted(X), channel_pruned_vgg(X))
    assert pl.masks.masked_parameters(channel_pruned_vgg)                      # the copy was committed, not it


# ---------------------------------------------------------------------------------------------- bad input

def test_saving_into_a_missing_folder_or_onto_a_folder_writes_nothing(tmp_path, masked_lenet):
    with pytest.raises(FileNotFoundError, match=r"folder .*missing.* does not exist.*mkdir"):
        E.save_for_pytorch(masked_lenet, tmp_path / "missing" / "lenet.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        E.export_onnx(masked_lenet, tmp_path / "missing" / "lenet.onnx", X)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        E.save_for_pytorch(masked_lenet, tmp_path)
    with pytest.raises(TypeError, match="nn.Module"):
        E.save_for_pytorch(masked_lenet.state_dict(), tmp_path / "lenet.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_file_of_another_architecture_is_refused_and_the_template_kept(tmp_path, masked_lenet, channel_pruned_vgg):
    E.save_for_pytorch(masked_lenet, tmp_path / "lenet.pt")
    E.save_for_pytorch(channel_pruned_vgg, tmp_path / "vgg.pt", shrink_units=True)
    vgg, lenet = pl.build_model("vgg_small"), pl.build_model("lenet300")
    before = state_of(vgg), state_of(lenet)
    with pytest.raises(E.ExportError, match=r"load_for_pytorch\('.*lenet.pt'\): what is loaded does not fit "
                                            r"this VGGSmall.*architecture"):
        E.load_for_pytorch(tmp_path / "lenet.pt", vgg)
    with pytest.raises(E.ExportError, match="vgg.pt does not fit this LeNet300: it has no Linear/Conv2d layer "
                                            "'conv1', 'conv2'"):
        E.load_for_pytorch(tmp_path / "vgg.pt", lenet)
    narrow = pl.models.VGGSmall(widths=(4, 8, 16))
    with pytest.raises(E.ExportError, match=r"'conv1' has 4 units, the file keeps unit"):
        E.load_for_pytorch(tmp_path / "vgg.pt", narrow)
    with pytest.raises(E.ExportError, match="carries masks.*build_model"):
        E.load_for_pytorch(tmp_path / "lenet.pt", masked_lenet)
    assert same_state(before[0], state_of(vgg)) and same_state(before[1], state_of(lenet))


def test_a_file_that_is_not_an_export_is_named_as_such(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save(pl.build_model("lenet300").state_dict(), plain)
    with pytest.raises(E.ExportError, match=r"not a prunelab export.*plain state dict.*load_state_dict"):
        E.load_for_pytorch(plain, pl.build_model("lenet300"))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(E.ExportError, match=r"not a prunelab export.*cannot read it.*save_for_pytorch"):
        E.load_for_pytorch(text, pl.build_model("lenet300"))
    newer = tmp_path / "newer.pt"
    torch.save({"format": "prunelab-export", "version": 2, "state_dict": {}, "kept_units": {}, "widths": {}}, newer)
    with pytest.raises(E.ExportError, match="version 2; this prunelab reads version 1"):
        E.load_for_pytorch(newer, pl.build_model("lenet300"))
    with pytest.raises(FileNotFoundError, match="no file"):
        E.load_for_pytorch(tmp_path / "absent.pt", pl.build_model("lenet300"))


# ---------------------------------------------------------------------------------------------- ONNX

@pytest.mark.parametrize("name", ["lenet300", "vgg_small"])
def test_onnx_runtime_gives_pytorchs_outputs_at_any_batch_size(onnx_files, name):
    model, path = onnx_files[name]
    onnx.checker.check_model(str(path))
    assert not path.with_name(path.name + ".data").exists()                 # the weights are in the one file
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)                # a symbolic, dynamic batch dimension
    for batch in (1, 7):
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: X[:batch].numpy()})[0])
        with torch.no_grad():
            torch.testing.assert_close(got, model(X[:batch]), atol=1e-4, rtol=1e-5)
    assert pl.masks.masked_parameters(model)                                 # exported from a committed copy


def test_an_example_of_one_image_still_gives_a_dynamic_batch(tmp_path):
    model = pl.build_model("lenet300").eval()
    path = E.export_onnx(model, tmp_path / "lenet.onnx", X[:1])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: X.numpy()})[0].shape == (7, 10)


def test_onnx_latency_returns_sane_numbers(onnx_files):
    result = E.onnx_latency(onnx_files["vgg_small"][1], X, repeats=3, warmup=1)
    assert isinstance(result, pl.metrics.LatencyResult)
    assert 0 < result.min_ms <= result.median_ms <= result.p90_ms < 10_000
    assert result.batch_size == 7 and result.repeats == len(result.times_ms) == 3 and result.images_per_s > 0
    with pytest.raises(ValueError, match="repeats"):
        E.onnx_latency(onnx_files["vgg_small"][1], X, repeats=0)


def test_onnx_latency_bad_input(tmp_path, onnx_files):
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        E.onnx_latency(tmp_path / "absent.onnx", X)
    (tmp_path / "notes.onnx").write_text("hello")
    with pytest.raises(E.ExportError, match="cannot load.*ONNX file"):
        E.onnx_latency(tmp_path / "notes.onnx", X)
    with pytest.raises(ValueError, match=r"cannot run on a batch of shape \[7, 784\]"):
        E.onnx_latency(onnx_files["lenet300"][1], X.flatten(1))


def test_a_mismatch_with_onnx_runtime_is_an_error_and_writes_nothing(tmp_path, monkeypatch):
    real = E._onnx_outputs
    monkeypatch.setattr(E, "_onnx_outputs", lambda session, x: [y + 1e-3 for y in real(session, x)])
    with pytest.raises(E.ExportError, match=r"differ from PyTorch's on a batch of 2: largest \|difference\| 0.001"):
        E.export_onnx(pl.build_model("lenet300"), tmp_path / "lenet.onnx", X[:2])
    assert list(tmp_path.iterdir()) == []


def test_export_onnx_bad_example(tmp_path):
    model = pl.build_model("vgg_small")
    with pytest.raises(ValueError, match=r"cannot run on example of shape \[2, 784\]"):
        E.export_onnx(model, tmp_path / "vgg.onnx", X[:2].flatten(1))
    with pytest.raises(TypeError, match="float Tensor"):
        E.export_onnx(model, tmp_path / "vgg.onnx", X[:2].numpy())
    with pytest.raises(ValueError, match="opset"):
        E.export_onnx(model, tmp_path / "vgg.onnx", X[:2], opset="18")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- ONNX int8

@pytest.mark.parametrize("quant_format, op", [("QDQ", "QuantizeLinear"), ("QOperator", "QGemm")])
def test_quantize_onnx_int8_writes_an_int8_file_that_predicts_as_the_float_one(tmp_path, onnx_files, quant_format,
                                                                                 op):
    _, path = onnx_files["lenet300"]
    calibration = pl.load_fashion_mnist("validation").normalized()[:500]
    out = E.quantize_onnx_int8(path, tmp_path / "int8.onnx", calibration, quant_format=quant_format)
    assert out == tmp_path / "int8.onnx" and [p.name for p in tmp_path.iterdir()] == ["int8.onnx"]
    graph = onnx.load(str(out)).graph
    assert op in {node.op_type for node in graph.node}
    assert {init.data_type for init in graph.initializer} & {onnx.TensorProto.INT8}      # int8 weights
    x = pl.load_fashion_mnist("test").normalized()[:1000].numpy()
    predict = {p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0].argmax(1)
               for p in (path, out)}
    assert (predict[path] == predict[out]).mean() >= 0.97                # measured 99.3% (QDQ and QOperator)


def test_quantize_onnx_int8_bad_input(tmp_path, onnx_files):
    _, path = onnx_files["lenet300"]
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        E.quantize_onnx_int8(tmp_path / "absent.onnx", tmp_path / "int8.onnx", X)
    with pytest.raises(ValueError, match="'QDQ' or 'QOperator'"):
        E.quantize_onnx_int8(path, tmp_path / "int8.onnx", X, quant_format="qdq")
    with pytest.raises(TypeError, match="float images"):
        E.quantize_onnx_int8(path, tmp_path / "int8.onnx", X.numpy())
    (tmp_path / "notes.onnx").write_text("hello")
    with pytest.raises(E.ExportError, match="cannot read.*export_onnx"):
        E.quantize_onnx_int8(tmp_path / "notes.onnx", tmp_path / "int8.onnx", X)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.onnx"]         # nothing else written
