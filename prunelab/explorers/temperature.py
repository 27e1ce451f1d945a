"""The temperature explorer: move the temperature T and see a teacher's soft targets for one image change.

- bars: p_k = softmax(z_k / T) over the K classes (``prunelab.distillation.soft_targets``), the true class marked,
  and the uniform 1/K that they tend to as T grows;
- readout: the entropy H(p) = −Σ_k p_k log2 p_k in bits (0: certain; log2 K: uniform), the most and the second
  most likely class with their probabilities;
- with a ``student``: its soft targets next to the teacher's, and the distillation term it would be trained on
  for this image, T² · KL(p_t^T ‖ p_s^T) (``distillation_loss`` with α = 1; notebook 11).

The models are only evaluated (eval mode under ``torch.no_grad``, their mode put back afterwards), never changed;
each image's logits are computed once, when it is chosen, and moving T only recomputes the softmax.
"""

from __future__ import annotations

import html
import math

import ipywidgets as widgets
import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from .._helpers import in_mode
from ..data import Data, as_image_set
from ..distillation import distillation_loss, soft_targets
from ..training import model_device
from .base import Explorer

__all__ = ["TemperatureExplorer"]

TEMPERATURES = (1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 30, 50)   # the slider's stops: T = 1 is the ordinary softmax
TEACHER, STUDENT, TRUE = "tab:blue", "tab:orange", "tab:green"


def entropy_bits(p: Tensor) -> float:
    """H(p) = −Σ_k p_k log2 p_k of one distribution p [K], in bits (0 · log 0 = 0)."""
    return float(torch.special.entr(p.double()).sum() / math.log(2))


def _percent(p: float) -> str:
    """A bar's label: "26%", "<1%" for the tiny ones, ">99%" for a near-certain one."""
    return "<1%" if p < 0.005 else ">99%" if p > 0.995 else f"{p:.0%}"


class TemperatureExplorer(Explorer):
    """A teacher's soft targets p = softmax(z / T) for one image of ``data``: a temperature slider, an image picker.

    - ``teacher``: a classifier whose output for a batch of N images is logits [N, K], one per class of ``data``;
    - ``image``: the index of the first image shown (and the one ``reset`` comes back to);
    - ``student`` (optional): a second classifier with the same K outputs; its soft targets are drawn next to the
      teacher's and the readout gives the distillation term T² · KL(p_t^T ‖ p_s^T) for this image.

    State lives in this object: ``T`` and ``index`` (the controls' values), ``z_t`` and ``z_s`` (the logits [K] of
    the image shown), ``p_t`` and ``p_s`` (their soft targets [K] at ``T``), ``entropy`` (H(p_t) in bits), ``top``
    and ``second`` ((class index, probability) of the teacher's two most likely classes) and ``kl_term``
    (T² · KL in nats, None without a student).
    """

    temperatures = TEMPERATURES

    def __init__(self, teacher: nn.Module, data: Data, *, image: int = 0, student: nn.Module | None = None):
        super().__init__()
        self.data = as_image_set(data, "TemperatureExplorer")
        self.teacher, self.student = teacher, student
        for role, model in (("teacher", teacher), ("student", student)):
            if model is not None and not isinstance(model, nn.Module):
                raise TypeError(f"The {role} must be an nn.Module (a trained classifier), got {type(model).__name__}.")
        self.classes = self.data.classes
        self.K = len(self.classes)
        self.first_image = self._check_index(image)
        self.T = 1.0
        self.index = self.first_image
        self.z_t, self.z_s = self._logits_of(self.first_image)      # checks both models' outputs

        style = {"description_width": "initial"}
        self.slider = widgets.SelectionSlider(options=[(f"{T:g}", float(T)) for T in self.temperatures], value=1.0,
                                              description="temperature T", continuous_update=True, style=style,
                                              layout=widgets.Layout(width="420px"))
        name = f"{self.data.name} image" if self.data.name else "image"
        self.picker = widgets.IntSlider(value=self.first_image, min=0, max=len(self.data) - 1,
                                        description=name, continuous_update=False, style=style,
                                        layout=widgets.Layout(width="420px"))
        self.reset_button = self.make_reset_button("T = 1 and the first image again")
        self.headline = widgets.HTML(layout=widgets.Layout(margin="0 0 0 12px"))   # H(p), large, by the slider

        self._build_figure()
        self.observe({self.slider: self._on_temperature, self.picker: self._on_image})
        wrap = widgets.Layout(flex_flow="row wrap", align_items="center")
        self.view = widgets.VBox([widgets.HBox([self.slider, self.headline], layout=wrap),
                                  widgets.HBox([self.picker, self.reset_button], layout=wrap),
                                  self.error_box, self.image, self.readout])
        self._draw_image_panels()
        self._redraw()

    # ------------------------------------------------------------------ checks and logits
    def _check_index(self, image) -> int:
        n = len(self.data)
        if isinstance(image, bool) or not isinstance(image, (int, np.integer)) or not 0 <= image < n:
            raise ValueError(f"image must be the index of one image of data: an integer from 0 to {n - 1} "
                             f"({self.data.images_label()}), got {image!r}.")
        return int(image)

    def _logits(self, model: nn.Module, role: str, index: int) -> Tensor:
        """``model``'s logits [K] for image ``index``: evaluated in eval mode under no_grad, never changed."""
        x = self.data.normalize(self.data.images[index:index + 1]).to(model_device(model))     # [1, C, H, W]
        try:
            with in_mode(model, training=False), torch.no_grad():
                z = model(x)
        except Exception as exc:
            raise ValueError(f"The {role} could not run on one image of data (a batch of shape {list(x.shape)}): "
                             f"{type(exc).__name__}: {exc}. Give it images of the kind it was trained on.") from exc
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[0] != 1 or not z.is_floating_point():
            got = f"a tensor of shape {list(z.shape)}" if isinstance(z, Tensor) else f"a {type(z).__name__}"
            raise ValueError(f"The {role}'s output for a batch of 1 image is {got}; the explorer needs logits of "
                             f"shape [N, classes] = [1, {self.K}], one score per class. Pass a classifier (its "
                             "last layer a Linear with one output per class), not a feature extractor.")
        if z.shape[1] != self.K:
            raise ValueError(f"The {role} gives {z.shape[1]} scores per image but data has {self.K} classes "
                             f"({', '.join(self.classes[:4])}, ...); the bars pair them one to one. Use a {role} "
                             "trained on these classes (or give the ImageSet its own classes=).")
        return z[0].detach().float().cpu()

    def _logits_of(self, index: int) -> tuple[Tensor, Tensor | None]:
        z_t = self._logits(self.teacher, "teacher", index)
        z_s = None if self.student is None else self._logits(self.student, "student", index)
        return z_t, z_s

    # ------------------------------------------------------------------ what is shown
    @property
    def label(self) -> int:
        """The true class of the image shown."""
        return int(self.data.labels[self.index])

    def _compute(self) -> None:
        """Soft targets, entropy, top two classes and the distillation term at the current T and image."""
        self.p_t = soft_targets(self.z_t, self.T)                                  # [K]
        self.entropy = entropy_bits(self.p_t)
        values, indices = self.p_t.topk(2)
        self.top = (int(indices[0]), float(values[0]))
        self.second = (int(indices[1]), float(values[1]))
        if self.z_s is None:
            self.p_s, self.kl_term = None, None
            return
        self.p_s = soft_targets(self.z_s, self.T)
        y = torch.tensor([self.label])          # α = 1: the label is not used
        self.kl_term = float(distillation_loss(self.z_s[None], self.z_t[None], y, T=self.T, alpha=1.0))

    # ------------------------------------------------------------------ events
    def _on_temperature(self, change) -> None:
        if self._quiet:
            return
        self.T = float(change["new"])
        self._redraw()

    def _on_image(self, change) -> None:
        if self._quiet:
            return
        index = self._check_index(change["new"])
        self.z_t, self.z_s = self._logits_of(index)       # all or nothing: a failure keeps the last image
        self.index = index
        self._draw_image_panels()
        self._redraw()

    def reset(self) -> None:
        """T = 1 and the image the explorer started with."""
        with self.quiet():
            self.slider.value, self.picker.value = 1.0, self.first_image
        self.T, self.index = 1.0, self.first_image
        self.z_t, self.z_s = self._logits_of(self.index)
        self._draw_image_panels()
        self._redraw()

    # ------------------------------------------------------------------ drawing
    def _build_figure(self) -> None:
        with matplotlib.rc_context({"font.size": 10}):
            self.fig = Figure(figsize=(10.0, 3.4), dpi=80, layout="constrained")  # 800 x 272 px: drawn as shown
            self.ax_image, self.ax_bars = self.fig.subplots(1, 2, width_ratios=[1.0, 3.8])
            x = np.arange(self.K)
            two = self.student is not None
            width = 0.4 if two else 0.75
            self.bars = self.ax_bars.bar(x - width / 2 if two else x, np.zeros(self.K), width, color=TEACHER,
                                         label="teacher", animated=True)
            self.student_bars = (self.ax_bars.bar(x + width / 2, np.zeros(self.K), width, color=STUDENT,
                                                  label="student", animated=True) if two else None)
            self.value_labels = [self.ax_bars.text(b.get_x() + b.get_width() / 2, 0, "", ha="center", va="bottom",
                                                   fontsize=9, color=TEACHER, animated=True,
                                                   bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
                                  for b in self.bars]
            self.ax_bars.axhline(1 / self.K, color="gray", ls="--", lw=1, label=f"uniform 1/K = {1 / self.K:.2g}")
            self.ax_bars.set(xlim=(-0.6, self.K - 0.4), ylim=(0, 1.3), ylabel="soft target p_k",   # 1 .. 1.3: keys
                             yticks=np.linspace(0, 1, 6))
            self.ax_bars.set_xticks(x, self.classes, rotation=20, ha="right", rotation_mode="anchor")
            self.ax_bars.grid(axis="y", alpha=0.3)
            self.ax_bars.legend(loc="upper left", fontsize=9, frameon=False, ncols=3)
            self.T_text = self.ax_bars.text(0.99, 0.97, "", transform=self.ax_bars.transAxes, ha="right", va="top",
                                            fontsize=13, fontweight="bold", animated=True)
            self.ax_image.axis("off")
        animated = [*self.bars, *(self.student_bars or []), *self.value_labels, self.T_text]
        self.renderer = self.figure_renderer(self.fig, animated)

    def _picture(self) -> tuple[np.ndarray, str | None] | None:
        """The image as imshow takes it (array, colour map), or None when it has no picture form."""
        img = self.data.images[self.index]
        if img.dim() == 3 and img.shape[0] in (1, 3):                 # [C, H, W]
            img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
        if img.dim() != 2 and not (img.dim() == 3 and img.shape[2] == 3):
            return None
        a = img.float().numpy()
        if img.dtype == torch.uint8:
            a = a / 255
        elif a.max() > a.min():                                       # normalised floats: to 0 .. 1 for the eye
            a = (a - a.min()) / (a.max() - a.min())
        return a, ("gray_r" if a.ndim == 2 else None)

    def _draw_image_panels(self) -> None:
        """The parts that change with the image only: the picture, its title, the true class marked."""
        truth = self.classes[self.label]
        with matplotlib.rc_context({"font.size": 10}):
            self.ax_image.clear()
            self.ax_image.axis("off")
            picture = self._picture()
            if picture is None:
                self.ax_image.text(0.5, 0.5, f"(no picture for\nimages of shape\n{list(self.data.images.shape[1:])})",
                                   ha="center", va="center", transform=self.ax_image.transAxes)
            else:
                self.ax_image.imshow(picture[0], cmap=picture[1], vmin=0, vmax=1)
            name = f"{self.data.name} image" if self.data.name else "image"
            self.ax_image.set_title(f"{name} {self.index}\ntrue class: {truth}", color=TRUE, fontsize=11)
            for k, tick in enumerate(self.ax_bars.get_xticklabels()):
                tick.set_color(TRUE if k == self.label else "black")
                tick.set_fontweight("bold" if k == self.label else "normal")
            self.ax_bars.set_title(f"soft targets p = softmax(z / T); the true class, {truth}, in green", fontsize=11)
        self.renderer.capture_background()

    def _redraw(self) -> None:
        self._compute()
        for bar, label, p in zip(self.bars, self.value_labels, self.p_t.tolist()):
            bar.set_height(p)
            label.set_position((label.get_position()[0], p + 0.01))
            label.set_text(_percent(p))
        if self.student_bars is not None:
            for bar, p in zip(self.student_bars, self.p_s.tolist()):
                bar.set_height(p)
        self.T_text.set_text(f"T = {self.T:g}\nH(p) = {self.entropy:.2f} bits")
        self.image.value = self.renderer.png()
        self._redraw_readout()

    def _redraw_readout(self) -> None:
        name = lambda k: html.escape(self.classes[k])
        (k1, p1), (k2, p2) = self.top, self.second
        h_max = math.log2(self.K)
        self.headline.value = (
            f"<div style='line-height:1.3'><span style='font-size:14px'>teacher's entropy H(p): </span>"
            f"<span style='font-size:24px;font-weight:bold'>{self.entropy:.2f} bits</span><br>"
            f"<span style='font-size:13px'>second most likely: {name(k2)} <b>{p2:.1%}</b></span></div>")
        z1, z2 = float(self.z_t[k1]), float(self.z_t[k2])
        rows = [
            ("temperature T", f"<b>{self.T:g}</b>"),
            ("entropy H(p) = −Σ p_k log2 p_k", f"<b>{self.entropy:.3f} bits</b> (0 = certain; log2 {self.K} = "
                                                f"{h_max:.3f} = uniform)"),
            ("most likely class", f"{name(k1)}: <b>{p1:.2%}</b>"),
            ("second most likely", f"{name(k2)}: <b>{p2:.2%}</b>, {p1 / p2:.3g} times less likely than the first: "
                                   f"exp((z_1 − z_2) / T) = exp({z1 - z2:.2f} / {self.T:g})"),
            ("true class", f"{name(self.label)}: {float(self.p_t[self.label]):.2%}"),
        ]
        if self.kl_term is not None:
            ks = int(self.p_s.argmax())
            rows += [("student's most likely", f"{name(ks)}: {float(self.p_s[ks]):.2%} "
                                              f"(entropy {entropy_bits(self.p_s):.3f} bits)"),
                     ("distillation term T² · KL(p_t ‖ p_s)", f"<b>{self.kl_term:.4f} nats</b> for this image "
                                                              "(α times this enters the student's loss)")]
        self.readout.value = ("<table style='font-family:monospace;font-size:12px'>"
                              + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows) + "</table>")
