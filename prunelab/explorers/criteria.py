"""The criteria explorer: one slider, the fraction of one layer's neurons removed, and every importance criterion
of lesson 03 side by side: which neurons each removes, the accuracy each leaves, and how far their choices overlap.

- strips: one row per criterion, one cell per neuron of the layer (kept dark, removed white), every row in the same
  neuron order (by the first criterion's score, lowest left), so that different choices are seen as different;
- headline, by the slider: each criterion's accuracy with its k = round(f · n) lowest-scoring neurons removed
  (the best in bold, ties bold), and how much its removed set R_c overlaps the first criterion's;
- readout: the Jaccard overlap J(a, b) = |R_a ∩ R_b| / |R_a ∪ R_b| of every pair of removed sets, next to what two
  random sets of the same size share on average, f / (2 − f).

Scores come from the one function the lesson uses, ``pruning.unit_scores`` (from the original weights; the data
criteria on the first ``n_images`` of ``calibration``), computed once at construction and sorted once
(``thresholds.RankedScores``), so a slider move only scatters masks and measures. Neurons are removed with
``prunelab.masks`` (``pruning.unit_masks_to_parameters``: the neuron's row of W and its bias), on a private copy of
the model (``masks.copy_model``): the model passed in is never changed. The accuracy is measured with
``AccuracyMeter`` (``LiveAccuracy``: from the layer on, the images' path up to it kept).
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import matplotlib
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor, nn

from .. import masks as M
from .._helpers import did_you_mean
from ..data import Data, ImageSet, as_image_set
from ..pruning import UNIT_CRITERIA, unit_masks_to_parameters, unit_scores
from ..thresholds import RankedScores
from .base import AccuracyMeter, Explorer, FloatSlider

__all__ = ["CriteriaExplorer", "LESSON_CRITERIA", "jaccard"]

# the criteria lesson 03 compares at neuron granularity (its section 5), in its order
LESSON_CRITERIA = ("l1", "l2", "gradient", "taylor", "random", "mean_activation", "max_activation", "apoz",
                   "loss_change")
# each criterion's score as a formula (HTML), as lesson 03 writes it
FORMULA = {"l1": "‖W<sub>j</sub>‖<sub>1</sub>", "l2": "‖W<sub>j</sub>‖<sub>2</sub>",
           "magnitude": "Σ<sub>i</sub> |W<sub>ji</sub>|", "gradient": "Σ<sub>i</sub> |g<sub>ji</sub>|",
           "taylor": "Σ<sub>i</sub> |g<sub>ji</sub> W<sub>ji</sub>|",
           "taylor_batches": "mean<sub>b</sub> |T<sub>j</sub>(b)|", "random": "",
           "mean_activation": "mean<sub>n</sub> h<sub>nj</sub>", "max_activation": "max<sub>n</sub> h<sub>nj</sub>",
           "apoz": "1 − APoZ<sub>j</sub>", "loss_change": "ΔL<sub>j</sub>", "gradient_change": "ΔG<sub>j</sub>"}
KEPT, REMOVED, FRAME = "#1f2f56", "#ffffff", "#9a9a9a"


def jaccard(removed: Tensor) -> Tensor:
    """J [C, C] of C removed sets given as bool rows ``removed`` [C, n]: J_ab = |R_a ∩ R_b| / |R_a ∪ R_b|, and 1
    where both sets are empty (they are the same set)."""
    R = removed.double()
    both = R @ R.T                                                     # |R_a ∩ R_b|
    size = R.sum(1)
    either = size[:, None] + size[None, :] - both                      # |R_a ∪ R_b|
    return torch.where(either > 0, both / either.clamp(min=1), torch.ones_like(both))


def _first(data: ImageSet, n: int) -> ImageSet:
    """The first ``n`` images of ``data`` (all of them when it holds fewer): the fixed batch the scores use."""
    if len(data) <= n:
        return data
    return ImageSet(data.images[:n], data.labels[:n], data.classes, data.name, mean=data.mean, std=data.std)


class CriteriaExplorer(Explorer):
    """Remove a fraction of one layer's neurons by every criterion at once; see whom each removes and what is left.

    - ``model``: a trained classifier; it is copied (``masks.copy_model``) and only the copy is ever masked;
    - ``data``: where the accuracy is measured (the validation split when you use what you see to choose);
      all of it on every move when one move (all criteria) takes ≤ ``exact_budget`` seconds, else an estimate
      on ``estimate_images`` images while the slider moves and the exact figures once it rests, each labelled;
    - ``layer``: a Linear layer with neurons to remove (not the last layer: its outputs are the classes);
    - ``criteria``: names ``pruning.unit_scores`` takes (default: lesson 03's nine); the first orders the strips;
    - ``calibration``: images for the criteria that need data (gradients, activations, ΔL_j): its first ``n_images``;
      default: the first ``n_images`` of ``data``. Pass training images to keep ``data`` unseen by the scores;
    - ``seed``: the random criterion's seed; ``removed``: the fraction the slider starts at (and reset returns to).

    State: ``scores`` ({criterion: [n]}), ``order`` (the neurons in strip order), ``fraction`` and ``k``
    (= round(fraction · n) neurons removed), ``keep`` ({criterion: bool [n]}), ``accuracy`` ({criterion: fraction}),
    ``accuracy_is_exact``, ``overlap`` (Jaccard [C, C], criteria in order), ``baseline`` (nothing removed).
    Between events the copy's neuron masks are all ones: ``masks.effective_state_dict(explorer.model)`` is the
    model passed in, bit for bit.
    """

    def __init__(self, model: nn.Module, data: Data, *, layer: str = "fc1", criteria=LESSON_CRITERIA,
                 calibration: Data | None = None, n_images: int = 2048, seed: int = 0, removed: float = 0.25,
                 exact_budget: float = 0.5, estimate_images: int | None = None):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module (a trained classifier), got {type(model).__name__}.")
        self.data = as_image_set(data, "CriteriaExplorer")
        self.layer = self._check_layer(model, layer)
        self.criteria = self._check_criteria(criteria)
        if isinstance(removed, bool) or not (isinstance(removed, (int, float)) and 0 <= removed <= 0.99):
            raise ValueError(f"removed is the fraction of {layer}'s neurons removed at the start, from 0 to 0.99 "
                             f"(the slider's range), got {removed!r}.")
        if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
            raise ValueError(f"n_images is how many calibration images the scores use, a positive integer (e.g. "
                             f"2048), got {n_images!r}.")
        self.calibration = _first(self.data if calibration is None else
                                  as_image_set(calibration, "CriteriaExplorer's calibration"), n_images)
        self.seed = seed
        self.model = M.copy_model(model)                      # masked here, never the model passed in
        layers = {self.layer: self.model.get_submodule(self.layer)}
        self.n = layers[self.layer].weight.shape[0]            # neurons: rows of W [n, in]
        self.scores = {c: unit_scores(self.model, layers, c, self.calibration, seed)[self.layer].detach().cpu()
                       for c in self.criteria}                 # once: the lesson's one function per criterion
        self._ranked = {c: RankedScores(s) for c, s in self.scores.items()}
        self.order = self._ranked[self.criteria[0]].order      # strip order: by the first criterion, lowest left
        params = unit_masks_to_parameters(self.model, {self.layer: self._all()})   # the layer's W and b
        self._initial_masks = {p: m for p, m in M.get_masks(self.model).items() if p in params}

        self.meter = AccuracyMeter(self.model, self.data, exact_budget=exact_budget,
                                   estimate_images=estimate_images, passes=len(self.criteria))
        for live in (self.meter.exact, self.meter.estimate):   # each criterion's mask differs from the last one
            if live is not None:                               # measured: compute the layer whole (bit-exact
                live.dense_fraction = 0.0                      # figures whatever the order), never by ΔW
        self.baseline = self.meter.baseline
        self.start = round(float(removed), 2)
        self.fraction, self.k = self.start, round(self.start * self.n)
        self.keep = {c: self._all() for c in self.criteria}
        self.accuracy = {c: self.baseline for c in self.criteria}
        self.accuracy_is_exact = True
        self.overlap = torch.ones(len(self.criteria), len(self.criteria), dtype=torch.float64)

        style = {"description_width": "initial"}
        self.slider = FloatSlider(value=self.start, min=0.0, max=0.99, step=0.01,
                                  description=f"{self.layer} neurons removed", readout_format=".0%",
                                  continuous_update=True, style=style, layout=widgets.Layout(width="400px"))
        self.reset_button = self.make_reset_button(f"the slider back to {self.start:.0%}; the model was never changed")
        self.count = widgets.HTML()
        self.headline = widgets.HTML(layout=widgets.Layout(margin="0 0 0 16px"))   # the accuracies, largest text
        self._build_figure()
        self.observe({self.slider: self._on_slider})
        left = widgets.VBox([self.slider, widgets.HBox([self.count, self.reset_button],
                                                       layout=widgets.Layout(align_items="center")), self.image])
        self.view = widgets.VBox([widgets.HBox([left, self.headline], layout=widgets.Layout(flex_flow="row wrap")),
                                  self.error_box, self.readout])
        self._apply(self.start)

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_layer(model: nn.Module, layer: str) -> str:
        available = M.prunable_layers(model)
        last = list(available)[-1] if available else None
        valid = [n for n, m in available.items() if isinstance(m, nn.Linear) and n != last]
        if not valid:
            raise ValueError(f"{type(model).__name__} has no Linear layer with neurons to remove (the last layer, "
                             "whose outputs are the classes, does not count); CriteriaExplorer removes the rows "
                             "of a hidden Linear layer.")
        choices = f"Layers with neurons to remove: {', '.join(map(repr, valid))}."
        if isinstance(layer, str) and layer in valid:
            return layer
        names = dict(model.named_modules())
        if not isinstance(layer, str) or not layer or layer not in names:
            raise ValueError(f"Unknown layer {layer!r}.{did_you_mean(layer, valid)} {choices}")
        module = names[layer]
        if layer == last:
            why = "it is the last layer: its outputs are the classes"
        elif isinstance(module, nn.Conv2d):
            why = "it is a Conv2d, whose units are channels, not neurons (see GranularityExplorer for channels)"
        else:
            why = f"it is a {type(module).__name__}, which has no weight rows"
        raise ValueError(f"Layer {layer!r} has no neurons to remove: {why}. {choices}")

    @staticmethod
    def _check_criteria(criteria) -> tuple[str, ...]:
        criteria = (criteria,) if isinstance(criteria, str) else tuple(criteria)
        choices = f"Criteria: {', '.join(map(repr, UNIT_CRITERIA))} (lesson 03: {', '.join(LESSON_CRITERIA)})."
        if not criteria:
            raise ValueError(f"criteria is empty; name at least one. {choices}")
        for c in criteria:
            if c not in UNIT_CRITERIA:
                raise ValueError(f"Unknown criterion {c!r}.{did_you_mean(c, UNIT_CRITERIA)} {choices}")
        twice = sorted({c for c in criteria if criteria.count(c) > 1})
        if twice:
            raise ValueError(f"criteria names {', '.join(map(repr, twice))} more than once; name each once.")
        return criteria

    def _all(self) -> Tensor:
        return torch.ones(self.model.get_submodule(self.layer).weight.shape[0], dtype=torch.bool)

    # ------------------------------------------------------------------ masks and accuracy
    def _set_neurons(self, keep: Tensor) -> None:
        """Mask the copy so that the neurons ``keep`` [n] (True = kept) remain (on top of the masks it came with)."""
        masks = unit_masks_to_parameters(self.model, {self.layer: keep})
        for p, m in self._initial_masks.items():
            masks[p] = masks[p] & m
        M.set_masks(self.model, masks)

    @property
    def removed(self) -> Tensor:
        """bool [C, n]: row c is True where criterion c removes the neuron (criteria in order, neurons by index)."""
        return ~torch.stack([self.keep[c] for c in self.criteria])

    def _apply(self, fraction: float) -> None:
        """Every criterion's k = round(fraction · n) lowest-scoring neurons out; accuracies, overlaps, drawing."""
        self.fraction, self.k = fraction, round(fraction * self.n)
        self.keep = {c: self._ranked[c].mask_for_sparsity(fraction) for c in self.criteria}
        self.overlap = jaccard(self.removed)
        self._measure(exact=False)
        if not self.accuracy_is_exact:
            self.later(self._settle)
        self._redraw()

    def _measure(self, *, exact: bool) -> None:
        if self.k == 0:                       # nothing removed: every criterion leaves the model as it came
            self.accuracy, self.accuracy_is_exact = {c: self.baseline for c in self.criteria}, True
            return
        accuracy = {}
        try:
            for c in self.criteria:
                self._set_neurons(self.keep[c])
                self.meter.measure([self.layer], exact=exact)
                accuracy[c] = self.meter.value
        finally:
            self._set_neurons(self._all())    # idle: the copy as it came
        self.accuracy, self.accuracy_is_exact = accuracy, self.meter.is_exact

    def _settle(self) -> None:
        self._measure(exact=True)
        self._redraw()

    def _on_slider(self, change) -> None:
        if self._quiet:
            return
        self._apply(float(change["new"]))

    def reset(self) -> None:
        """The slider back to where it started; the model passed in was never changed, the copy is as it came."""
        with self.quiet():
            self.slider.value = self.start
        self._apply(self.start)

    @property
    def best(self) -> list[str]:
        """The criteria with the highest accuracy now (more than one when tied)."""
        top = max(self.accuracy.values())
        return [c for c in self.criteria if self.accuracy[c] == top]

    # ------------------------------------------------------------------ drawing
    def _build_figure(self) -> None:
        C = len(self.criteria)
        with matplotlib.rc_context({"font.size": 10}):
            self.fig = Figure(figsize=(5.6, 0.3 * C + 0.75), dpi=80, layout="constrained")   # 448 px wide
            ax = self.ax = self.fig.subplots()
            cmap = ListedColormap([REMOVED, KEPT]).with_extremes(bad=REMOVED)   # bad: the gaps between strips
            self.strips = ax.imshow(self._strip_array(), cmap=cmap, vmin=0, vmax=1, aspect="auto",
                                    interpolation="nearest", animated=True)
            self.frames = [ax.add_patch(Rectangle((-0.5, 2 * i - 0.5), self.n, 1, fill=False, ec=FRAME, lw=0.8,
                                                  animated=True)) for i in range(C)]
            ax.set_yticks([2 * i for i in range(C)], self.criteria)
            ax.set_xticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            ax.tick_params(axis="y", length=0)
            ax.set_xlabel(f"{self.layer}'s {self.n} neurons, ordered by their {self.criteria[0]} score "
                          "(lowest left)\ndark = kept, white = removed", fontsize=9)
        self.renderer = self.figure_renderer(self.fig, [self.strips, *self.frames])

    def _strip_array(self) -> np.ndarray:
        """[2C − 1, n]: criterion c's row 2c, 1 = kept, 0 = removed, neurons in strip order; NaN gaps between."""
        C = len(self.criteria)
        a = np.full((2 * C - 1, self.n), np.nan)
        for i, c in enumerate(self.criteria):
            a[2 * i] = self.keep[c][self.order].float().numpy()
        return a

    def _redraw(self) -> None:
        self.strips.set_data(self._strip_array())
        self.image.value = self.renderer.png()
        self._redraw_headline()
        self._redraw_readout()

    def _label(self, c: str) -> str:
        formula = FORMULA[c] if c != "random" else f"seed {self.seed}"
        return f"<code>{html.escape(c)}</code> <span style='color:#666;font-size:12px'>{formula}</span>"

    def _redraw_headline(self) -> None:
        best, first = set(self.best), self.criteria[0]
        approx = "" if self.accuracy_is_exact else "<sup>≈</sup>"
        rows = []
        for i, c in enumerate(self.criteria):
            weight = "bold" if c in best else "normal"
            same = "—" if self.k == 0 or i == 0 else f"{float(self.overlap[0, i]):.0%}"
            rows.append(f"<tr><td style='font-size:13px;padding-right:8px'>{self._label(c)}</td>"
                        f"<td style='font-size:20px;font-weight:{weight};text-align:right'>"
                        f"{self.accuracy[c]:.2%}{approx}</td>"
                        f"<td style='font-size:13px;text-align:right;padding-left:10px'>{same}</td></tr>")
        label = html.escape(self.data.accuracy_label())
        self.headline.value = (
            f"<div class='prunelab-accuracy' style='line-height:1.2'>"
            f"<div style='font-size:13px'>{label} with {self.k} of {self.n} neurons removed "
            f"(none removed: {self.baseline:.2%})</div>"
            "<table style='border-collapse:collapse'><tr style='font-size:12px;color:#444'><th align=left>criterion"
            f"</th><th align=right>{label}</th><th align=right style='padding-left:10px'>same neurons<br>as "
            f"{html.escape(first)}</th></tr>" + "".join(rows) + "</table></div>")
        self.count.value = (f"<span style='font-size:13px'>k = round({self.fraction:.2f} · {self.n}) = "
                            f"<b>{self.k}</b> of {self.n} neurons</span>")

    def _redraw_readout(self) -> None:
        f = self.k / self.n
        names = [html.escape(c) for c in self.criteria]
        head = "".join(f"<th style='padding:0 4px'>{n}</th>" for n in names)
        body = "".join(
            f"<tr><th align=left>{names[a]}</th>" + "".join(
                f"<td align=right style='padding:0 4px'>{'—' if a == b or self.k == 0 else f'{float(J):.0%}'}</td>"
                for b, J in enumerate(row)) + "</tr>"
            for a, row in enumerate(self.overlap))
        chance = (f"two random sets of {self.k} of {self.n} neurons share J ≈ f / (2 − f) = {f / (2 - f):.0%} "
                  "on average" if self.k else "nothing is removed yet")
        where = self.meter.where("the slider rests", exact=self.accuracy_is_exact)
        self.readout.value = (
            f"<div style='font-size:12px'><b>Same neurons?</b> Jaccard overlap J = |R<sub>a</sub> ∩ R<sub>b</sub>| / "
            f"|R<sub>a</sub> ∪ R<sub>b</sub>| of the removed sets (100% = the same neurons; {chance}).</div>"
            f"<table style='font-family:monospace;font-size:12px'><tr><th></th>{head}</tr>{body}</table>"
            f"<div style='font-size:12px'>Accuracy on {where}, {self.layer}'s neurons removed by masks "
            "(row of W and bias) on a copy of the model; the model you passed is never changed. Scores computed "
            f"once (those that need data on {self.calibration.images_label()}); random with seed "
            f"{self.seed}.</div>")
