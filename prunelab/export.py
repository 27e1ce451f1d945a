"""Take the result home: a pruned model as files that plain PyTorch and ONNX Runtime load, without prunelab.

A masked model does not travel as it is: its state dict holds ``weight_orig`` / ``weight_mask`` (a plain model
does not load it), ``torch.jit.script`` cannot compile its masks' pre-hooks, and a unit-pruned model still has
its dense widths. Every function here works on a copy with the masks committed (``masks.commit``); the model
you pass is never changed.

- ``save_for_pytorch``: one ``torch.save`` file of plain types and tensors that
  ``model.load_state_dict(torch.load(path, weights_only=True)["state_dict"])`` loads. With ``shrink_units`` the
  removed neurons and channels are really gone (``shrink.channels_to_keep``, ``shrink.shrink``) and the file
  records which units each narrower layer kept, so ``load_for_pytorch`` rebuilds the smaller model from a
  freshly built one of the original architecture.
- ``export_onnx``: an ONNX file with a dynamic batch dimension, checked by ``onnx.checker`` and against
  ONNX Runtime's outputs before it is put in place.
- ``onnx_latency``: ONNX Runtime's time for one batch, with ``metrics.measure_latency``'s statistics
  (``metrics.time_calls``).
- ``quantize_onnx_int8``: ONNX Runtime's static int8 quantization of such a file (int8 weights per output channel,
  uint8 activations calibrated on images you give): a real engine's integer kernels, to time against the float file.

The file of ``save_for_pytorch``::

    {"format": "prunelab-export", "version": 1,
     "state_dict": {name: tensor},            # the committed (and, with shrink_units, shrunk) weights
     "kept_units": {layer: [indices]},        # only the layers whose width changed; {} without shrink_units
     "widths": {layer: n}}                    # their new widths, n = len(kept_units[layer])

A failed call writes nothing: each file is written in a temporary folder beside ``path`` and moved into place
only once it is complete (and, for ONNX, checked). ONNX needs the packages ``onnx``, ``onnxscript`` and
``onnxruntime`` (pinned in requirements.txt); they are imported on first use.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from . import graph, masks
from .metrics import LatencyResult, time_calls
from .shrink import channels_to_keep, shrink

__all__ = ["FORMAT", "VERSION", "ExportError", "ExportRecord", "save_for_pytorch", "load_for_pytorch",
           "export_onnx", "onnx_latency", "quantize_onnx_int8"]

FORMAT, VERSION = "prunelab-export", 1
ATOL = 1e-4                      # ONNX Runtime vs PyTorch: largest allowed |difference| of an output entry


class ExportError(ValueError):
    """A file is not an export of prunelab or does not fit the model, or an exported file computes something else."""


@dataclass(frozen=True)
class ExportRecord:
    """What ``save_for_pytorch`` wrote: the file, its size in bytes, and for each layer whose width changed the
    units it kept (``kept_units``, sorted indices into the original layer) and its new width (``widths``)."""
    path: Path
    bytes: int
    kept_units: dict[str, list[int]]
    widths: dict[str, int]


# ---------------------------------------------------------------------------------------------- files

def _check_model(model: object, what: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} takes a torch nn.Module (e.g. prunelab.load_pretrained('lenet300')), "
                        f"got {type(model).__name__}.")


def _target(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path to write, or an error naming what is wrong with it (before anything is computed)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what}: {path} is a folder; give a file name in it, e.g. {path / 'model.pt'}.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{what}: the folder {path.parent} does not exist. Create it first "
                                f"(Path({str(path.parent)!r}).mkdir(parents=True)) or write somewhere else.")
    return path


@contextmanager
def _writing(path: Path) -> Iterator[Path]:
    """A path in a new temporary folder beside ``path``; when the block ends without error the file written there
    replaces ``path``. Either way the temporary folder goes, so a failed write leaves nothing behind."""
    folder = Path(tempfile.mkdtemp(prefix=".prunelab-export-", dir=path.parent))
    try:
        yield folder / path.name
        os.replace(folder / path.name, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def save_for_pytorch(model: nn.Module, path: str | os.PathLike, *, shrink_units: bool = False) -> ExportRecord:
    """Save ``model`` as one file that plain PyTorch loads: the masks committed, plain tensors only.

    ``model.load_state_dict(torch.load(path, weights_only=True)["state_dict"])`` loads it into a plain model of
    the same architecture (the format is in the module docstring). With ``shrink_units``, the units that
    unit-masked layers no longer use (``shrink.channels_to_keep``) are removed first (``shrink.shrink``): the
    file is smaller, and ``kept_units`` / ``widths`` record the new architecture for ``load_for_pytorch``.
    ``model`` is never changed. Returns an ``ExportRecord``.
    """
    _check_model(model, "save_for_pytorch")
    path = _target(path, "save_for_pytorch")
    keep = channels_to_keep(model) if shrink_units else {}
    plain = shrink(model, keep) if keep else masks.commit(masks.copy_model(model))
    kept = {name: idx.tolist() for name, idx in keep.items()}
    widths = {name: len(idx) for name, idx in kept.items()}
    # effective_state_dict of a committed model: the same tensors, masked zeros stored as +0.0 (not orig * 0 = -0.0)
    state = {key: value.detach().cpu() for key, value in masks.effective_state_dict(plain).items()}
    with _writing(path) as partial:
        torch.save({"format": FORMAT, "version": VERSION, "state_dict": state, "kept_units": kept,
                    "widths": widths}, partial)
    return ExportRecord(path, path.stat().st_size, kept, widths)


def _read_export(path: str | os.PathLike) -> dict:
    """The dict ``save_for_pytorch`` wrote to ``path``, checked, or an error saying what the file is instead."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_for_pytorch: there is no file {path}; give the path save_for_pytorch wrote.")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except OSError:
        raise
    except Exception as e:        # not a torch.save file, or one holding objects weights_only refuses
        raise ExportError(f"{path} is not a prunelab export: torch.load(path, weights_only=True) cannot read it "
                          f"({type(e).__name__}). Write the file with prunelab.export.save_for_pytorch.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        plain = isinstance(payload, dict) and payload and all(isinstance(v, Tensor) for v in payload.values())
        hint = (" It is a plain state dict: load it with model.load_state_dict(torch.load(path, weights_only=True))."
                if plain else " Write the file with prunelab.export.save_for_pytorch.")
        raise ExportError(f"{path} is not a prunelab export (it has no \"format\": {FORMAT!r}).{hint}")
    if payload.get("version") != VERSION:
        raise ExportError(f"{path} is a prunelab export of version {payload.get('version')!r}; this prunelab reads "
                          f"version {VERSION}. Save it again with this prunelab (or update prunelab).")
    fields = {"state_dict": dict, "kept_units": dict, "widths": dict}
    broken = [key for key, kind in fields.items() if not isinstance(payload.get(key), kind)]
    if broken:
        raise ExportError(f"{path} is a damaged prunelab export: {', '.join(broken)} missing or of the wrong type. "
                          "Save the model again with prunelab.export.save_for_pytorch.")
    return payload


def load_for_pytorch(path: str | os.PathLike, model: nn.Module) -> nn.Module:
    """The model saved at ``path`` by ``save_for_pytorch``, rebuilt from ``model``, a freshly built (unmasked)
    model of the original architecture, e.g. ``prunelab.build_model("vgg_small")``.

    The recorded ``kept_units`` are applied with ``shrink.shrink`` (when the file has any), then the weights are
    loaded: the result computes what the saved model computed. Returns a new model in ``model``'s train/eval mode;
    ``model`` itself is only a template and is never changed. Every key and shape is checked before anything is
    loaded: a file of another architecture or a file that is not an export raises ``ExportError``.
    """
    _check_model(model, "load_for_pytorch")
    payload = _read_export(path)
    if masks.masked_parameters(model):
        raise ExportError("load_for_pytorch rebuilds from a freshly built, unmasked model of the original "
                          f"architecture; this {type(model).__name__} carries masks. Pass e.g. "
                          "prunelab.build_model(name).")
    kept, layers = payload["kept_units"], dict(model.named_modules())
    missing = [name for name in kept if not isinstance(layers.get(name), (nn.Linear, nn.Conv2d))]
    problems = [f"it has no Linear/Conv2d layer {', '.join(map(repr, missing))}"] if missing else []
    problems += [f"its {name!r} has {graph.units(layers[name])} units, the file keeps unit {max(idx)}"
                 for name, idx in kept.items()
                 if name not in missing and max(idx, default=-1) >= graph.units(layers[name])]
    fix = "Pass a freshly built model of the architecture the file was saved from."
    try:
        if problems:
            raise ValueError("; ".join(problems) + ".")
        rebuilt = shrink(model, kept) if kept else masks.copy_model(model)
    except (ValueError, TypeError) as e:
        raise ExportError(f"{path} does not fit this {type(model).__name__}: {e} {fix}") from None
    try:                          # every key and shape checked before anything is copied
        masks.load_effective_state_dict(rebuilt, payload["state_dict"], what=f"load_for_pytorch({str(path)!r})")
    except ValueError as e:
        raise ExportError(str(e)) from None
    return rebuilt


# ---------------------------------------------------------------------------------------------- ONNX

def _onnx_packages(what: str) -> tuple[ModuleType, ModuleType]:
    """``onnx`` and ``onnxruntime``, imported now (``onnxscript`` too: torch.onnx.export needs it)."""
    try:
        onnx, ort, _ = (importlib.import_module(name) for name in ("onnx", "onnxruntime", "onnxscript"))
    except ImportError as e:
        raise ImportError(f"{what} needs the packages onnx, onnxscript and onnxruntime ({e.name} is missing): "
                          "pip install -r requirements.txt (or pip install onnx onnxscript onnxruntime).") from e
    return onnx, ort


def _outputs(value) -> list[Tensor]:
    """A model's output as a flat list of tensors (one tensor, or a tuple/list of them)."""
    if isinstance(value, Tensor):
        return [value]
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"export_onnx exports models that return a tensor or a tuple/list of tensors, not "
                        f"{type(value).__name__}.")
    return [t for v in value for t in _outputs(v)]


def _onnx_outputs(session, x: Tensor) -> list[np.ndarray]:
    """ONNX Runtime's outputs for the batch ``x``."""
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def _compare(session, expected: list[tuple[Tensor, list[Tensor]]], model_name: str) -> None:
    """ExportError unless ONNX Runtime's ``session`` gives PyTorch's outputs (within ``ATOL``) on each batch."""
    fixed = session.get_inputs()[0].shape[0]
    for x, want in expected:
        if isinstance(fixed, int) and fixed != x.shape[0]:
            raise ExportError(f"The exported ONNX file of {model_name} takes only batches of {fixed}: torch.export "
                              "could not keep the batch dimension dynamic (a shape in the model's forward depends on "
                              "the batch size).")
        got = [torch.from_numpy(np.asarray(g)) for g in _onnx_outputs(session, x)]
        if [g.shape for g in got] != [w.shape for w in want]:
            raise ExportError(f"ONNX Runtime's outputs of {model_name} have shapes {[list(g.shape) for g in got]}, "
                              f"PyTorch's {[list(w.shape) for w in want]}.")
        if not all(torch.allclose(g, w, atol=ATOL) for g, w in zip(got, want)):
            worst = max(float((g - w).abs().max()) for g, w in zip(got, want))
            raise ExportError(f"ONNX Runtime's outputs of {model_name} differ from PyTorch's on a batch of "
                              f"{x.shape[0]}: largest |difference| {worst:.3g} (allowed: {ATOL:g}). The exporter "
                              "translated some operation differently; try another opset (opset=...).")


def export_onnx(model: nn.Module, path: str | os.PathLike, example: Tensor, *, opset: int | None = None) -> Path:
    """Export ``model`` to an ONNX file at ``path``, checked, and return the path.

    The masks are committed on a copy in eval mode; ``torch.onnx.export`` (the torch.export-based exporter, which
    needs onnxscript) traces it on ``example`` [B, ...] with the batch dimension dynamic, so the file takes any
    batch size. ``opset``: the ONNX opset, None for torch's recommended one. The weights go into the one file
    (no external ``.data`` file; ONNX limits such a file to 2 GB). Before the file is put in place it must pass
    ``onnx.checker`` and ONNX Runtime (CPU) must give outputs within 1e-4 of PyTorch's on ``example`` and on a
    second batch size; otherwise ``ExportError`` and nothing is written. ``model`` is never changed.
    """
    _check_model(model, "export_onnx")
    path = _target(path, "export_onnx")
    if not isinstance(example, Tensor) or example.dim() < 1 or example.shape[0] < 1 or not example.is_floating_point():
        raise TypeError("example must be a float Tensor [B, ...] with a batch dimension, e.g. "
                        "torch.randn(1, 1, 28, 28) or test_set.normalized()[:8].")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 7):
        raise ValueError(f"opset must be None (torch's recommended one) or an ONNX opset number such as 18, "
                         f"got {opset!r}.")
    onnx, ort = _onnx_packages("export_onnx")
    plain = masks.commit(masks.copy_model(model)).cpu().eval()
    x = example.detach().cpu()
    # torch.export fixes a dimension whose example size is 1, so trace on at least two images: [max(B, 2), ...]
    traced = x if x.shape[0] > 1 else torch.cat([x, x])
    second = traced if traced.shape[0] != x.shape[0] else x[:1]
    try:
        with torch.no_grad():
            expected = [(b, _outputs(plain(b))) for b in (x, second)]
    except RuntimeError as e:
        raise ValueError(f"{type(model).__name__} cannot run on example of shape {list(x.shape)}: "
                         f"{str(e).splitlines()[0]} Pass an example batch the model takes.") from e

    with _writing(path) as partial:
        try:
            torch.onnx.export(plain, (traced,), partial, dynamo=True, input_names=["input"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset,
                              external_data=False, verbose=False)
        except Exception as e:  # the exporter's errors have many types; the full story is in the chained error
            raise ExportError(f"torch.onnx.export could not export {type(model).__name__}: "
                              f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
        try:
            onnx.checker.check_model(str(partial), full_check=True)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"The exported ONNX file of {type(model).__name__} fails onnx.checker: "
                              f"{str(e).splitlines()[0]}") from e
        _compare(ort.InferenceSession(str(partial), providers=["CPUExecutionProvider"]), expected,
                 type(model).__name__)
    return path


def onnx_latency(path: str | os.PathLike, x: Tensor | np.ndarray, *, repeats: int = 20,
                 warmup: int = 3) -> LatencyResult:
    """ONNX Runtime's wall-clock time for the batch ``x`` [B, ...] on the CPU, in milliseconds per batch: ``warmup``
    untimed runs, then ``repeats`` timed ones, with the statistics of ``metrics.measure_latency``.

    ONNX Runtime gets as many threads as PyTorch has (``torch.get_num_threads()``), so the two compare on equal
    terms; ``torch.set_num_threads`` sets both.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"onnx_latency: there is no file {path}; write one with prunelab.export.export_onnx.")
    if not isinstance(x, (Tensor, np.ndarray)) or x.ndim < 1:
        raise TypeError(f"x must be a Tensor or numpy array [B, ...] (e.g. [256, 1, 28, 28]), got {type(x).__name__}.")
    x = (x.detach().cpu() if isinstance(x, Tensor) else torch.from_numpy(x)).contiguous()
    _, ort = _onnx_packages("onnx_latency")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's errors derive from Exception only
        raise ExportError(f"onnxruntime cannot load {path} ({str(e).splitlines()[0]}); is it an ONNX file? "
                          "Write one with prunelab.export.export_onnx.") from None
    try:
        _onnx_outputs(session, x)
    except Exception as e:
        raise ValueError(f"{path} cannot run on a batch of shape {list(x.shape)} ({x.dtype}): "
                         f"{str(e).splitlines()[0]} Pass x= a batch the model takes.") from None
    return time_calls(lambda: _onnx_outputs(session, x), x.shape[0], repeats=repeats, warmup=warmup)


def quantize_onnx_int8(path: str | os.PathLike, out_path: str | os.PathLike, calibration: Tensor, *,
                       quant_format: Literal["QDQ", "QOperator"] = "QDQ", batch_size: int = 100) -> Path:
    """ONNX Runtime's static int8 quantization (``onnxruntime.quantization.quantize_static``) of the float ONNX
    file ``path`` (from ``export_onnx``), written to ``out_path``; returns ``out_path``.

    Weights int8, symmetric per output channel; activations uint8, their ranges the min and max seen when ONNX
    Runtime runs ``calibration`` (float images [N, ...] as the model takes them, e.g. 1,000 normalised validation
    images) in batches of ``batch_size``: the scheme of ``prunelab.integer_inference``, in a real engine's kernels.
    ``quant_format``: ``"QDQ"`` (QuantizeLinear / DequantizeLinear pairs around the float operators, which ONNX
    Runtime fuses into integer kernels) or ``"QOperator"`` (QLinearConv, QGemm, ...). The file is first run through
    ONNX Runtime's ``quant_pre_process`` (shape inference, graph clean-up), as its documentation asks.
    """
    path, out_path = Path(path), _target(out_path, "quantize_onnx_int8")
    if not path.is_file():
        raise FileNotFoundError(f"quantize_onnx_int8: there is no file {path}; write one with "
                                "prunelab.export.export_onnx.")
    if quant_format not in ("QDQ", "QOperator"):
        raise ValueError(f"quant_format must be 'QDQ' or 'QOperator', got {quant_format!r}.")
    if not isinstance(calibration, Tensor) or not calibration.is_floating_point() or calibration.dim() < 2 \
            or len(calibration) == 0:
        raise TypeError("calibration must be float images [N, ...] as the model takes them, e.g. "
                        "load_fashion_mnist('validation').normalized()[:1000].")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    _, ort = _onnx_packages("quantize_onnx_int8")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        """``{input name: batch}`` for each batch of the calibration images, then None."""

        def __init__(self, name: str):
            self.batches = iter([{name: calibration[i:i + batch_size].detach().cpu().numpy()}
                                 for i in range(0, len(calibration), batch_size)])

        def get_next(self):
            return next(self.batches, None)

    with _writing(out_path) as partial:
        prepared = partial.parent / f"prepared-{partial.name}"
        try:
            quant_pre_process(str(path), str(prepared))
            name = ort.InferenceSession(str(prepared), providers=["CPUExecutionProvider"]).get_inputs()[0].name
        except Exception as e:  # onnx's and onnxruntime's errors derive from Exception only
            raise ExportError(f"onnxruntime cannot read {path} as an ONNX model ({str(e).strip().splitlines()[0]}); "
                              "write one with prunelab.export.export_onnx.") from None
        quantize_static(str(prepared), str(partial), Batches(name), quant_format=QuantFormat[quant_format],
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out_path
