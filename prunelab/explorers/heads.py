"""The heads explorer: every attention head of a transformer as a button in a layer × head grid, coloured by its
importance; click a head to remove it or to bring it back, and see the model's figure change: the test accuracy
of a classifier (a ViT on images), or the perplexity of a language model on held-out text and a sample it writes.

Removing head h of an attention masks its rows of W_in = [W_q; W_k; W_v] (and of the bias) and its columns of W_o
(``pruning.head_masks_to_parameters``, the masks of ``prunelab.masks``): its output leaves the concatenation, and
the model's weights stay underneath. ``reset()`` gives them back bit for bit.

Importance: any per-head scores ``{attention: [H]}`` (``importance=``, e.g. the gradient-based importance of
Michel et al. 2019), else the L1 norm of each head's weights (``pruning.head_scores``). "remove the least
important" removes the kept head of lowest importance, over all layers (greedy, as the papers do).
"""

from __future__ import annotations

import html
from collections.abc import Mapping

import ipywidgets as widgets
import torch
from matplotlib import colormaps
from matplotlib.colors import to_hex
from torch import Tensor, nn

from .. import masks as M
from ..data import Data
from ..pruning import attention_layers, head_masks_to_parameters, head_scores
from ..text import TextSet, generate, perplexity
from .base import AccuracyMeter, Explorer

__all__ = ["HeadsExplorer"]

REMOVED_COLOUR = "#e0e0e0"


class HeadsExplorer(Explorer):
    """A button per attention head; click to remove or restore it, and see accuracy or perplexity change.

    - ``data``: images with labels (anything ``data.as_image_set`` takes): the readout is the accuracy, exact on
      every click when a pass takes ≤ ``exact_budget`` seconds, else an estimate and the exact figure at rest.
      Or a ``text.TextSet``: the readout is the perplexity on ``n_blocks`` fixed blocks of it, and once the
      clicks rest, ``sample_chars`` characters the model writes after ``prompt`` (temperature 0.8, seed 0).
    - ``layers``: the attention modules (default: all that ``pruning.attention_layers`` finds).
    - ``importance``: ``{attention: [H]}`` scores to colour and rank by (default: L1 norms of the head's weights).

    State: ``keep`` ({attention: bool [H]}), ``value`` (the latest accuracy or perplexity), ``baseline`` (dense),
    ``sample`` (the latest generated text, language models only).
    """

    def __init__(self, model: nn.Module, data: Data | TextSet, *, layers: list[str] | None = None,
                 importance: Mapping[str, Tensor] | None = None, exact_budget: float = 0.1,
                 estimate_images: int | None = None, n_blocks: int = 32, prompt: str = "And the LORD said",
                 sample_chars: int = 160):
        super().__init__()
        self.model = model
        self.layouts = attention_layers(model, layers)
        head_params = {p for name in self.layouts for p in head_masks_to_parameters(model, {name: self._ones(name)})}
        masked = sorted(head_params & set(M.masked_parameters(model)))
        if masked:
            raise ValueError(f"HeadsExplorer removes heads with masks, and {', '.join(masked)} already carry masks. "
                             "Pass a model without masks on its attention (commit a copy first: "
                             "prunelab.masks.commit(prunelab.masks.copy_model(model))).")
        self.importance = self._check_importance(importance)
        self.keep = {name: self._ones(name) for name in self.layouts}
        self.is_text = isinstance(data, TextSet)
        self.prompt, self.sample_chars, self.n_blocks = prompt, sample_chars, n_blocks
        if self.is_text:
            self.text = data
            self.baseline = self.value = perplexity(model, data, n_blocks=n_blocks)
            self.meter = None
        else:
            self.meter = AccuracyMeter(model, data, exact_budget=exact_budget, estimate_images=estimate_images)
            self.baseline = self.value = self.meter.baseline
        self.sample = ""

        self.buttons: dict[tuple[str, int], widgets.Button] = {}
        rows = []
        label_width = f"{min(8 * max(len(name) for name in self.layouts) + 12, 240)}px"   # monospace, ~8 px a letter
        for name, layout in self.layouts.items():
            row = [widgets.HTML(f"<code title='{html.escape(name)}'>{html.escape(name)}</code>",
                                layout=widgets.Layout(width=label_width, flex="0 0 auto"))]
            for h in range(layout.heads):
                button = widgets.Button(layout=widgets.Layout(width="80px", flex="0 0 auto"))
                button.on_click(self.handler(lambda _, key=(name, h): self.toggle(*key)))
                self.buttons[(name, h)] = button
                row.append(button)
            rows.append(widgets.HBox(row))
        self.remove_least = widgets.Button(description="remove least important", icon="minus",
                                           layout=widgets.Layout(width="auto", flex="0 0 auto"),
                                           tooltip="remove the kept head of lowest importance, over all layers")
        self.remove_least.on_click(self.handler(lambda _: self.remove_least_important()))
        self.reset_button = self.make_reset_button("every head back: the original weights, bit for bit")
        self.figure = widgets.HTML()                     # the number that matters, large
        self.sample_box = widgets.HTML()
        self.view = widgets.VBox([
            widgets.HBox([self.figure, self.remove_least, self.reset_button],
                         layout=widgets.Layout(flex_flow="row wrap", align_items="center")),
            self.error_box, *rows, self.readout, self.sample_box])
        self._redraw()
        if self.is_text:
            self.later(self._write_sample)

    # ------------------------------------------------------------------ state
    def _ones(self, name: str) -> Tensor:
        return torch.ones(self.layouts[name].heads, dtype=torch.bool)

    def _check_importance(self, importance: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        if importance is None:
            return head_scores(self.model, self.layouts)
        out = {}
        for name, layout in self.layouts.items():
            scores = importance.get(name)
            if scores is None or torch.as_tensor(scores).shape != (layout.heads,):
                got = "nothing" if scores is None else f"shape {list(torch.as_tensor(scores).shape)}"
                raise ValueError(f"importance must give {layout.heads} scores for {name!r} (one per head, [H]), "
                                 f"got {got}.")
            out[name] = torch.as_tensor(scores, dtype=torch.float32).cpu()
        return out

    @property
    def heads_removed(self) -> int:
        return sum(int((~keep).sum()) for keep in self.keep.values())

    @property
    def heads_total(self) -> int:
        return sum(layout.heads for layout in self.layouts.values())

    def set_heads(self, keep: Mapping[str, Tensor]) -> None:
        """Keep exactly the heads marked True in ``keep`` ({attention: bool [H]}; attentions left out keep theirs),
        and update the figures. The buttons follow."""
        changed = [name for name, k in keep.items() if not torch.equal(torch.as_tensor(k, dtype=torch.bool),
                                                                         self.keep[name])]
        for name in changed:
            self.keep[name] = torch.as_tensor(keep[name], dtype=torch.bool).clone()
        if changed:
            M.set_masks(self.model, head_masks_to_parameters(self.model, {name: self.keep[name] for name in changed}))
        self._update(changed)

    def remove_least_important(self) -> None:
        """Remove the kept head of lowest importance, over all layers (a layer keeps at least one head)."""
        candidates = [(float(self.importance[name][h]), name, h) for name, keep in self.keep.items()
                      for h in range(len(keep)) if keep[h] and int(keep.sum()) > 1]
        if not candidates:
            raise ValueError("Every attention is down to one head; reset to start again.")
        _, name, h = min(candidates)
        keep = self.keep[name].clone()
        keep[h] = False
        self.set_heads({name: keep})

    def reset(self) -> None:
        """Every head back: the masks removed, the original weights bit for bit."""
        params = [p for p in head_masks_to_parameters(self.model, self.keep) if p in M.masked_parameters(self.model)]
        M.reset(self.model, params)
        self.keep = {name: self._ones(name) for name in self.layouts}
        self._update(None)

    def toggle(self, name: str, h: int) -> None:
        """Remove head ``h`` of attention ``name``, or restore it if it was removed (what a click on it does)."""
        keep = self.keep[name].clone()
        keep[h] = not keep[h]
        if not keep.any():
            raise ValueError(f"{name} would have no head left; an attention keeps at least one.")
        self.set_heads({name: keep})

    # ------------------------------------------------------------------ events

    def _update(self, changed: list[str] | None) -> None:
        """After the heads of ``changed`` moved (None: anything may have): the figure now, the rest at rest."""
        if self.is_text:
            self.value = perplexity(self.model, self.text, n_blocks=self.n_blocks)
            self.later(self._write_sample)
        else:
            self.meter.measure(changed)
            self.value = self.meter.value
            if not self.meter.is_exact:
                self.later(self._exact_accuracy)
        self._redraw()

    def _exact_accuracy(self) -> None:
        self.meter.settle()
        self.value = self.meter.value
        self._redraw()

    def _write_sample(self) -> None:
        self.sample = generate(self.model, self.prompt, self.sample_chars, temperature=0.8, seed=0,
                               vocab=self.text.vocab)
        self.sample_box.value = ("<div style='font-family:monospace;white-space:pre-wrap;line-height:1.3;"
                                 "border-left:3px solid #999;padding-left:8px'>"
                                 f"<b>the model writes</b> (after {html.escape(repr(self.prompt))}, temperature 0.8):"
                                 f"<br>{html.escape(self.sample)}</div>")

    # ------------------------------------------------------------------ drawing
    def _redraw(self) -> None:
        high = max(float(s.max()) for s in self.importance.values())
        cmap = colormaps["YlOrBr"]
        for (name, h), button in self.buttons.items():
            kept, score = bool(self.keep[name][h]), float(self.importance[name][h])
            relative = score / high if high > 0 else 0.0               # importance as a share of the largest
            button.description = f"h{h}  {relative:.2f}" if kept else f"h{h}  off"
            button.style.button_color = to_hex(cmap(0.1 + 0.75 * max(relative, 0.0))) if kept else REMOVED_COLOUR
            button.style.text_color = "#ffffff" if kept and relative > 0.6 else "#000000"
            button.tooltip = (f"{name}, head {h}: importance {score:.4g} ({relative:.2f} of the largest); click to "
                              f"{'remove' if kept else 'restore'} it")
        if self.is_text:
            label = f"{self.text.name or 'text'} perplexity"
            what = f"perplexity on {self.n_blocks} fixed blocks of the {self.text.name or 'given'} text"
            figure, change = f"{self.value:.3f}", f"{self.value / self.baseline:.2f}× dense ({self.baseline:.3f})"
        else:
            label = self.meter.data.accuracy_label()
            what = f"{label} on {self.meter.where('the clicks rest')}"
            figure = f"{self.value:.2%}"
            change = f"{100 * (self.value - self.baseline):+.2f} points from dense ({self.baseline:.2%})"
        self.figure.value = (f"<div class='prunelab-accuracy' style='min-width:240px;line-height:1.25'>"
                             f"<span style='font-size:13px'>{html.escape(label)}</span><br>"
                             f"<span style='font-size:26px;font-weight:bold'>{figure}</span><br>"
                             f"<span style='font-size:13px'>{change}</span></div>")
        self.readout.value = (f"<div>{what}. Heads removed: <b>{self.heads_removed}</b> of {self.heads_total}. "
                              "Each button: a head and its importance as a share of the largest (darker = more "
                              "important); click to remove or restore it. A removed head's rows of "
                              "W<sub>q</sub>, W<sub>k</sub>, W<sub>v</sub> and columns of W<sub>o</sub> are "
                              "masked.</div>")
