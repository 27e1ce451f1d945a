"""The sensitivity explorer: each layer's accuracy-vs-sparsity curve a_L(s) (that layer alone pruned), one
dial per layer, and what all the dials do together.

The curves are measured once, at construction (``prunelab.sensitivity.sensitivity_scan``, about a second
for LeNet-300-100 on all 5,000 validation images), or passed in. Moving a dial sets that layer's mask
(``RankedLayer``: scores sorted once, one scatter per move) and moves its marker along its curve; the
readout then compares the accuracy of all the dials applied together, measured, with the
sum-of-drops prediction a_0 − Σ_L (a_0 − a_L(s_L)). "fit budget" sets the dials by
``prunelab.sensitivity.allocate_sparsity`` for the fraction of weights to keep.

The masks are set on ``model`` itself with ``prunelab.masks`` (no copy): its weights are never changed,
and ``reset()`` gives them back bit for bit.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import matplotlib
from matplotlib.figure import Figure
from torch import nn

from .. import masks as M
from ..data import Data, as_image_set
from ..pruning import Criterion
from ..sensitivity import (DEFAULT_SPARSITIES, Allocation, ScanGranularity, SensitivityCurves,
                           allocate_sparsity, ranked_layers, sensitivity_scan)
from .base import AccuracyMeter, FloatSlider, MeteredExplorer

__all__ = ["SensitivityExplorer"]


class SensitivityExplorer(MeteredExplorer):
    """Per-layer sensitivity curves with one sparsity dial per layer; prunes ``model`` in place, non-destructively.

    - ``data``: where the curves (unless ``curves`` is given) and the combined accuracy are measured (the
      validation split when the dials are for choosing a sparsity per layer; labelled by ``data.name``):
      all of it, every event, when that takes ≤ ``exact_budget`` seconds; otherwise an estimate on
      ``estimate_images`` images (default: as many as fit in that time) while a dial moves and the exact figure
      once it rests, each labelled.
    - ``curves``: a ``SensitivityCurves`` to show (its layers, criterion and granularity are used);
      default: scanned now over ``sparsities`` with ``layers``, ``criterion`` and ``granularity``.
    - ``calibration_data``: training images for data-based criteria (gradient, Taylor, activations).

    The model must come without masks on the scanned layers. State: ``sparsity`` (per layer), ``kept``
    (weights kept in the scanned layers), ``accuracy`` / ``accuracy_is_exact`` (all dials together),
    ``predicted`` (sum of drops), ``allocation`` (the last budget fit, or None).
    """

    def __init__(self, model: nn.Module, data: Data, *, curves: SensitivityCurves | None = None,
                 sparsities=DEFAULT_SPARSITIES, layers: list[str] | None = None,
                 criterion: Criterion = "magnitude", granularity: ScanGranularity = "weight",
                 calibration_data: Data | None = None, exact_budget: float = 0.1,
                 estimate_images: int | None = None, budget: float = 0.1):
        super().__init__()
        data = as_image_set(data, "SensitivityExplorer")
        names = curves.layers if curves is not None else layers
        masked = [p for p in M.masked_parameters(model) if names is None or p.rsplit(".", 1)[0] in names]
        if masked:
            raise ValueError(f"The model already carries masks on {masked}; the curves and dials start from "
                             "dense layers. Call prunelab.masks.reset(model) first.")
        if curves is None:
            curves = sensitivity_scan(model, data, sparsities, layers=layers, criterion=criterion,
                                      granularity=granularity, calibration_data=calibration_data)
        self.model, self.curves = model, curves
        self.ranked = ranked_layers(model, curves.layers, criterion=curves.criterion,
                                    granularity=curves.granularity, calibration_data=calibration_data)
        self.sparsity = {name: 0.0 for name in curves.layers}
        self.allocation: Allocation | None = None
        self._masked: set[str] = set()

        self.data = data
        self.meter = AccuracyMeter(model, data, exact_budget=exact_budget, estimate_images=estimate_images)

        style = {"description_width": "initial"}
        s_max = curves.sparsities[-1]
        self.dials = {name: FloatSlider(value=0.0, min=0.0, max=s_max, step=0.01, description=name,
                                                readout_format=".1%", continuous_update=True, style=style,
                                                layout=widgets.Layout(width="320px"))
                      for name in curves.layers}
        self.budget = FloatSlider(value=budget, min=0.001, max=1.0, step=0.001,
                                          description="fraction of weights to keep", readout_format=".1%",
                                          style=style, layout=widgets.Layout(width="420px"))
        self.fit_button = widgets.Button(description="fit budget", icon="magic",
                                         tooltip="set the dials by allocate_sparsity (greedy on the curves)")
        self.reset_button = self.make_reset_button("remove every mask: the original weights, bit for bit")

        self._build_figure()
        self.observe({dial: lambda change, name=name: self._on_dial(name, change) for name, dial in self.dials.items()})
        self.fit_button.on_click(self.handler(lambda _: self.fit_budget()))
        self.headline = widgets.HTML(layout=widgets.Layout(margin="0 0 0 16px"))   # all dials' accuracy, large
        wrap = widgets.Layout(flex_flow="row wrap", align_items="center")
        self.view = widgets.VBox([
            widgets.HBox([widgets.VBox(list(self.dials.values())), self.headline], layout=wrap),
            widgets.HBox([self.budget, self.fit_button, self.reset_button], layout=wrap),
            self.error_box, self.image, self.readout])
        self._redraw()

    # ------------------------------------------------------------------ masks
    @property
    def kept(self) -> int:
        """Weights kept in the scanned layers at the dials' sparsities."""
        return self.curves.kept(self.sparsity)

    @property
    def predicted(self) -> float:
        """The sum-of-drops prediction a_0 − Σ_L (a_0 − a_L(s_L)) from the one-layer curves."""
        return self.curves.predicted_accuracy(self.sparsity)

    def _apply(self, sparsity: dict[str, float]) -> list[str]:
        """Mask the named layers; returns those whose sparsity changed. Checks every value first."""
        masks = {name: self.ranked[name].masks(s) for name, s in sparsity.items() if s != self.sparsity[name]}
        for name in masks:
            self.curves.accuracy_at(name, sparsity[name])    # in the scanned range, or ValueError
        for name, m in masks.items():
            M.set_masks(self.model, m)
            self._masked.update(m)
            self.sparsity[name] = sparsity[name]
        return list(masks)

    def apply(self, sparsity: dict[str, float]) -> None:
        """Set the dials (and masks) of the named layers at once, then measure and redraw."""
        unknown = set(sparsity) - set(self.dials)
        if unknown:
            raise ValueError(f"No dial for {sorted(unknown)}; layers: {', '.join(self.dials)}.")
        changed = self._apply(dict(sparsity))
        with self.quiet():
            for name, s in sparsity.items():
                self.dials[name].value = s
        self.update(changed)

    def fit_budget(self) -> Allocation:
        """Dials from ``allocate_sparsity(curves, budget)``, the budget a fraction of the weights to keep."""
        allocation = allocate_sparsity(self.curves, float(self.budget.value))
        self.allocation = allocation
        self.apply(allocation.sparsity)
        return allocation

    def _on_dial(self, name: str, change) -> None:
        if self._quiet:
            return
        self.allocation = None
        self.update(self._apply({name: float(change["new"])}))

    # ------------------------------------------------------------------ drawing
    def _build_figure(self) -> None:
        curves, n = self.curves, len(self.curves.layers)
        with matplotlib.rc_context({"font.size": 8}):
            self.fig = Figure(figsize=(min(3.2 * n, 12.0), 2.8), dpi=80, layout="constrained")
            axes = self.fig.subplots(1, n, sharey=True, squeeze=False)[0]
            self.axes = dict(zip(curves.layers, axes))
            self.markers, self.measured_lines, self.predicted_lines = {}, {}, {}
            for name, ax in self.axes.items():
                ax.plot(curves.sparsities, curves.accuracy[name], "o-", color="tab:blue", ms=2.5, lw=1,
                        label="$a_L(s)$, this layer alone")
                ax.axhline(curves.baseline, color="gray", ls="--", lw=0.8, label="dense $a_0$")
                self.measured_lines[name] = ax.axhline(curves.baseline, color="tab:green", lw=1.2,
                                                       label="all dials, measured")
                self.predicted_lines[name] = ax.axhline(curves.baseline, color="tab:orange", ls=":", lw=1.5,
                                                        label="all dials, sum of drops")
                (self.markers[name],) = ax.plot([0.0], [curves.baseline], "o", color="tab:red", ms=7)
                ax.set_title(f"{name}  ({curves.weights[name]:,} weights)")
                ax.set_xlabel(f"sparsity s of {name}" + ("" if curves.granularity == "weight"
                                                         else f" ({curves.granularity}s)"))
                ax.set_xlim(-0.02, curves.sparsities[-1] + 0.02)
                ax.grid(alpha=0.3)
            axes[0].set_ylim(0, 1)
            axes[0].set_ylabel(f"{self.data.accuracy_label()} ({curves.n_images:,} images)")
            axes[0].legend(loc="lower left", fontsize=9, frameon=False)
        self.renderer = self.figure_renderer(self.fig, [*self.markers.values(), *self.measured_lines.values(),
                                               *self.predicted_lines.values()])
        self.renderer.capture_background()

    def _redraw(self) -> None:
        predicted = self.predicted
        for name, s in self.sparsity.items():
            self.markers[name].set_data([s], [self.curves.accuracy_at(name, s)])
            self.measured_lines[name].set_ydata([self.accuracy, self.accuracy])
            self.predicted_lines[name].set_ydata([predicted, predicted])
        self.image.value = self.renderer.png()
        self._redraw_readout(predicted)

    def _redraw_readout(self, predicted: float) -> None:
        curves, rows = self.curves, []
        for name, s in self.sparsity.items():
            kept = curves.kept_in(name, s)
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{s:.1%}</td>"
                        f"<td>{kept:,} / {curves.weights[name]:,}</td>"
                        f"<td>{curves.accuracy_at(name, s):.2%}</td><td>{-100 * curves.drop(name, s):+.2f}</td></tr>")
        kept, total = self.kept, curves.total
        where = self.meter.where("the dials rest")
        fit = ""
        if self.allocation is not None:
            fit = (f"<div>dials set by allocate_sparsity for a budget of {self.allocation.budget:,} weights "
                   f"({self.budget.value:.1%})</div>")
        self.readout.value = (
            "<table style='font-family:monospace;font-size:12px'>"
            "<tr><th align=left>layer</th><th align=left>s</th><th align=left>weights kept</th>"
            "<th align=left>a_L(s) alone</th><th align=left>a_L(s) − a_0 (points)</th></tr>" + "".join(rows) +
            f"<tr><td><b>all</b></td><td></td><td><b>{kept:,} / {total:,}</b> ({kept / total:.1%}, "
            f"{total / max(kept, 1):.1f}× smaller)</td><td></td>"
            f"<td>Σ {100 * (predicted - curves.baseline):+.2f}</td></tr></table>{fit}")
        self.headline.value = (
            f"<div class='prunelab-accuracy' style='line-height:1.3'>"
            f"<span style='font-size:14px'>{self.data.accuracy_label()}, all dials together:</span><br>"
            f"<span style='font-size:26px;font-weight:bold'>{self.accuracy:.2%}</span><br>"
            f"<span style='font-size:13px'>sum-of-drops prediction <b>{predicted:.2%}</b> (dense {self.baseline:.2%});"
            f"<br>measured − predicted {100 * (self.accuracy - predicted):+.2f} points; {where}</span></div>")

    # ------------------------------------------------------------------ reset
    def reset(self) -> None:
        """Remove every mask the dials set: the model's original weights, bit for bit; dials back to 0."""
        M.reset(self.model, sorted(self._masked))
        self._masked.clear()
        self.sparsity = {name: 0.0 for name in self.sparsity}
        self.allocation = None
        with self.quiet():
            for dial in self.dials.values():
                dial.value = 0.0
        self.update(None)
