"""The granularity explorer: at one sparsity s, prune whole weights, whole units or n of every m weights, and
see the three side by side: their test accuracies (the headline, next to the slider, with the change from dense),
the masks of a chosen layer (at s = 0 the picture says to move the slider), and in a compact table the sparsity
really reached, what goes and, for units, the CPU speed-up of the physically smaller model (details in each
cell's tooltip and a line under the table).

In every pruned layer, with scores from the original weights (as ``prunelab.prune`` computes them):

- **weights**: the k = round(s · n) weights of smallest |w| go (``pruning.layer_masks_for_sparsity``);
- **units**: the k = round(s · u) units of smallest Σ|w| go: neurons (rows of a Linear's W [out, in]) or
  channels (filters of a Conv2d's W [C_out, C_in, kH, kW]), with their bias and the γ, β of a following
  BatchNorm (``pruning.unit_masks_to_parameters``). ``shrink`` then deletes them for real; once the slider
  rests, ``metrics.measure_latency`` times the smaller model against the dense one on a fixed batch;
- **N:M**: in every group of m consecutive weights along a row of W.flatten(1), the n of largest |w| stay
  (``pruning.nm_masks``). N:M is discrete: n = ⌊(1 − s)·m + ½⌋ (the closest to (1 − s)·m, clamped to 1..m;
  n = m leaves the layer dense), so its sparsity 1 − n/m is near s, not at it. A layer whose rows do not
  split into groups of m stays dense, as in ``prunelab.prune``.

The same layers are pruned at all three granularities: by default those whose units ``shrink`` can remove
(every Linear and Conv2d but the classifier, in the kit's models). Each granularity masks its own copy of the
model (``prunelab.masks.copy_model``): the model you pass is never changed, and ``reset()`` returns every copy
to the original weights bit for bit. Memory: the copies differ only in masks, so what they compute before their
first weights (fc1's input xᵀ) is kept once for the three (``LiveAccuracy(like=)``), N:M keeps no layer output (its
masks never change by a small ΔW), and the memory an event freed is given back to the system once the slider rests.
"""

from __future__ import annotations

import ctypes
import functools
import html
import math
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from .. import masks as M
from ..data import Data, as_image_set
from ..metrics import LatencyResult, count_macs, measure_latency, parameter_counts
from ..plots import MaskImage
from .._helpers import select_layers
from ..pruning import expand_units, nm_masks, unit_masks_to_parameters, unit_scores, weight_scores
from ..shrink import shrink, shrinkable_layers
from ..thresholds import RankedScores
from ..training import model_device
from .base import AccuracyMeter, Explorer, FloatSlider

__all__ = ["GRANULARITIES", "GranularityExplorer", "ShrinkLatency", "nm_for_sparsity"]

GRANULARITIES = ("weight", "unit", "n:m")


def nm_for_sparsity(s: float, m: int) -> int:
    """The n of N:M closest to keeping (1 − s)·m of every m weights: ⌊(1 − s)·m + ½⌋, clamped to 1..m
    (n = m: nothing pruned; n = 1 is the sparsest N:M, 1 − 1/m)."""
    return min(max(math.floor((1 - s) * m + 0.5), 1), m)


def give_back_freed_memory() -> None:
    """Ask the C allocator to return the heap memory that is free now to the system (glibc's ``malloc_trim``; does
    nothing where there is none, e.g. macOS). glibc otherwise keeps freed memory for reuse, up to twice its mmap
    threshold, which grows to 32 MB: the layer outputs one slider move replaces stay in the kernel's private
    memory (measured: 60-70 MB of a learner's session with this explorer, on top of what it really holds)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


@functools.cache
def _libc():
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


@dataclass(frozen=True)
class ShrinkLatency:
    """The unit-pruned model shrunk for real, against the dense one: ``dense`` and ``small``
    (``metrics.LatencyResult``, ms per batch), their parameters (scalars) and MACs per image."""
    dense: LatencyResult
    small: LatencyResult
    dense_parameters: int
    small_parameters: int
    dense_macs: int
    small_macs: int

    @property
    def speedup(self) -> float:
        """Median dense time / median shrunk time (x)."""
        return self.dense.median_ms / self.small.median_ms

    @property
    def speedup_range(self) -> tuple[float, float]:
        """The speed-up between the runs' spreads: dense p10 / shrunk p90 to dense p90 / shrunk p10 (x)."""
        return self.dense.p10_ms / self.small.p90_ms, self.dense.p90_ms / self.small.p10_ms


class GranularityExplorer(Explorer):
    """One sparsity slider, three granularities (weights, neurons/channels, N:M), each on its own model copy.

    - ``test_data``: where accuracy is measured: all of it, every event, when the granularities' passes take
      ≤ ``exact_budget`` seconds together; otherwise an estimate on ``estimate_images`` images (default: as many
      as fit in that time, at most ``max_estimate_images``) while the slider moves and the exact figures once it
      rests, each labelled as such.
    - ``layers``: the layers to prune (default: every layer whose units ``shrink`` can remove).
    - ``m_options``: the M of N:M to choose from. ``latency_batch`` test images are the fixed batch timed by
      ``metrics.measure_latency`` with ``latency_repeats`` runs (0: no latency measurement).

    State: ``models`` ({granularity: its masked copy}), ``masks`` ({granularity: {layer: keep-mask shaped
    like W}}, the unit masks as views of ``unit_keep`` ({layer: kept units [u]})), ``n`` (N:M's current n,
    from ``m`` and s), ``meters``, ``accuracy`` and
    ``accuracy_is_exact`` ({granularity: ...}), ``latency`` (a ``ShrinkLatency``, or None while measuring).
    """

    max_columns = 256   # the overview shows at most about this many columns of a mask (the panel's width)
    # the default estimate's images at most (±0.7 points at 90%): each keeps its layer outputs, for three copies;
    # on a fast CPU "as many as fit in the time" can be nearly all of them, a second copy of the test set's path
    max_estimate_images = 2000

    def __init__(self, model: nn.Module, test_data: Data, *, layers: list[str] | None = None,
                 m_options: tuple[int, ...] = (4, 8), exact_budget: float = 0.03, estimate_images: int | None = None,
                 latency_batch: int = 256, latency_repeats: int = 20, zoom: tuple[int, int] = (16, 48)):
        super().__init__()
        test_data = as_image_set(test_data, "GranularityExplorer")
        if M.masked_parameters(model):
            raise ValueError("GranularityExplorer compares granularities starting from a dense model, and this one "
                             "carries masks. Pass an unmasked model (to start from a pruned one, commit a copy: "
                             "prunelab.masks.commit(prunelab.masks.copy_model(model))).")
        if not m_options or not all(isinstance(m, int) and m >= 2 for m in m_options):
            raise ValueError(f"m_options must be integers M >= 2 for N:M (e.g. (4, 8)), got {m_options!r}.")
        if not (isinstance(latency_repeats, int) and latency_repeats >= 0):
            raise ValueError(f"latency_repeats must be an integer >= 0 (0: no latency), got {latency_repeats!r}.")
        shrinkable = shrinkable_layers(model)
        if not shrinkable and layers is None:
            raise ValueError(f"GranularityExplorer compares weights, units and N:M on layers whose units shrink can "
                             f"remove on their own, and {type(model).__name__} has none (every Linear/Conv2d is the "
                             "classifier, tied to others by a residual sum, or inside a module torch.fx keeps "
                             "opaque, such as nn.TransformerEncoder). Use the ThresholdExplorer, or "
                             "prunelab.shrink.shrink_groups for tied channels.")
        self.layers = select_layers(model, shrinkable if layers is None else layers)
        blocked = [name for name in self.layers if name not in shrinkable]
        if blocked:
            raise ValueError(f"shrink cannot remove the units of {blocked} (the classifier, or units tied by a "
                             f"residual connection); layers whose units it can remove: {', '.join(shrinkable)}.")
        self.unit_name = {name: "neurons" if isinstance(layer, nn.Linear) else "channels"
                          for name, layer in self.layers.items()}
        kinds = sorted(set(self.unit_name.values()), reverse=True)
        self.unit_label = " / ".join(kinds)                      # "neurons", "channels" or "neurons / channels"
        self.data = test_data
        self.latency_repeats = latency_repeats
        self.zoom_shape = zoom

        # scores from the original weights, sorted once (the mask for any s is one scatter)
        scores = weight_scores(model, self.layers, "magnitude")
        self._weight_scores = scores
        self._weight_ranked = {name: RankedScores(s.cpu()) for name, s in scores.items()}
        self._unit_ranked = {name: RankedScores(s.cpu())
                             for name, s in unit_scores(model, self.layers, "magnitude").items()}
        self._shapes = {name: tuple(M.original(model, f"{name}.weight").shape) for name in self.layers}
        self._units = {name: shape[0] for name, shape in self._shapes.items()}
        self._param_shapes = {name: {p: tuple(mask.shape) for p, mask in unit_masks_to_parameters(
            model, {name: torch.ones(u, dtype=torch.bool)}).items()} for name, u in self._units.items()}
        self._nm_cache: dict[tuple[int, int], dict[str, Tensor]] = {}
        # the largest s (on the slider's 0.01 grid) that keeps at least one unit in every layer
        self.max_sparsity = max(s / 100 for s in range(100)
                                if all(round(s / 100 * u) < u for u in self._units.values()))

        # one copy per granularity (masked), and a dense one to time against
        self.models = {g: M.copy_model(model) for g in GRANULARITIES}
        self.dense = M.copy_model(model)
        self._clear_masks(m_options[0])

        # the copies are alike: the first meter's passes give the baseline and decide exact-or-estimate for all
        first = AccuracyMeter(self.models["weight"], test_data, exact_budget=exact_budget,
                              estimate_images=estimate_images, passes=len(GRANULARITIES),
                              max_estimate_images=self.max_estimate_images)
        # one estimate subset and fc1's input kept once for the three copies; N:M keeps no layer output: its masks
        # change 1/m of the weights at once when n moves, never the small ΔW a kept output is updated by
        self.meters = {"weight": first, "unit": AccuracyMeter(self.models["unit"], first.data, like=first),
                       "n:m": AccuracyMeter(self.models["n:m"], first.data, like=first, keep=False)}
        self._latency_x = test_data.normalized(model_device(model))[:latency_batch]
        self._latency_cache: dict[tuple[int, ...], ShrinkLatency] = {}
        self.latency: ShrinkLatency | None = None
        self.latency_error: str | None = None

        style = {"description_width": "initial"}
        compact = {"description_width": "initial", "button_width": "auto"}
        self.slider = FloatSlider(value=0.0, min=0.0, max=self.max_sparsity, step=0.01,
                                  description="sparsity s (fraction pruned)", readout_format=".0%",
                                  continuous_update=True, layout=widgets.Layout(width="440px"), style=style)
        self.headline = widgets.HTML(layout=widgets.Layout(margin="0 0 0 12px"))   # the three accuracies, large
        self.m = widgets.ToggleButtons(options=[(f"m = {m}", m) for m in m_options], description="N:M with",
                                       style=compact, tooltips=[f"n of every {m} consecutive weights of a row stay"
                                                                for m in m_options])
        self.layer = widgets.Dropdown(options=list(self.layers), description="mask of", style=style,
                                      layout=widgets.Layout(width="max-content", min_width="140px"))
        self.zoom = widgets.Checkbox(value=False, description=f"zoom: first {zoom[0]} × {zoom[1]}",
                                     indent=False, layout=widgets.Layout(width="auto"))
        self.reset_button = self.make_reset_button("every copy back to the original weights, bit for bit")
        self.reset_button.layout.width = "auto"

        self._build_figure()
        self.observe({self.slider: self._on_slider, self.m: self._on_m, self.layer: self._on_view,
                      self.zoom: self._on_view})
        wrap = widgets.Layout(flex_flow="row wrap", align_items="center")
        self.view = widgets.VBox([
            widgets.HBox([self.slider, self.headline], layout=wrap),
            widgets.HBox([self.m, self.layer, self.zoom, self.reset_button], layout=wrap),
            self.error_box, self.image, self.readout])
        self.update({})

    # ------------------------------------------------------------------ masks
    def _clear_masks(self, m: int) -> None:
        """All masks kept in full, N:M with this m dense (n = m): the copies' state at s = 0. ``removed``: k per
        layer, so counts need no pass over a mask."""
        self._keep = {"weight": {name: torch.ones(shape, dtype=torch.bool) for name, shape in self._shapes.items()},
                      "n:m": {name: torch.ones(shape, dtype=torch.bool) for name, shape in self._shapes.items()}}
        self.unit_keep = {name: torch.ones(u, dtype=torch.bool) for name, u in self._units.items()}
        self.removed = {g: {name: 0 for name in self.layers} for g in ("weight", "unit")}
        self._nm_state = (m, m)    # (m, n) of the N:M masks now set

    @property
    def masks(self) -> dict[str, dict[str, Tensor]]:
        """{granularity: {layer: keep-mask shaped like W}}; the unit masks are views of ``unit_keep``."""
        return {"weight": self._keep["weight"],
                "unit": {name: expand_units(k, self._shapes[name]) for name, k in self.unit_keep.items()},
                "n:m": self._keep["n:m"]}

    @property
    def n(self) -> int:
        """N:M's current n (n = m: dense)."""
        return self._nm_state[1]

    def nm_masks(self, m: int, n: int) -> dict[str, Tensor]:
        """N:M keep-masks of every pruned layer (all ones for n = m, or where rows do not split into m)."""
        if (m, n) not in self._nm_cache:
            out = {name: torch.ones(shape, dtype=torch.bool) for name, shape in self._shapes.items()}
            if n < m:
                out.update(nm_masks({name: s for name, s in self._weight_scores.items()
                                     if self._row_length(name) % m == 0}, n, m))
            self._nm_cache[(m, n)] = {name: k.cpu() for name, k in out.items()}
        return self._nm_cache[(m, n)]

    def _row_length(self, name: str) -> int:
        return math.prod(self._shapes[name][1:])

    def nm_dense_layers(self, m: int | None = None) -> list[str]:
        """Pruned layers that N:M leaves dense: their rows of W.flatten(1) do not split into groups of m."""
        m = self.m.value if m is None else m
        return [name for name in self.layers if self._row_length(name) % m]

    def unit_parameter_masks(self, keep: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-unit keep vectors {layer: [u]} as parameter masks (weight rows/filters, bias, BatchNorm γ, β)."""
        return {p: expand_units(k, shape).clone() for name, k in keep.items()
                for p, shape in self._param_shapes[name].items()}

    def _apply(self, s: float, m: int) -> dict[str, list[str]]:
        """Masks for sparsity s (and N:M with this m) on the three copies; returns {granularity: changed layers}.

        A weight or unit mask changes only when its count k = round(s · n) does, and N:M only with (m, n):
        only those masks are recomputed and set."""
        k = {"weight": {name: round(s * r.n) for name, r in self._weight_ranked.items()},
             "unit": {name: round(s * r.n) for name, r in self._unit_ranked.items()}}
        n = nm_for_sparsity(s, m)
        changed = {g: [name for name in self.layers if k[g][name] != self.removed[g][name]] for g in k}
        nm = self.nm_masks(m, n)
        changed["n:m"] = ([] if (m, n) == self._nm_state else
                          [name for name in self.layers if not torch.equal(nm[name], self._keep["n:m"][name])])
        weight = {name: self._weight_ranked[name].mask_for_sparsity(s) for name in changed["weight"]}
        units = {name: self._unit_ranked[name].mask_for_sparsity(s) for name in changed["unit"]}
        if weight:
            M.set_masks(self.models["weight"], {f"{name}.weight": keep for name, keep in weight.items()})
        if units:
            M.set_masks(self.models["unit"], self.unit_parameter_masks(units))
        if changed["n:m"]:
            M.set_masks(self.models["n:m"], {f"{name}.weight": nm[name] for name in changed["n:m"]})
        self._keep["weight"].update(weight)
        self.unit_keep.update(units)
        self._keep["n:m"].update({name: nm[name] for name in changed["n:m"]})
        for g in k:
            self.removed[g].update({name: k[g][name] for name in changed[g]})
        self._nm_state = (m, n)
        return {g: names for g, names in changed.items() if names}

    def kept(self, granularity: str, layer: str) -> int:
        """Weights of ``layer`` kept at ``granularity`` (from the counts, no pass over the mask)."""
        numel = math.prod(self._shapes[layer])
        if granularity == "weight":
            return numel - self.removed["weight"][layer]
        if granularity == "unit":
            return (self._units[layer] - self.removed["unit"][layer]) * self._row_length(layer)
        m, n = self._nm_state
        return numel if layer in self.nm_dense_layers(m) else numel // m * n

    def sparsity(self, granularity: str, layer: str | None = None) -> float:
        """Fraction of pruned weights at ``granularity``, in ``layer`` or over all pruned layers."""
        names = list(self.layers) if layer is None else [layer]
        return 1 - sum(self.kept(granularity, n) for n in names) / sum(math.prod(self._shapes[n]) for n in names)

    # ------------------------------------------------------------------ events
    def _on_slider(self, change) -> None:
        if self._quiet:
            return
        self.update(self._apply(change["new"], self.m.value))

    def _on_m(self, change) -> None:
        self.update(self._apply(self.slider.value, change["new"]))
        self._rebuild_panels()                     # the N:M panel's layout notes depend on m
        self._redraw()

    def _on_view(self, change) -> None:
        self._rebuild_panels()
        self._redraw()

    @property
    def accuracy(self) -> dict[str, float]:
        return {g: meter.value for g, meter in self.meters.items()}

    @property
    def accuracy_is_exact(self) -> dict[str, bool]:
        return {g: meter.is_exact for g, meter in self.meters.items()}

    @property
    def baseline(self) -> float:
        return self.meters["weight"].baseline

    def update(self, changed: dict[str, list[str] | None]) -> None:
        """After the masks of ``changed`` ({granularity: layers}, None: anything) moved: accuracy (exact, or an
        estimate now and the exact figure later), latency of the shrunk model (later), figure and readout."""
        for g, names in changed.items():
            self.meters[g].measure(names)
        slow = not all(self.accuracy_is_exact.values())
        if self.latency_repeats and ("unit" in changed or self.latency is None) and self.units_removed():
            self.latency = self._latency_cache.get(self._unit_key())
            self.latency_error = None
            slow = slow or self.latency is None
        if slow:
            self.later(self._settle_exact)
        self._redraw()

    def units_removed(self) -> int:
        """How many units the unit granularity removes now, over all pruned layers."""
        return sum(self.removed["unit"].values())

    def _unit_key(self) -> tuple[int, ...]:
        return tuple(self.removed["unit"].values())

    def _settle_exact(self) -> None:
        """Exact accuracy of the granularities shown as estimates; latency of the shrunk model if not known."""
        for meter in self.meters.values():
            meter.settle()
        self._redraw_readout()
        if self.latency_repeats and self.latency is None and self.units_removed():
            try:
                self.latency = self.measure_shrunk()
            except Exception as exc:
                self.latency_error = f"{type(exc).__name__}: {exc}"
                self._redraw_readout()
                raise
            self._latency_cache[self._unit_key()] = self.latency
            self._redraw_readout()
        give_back_freed_memory()

    def shrunk_model(self) -> nn.Module:
        """The unit-pruned copy with its removed units deleted for real (``shrink``): a new, smaller model."""
        return shrink(self.models["unit"], {name: k for name, k in self.unit_keep.items() if not k.all()})

    def measure_shrunk(self) -> ShrinkLatency:
        """Shrink the unit-pruned copy; time it and the dense model (``measure_latency``, same fixed batch)."""
        small = self.shrunk_model()
        dense = measure_latency(self.dense, self._latency_x, repeats=self.latency_repeats)
        fast = measure_latency(small, self._latency_x, repeats=self.latency_repeats)
        return ShrinkLatency(dense, fast, parameter_counts(self.dense).total, parameter_counts(small).total,
                             count_macs(self.dense, data=self.data).dense, count_macs(small, data=self.data).dense)

    # ------------------------------------------------------------------ drawing
    def _build_figure(self) -> None:
        # 592 x 200 px, drawn as shown (a notebook column at 1024 px with the file browser open); on a projector
        # (Voila's whole width) 1.35 times larger, text too
        self.font_scale = 1.35 if self.projector else 1.0
        with matplotlib.rc_context({"font.size": 8 * self.font_scale}):
            self.fig = Figure(figsize=(7.4 * self.font_scale, 2.5 * self.font_scale), dpi=80, layout="constrained")
            axes = self.fig.subplots(1, 3)
        self.axes = dict(zip(GRANULARITIES, axes))
        self.mask_images: dict[str, MaskImage] = {}
        self.titles: dict[str, matplotlib.text.Text] = {}
        self.renderer = self.figure_renderer(self.fig)
        self._rebuild_panels()

    def column_stride(self, layer: str | None = None) -> int:
        """Every how many columns of W.flatten(1) the overview shows: about as many columns as the panel has
        pixels (the rest would be dropped by the drawing anyway; drawing fewer is 3-4x faster for fc1)."""
        return 1 if self.zoom.value else -(-self._row_length(layer or self.layer.value) // self.max_columns)

    def _view(self, mask: Tensor) -> Tensor:
        """The part of a keep-mask shown: W.flatten(1) (every ``column_stride``-th column), or its top-left
        corner, every weight, when zoomed."""
        rows = mask.flatten(1)
        if self.zoom.value:
            return rows[:self.zoom_shape[0], :self.zoom_shape[1]]
        return rows[:, ::self.column_stride()]

    def _rebuild_panels(self) -> None:
        name = self.layer.value
        shape = " × ".join(map(str, (self._shapes[name][0], self._row_length(name))))
        size = 9 * self.font_scale                      # titles; ticks and labels 8 (rc_context)
        with matplotlib.rc_context({"font.size": 8 * self.font_scale}):
            for i, (g, ax) in enumerate(self.axes.items()):
                ax.clear()
                view = self._view(self.masks[g][name])
                self.mask_images[g] = MaskImage(ax, view)
                if self.column_stride() > 1:            # x in columns of W, though every stride-th is drawn
                    self.mask_images[g].image.set_extent(
                        (-0.5, view.shape[1] * self.column_stride() - 0.5, view.shape[0] - 0.5, -0.5))
                self.titles[g] = ax.set_title(" ", fontsize=size)
                if g == "n:m" and self.zoom.value and name not in self.nm_dense_layers():
                    for x in range(self.m.value, min(self._row_length(name), self.zoom_shape[1]), self.m.value):
                        ax.axvline(x - 0.5, color="tab:orange", lw=0.8)     # the groups of m weights
                if i:
                    ax.set_ylabel("")
            stride = self.column_stride()
            part = " (corner)" if self.zoom.value else f" (every {stride}th column)" if stride > 1 else ""
            self.fig.suptitle(f"keep-masks of {name} [{shape}]{part}: black = kept, white = pruned", fontsize=size)
            # once, over the middle panel: the first picture (three black masks) says what to do
            self.nothing_pruned_note = self.axes["unit"].text(
                0.5, 0.5, "nothing pruned yet:\nmove the slider", transform=self.axes["unit"].transAxes,
                ha="center", va="center", fontsize=11 * self.font_scale, color="black",
                bbox={"facecolor": "white", "edgecolor": "0.5"})
        self.renderer.animated = [artist for g in GRANULARITIES
                                  for artist in (self.mask_images[g].image, self.titles[g])]
        self.renderer.animated.append(self.nothing_pruned_note)
        self.renderer.capture_background()

    def _titles(self) -> dict[str, str]:
        name, m = self.layer.value, self.m.value
        k = self.removed["unit"][name]
        nm = (f"N:M = {self.n}:{m}: {self.sparsity('n:m', name):.1%} pruned" if name not in self.nm_dense_layers()
              else f"N:M, m = {m}: {name} left dense")
        return {"weight": f"weights: {self.sparsity('weight', name):.1%} pruned",
                "unit": f"{self.unit_name[name]}: {k} of {self._units[name]} removed",
                "n:m": nm}

    def nothing_pruned(self, layer: str | None = None) -> bool:
        """Whether the three masks of ``layer`` (default: the one shown) keep every weight (at s = 0)."""
        name = layer or self.layer.value
        return all(self.kept(g, name) == math.prod(self._shapes[name]) for g in GRANULARITIES)

    def _redraw(self) -> None:
        name = self.layer.value
        for g, text in self._titles().items():
            self.mask_images[g].update(self._view(self.masks[g][name]))
            self.titles[g].set_text(text)
        self.nothing_pruned_note.set_visible(self.nothing_pruned(name))
        self.image.value = self.renderer.png()
        self._redraw_readout()

    def label(self, granularity: str) -> str:
        """The granularity's name in the headline and the table: "weights", "neurons" (or "channels"), "N:M 1:4"."""
        return {"weight": "weights", "unit": self.unit_label, "n:m": f"N:M {self.n}:{self.m.value}"}[granularity]

    def _redraw_readout(self) -> None:
        """The headline (the three accuracies, largest, by the slider) and the table under the figure."""
        self._redraw_headline()
        m, n = self.m.value, self.n
        dense = self.nm_dense_layers()
        removed = self.removed["unit"]
        units = (", ".join(f"{name} {k}/{self._units[name]}" for name, k in removed.items()) if len(removed) <= 3
                 else f"{sum(removed.values())} of {sum(self._units.values())}")
        nm_what = f"keep {n} of every {m}" if n < m else "n = m: nothing pruned"
        if dense:
            nm_what += f"; {', '.join(dense)} dense"
        what = {"weight": ("smallest |w| per layer",
                           "in each layer of n weights, the k = round(s·n) of smallest |w| go (prunelab.prune)"),
                "unit": (units, f"in each layer of u {self.unit_label}, the k = round(s·u) of smallest Σ|w| go, with "
                                "their bias; shrink then deletes them for real"),
                "n:m": (nm_what, f"n = ⌊(1 − s)·m + ½⌋ = {n}: in every group of m = {m} consecutive weights of "
                                 "a row, the n of largest |w| stay; a layer whose rows are not a multiple of m "
                                 "stays dense")}
        pad = "style='padding:1px 12px 1px 0'"
        rows = []
        for g in GRANULARITIES:
            short, detail = what[g]
            speed, speed_detail = self._latency_text(g)
            rows.append(f"<tr><td {pad}><b>{html.escape(self.label(g))}</b></td>"
                        f"<td {pad} align=right>{self.sparsity(g):.1%}</td>"
                        f"<td {pad} title='{html.escape(detail)}'>{html.escape(short)}</td>"
                        f"<td {pad} title='{html.escape(speed_detail)}'>{speed}</td></tr>")
        others = [name for name in M.prunable_layers(self.dense) if name not in self.layers]
        self.readout.value = (
            "<table style='font-size:13px;line-height:1.35;border-collapse:collapse'>"
            f"<tr><th></th><th {pad} align=left>pruned</th><th {pad} align=left>what goes</th>"
            f"<th {pad} align=left>CPU speed-up, batch of {len(self._latency_x)}</th></tr>" + "".join(rows) + "</table>"
            f"<div style='font-size:12px'>{self._shrunk_text()}</div>"
            f"<div style='font-size:12px;color:#555'>pruned: the fraction of the weights of {', '.join(self.layers)}"
            f"{' (' + ', '.join(others) + ' left dense)' if others else ''}; each granularity prunes its own copy of "
            "the model: yours is never changed. Hover over a cell for its details.</div>")

    def _redraw_headline(self) -> None:
        base = self.baseline
        cells = []
        for g in GRANULARITIES:
            acc, mark = self.accuracy[g], "" if self.accuracy_is_exact[g] else "≈"
            cells.append(f"<td style='padding:0 18px 0 0;vertical-align:top'>"
                         f"<span style='font-size:13px'>{html.escape(self.label(g))}</span><br>"
                         f"<span style='font-size:24px;font-weight:bold'>{mark}{acc:.2%}</span><br>"
                         f"<span style='font-size:13px'>{100 * (acc - base):+.2f} points</span></td>")
        where = self.meters["weight"].where(exact=all(self.accuracy_is_exact.values()))
        self.headline.value = (
            f"<div class='prunelab-accuracy' style='line-height:1.25'><span style='font-size:14px'>"
            f"{self.data.accuracy_label()} at s = {self.slider.value:.0%} (dense {base:.2%}):</span>"
            f"<table style='border-collapse:collapse'><tr>{''.join(cells)}</tr></table>"
            f"<span style='font-size:11px'>on {where}</span></div>")

    def _latency_text(self, g: str) -> tuple[str, str]:
        """The speed-up cell (HTML) and its details (plain text, the cell's tooltip)."""
        if g != "unit":
            return "none (masked)", "not timed: masked weights are zeros in matrices that stay dense, the same work"
        if not self.latency_repeats:
            return "not measured", "latency_repeats=0"
        if not self.units_removed():
            return "–", "no unit removed: nothing to shrink"
        if self.latency_error:
            return "<span style='color:#b00020'>failed</span>", self.latency_error
        if self.latency is None:
            return "<i>measuring…</i>", "timed once the slider rests"
        r = self.latency
        low, high = r.speedup_range
        return (f"<b>×{r.speedup:.2f}</b> (×{low:.2f}–×{high:.2f})",
                f"the median speed-up, and between the runs' spreads (dense p10 / shrunk p90 to dense p90 / shrunk "
                f"p10); dense {r.dense.describe()}, shrunk {r.small.describe()}, after warm-up runs")

    def _shrunk_text(self) -> str:
        """The shrunk model under the table: its parameters, MACs and times against the dense one."""
        if not (self.latency_repeats and self.units_removed()) or self.latency is None or self.latency_error:
            return ""
        r = self.latency
        return (f"{html.escape(self.unit_label)} deleted for real (shrink): parameters {r.dense_parameters:,} → "
                f"{r.small_parameters:,}, MACs/image {r.dense_macs:,} → {r.small_macs:,}; per batch dense "
                f"{r.dense.describe()} → shrunk {r.small.describe()}")

    # ------------------------------------------------------------------ reset
    def reset(self) -> None:
        """Every copy back to the original weights (masks removed, bit for bit); the slider back to s = 0."""
        for model in self.models.values():
            M.reset(model)
        self._clear_masks(self.m.value)
        with self.quiet():
            self.slider.value = 0.0
        self.update({g: None for g in GRANULARITIES})
        give_back_freed_memory()                   # the kept layer outputs were dropped
