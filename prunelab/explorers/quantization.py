"""The quantization explorer: choose a bit width b and see which values the weights may still take, how far
they move, what that costs in test accuracy, and how many bytes the real b-bit file takes.

Two methods, each giving every weight one of at most 2^b values:

- **linear**: r̂ = S (q − Z), q a b-bit integer (``prunelab.quantization``). *affine*: q ∈ [0, 2^b − 1],
  S = (r_max − r_min) / (2^b − 1), Z = round(−r_min / S), with 0 exactly representable; *symmetric*: Z = 0,
  q ∈ [−(2^(b−1) − 1), 2^(b−1) − 1], S = r_absmax / q_max (1 bit: binary, r̂ = ±S). S and Z come from the
  whole layer (*per tensor*) or from each output channel W[c] (*per channel*). The levels drawn on the
  histogram are every representable r̂ = S (q − Z).
- **k-means** weight sharing (``prunelab.weight_sharing``): the layer's weights are clustered into K = 2^b
  centroids C (Lloyd's algorithm from evenly spaced starting values, as Deep Compression does) and each weight
  becomes W_i = C[idx_i]; the levels drawn are the centroids. k-means takes a while on a large layer, so while
  the slider moves the starting centroids are shown (0 iterations, labelled), and the converged codebook
  once it rests.

Every setting's result is cached, so moving back is instant. Accuracy is that of the fake-quantized model
(weights replaced by r̂, computation in float32). Bytes are those of a real file holding b-bit codes
(``quantization.quantized_file_bytes`` / ``weight_sharing.shared_file_bytes``), against the float32 file
(``metrics.file_bytes``); both files are measured once the slider rests.

The explorer quantizes its own copy of the model (``prunelab.masks.copy_model``): the model you pass is never
changed. A masked (pruned) model is quantized through its effective weights, so pruned zeros stay 0. The
bits slider's last stop, "32 (float)", and ``reset()`` put the copy's original weights back, bit for bit.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Literal, NamedTuple

import ipywidgets as widgets
import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from .. import masks as M
from ..data import Data, as_image_set
from ..metrics import file_bytes
from ..plots import LevelLines
from .._helpers import select_layers
from ..quantization import QuantizedTensor, Scheme, dequantize, qrange, quantize_tensor, quantized_file_bytes
from ..weight_sharing import Codebook, kmeans_codebook, shared_file_bytes
from .base import AccuracyMeter, MeteredExplorer

__all__ = ["FLOAT", "Method", "QuantizationExplorer", "Quantized", "Setting", "linear_levels"]

Method = Literal["linear", "kmeans"]
FLOAT = 32          # the bits slider's last stop: the original float32 weights


class Setting(NamedTuple):
    """What the controls ask for; the cache key. k-means has no scheme (None) and one codebook per layer."""
    method: Method
    bits: int
    scheme: Scheme | None
    per_channel: bool


@dataclass
class Quantized:
    """The result of one ``Setting`` over the explorer's layers.

    weights: Ŵ per layer; levels: the values Ŵ may take, per layer [L] (per tensor, k-means) or [C_out, L]
    (per channel); rms, max_abs: √mean((W − Ŵ)²) and max |W − Ŵ| per layer; accuracy of the model with Ŵ
    (``accuracy_is_exact``: on all test images); file_bytes: the real b-bit file (None until measured);
    codebooks: k-means only; converged: False for k-means' starting centroids (0 iterations).
    """
    setting: Setting
    weights: dict[str, Tensor]
    levels: dict[str, Tensor]
    rms: dict[str, float]
    max_abs: dict[str, float]
    accuracy: float | None = None
    accuracy_is_exact: bool = False
    file_bytes: int | None = None
    codebooks: dict[str, Codebook] | None = None
    converged: bool = True


def linear_levels(qt: QuantizedTensor) -> Tensor:
    """Every value r̂ = S (q − Z) that ``qt`` can hold, q over its whole range (binary 1-bit symmetric: the
    two values −S, +S): float32 [L] for one S, Z per tensor, [C_out, L] per channel."""
    q_min, q_max = qrange(qt.bits, qt.scheme)
    q = torch.tensor([-1, 1]) if (qt.scheme, qt.bits) == ("symmetric", 1) else torch.arange(q_min, q_max + 1)
    levels = dequantize(q[None, :], qt.S.reshape(-1, 1), qt.Z.reshape(-1, 1))   # [1 or C_out, L]
    return levels[0] if qt.S.dim() == 0 else levels


def _errors(W: Tensor, W_hat: Tensor) -> tuple[float, float]:
    """(√mean((W − Ŵ)²), max |W − Ŵ|)."""
    E = W - W_hat
    return float((E ** 2).mean().sqrt()), float(E.abs().max())


class QuantizationExplorer(MeteredExplorer):
    """Bits, scheme, per-tensor/per-channel and method → levels on the weight histogram, rounding error,
    test accuracy and bytes on disk. Works on its own copy of ``model``.

    - ``test_data``: where accuracy is measured (all of it, every event, when a pass takes ≤ ``exact_budget``
      seconds; otherwise an estimate on ``estimate_images`` images, default as many as fit in that time, now and
      the exact figure when the slider rests).
    - ``layers``: the layers to quantize (default: every Linear and Conv2d); biases stay float32.
    - ``kmeans_iters``: Lloyd iterations at most (``weight_sharing.kmeans_codebook``'s default, 50).

    State: ``quantized_model`` (the copy, holding Ŵ), ``current`` (the ``Quantized`` shown, None for float32),
    ``cache`` ({Setting: Quantized}; each entry holds Ŵ of every layer, about the model's float32 size: 1 MB
    for LeNet-300-100, at most 40 settings), ``baseline`` (float32 accuracy), ``float_bytes``.
    """

    def __init__(self, model: nn.Module, test_data: Data, *, layers: list[str] | None = None,
                 exact_budget: float = 0.05, estimate_images: int | None = None, kmeans_iters: int = 50,
                 bins: int = 101):
        super().__init__()
        test_data = as_image_set(test_data, "QuantizationExplorer")
        self.layers = select_layers(model, layers)
        self.kmeans_iters = kmeans_iters
        self.bins = bins
        self.reference = M.copy_model(model)          # never written: W and the files are read from it
        self.quantized_model = M.copy_model(model)    # holds Ŵ
        self.W = {name: M.effective(self.reference.get_submodule(name)).cpu().float() for name in self.layers}
        self._saved = {name: M.original(self.quantized_model, f"{name}.weight").detach().clone()
                       for name in self.layers}
        self.float_bytes = file_bytes(self.reference)
        self.cache: dict[Setting, Quantized] = {}
        self.current: Quantized | None = None

        self.meter = AccuracyMeter(self.quantized_model, test_data, exact_budget=exact_budget,
                                   estimate_images=estimate_images)
        self.data = test_data

        style = {"description_width": "initial"}
        buttons = {**style, "button_width": "auto"}          # as wide as their labels: never cut
        self.bits = widgets.SelectionSlider(options=[(str(b), b) for b in range(1, 9)] + [("32 (float)", FLOAT)],
                                            value=FLOAT, description="bits b", continuous_update=True,
                                            layout=widgets.Layout(width="420px"), style=style)
        self.slider = self.bits
        self.method = widgets.ToggleButtons(options=[("linear r̂ = S(q − Z)", "linear"),
                                                     ("k-means weight sharing", "kmeans")],
                                            description="method", style=buttons)
        self.scheme = widgets.ToggleButtons(options=["affine", "symmetric"], description="scheme", style=buttons)
        self.per_channel = widgets.ToggleButtons(options=[("per tensor", False), ("per channel", True)],
                                                 description="one scale S and zero point Z", style=buttons)
        self.layer = widgets.Dropdown(options=list(self.layers), description="layer", style=style)
        self.channel = widgets.IntSlider(value=0, min=0, max=1, description="channel c", style=style,
                                         continuous_update=True)
        self.reset_button = self.make_reset_button("the original float32 weights, bit for bit")

        self._build_figure()
        self.observe({**{control: self._on_setting for control in (self.bits, self.method, self.scheme,
                                                                   self.per_channel)},
                      self.layer: self._on_view, self.channel: self._on_view})
        self.headline = widgets.HTML(layout=widgets.Layout(margin="0 16px"))   # the accuracy, large, by the bits
        self.view = widgets.VBox([
            widgets.HBox([self.bits, self.headline, self.reset_button],
                         layout=widgets.Layout(flex_flow="row wrap", align_items="center")),
            self.method, widgets.HBox([self.scheme, self.per_channel]),
            widgets.HBox([self.layer, self.channel]),
            self.error_box, self.image, self.readout])
        self._configure_controls()
        self._rebuild_panel()
        self._redraw()

    # ------------------------------------------------------------------ quantizing
    def setting(self) -> Setting | None:
        """The setting the controls ask for (None at "32 (float)")."""
        bits = self.bits.value
        if bits == FLOAT:
            return None
        if self.method.value == "kmeans":
            return Setting("kmeans", bits, None, False)
        return Setting("linear", bits, self.scheme.value, self.per_channel.value)

    def linear(self, setting: Setting) -> Quantized:
        """r̂ = S (q − Z) for every layer (``quantize_tensor``); raises before anything is written."""
        weights, levels, rms, max_abs = {}, {}, {}, {}
        for name, W in self.W.items():
            qt = quantize_tensor(W, setting.bits, scheme=setting.scheme, per_channel=setting.per_channel)
            weights[name], levels[name] = qt.dequantize(), linear_levels(qt)
            rms[name], max_abs[name] = _errors(W, weights[name])
        return Quantized(setting, weights, levels, rms, max_abs)

    def kmeans(self, setting: Setting, iters: int) -> Quantized:
        """W = C[idx] for every layer (``kmeans_codebook``, at most ``iters`` Lloyd iterations)."""
        books = {name: kmeans_codebook(W, setting.bits, iters=iters) for name, W in self.W.items()}
        weights = {name: book.weights() for name, book in books.items()}
        errors = {name: _errors(self.W[name], weights[name]) for name in books}
        return Quantized(setting, weights, {name: book.centroids for name, book in books.items()},
                         {n: e[0] for n, e in errors.items()}, {n: e[1] for n, e in errors.items()},
                         codebooks=books, converged=iters >= self.kmeans_iters)

    def _write(self, weights: dict[str, Tensor]) -> None:
        for name, W in weights.items():
            layer = self.quantized_model.get_submodule(name)
            M.set_effective(layer, W.to(self._saved[name].device, self._saved[name].dtype))

    def show(self, setting: Setting | None) -> None:
        """Quantize the copy for ``setting`` (cached, or computed now: k-means' starting point first) and redraw."""
        if setting is None:
            self._write(self._saved)
            self.current = None
        else:
            result = self.cache.get(setting)
            if result is None:
                result = self.linear(setting) if setting.method == "linear" else self.kmeans(setting, iters=0)
                if result.converged:
                    self.cache[setting] = result
            self._write(result.weights)
            self.current = result
            if result.accuracy is None:
                self._measure_accuracy(result)
            if not (result.converged and result.accuracy_is_exact and result.file_bytes is not None):
                self.later(self._settle_exact)
        self._fit_levels()
        self._redraw()

    def _measure_accuracy(self, result: Quantized) -> None:
        self.meter.measure(None)                     # every layer's weights may have changed
        result.accuracy, result.accuracy_is_exact = self.meter.value, self.meter.is_exact

    def _settle_exact(self) -> None:
        """Converged k-means, exact accuracy and the real file's bytes for the setting shown."""
        result = self.current
        if result is None:
            return
        if not result.converged:
            result = self.kmeans(result.setting, iters=self.kmeans_iters)
            self.cache[result.setting] = result
            self._write(result.weights)
            self.current = result
            self._fit_levels()
        if not result.accuracy_is_exact:
            self.meter.measure(None, exact=True)     # the weights shown are this result's
            result.accuracy, result.accuracy_is_exact = self.meter.value, self.meter.is_exact
        if result.file_bytes is None:
            result.file_bytes = self.file_bytes(result)
        self._redraw()

    def file_bytes(self, result: Quantized) -> int:
        """Bytes of the real file for ``result``: b-bit codes with S, Z (linear) or with the codebooks (k-means)."""
        s = result.setting
        if s.method == "kmeans":
            return shared_file_bytes(self.reference, result.codebooks)
        return quantized_file_bytes(self.reference, s.bits, scheme=s.scheme, per_channel=s.per_channel,
                                    layers=list(self.layers))

    # ------------------------------------------------------------------ events
    def _on_setting(self, change) -> None:
        if self._quiet:
            return
        try:
            self.show(self.setting())
        except Exception:               # e.g. binary 1-bit on pruned zeros: the controls go back to what is shown
            with self.quiet():
                change["owner"].value = change["old"]
            raise
        finally:
            self._configure_controls()
        if change["owner"] in (self.per_channel, self.method):
            self._rebuild_panel()
            self._redraw()

    def _on_view(self, change) -> None:
        if self._quiet:
            return
        if change["owner"] is self.layer:
            self._configure_controls()
        self._rebuild_panel()
        self._redraw()

    def _per_channel_view(self) -> bool:
        s = self.current.setting if self.current is not None else self.setting()
        return (self.method.value == "linear" and self.per_channel.value) if s is None else s.per_channel

    def _configure_controls(self) -> None:
        kmeans = self.method.value == "kmeans"
        self.scheme.disabled = self.per_channel.disabled = kmeans
        with self.quiet():
            self.channel.max = self.W[self.layer.value].shape[0] - 1
        self.channel.layout.display = None if (not kmeans and self.per_channel.value) else "none"

    # ------------------------------------------------------------------ drawing
    def _build_figure(self) -> None:
        with matplotlib.rc_context({"font.size": 8}):
            self.fig = Figure(figsize=(9.0, 3.0), dpi=80, layout="constrained")
            self.ax = self.fig.subplots()
        self.renderer = self.figure_renderer(self.fig)

    def shown_weights(self) -> Tensor:
        """The weights in the histogram: the layer's W, or W[c] when S, Z are per channel."""
        W = self.W[self.layer.value]
        return W[self.channel.value] if self._per_channel_view() else W

    def shown_levels(self) -> Tensor | None:
        """The levels drawn: those of the layer (per tensor, k-means) or of channel c (per channel)."""
        if self.current is None:
            return None
        levels = self.current.levels[self.layer.value]
        return levels[self.channel.value] if levels.dim() == 2 else levels

    def _rebuild_panel(self) -> None:
        name, c = self.layer.value, self.channel.value
        w = self.shown_weights().flatten().numpy()
        zeros = int((w == 0).sum())
        w = w[w != 0]
        span = max(float(np.abs(w).max()) if w.size else 1.0, 1e-12)
        edges = np.linspace(-span, span, self.bins + 1)
        counts = np.histogram(w, edges)[0]
        with matplotlib.rc_context({"font.size": 8}):
            self.ax.clear()
            self.ax.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.6, label="weights r")
            self.levels_artist = LevelLines(self.ax, label="levels r̂")
            self.ax.set_xlim(-1.05 * span, 1.05 * span)
            self.ax.set_yscale("log")                # the tails, where the outer levels fall, stay visible
            self.ax.set_ylim(0.7, 2.0 * max(int(counts.max()), 1))
            self.ax.set_xlabel("weight value")
            self.ax.set_ylabel("count (log)")
            self.ax.legend(loc="upper right", fontsize=8, frameon=False)
            where = f"{name}[{c}] (channel {c})" if self._per_channel_view() else name
            note = f"; {zeros:,} exact zeros not shown" if zeros else ""
            self.ax.set_title(f"weights of {where} and the values they may take{note}")
        self.renderer.animated = self.levels_artist.artists
        self._fit_levels(capture=False)
        self.renderer.capture_background()

    def _fit_levels(self, capture: bool = True) -> None:
        """Widen the x axis if some level lies outside it (affine at low b can reach S/2 past the data)."""
        levels = self.shown_levels()
        if levels is None or not levels.numel():
            return
        lo, hi = self.ax.get_xlim()
        l_min, l_max = float(levels.min()), float(levels.max())
        if l_min < lo or l_max > hi:
            pad = 0.03 * (max(hi, l_max) - min(lo, l_min))
            self.ax.set_xlim(min(lo, l_min - pad), max(hi, l_max + pad))
            if capture:
                self.renderer.capture_background()

    def _redraw(self) -> None:
        self.levels_artist.update(self.shown_levels())
        self.image.value = self.renderer.png()
        self._redraw_readout()

    def _redraw_readout(self) -> None:
        r = self.current
        if r is None:
            head = ("<div><b>float32</b>: the original weights (no quantization). Move the bits slider to "
                    "quantize.</div>")
            accuracy, change = self.baseline, f"float32, all {self.data.images_label()}"
            size = f"<div>float32 file: {self.float_bytes:,} bytes</div>"
            rows = ""
        else:
            s = r.setting
            if s.method == "linear":
                per = "per channel" if s.per_channel else "per tensor"
                n_levels = r.levels[self.layer.value].shape[-1]
                head = (f"<div><b>linear, {s.bits} bits, {s.scheme}, {per}</b>: r̂ = S (q − Z), {n_levels} levels "
                        f"per {'channel' if s.per_channel else 'layer'}</div>")
            else:
                state = ("converged" if r.converged else
                         "<i>starting centroids (0 iterations); the converged codebook follows when the slider rests</i>")
                head = f"<div><b>k-means, {s.bits} bits</b>: K = {2 ** s.bits} centroids per layer, W = C[idx]; {state}</div>"
            rows = "".join(
                f"<tr{' style=font-weight:bold' if name == self.layer.value else ''}><td>{html.escape(name)}</td>"
                f"<td>{self.W[name].numel():,}</td><td>{r.levels[name].shape[-1]}</td>"
                f"<td>{r.rms[name]:.3g}</td><td>{r.max_abs[name]:.3g}</td></tr>" for name in self.layers)
            rows = ("<table style='font-family:monospace;font-size:12px'><tr><th align=left>layer</th>"
                    "<th align=left>weights</th><th align=left>levels</th><th align=left>RMS error</th>"
                    "<th align=left>max |r − r̂|</th></tr>" + rows + "</table>")
            where = self.meter.where(exact=r.accuracy_is_exact)
            accuracy = r.accuracy
            change = f"{100 * (r.accuracy - self.baseline):+.2f} points from float32 ({self.baseline:.2%}); {where}"
            if r.file_bytes is None:
                size = f"<div>real {s.bits}-bit file: <i>measuring…</i>; float32 file {self.float_bytes:,} bytes</div>"
            else:
                size = (f"<div>real {s.bits}-bit file: <b>{r.file_bytes:,} bytes</b>, float32 file "
                        f"{self.float_bytes:,} bytes: <b>×{self.float_bytes / r.file_bytes:.1f}</b> smaller</div>")
        self.headline.value = (
            f"<div class='prunelab-accuracy' style='line-height:1.3'><span style='font-size:14px'>"
            f"{self.data.accuracy_label()}: </span><span style='font-size:26px;font-weight:bold'>{accuracy:.2%}"
            f"</span><br><span style='font-size:13px'>{change}</span></div>")
        self.readout.value = (head + rows + size +
                              "<div>The explorer quantizes its own copy of the model: yours is never changed.</div>")

    # ------------------------------------------------------------------ reset
    def reset(self) -> None:
        """The copy's original weights back, bit for bit; controls back to float32, linear, affine, per tensor."""
        self._write(self._saved)
        self.current = None
        with self.quiet():
            self.bits.value, self.method.value = FLOAT, "linear"
            self.scheme.value, self.per_channel.value = "affine", False
            self.channel.value = 0
        self._configure_controls()
        self._rebuild_panel()
        self._redraw()
