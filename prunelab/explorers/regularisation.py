"""The regularisation-strength explorer: networks trained with different L1 strengths λ1 (lesson 09), one of them
shown, pruned by magnitude with a slider: what the penalty did to the weights, and what it buys after pruning.

- histogram: the shown network's weights of one layer (log count axis; the same x range and bins for every λ1, so
  the histograms compare), the pruned ones in red under the kept ones, the threshold ±v_thr at the chosen sparsity
  s as two lines, and the fraction with |w| < 10⁻³;
- headline, by the sliders: the shown network's validation accuracy dense and with the fraction s of its weights
  pruned, and the cost of pruning, dense − pruned, in points;
- table: every λ1 at the same s (dense, pruned, cost), the best pruned accuracy in bold (ties bold).

Pruning is ``prunelab.prune(net, s)``'s: magnitude, each layer to the sparsity s (``scope="layer"``, its default)
or one threshold over all layers (``scope="global"``), with the same masks (``thresholds.RankedScores`` of |W|,
sorted once per network). Nothing is trained here: the networks come trained. Each is copied
(``masks.copy_model``); only the copy is masked, measured with ``prunelab.evaluate`` and unmasked again
(``masks.reset``), so the networks passed in are never changed. Accuracies are kept per (λ1, s): moving back is
instant.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from numbers import Real
from typing import Literal

import ipywidgets as widgets
import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from .. import masks as M
from .._helpers import select_layers
from ..data import Data, as_image_set
from ..scores import magnitude
from ..thresholds import RankedScores, split_by_layer
from ..training import evaluate
from .base import Explorer, FloatSlider

__all__ = ["RegularisationExplorer"]

NEAR_ZERO = 1e-3          # "near zero", as lesson 09 counts it: |w| < 10⁻³
MAX_SPARSITY = 0.99       # the slider's end
EXAMPLE = "{0.0: net_plain, 3e-4: net_l1}"
Scope = Literal["layer", "global"]


def _lam_text(lam: float) -> str:
    return f"{lam:g}"


class RegularisationExplorer(Explorer):
    """Pick one of several networks trained with different L1 strengths λ1; prune the fraction s of its weights.

    - ``networks``: ``{λ1: trained network}``, the keys the L1 strengths they were trained with (numbers ≥ 0), all
      the same architecture and unmasked; copied once, never changed;
    - ``data``: where accuracy is measured (the validation split: what is seen here is used to choose λ1);
    - ``layer``: the layer whose weights the histogram shows (every layer is pruned);
    - ``scope``: ``"layer"`` (each layer to the sparsity s, as ``prunelab.prune(net, s)``) or ``"global"`` (one
      threshold over all layers, as ``prunelab.prune(net, s, scope="global")``);
    - ``sparsity``, ``lam``: where the sliders start (and ``reset`` returns to): s a multiple of 1% from 0 to 99%;
      λ1 one of the keys, by default the smallest.

    State: ``lambdas`` (sorted), ``lam`` and ``s`` (the sliders), ``dense`` ({λ1: accuracy}), ``pruned``
    ({λ1: accuracy at s}), ``cost`` ({λ1: dense − pruned}), ``best`` (the λ1 with the highest pruned accuracy at s,
    several when tied), ``v_thr`` (the shown layer's threshold at s, −inf when nothing is pruned), ``layer_sparsity``
    (the fraction of the shown layer pruned), ``near_zero`` ({λ1: fraction of the layer with |w| < 10⁻³}).
    """

    def __init__(self, networks: Mapping[float, nn.Module], data: Data, *, layer: str = "fc1",
                 scope: Scope = "layer", sparsity: float = 0.5, lam: float | None = None, bins: int = 101):
        super().__init__()
        self.networks = self._check_networks(networks)
        self.lambdas = sorted(self.networks)
        self.data = as_image_set(data, "RegularisationExplorer")
        first = self.networks[self.lambdas[0]]
        self.layers = list(select_layers(first))                 # every layer is pruned, as prune(net, s) does
        self.layer = self._check_layer(first, layer)
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' (each layer to the sparsity s, as prunelab.prune(net, s)) or "
                             f"'global' (one threshold over all layers), got {scope!r}.")
        self.scope = scope
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins is the number of histogram bins, an integer >= 2 (default 101), got {bins!r}.")
        self.start_s = self._check_sparsity(sparsity)
        self.start_lam = self.lambdas[0] if lam is None else self._check_lam(lam)

        self._copies = {lam_: M.copy_model(net) for lam_, net in self.networks.items()}
        self._ranked: dict[float, dict[str, RankedScores]] = {}
        for lam_, net in self._copies.items():
            scores = {name: magnitude(M.original(net, f"{name}.weight").detach()).cpu() for name in self.layers}
            ranked = {name: RankedScores(s) for name, s in scores.items()}
            if scope == "global":
                ranked["*"] = RankedScores(torch.cat([s.flatten().float() for s in scores.values()]))
            self._ranked[lam_] = ranked
        self._W = {lam_: M.original(net, f"{self.layer}.weight").detach().flatten().double().cpu().numpy()
                   for lam_, net in self._copies.items()}
        self.near_zero = {lam_: float((np.abs(w) < NEAR_ZERO).mean()) for lam_, w in self._W.items()}
        self.dense = {lam_: evaluate(net, self.data).accuracy for lam_, net in self._copies.items()}
        self._cache: dict[tuple[float, float], float] = {(lam_, 0.0): a for lam_, a in self.dense.items()}
        self.lam, self.s = self.start_lam, self.start_s

        style = {"description_width": "initial"}
        self.lam_slider = widgets.SelectionSlider(options=[(_lam_text(l), l) for l in self.lambdas],
                                                  value=self.start_lam, description="L1 strength λ1",
                                                  continuous_update=True, style=style,
                                                  layout=widgets.Layout(width="440px"))
        self.slider = FloatSlider(value=self.start_s, min=0.0, max=MAX_SPARSITY, step=0.01,
                                  description="weights pruned by magnitude", readout_format=".0%",
                                  continuous_update=True, style=style, layout=widgets.Layout(width="440px"))
        self.reset_button = self.make_reset_button(
            f"λ1 = {_lam_text(self.start_lam)} and {self.start_s:.0%} pruned again; the networks were never changed")
        self.headline = widgets.HTML(layout=widgets.Layout(margin="0 0 0 16px"))   # the accuracies, largest text
        self.table = widgets.HTML(layout=widgets.Layout(margin="0 0 0 12px"))
        self.readout.layout.max_width = "880px"                # the view stays within ~900 px

        self._build_figure(bins)
        self.observe({self.lam_slider: self._on_lambda, self.slider: self._on_sparsity})
        wrap = widgets.Layout(flex_flow="row wrap", align_items="center")
        controls = widgets.VBox([self.lam_slider, self.slider, widgets.HBox([self.reset_button])])
        self.view = widgets.VBox([widgets.HBox([controls, self.headline], layout=wrap), self.error_box,
                                  widgets.HBox([self.image, self.table], layout=wrap), self.readout])
        self._measure(self.s)
        self._redraw()

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_networks(networks) -> dict[float, nn.Module]:
        if not isinstance(networks, Mapping):
            raise TypeError(f"networks must be a dict {{λ1: trained network}}, e.g. {EXAMPLE}, got "
                            f"{type(networks).__name__}.")
        if not networks:
            raise ValueError(f"networks is empty: give at least one trained network, keyed by the L1 strength λ1 it "
                             f"was trained with, e.g. {EXAMPLE} (two or more to compare).")
        out: dict[float, nn.Module] = {}
        for key, net in networks.items():
            if isinstance(key, bool) or not isinstance(key, Real) or not math.isfinite(key) or key < 0:
                raise ValueError(f"The keys of networks are the L1 strengths λ1 the networks were trained with: "
                                 f"numbers >= 0, e.g. {EXAMPLE}; got the key {key!r}. Key each network by its λ1 "
                                 "(0.0 for the one trained without a penalty).")
            if float(key) in out:
                raise ValueError(f"networks has λ1 = {float(key):g} twice ({key!r}); give each λ1 one network.")
            if not isinstance(net, nn.Module):
                raise TypeError(f"networks[{key!r}] must be an nn.Module (a trained network), got "
                                f"{type(net).__name__}.")
            masked = M.masked_parameters(net)
            if masked:
                raise ValueError(f"networks[{key!r}] carries masks ({', '.join(masked)}): the explorer prunes the "
                                 "trained weights itself. Lift them with prunelab.masks.reset(net) (or make them "
                                 "permanent with prunelab.masks.commit(net)) first.")
            out[float(key)] = net
        lams = sorted(out)
        reference = RegularisationExplorer._architecture(out[lams[0]])
        for lam in lams[1:]:
            other = RegularisationExplorer._architecture(out[lam])
            if other != reference:
                diff = next((f"{a[0]} {list(a[1])} against {b[0]} {list(b[1])}"
                             for a, b in zip(reference, other) if a != b),
                            f"{len(reference)} against {len(other)} tensors")
                raise ValueError(f"networks[{lam:g}] is not the same architecture as networks[{lams[0]:g}] "
                                 f"(first difference: {diff}). The explorer compares one architecture trained with "
                                 "different λ1: build every network the same way (e.g. prunelab.build_model"
                                 "('lenet300', seed=0)) and only change the penalty.")
        return out

    @staticmethod
    def _architecture(net: nn.Module) -> tuple:
        return ((type(net).__name__, ()),
                *((name, tuple(t.shape)) for name, t in net.state_dict().items()))

    @staticmethod
    def _check_layer(model: nn.Module, layer) -> str:
        if not isinstance(layer, str):
            raise ValueError(f"layer is the name of the layer whose weights are shown, e.g. 'fc1'; got {layer!r}.")
        return next(iter(select_layers(model, [layer])))      # unknown: ValueError listing the layers there are

    @staticmethod
    def _check_sparsity(s) -> float:
        if (isinstance(s, bool) or not isinstance(s, Real) or not 0 <= s <= MAX_SPARSITY
                or abs(100 * s - round(100 * s)) > 1e-9):
            raise ValueError(f"sparsity is where the slider starts: the fraction of weights pruned, a multiple of "
                             f"1% from 0 to {MAX_SPARSITY:g} (e.g. 0.5 or 0.9), got {s!r}.")
        return round(float(s), 2)

    def _check_lam(self, lam) -> float:
        if isinstance(lam, bool) or not isinstance(lam, Real) or float(lam) not in self.networks:
            raise ValueError(f"lam is the λ1 shown first: one of the keys of networks "
                             f"({', '.join(map(_lam_text, self.lambdas))}), got {lam!r}.")
        return float(lam)

    # ------------------------------------------------------------------ masks and accuracy
    def keep_masks(self, lam: float, s: float) -> dict[str, Tensor]:
        """The keep-masks {layer: bool, shaped like W} that ``prunelab.prune(net, s, scope=...)`` sets on the network
        trained with ``lam``: the k = round(s · n) smallest |w| removed, per layer or over all layers."""
        ranked = self._ranked[lam]
        if self.scope == "layer":
            return {name: ranked[name].mask_for_sparsity(s) for name in self.layers}
        return split_by_layer(ranked["*"].mask_for_sparsity(s), {name: ranked[name].shape for name in self.layers})

    def threshold(self, lam: float, s: float) -> float:
        """v_thr of the shown layer at ``s``: its k-th smallest |w| (layer scope) or that of all layers (global)."""
        return self._ranked[lam][self.layer if self.scope == "layer" else "*"].threshold_for_sparsity(s)

    def accuracy_at(self, lam: float, s: float) -> float:
        """The accuracy on ``data`` of the network trained with ``lam``, the fraction ``s`` of its weights pruned
        (measured once per (λ1, s), then remembered)."""
        key = (float(lam), round(float(s), 6))
        if key not in self._cache:
            net = self._copies[key[0]]
            masks = self.keep_masks(key[0], key[1])
            try:
                M.set_masks(net, {f"{name}.weight": keep for name, keep in masks.items()})
                self._cache[key] = evaluate(net, self.data).accuracy
            finally:
                M.reset(net)                                   # idle: the copy unmasked, as it came
        return self._cache[key]

    def _measure(self, s: float) -> None:
        """Every network's accuracy at ``s`` (remembered ones are not measured again)."""
        pruned = {lam: self.accuracy_at(lam, s) for lam in self.lambdas}     # all or nothing: an error keeps the last
        self.s, self.pruned = s, pruned
        self.cost = {lam: self.dense[lam] - pruned[lam] for lam in self.lambdas}
        top = max(pruned.values())
        self.best = [lam for lam in self.lambdas if pruned[lam] == top]

    @property
    def accuracy(self) -> float:
        """The shown network's accuracy with the fraction s of its weights pruned."""
        return self.pruned[self.lam]

    @property
    def v_thr(self) -> float:
        return self.threshold(self.lam, self.s)

    @property
    def layer_sparsity(self) -> float:
        keep = self.keep_masks(self.lam, self.s)[self.layer]
        return 1 - int(keep.sum()) / keep.numel()

    # ------------------------------------------------------------------ events
    def _on_lambda(self, change) -> None:
        if self._quiet:
            return
        self.lam = float(change["new"])
        self._redraw()

    def _on_sparsity(self, change) -> None:
        if self._quiet:
            return
        self._measure(round(float(change["new"]), 2))
        self._redraw()

    def reset(self) -> None:
        """The sliders back to where they started (the networks passed in were never changed)."""
        with self.quiet():
            self.lam_slider.value, self.slider.value = self.start_lam, self.start_s
        self.lam = self.start_lam
        self._measure(self.start_s)
        self._redraw()

    # ------------------------------------------------------------------ drawing
    def _build_figure(self, bins: int) -> None:
        # one x range for every λ1, fitted to the data: ±(the largest 99.9th percentile of |w|) · 1.1; the few
        # weights beyond it are counted in the end bins
        span = max(max(float(np.quantile(np.abs(w), 0.999)) for w in self._W.values()) * 1.1, 1e-12)
        self.edges = np.linspace(-span, span, bins + 1)
        self._clipped = {lam: np.clip(w, -span, span) for lam, w in self._W.items()}
        beyond = {lam: int((np.abs(w) > span).sum()) for lam, w in self._W.items()}
        top = max(int(np.histogram(w, self.edges)[0].max()) for w in self._clipped.values())
        n = self._W[self.lambdas[0]].size
        with matplotlib.rc_context({"font.size": 9}):
            self.fig = Figure(figsize=(6.0, 3.0), dpi=80, layout="constrained")      # 480 x 240 px: drawn as shown
            ax = self.ax = self.fig.subplots()
            zeros, ones = np.zeros(bins), np.ones(bins)                        # (the data comes with _redraw)
            self.pruned_bars = ax.stairs(zeros, self.edges, baseline=zeros, fill=True, color="tab:red", alpha=0.8,
                                         label="pruned")
            self.kept_bars = ax.stairs(ones, self.edges, fill=True, color="tab:blue", alpha=0.8, label="kept")
            ax.set_yscale("log")
            self.lines = [ax.axvline(0, color="black", lw=1, ls="--", visible=False) for _ in range(2)]
            self.note = ax.text(0.02, 0.97, "", transform=ax.transAxes, ha="left", va="top", fontsize=9,
                                bbox={"facecolor": "white", "edgecolor": "0.7", "pad": 2})
            ax.set_xlim(self.edges[0], self.edges[-1])
            ax.set_ylim(0.7, 3 * top)
            more = max(beyond.values())
            ax.set_xlabel(f"weight w of {self.layer} ({n:,} weights"
                          + (f"; up to {more:,} beyond the range, in the end bins)" if more else ")"))
            ax.set_ylabel("count (log scale)")
            ax.legend(loc="upper right", fontsize=8, frameon=False)
        self.renderer = self.figure_renderer(self.fig, [self.pruned_bars, self.kept_bars, *self.lines, self.note])

    def _redraw(self) -> None:
        w = self._clipped[self.lam]
        keep = self.keep_masks(self.lam, self.s)[self.layer].flatten().numpy()
        v = self.v_thr
        show = math.isfinite(v)
        edges = np.union1d(self.edges, [-v, v]) if show and 0 < v < self.edges[-1] else self.edges   # no mixed bin
        pruned = np.histogram(w[~keep], edges)[0]
        kept = np.histogram(w[keep], edges)[0]
        self.pruned_bars.set_data(pruned, edges, baseline=np.zeros_like(pruned))
        self.kept_bars.set_data(kept + pruned, edges, baseline=pruned)          # kept stacked on top of pruned
        for line, x in zip(self.lines, (-v, v)):
            line.set_visible(show)
            if show:
                line.set_xdata([x, x])
        v_text = f"±v_thr = ±{v:.2g}" if show else "nothing pruned"
        self.note.set_text(f"λ1 = {_lam_text(self.lam)}: {self.near_zero[self.lam]:.0%} of {self.layer} have "
                           f"|w| < 1e-3\n{self.layer_sparsity:.1%} of {self.layer} pruned; {v_text}")
        self.image.value = self.renderer.png()
        self._redraw_headline()
        self._redraw_table()

    def _redraw_headline(self) -> None:
        lam, label = self.lam, html.escape(self.data.accuracy_label())
        big = "font-size:24px;font-weight:bold"
        self.headline.value = (
            f"<div class='prunelab-accuracy' style='line-height:1.35'>"
            f"<div style='font-size:14px'>{label}, λ1 = {_lam_text(lam)}:</div>"
            f"<div><span style='font-size:14px'>dense </span><span style='{big}'>{self.dense[lam]:.2%}</span>"
            f"<span style='font-size:14px'> → {self.s:.0%} pruned </span><span style='{big}'>"
            f"{self.pruned[lam]:.2%}</span></div>"
            f"<div><span style='font-size:14px'>cost of pruning </span><span style='{big}'>"
            f"{100 * self.cost[lam]:.2f} points</span></div></div>")

    def _redraw_table(self) -> None:
        rows, pad = [], "padding:1px 6px"
        for lam in self.lambdas:
            shade = "background:#e8eef8;" if lam == self.lam else ""
            weight = "bold" if lam in self.best else "normal"
            rows.append(f"<tr style='{shade}'><td style='{pad}'>{_lam_text(lam)}</td>"
                        f"<td align=right style='{pad}'>{self.dense[lam]:.2%}</td>"
                        f"<td align=right style='{pad};font-weight:{weight}'>{self.pruned[lam]:.2%}</td>"
                        f"<td align=right style='{pad}'>{100 * self.cost[lam]:.2f}</td></tr>")
        how = "each layer" if self.scope == "layer" else "all layers together"
        self.table.value = (
            f"<div style='font-size:13px'>every λ1 at {self.s:.0%} pruned ({how}):</div>"
            "<table style='font-family:monospace;font-size:13px;border-collapse:collapse'>"
            f"<tr><th align=left style='{pad}'>λ1</th><th align=right style='{pad}'>dense</th>"
            f"<th align=right style='{pad}'>pruned</th><th align=right style='{pad}'>cost (points)</th></tr>"
            + "".join(rows) + "</table>"
            "<div style='font-size:12px;color:#444'>bold: the best pruned accuracy (ties: all bold);<br>"
            "shaded: the λ1 shown</div>")
        call = f"prunelab.prune(net, {self.s:g}" + ("" if self.scope == "layer" else ", scope='global'") + ")"
        self.readout.value = (
            f"<div style='font-size:12px'>Accuracy on all {html.escape(self.data.images_label())}. Pruned as "
            f"{html.escape(call)} prunes: the "
            f"smallest |w| of {how} by masks on a copy of each network, measured and unmasked again; the networks "
            "you passed are never changed, and nothing is trained here.</div>")
