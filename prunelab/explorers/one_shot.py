"""The one-shot comparison: one sparsity (or an N:M pattern) for a language model, pruned three ways from the same
calibration text, side by side: magnitude (|W_ij|, per layer), Wanda (|W_ij| · ‖X_j‖₂, per output row) and
SparseGPT (Optimal Brain Surgeon, weights updated), each with its perplexity, the mask of one layer and a sample.

Each method prunes its own copy of the model (``prunelab.masks.copy_model``); the model passed is never changed.
Magnitude and Wanda are masks over scores computed once, so a move shows them at once. SparseGPT solves a
least-squares problem per layer and takes seconds: its result for a setting is computed once the controls rest and
kept, so coming back to a setting is immediate (``precompute=True`` computes every setting up front).
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import matplotlib
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from .. import masks as M
from ..one_shot import linear_layers, sparsegpt
from ..plots import MaskImage
from ..pruning import prune
from ..text import TextSet, generate, perplexity
from .base import Explorer

__all__ = ["METHODS", "OneShotExplorer"]

METHODS = ("magnitude", "wanda", "sparsegpt")
LABELS = {"magnitude": "magnitude |W|", "wanda": "Wanda |W|·‖X‖", "sparsegpt": "SparseGPT (OBS)"}
PATTERNS = {"unstructured": None, "2:4": (2, 4), "4:8": (4, 8)}


class OneShotExplorer(Explorer):
    """Magnitude vs Wanda vs SparseGPT on a language model: a sparsity slider (or 2:4, 4:8) → perplexity, masks,
    samples.

    - ``text``: the held-out text the perplexity is measured on (``n_blocks`` fixed blocks of it).
    - ``calibration``: token ids [N, T] the model takes (or a ``TextSet``: ``calibration_blocks`` blocks of the
      model's block size spread over it, ``TextSet.spread_blocks``), what Wanda's ‖X_j‖ and SparseGPT's X Xᵀ come
      from.
    - ``layers``: the Linear layers to prune (default: every Linear but the last, the output head, as the papers
      leave the LM head dense). ``shown``: the layer whose mask is drawn (its top-left 32 × 64 weights).

    State: ``models`` ({method: its pruned copy}), ``perplexity`` ({method: value}), ``samples``, ``baseline``.
    """

    def __init__(self, model: nn.Module, text: TextSet, calibration: Tensor | TextSet, *,
                 layers: list[str] | None = None, shown: str | None = None, n_blocks: int = 16,
                 calibration_blocks: int = 32, sparsities: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7,
                                                                                0.8, 0.9),
                 prompt: str = "And the LORD said", sample_chars: int = 120, precompute: bool = False):
        super().__init__()
        if M.masked_parameters(model):
            raise ValueError("OneShotExplorer prunes copies of a dense model, and this one carries masks; pass an "
                             "unmasked model (prunelab.masks.commit(prunelab.masks.copy_model(model)) for a pruned "
                             "one).")
        self.model, self.text, self.n_blocks = model, text, n_blocks
        if isinstance(calibration, TextSet):
            calibration = calibration.spread_blocks(model.block_size, calibration_blocks)[0]
        self.calibration = calibration
        linears = list(linear_layers(model))
        self.layers = list(linear_layers(model, layers if layers is not None else linears[:-1]))
        self.shown = shown if shown is not None else self.layers[0]
        if self.shown not in self.layers:
            raise ValueError(f"shown must be one of the pruned layers {self.layers}, got {shown!r}.")
        self.prompt, self.sample_chars = prompt, sample_chars
        self.baseline = perplexity(model, text, n_blocks=n_blocks)
        self.models = {method: M.copy_model(model) for method in ("magnitude", "wanda")}
        self._sparsegpt: dict[tuple, tuple[nn.Module, float]] = {}    # setting -> (pruned copy, perplexity)
        self.perplexity: dict[str, float | None] = dict.fromkeys(METHODS, self.baseline)
        self.samples: dict[str, str] = dict.fromkeys(METHODS, "")

        style = {"description_width": "initial"}
        self.slider = widgets.SelectionSlider(options=[(f"{s:.0%}", s) for s in sparsities], value=sparsities[0],
                                              description="sparsity of every pruned layer", style=style,
                                              continuous_update=False, layout=widgets.Layout(width="460px"))
        self.pattern = widgets.ToggleButtons(options=list(PATTERNS), description="pattern", style=style,
                                             tooltips=["the slider's sparsity, anywhere in each row",
                                                       "2 of every 4 consecutive weights kept (50%)",
                                                       "4 of every 8 consecutive weights kept (50%)"])
        self.observe({self.slider: lambda _: self.update(), self.pattern: lambda _: self.update()})
        self.figure = widgets.HTML()
        self.samples_box = widgets.HTML()
        self._build_figure()
        self.view = widgets.VBox([widgets.HBox([self.slider]), self.pattern, self.error_box, self.figure,
                                  self.image, self.readout, self.samples_box])
        if precompute:
            for pattern in PATTERNS:
                for s in (sparsities if pattern == "unstructured" else sparsities[:1]):
                    self._sparsegpt_result(s, pattern)
        self.update()

    # ------------------------------------------------------------------ pruning
    def setting(self) -> tuple[float, str]:
        """(sparsity, pattern) now; an N:M pattern prunes 1 − N/M whatever the slider says."""
        n_m = PATTERNS[self.pattern.value]
        return (1 - n_m[0] / n_m[1] if n_m else self.slider.value), self.pattern.value

    def _prune_args(self, pattern: str) -> dict:
        n_m = PATTERNS[pattern]
        return {"n": n_m[0], "m": n_m[1]} if n_m else {}

    def _mask_copies(self, s: float, pattern: str) -> None:
        """Magnitude and Wanda masks for the setting, on their copies (prune replaces the masks, never compounds)."""
        n_m = PATTERNS[pattern]
        granularity = {"granularity": "n:m", **self._prune_args(pattern)} if n_m else {}
        sparsity = 0.0 if n_m else s
        prune(self.models["magnitude"], sparsity, layers=self.layers, **granularity)
        prune(self.models["wanda"], sparsity, criterion="wanda", data=self.calibration, layers=self.layers,
              **granularity)

    def _sparsegpt_result(self, s: float, pattern: str) -> tuple[nn.Module, float]:
        key = (round(s, 4), pattern)
        if key not in self._sparsegpt:
            pruned = sparsegpt(self.model, self.calibration, s, layers=self.layers, **self._prune_args(pattern))
            self._sparsegpt[key] = (pruned, perplexity(pruned, self.text, n_blocks=self.n_blocks))
        return self._sparsegpt[key]

    # ------------------------------------------------------------------ events
    def update(self) -> None:
        """Masks and perplexity of magnitude and Wanda now; SparseGPT's (if not known) and the samples at rest."""
        s, pattern = self.setting()
        self.slider.disabled = pattern != "unstructured"           # N:M fixes the sparsity at 1 − N/M
        self._mask_copies(s, pattern)
        for method in ("magnitude", "wanda"):
            self.perplexity[method] = perplexity(self.models[method], self.text, n_blocks=self.n_blocks)
        known = self._sparsegpt.get((round(s, 4), pattern))
        self.models.pop("sparsegpt", None)
        self.perplexity["sparsegpt"] = None
        if known is not None:
            self.models["sparsegpt"], self.perplexity["sparsegpt"] = known
        self.samples = dict.fromkeys(METHODS, "")
        self._redraw()
        self.later(self._at_rest)

    def _at_rest(self) -> None:
        s, pattern = self.setting()
        self.models["sparsegpt"], self.perplexity["sparsegpt"] = self._sparsegpt_result(s, pattern)
        self._redraw()
        for method in METHODS:
            self.samples[method] = generate(self.models[method], self.prompt, self.sample_chars, temperature=0.8,
                                            seed=0, vocab=self.text.vocab)
        self._redraw_samples()

    # ------------------------------------------------------------------ drawing
    def _build_figure(self) -> None:
        with matplotlib.rc_context({"font.size": 8}):
            self.fig = Figure(figsize=(7.4, 2.3), dpi=80, layout="constrained")    # 592 px: drawn at the size shown
            axes = self.fig.subplots(1, 3)
        self.axes = dict(zip(METHODS, axes))
        corner = torch.ones(32, 64, dtype=torch.bool)
        self.mask_images = {method: MaskImage(ax, corner, animated=True) for method, ax in self.axes.items()}
        for method, ax in self.axes.items():
            ax.set_title(LABELS[method], fontsize=9)
        self.fig.suptitle(f"keep-mask of {self.shown}: first 32 rows × 64 columns, black = kept", fontsize=9)
        self.renderer = self.figure_renderer(self.fig, [m.image for m in self.mask_images.values()])

    def _corner(self, method: str) -> Tensor:
        model = self.models.get(method)
        mask = None if model is None else M.get_masks(model).get(f"{self.shown}.weight")
        W = M.original(self.model, f"{self.shown}.weight")
        if mask is None:
            mask = torch.ones_like(W, dtype=torch.bool) if model is not None else torch.zeros_like(W, dtype=torch.bool)
        return mask[:32, :64].cpu()

    def _redraw(self) -> None:
        for method, image in self.mask_images.items():
            image.update(self._corner(method))
        self.image.value = self.renderer.png()
        s, pattern = self.setting()
        cells = []
        for method in METHODS:
            ppl = self.perplexity[method]
            figure = "…" if ppl is None else f"{ppl:.2f}"
            change = ("<i>computing when the controls rest</i>" if ppl is None
                      else f"{ppl / self.baseline:.2f}× dense")
            cells.append(f"<td style='padding:0 18px 0 0'><span style='font-size:13px'>{LABELS[method]}</span><br>"
                         f"<span style='font-size:24px;font-weight:bold'>{figure}</span><br>"
                         f"<span style='font-size:13px'>{change}</span></td>")
        self.figure.value = ("<table class='prunelab-accuracy'><tr>" + "".join(cells) + "</tr></table>")
        what = f"{pattern} (sparsity {s:.0%})" if pattern != "unstructured" else f"sparsity {s:.0%}, unstructured"
        self.readout.value = (
            f"<div>{what} in {len(self.layers)} Linear layers. Perplexity on {self.n_blocks} fixed blocks of the "
            f"{html.escape(self.text.name or 'given')} text (dense: <b>{self.baseline:.2f}</b>); calibration: "
            f"{self.calibration.shape[0]} sequences of {self.calibration.shape[-1]} tokens. Magnitude compares "
            "|W| within each layer; Wanda |W|·‖X‖ within each output row; SparseGPT chooses per row and updates "
            "the weights it keeps.</div>")
        self._redraw_samples()

    def _redraw_samples(self) -> None:
        if not any(self.samples.values()):
            self.samples_box.value = "<div><i>samples follow when the controls rest</i></div>"
            return
        rows = "".join(f"<tr><td style='vertical-align:top;padding-right:10px'><b>{LABELS[m]}</b></td>"
                       f"<td style='font-family:monospace;white-space:pre-wrap'>{html.escape(self.samples[m])}"
                       "</td></tr>" for m in METHODS)
        self.samples_box.value = f"<table style='line-height:1.3'>{rows}</table>"
