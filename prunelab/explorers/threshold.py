"""The threshold explorer: move v_thr (or the target sparsity) and see the mask M = scores > v_thr, the weight
histogram, the sparsity and the test accuracy on all 10,000 test images change at once.

Three rules give v_thr (``rule``):

- ``"sparsity"``: adaptive, v_thr is the k-th smallest score, k = round(s · n) (exactly k weights go);
- ``"threshold"``: fixed, v_thr is the slider value itself, in the criterion's units;
- ``"quality"``: Han et al.'s v_thr = q · σ(W), per layer (magnitude only).

Scope: ``"layer"`` (the slider sets the shown layer; each layer keeps its own setting) or ``"global"`` (one
v_thr over all layers' scores together). Scores come from the original weights; each criterion's scores are
sorted once, so the mask for any sparsity is a single scatter. Masks are set with ``prunelab.masks``: the
model's weights are never changed, and ``reset()`` gives them back bit for bit.
"""

from __future__ import annotations

import html
import math
from typing import Literal

import ipywidgets as widgets
import matplotlib
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from .. import masks as M
from ..data import Data, as_image_set
from ..plots import MaskImage, WeightHistogram
from .._helpers import select_layers
from ..pruning import weight_scores
from ..thresholds import RankedScores, split_by_layer, threshold_from_std
from .base import AccuracyMeter, FloatSlider, MeteredExplorer

__all__ = ["ThresholdExplorer"]

Rule = Literal["sparsity", "threshold", "quality"]
SLIDER = {"sparsity": "target sparsity s", "threshold": "threshold v_thr", "quality": "quality q (v_thr = q·σ)"}


class ThresholdExplorer(MeteredExplorer):
    """Prune ``model`` in place (non-destructively) with a slider; show mask, histogram, sparsity, accuracy.

    - ``test_data``: where accuracy is measured (all of it, every event, when that takes ≤ ``exact_budget``
      seconds; otherwise an estimate on ``estimate_images`` images (default: as many as fit in that time) while
      the slider moves and the exact figure once it rests, each labelled as such).
    - ``calibration_data``: training images for the gradient and Taylor criteria (offered only if given).
    - ``layers``: the layers to prune (default: every Linear and Conv2d).

    State lives in this object: ``values`` ((rule, slider value) per layer, or ``"*"`` for global scope),
    ``masks`` (the current keep-masks per layer), ``v_thr`` (the threshold per layer), ``accuracy`` and
    ``accuracy_is_exact``.
    """

    def __init__(self, model: nn.Module, test_data: Data, *, calibration_data: Data | None = None,
                 layers: list[str] | None = None, exact_budget: float = 0.1, estimate_images: int | None = None,
                 bins: int = 81):
        super().__init__()
        test_data = as_image_set(test_data, "ThresholdExplorer")
        self.model = model
        self.layers = select_layers(model, layers)
        self.calibration_data = calibration_data
        self._scores: dict[str, dict[str, RankedScores]] = {}   # criterion -> layer (or "*") -> ranked
        self._sigma = {name: float(M.original(model, f"{name}.weight").detach().float().std())
                       for name in self.layers}
        self.values: dict[str, tuple[Rule, float]] = {}
        self.masks: dict[str, Tensor] = {}
        self.v_thr: dict[str, float] = {}
        for name in self.layers:
            keep = M.get_masks(model).get(f"{name}.weight")
            self.masks[name] = (keep.cpu() if keep is not None
                                else torch.ones(self.layers[name].weight.shape, dtype=torch.bool))

        self.meter = AccuracyMeter(model, test_data, exact_budget=exact_budget, estimate_images=estimate_images)
        self.data = test_data

        criteria = ["magnitude", "random"] + (["gradient", "taylor"] if calibration_data is not None else [])
        style = {"description_width": "initial"}
        compact = {"description_width": "initial", "button_width": "auto"}
        self.layer = widgets.Dropdown(options=list(self.layers), description="layer", style=style,
                                      layout=widgets.Layout(width="max-content", min_width="150px"))
        self.scope = widgets.ToggleButtons(options=[("layer-wise", "layer"), ("global", "global")],
                                           description="scope", style=compact,
                                           tooltips=["each layer its own v_thr", "one v_thr over all layers"])
        self.criterion = widgets.Dropdown(options=criteria, description="score", style=style,
                                          layout=widgets.Layout(width="max-content", min_width="160px"))
        self.rule = widgets.ToggleButtons(options=[("target sparsity s", "sparsity"),
                                                   ("fixed threshold v_thr", "threshold"),
                                                   ("quality q·σ", "quality")],
                                          description="v_thr from", style=compact,
                                          tooltips=["v_thr removes exactly the fraction s of the weights",
                                                    "v_thr is the slider value, in the score's units",
                                                    "v_thr = q · σ(W), Han et al."])
        self.slider = FloatSlider(value=0.0, min=0.0, max=0.99, step=0.01, description=SLIDER["sparsity"],
                                          readout_format=".1%", continuous_update=True,
                                          layout=widgets.Layout(width="440px"), style=style)
        self.zoom = widgets.Checkbox(value=False, description="zoom: the mask's first 32 × 64 weights",
                                     indent=False, layout=widgets.Layout(width="auto"))
        self.reset_button = self.make_reset_button("remove every mask: the original weights, bit for bit")
        self.headline = widgets.HTML(layout=widgets.Layout(margin="0 0 0 12px"))   # the accuracy, large

        self._build_figure(bins)
        self.observe({self.slider: self._on_slider, self.layer: self._on_layer, self.scope: self._on_scope,
                      self.criterion: self._on_criterion, self.rule: self._on_rule, self.zoom: self._on_layer})
        wrap = widgets.Layout(flex_flow="row wrap", align_items="center")
        self.view = widgets.VBox([
            widgets.HBox([self.layer, self.criterion, self.scope], layout=wrap),
            widgets.HBox([self.rule], layout=wrap),
            widgets.HBox([self.slider, self.headline], layout=wrap),
            self.error_box, self.image, widgets.HBox([self.zoom, self.reset_button], layout=wrap),
            self.readout])
        self._configure_slider()
        self._redraw()

    # ------------------------------------------------------------------ scores and masks
    def ranked(self, key: str) -> RankedScores:
        """Sorted scores of layer ``key`` (or of all layers together for ``"*"``) under the current criterion."""
        criterion = self.criterion.value
        if criterion not in self._scores:
            scores = weight_scores(self.model, self.layers, criterion, self.calibration_data)
            table = {name: RankedScores(s.cpu()) for name, s in scores.items()}
            table["*"] = RankedScores(torch.cat([s.flatten().float().cpu() for s in scores.values()]))
            self._scores[criterion] = table
        return self._scores[criterion][key]

    def _key(self) -> str:
        return "*" if self.scope.value == "global" else self.layer.value

    def _names(self, key: str) -> list[str]:
        return list(self.layers) if key == "*" else [key]

    def _masks_for(self, key: str, value: float, rule: Rule) -> tuple[dict[str, Tensor], dict[str, float]]:
        """Keep-masks and thresholds, per layer, for slider ``value`` under ``rule`` applied to ``key``."""
        names = self._names(key)
        if rule == "quality":      # v_thr = q · σ(W), each layer its own σ
            if self.criterion.value != "magnitude":
                raise ValueError("The quality rule v_thr = q·σ(W) is defined for magnitude scores only; "
                                 "pick criterion 'magnitude' or another rule.")
            v_thr = {name: threshold_from_std(M.original(self.model, f"{name}.weight").detach(), value)
                     for name in names}
            return {name: self.ranked(name).mask_for_threshold(v_thr[name]) for name in names}, v_thr
        ranked = self.ranked(key)
        if rule == "sparsity":
            keep, v = ranked.mask_for_sparsity(value), ranked.threshold_for_sparsity(value)
        else:
            keep, v = ranked.mask_for_threshold(value), value
        if key != "*":
            return {key: keep}, {key: v}
        return split_by_layer(keep, {name: self.ranked(name).shape for name in names}), {name: v for name in names}

    def _apply(self, key: str, value: float, rule: Rule | None = None) -> list[str]:
        """Mask the model for ``value`` at ``key``; returns the layers whose mask changed."""
        rule = rule or self.rule.value
        keep, v_thr = self._masks_for(key, value, rule)
        changed = [name for name, k in keep.items() if not torch.equal(k, self.masks[name])]
        self.values[key] = (rule, value)
        self.v_thr.update(v_thr)
        if changed:
            M.set_masks(self.model, {f"{name}.weight": keep[name] for name in changed})
            self.masks.update({name: keep[name] for name in changed})
        return changed

    def sparsity(self, key: str) -> float:
        """Current fraction of pruned weights of layer ``key``, or of all layers for ``"*"``."""
        names = self._names(key)
        return 1 - sum(int(self.masks[n].sum()) for n in names) / sum(self.masks[n].numel() for n in names)

    def _value_for(self, key: str) -> float:
        """The slider value, under the current rule, that gives ``key``'s current mask (the stored value
        when it was set under this rule)."""
        rule = self.rule.value
        stored = self.values.get(key)
        if stored is not None and stored[0] == rule:
            return stored[1]
        s = self.sparsity(key)
        if rule == "sparsity":
            return round(s, 4)
        if rule == "threshold":
            return max(self.ranked(key).threshold_for_sparsity(s), 0.0)
        lo, hi = 0.0, 4.0     # quality: bisect q until the layers' sparsity matches s
        for _ in range(30):
            q = (lo + hi) / 2
            keep, _ = self._masks_for(key, q, "quality")
            if 1 - sum(int(k.sum()) for k in keep.values()) / sum(k.numel() for k in keep.values()) < s:
                lo = q
            else:
                hi = q
        return round(hi, 4)

    # ------------------------------------------------------------------ widgets
    def _configure_slider(self) -> None:
        """Range, step and value of the slider for the current rule, scope and criterion."""
        rule, key = self.rule.value, self._key()
        if rule == "sparsity":
            lo, hi, step, fmt = 0.0, 0.99, 0.01, ".1%"
        elif rule == "threshold":
            hi = float(self.ranked(key).sorted[-1])
            lo, step, fmt = 0.0, hi / 400 if hi > 0 else 0.01, ".4g"          # as the table below shows v_thr
        else:
            lo, hi, step, fmt = 0.0, 4.0, 0.02, ".2f"
        value = self._value_for(key)
        with self.quiet():
            self.slider.min, self.slider.max = lo, max(hi, lo + step)   # widen first, then narrow
            self.slider.step, self.slider.description, self.slider.readout_format = step, SLIDER[rule], fmt
            self.slider.value = min(max(value, lo), self.slider.max)

    def _on_slider(self, change) -> None:
        if self._quiet:
            return
        self.update(self._apply(self._key(), change["new"]))

    def _on_layer(self, change) -> None:
        if self._quiet:
            return
        self._rebuild_layer_panels()
        self._configure_slider()
        self._redraw()

    def _on_scope(self, change) -> None:
        if self._quiet:
            return
        self._configure_slider()
        if change["new"] == "global":   # one v_thr for all layers, from the current slider value
            self.update(self._apply("*", self.slider.value))

    def _on_criterion(self, change) -> None:
        if self._quiet:
            return
        if self.rule.value == "quality" and change["new"] != "magnitude":
            with self.quiet():
                self.rule.value = "sparsity"
        # keep each layer's sparsity, now ranked by the new criterion
        keys = ["*"] if self.scope.value == "global" else list(self.layers)
        sparsity = {key: self.sparsity(key) for key in keys}
        changed = sorted({name for key in keys for name in self._apply(key, sparsity[key], "sparsity")})
        self._configure_slider()
        self.update(changed)

    def _on_rule(self, change) -> None:
        if self._quiet:
            return
        if change["new"] == "quality" and self.criterion.value != "magnitude":
            with self.quiet():
                self.rule.value = change["old"]
            raise ValueError("The quality rule v_thr = q·σ(W) is defined for magnitude scores only; "
                             "pick criterion 'magnitude' first.")
        self._configure_slider()

    # ------------------------------------------------------------------ drawing
    def _build_figure(self, bins: int) -> None:
        with matplotlib.rc_context({"font.size": 8}):
            self.fig = Figure(figsize=(7.5, 2.7), dpi=80, layout="constrained")   # 600 x 216 px: drawn as shown
            self.ax_mask, self.ax_hist = self.fig.subplots(1, 2, width_ratios=[1.4, 1.0])
        self.bins = bins
        self.mask_image = None
        self.histogram = None
        self.renderer = self.figure_renderer(self.fig)
        self._rebuild_layer_panels()

    def _rebuild_layer_panels(self) -> None:
        name = self.layer.value
        W = M.original(self.model, f"{name}.weight").detach()
        with matplotlib.rc_context({"font.size": 8}):
            self.ax_mask.clear()
            self.ax_hist.clear()
            self.mask_image = MaskImage(self.ax_mask, self._mask_view(self.masks[name]))
            self.histogram = WeightHistogram(self.ax_hist, W, bins=self.bins)
            shape = " × ".join(map(str, W.flatten(1).shape))
            part = ", first 32 × 64" if self.zoom.value else ""
            self.ax_mask.set_title(f"mask M of {name} [{shape}]{part}: black = kept", fontsize=9)
            self.ax_hist.set_title(f"weights of {name}", fontsize=9)
            self.all_kept_note = self.ax_mask.text(
                0.5, 0.5, "nothing pruned yet:\nmove the slider", transform=self.ax_mask.transAxes, ha="center",
                va="center", fontsize=11, color="black", bbox={"facecolor": "white", "edgecolor": "0.5"})
        self.renderer.animated = [self.mask_image.image, *self.histogram.artists, self.all_kept_note]
        self.renderer.capture_background()

    def _redraw(self) -> None:
        name = self.layer.value
        magnitude = self.criterion.value == "magnitude" and math.isfinite(self.v_thr.get(name, -math.inf))
        self.mask_image.update(self._mask_view(self.masks[name]))
        self.all_kept_note.set_visible(bool(self.masks[name].all()))
        self.histogram.update(self.masks[name], self.v_thr.get(name) if magnitude else None)
        self.image.value = self.renderer.png()
        self._redraw_readout()

    def _mask_view(self, keep: Tensor) -> Tensor:
        """The mask as drawn: W.flatten(1), or its top-left 32 × 64 weights when zoomed."""
        return keep.flatten(1)[:32, :64] if self.zoom.value else keep

    def _redraw_readout(self) -> None:
        rows, kept_all, total_all = [], 0, 0
        for name, keep in self.masks.items():
            kept, total = int(keep.sum()), keep.numel()
            kept_all, total_all = kept_all + kept, total_all + total
            v = self.v_thr.get(name, -math.inf)
            v_text = f"{v:.4g}" if math.isfinite(v) else "–"
            bold = " style='font-weight:bold'" if name == self.layer.value else ""
            rows.append(f"<tr{bold}><td>{html.escape(name)}</td><td>{v_text}</td><td>{kept:,} / {total:,}</td>"
                        f"<td>{1 - kept / total:.1%}</td></tr>")
        other = sum(p.numel() for p in self.model.parameters()) - total_all   # biases, BatchNorm, other layers
        delta = 100 * (self.accuracy - self.baseline)
        where = self.meter.where()
        self.headline.value = (
            f"<div class='prunelab-accuracy' style='line-height:1.3'><span style='font-size:14px'>"
            f"{self.data.accuracy_label()}: </span><span style='font-size:24px;font-weight:bold'>"
            f"{self.accuracy:.2%}</span><br><span style='font-size:13px'>{delta:+.2f} points from dense "
            f"({self.baseline:.2%}); {html.escape(self.layer.value)} {self.sparsity(self.layer.value):.1%} pruned, "
            f"all layers {1 - kept_all / total_all:.1%}</span><br><span style='font-size:11px'>{where}</span></div>")
        self.readout.value = (
            "<table style='font-family:monospace;font-size:12px'>"
            "<tr><th align=left>layer</th><th align=left>v_thr</th><th align=left>weights kept</th>"
            "<th align=left>sparsity</th></tr>" + "".join(rows) +
            f"<tr><td><b>all</b></td><td></td><td>{kept_all:,} / {total_all:,}</td>"
            f"<td><b>{1 - kept_all / total_all:.1%}</b></td></tr></table>"
            f"<div>nonzero parameters: <b>{kept_all + other:,}</b> of {total_all + other:,} "
            f"(weights of the pruned layers plus {other:,} others)</div>")

    # ------------------------------------------------------------------ reset
    def reset(self) -> None:
        """Remove every mask: the model's original weights, bit for bit; sliders back to no pruning."""
        M.reset(self.model, [f"{name}.weight" for name in self.layers
                             if f"{name}.weight" in M.masked_parameters(self.model)])
        self.masks = {name: torch.ones_like(keep) for name, keep in self.masks.items()}
        self.values, self.v_thr = {}, {}
        with self.quiet():                      # the controls back to where they started, too
            self.rule.value, self.scope.value, self.criterion.value = "sparsity", "layer", "magnitude"
            self.zoom.value = False
        self._rebuild_layer_panels()
        self._configure_slider()
        self.update(None)
