"""The schedule explorer: one-shot, iterative and gradual pruning of LeNet-300-100 to the same final sparsity
s_f with the same fine-tuning budget (the same epochs), side by side.

- one-shot: s = s_f at step 0, then fine-tuning;
- iterative: R rounds to s_k = 1 − (1 − s_f)^(k/R), each followed by fine-tuning;
- gradual (Zhu & Gupta): s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³ while training, every Δt steps.

Training takes minutes, so the runs are precomputed by ``python -m prunelab.schedule_runs`` (fixed seeds; the
JSON records the recipe, torch's version, the threads and the command) and this explorer only shows them:
the sparsity and the test accuracy against the epoch for each schedule at the chosen s_f, and the final
accuracy of each schedule against s_f. It owns no model; nothing is trained or pruned here.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import matplotlib
from matplotlib.figure import Figure

from ..schedule_runs import SCHEDULES, find_run, load_schedule_runs
from .base import Explorer

__all__ = ["ScheduleExplorer"]

COLORS = {"one-shot": "tab:red", "iterative": "tab:blue", "gradual": "tab:green"}


class ScheduleExplorer(Explorer):
    """Precomputed schedule runs, one final-sparsity slider, a checkbox per schedule.

    ``runs``: the record written by ``prunelab.schedule_runs`` (default: ``load_schedule_runs()``).
    State: ``s_final`` (the slider's value) and ``shown`` (``{schedule: run record}`` at that s_f).
    ``curves(schedule)`` gives the (x, y) drawn: epochs and sparsity, epochs and test accuracy.
    """

    def __init__(self, runs: dict | None = None, *, s_final: float | None = None):
        super().__init__()
        self.doc = runs if runs is not None else load_schedule_runs()
        self.final_sparsities = [float(s) for s in self.doc["final_sparsities"]]
        self.steps_per_epoch = int(self.doc["steps_per_epoch"])
        self.epochs = int(self.doc["recipe"]["epochs"])
        self.baseline = float(self.doc["baseline_accuracy"])
        n_test = self.doc["recipe"].get("test_images")
        self.test_images = f"{n_test:,} test images" if n_test else "all 10,000 test images"
        if s_final is None:
            s_final = 0.9 if 0.9 in self.final_sparsities else self.final_sparsities[0]
        style = {"description_width": "initial"}
        self.slider = widgets.SelectionSlider(options=[(f"{s:g}", s) for s in self.final_sparsities],
                                              value=s_final, description="final sparsity s_f",
                                              continuous_update=True, style=style,
                                              layout=widgets.Layout(width="420px"))
        self.show = {name: widgets.Checkbox(value=True, description=name, indent=False,
                                            layout=widgets.Layout(width="110px")) for name in SCHEDULES}
        self.s_final = s_final
        self.shown = {name: find_run(self.doc, name, s_final) for name in SCHEDULES}

        self._build_figure()
        self.observe({self.slider: self._on_slider, **{box: lambda _: self._redraw() for box in self.show.values()}})
        self.headline = widgets.HTML()              # the three final accuracies, large, under the slider
        self.view = widgets.VBox([widgets.HBox([self.slider, *self.show.values()],
                                               layout=widgets.Layout(flex_flow="row wrap")),
                                  self.headline, self.error_box, self.image, self.readout])
        self._redraw()
        self._undrawn = [s for s in self.final_sparsities if s != s_final]
        self.when_idle(self._draw_backgrounds)      # the other s_f's after the first picture (0.5 s each)

    # ------------------------------------------------------------------ data
    def curves(self, schedule: str, run: dict | None = None) -> tuple[tuple[list, list], tuple[list, list]]:
        """((epoch, sparsity), (epoch, test accuracy)) of ``schedule`` at the current s_f, as drawn. The
        sparsity is a step curve from 0 at epoch 0 through every prune event to the last epoch."""
        run = run if run is not None else self.shown[schedule]
        spe = self.steps_per_epoch
        events = run["prune_steps"]
        x_s = [0.0, *(t / spe for t, _ in events), float(self.epochs)]
        y_s = [0.0, *(s for _, s in events), events[-1][1]]
        x_a = [t / spe for t, _ in run["accuracy"]]
        y_a = [a for _, a in run["accuracy"]]
        return (x_s, y_s), (x_a, y_a)

    def finals(self, schedule: str) -> tuple[list[float], list[float]]:
        """(s_f, final test accuracy) of ``schedule`` over every precomputed s_f, as drawn on the right."""
        points = sorted((r["s_final"], r["final_accuracy"]) for r in self.doc["runs"] if r["schedule"] == schedule)
        return [s for s, _ in points], [a for _, a in points]

    # ------------------------------------------------------------------ events
    def _on_slider(self, change) -> None:
        shown = {name: find_run(self.doc, name, change["new"]) for name in SCHEDULES}   # all, or nothing
        self.s_final, self.shown = change["new"], shown
        self._redraw()

    # ------------------------------------------------------------------ drawing
    def _build_figure(self) -> None:
        with matplotlib.rc_context({"font.size": 8}):
            self.fig = Figure(figsize=(11.0, 3.1), dpi=80, layout="constrained")
            self.ax_sparsity, self.ax_accuracy, self.ax_final = self.fig.subplots(1, 3, width_ratios=[1, 1.3, 1])
            self.sparsity_lines, self.accuracy_lines = {}, {}
            for name in SCHEDULES:
                (self.sparsity_lines[name],) = self.ax_sparsity.plot([], [], drawstyle="steps-post",
                                                                     color=COLORS[name], lw=1.5, label=name)
                (self.accuracy_lines[name],) = self.ax_accuracy.plot([], [], ".-", color=COLORS[name], lw=1.2,
                                                                     ms=3, label=name)
                self.ax_final.plot(*self.finals(name), "o-", color=COLORS[name], ms=3, lw=1.2, label=name)
            self.target_line = self.ax_sparsity.axhline(self.s_final, color="black", ls=":", lw=1)
            self.final_marker = self.ax_final.axvline(self.s_final, color="black", ls=":", lw=1)
            for ax in (self.ax_accuracy, self.ax_final):
                ax.axhline(self.baseline, color="gray", ls="--", lw=0.8, label="dense")
            self.ax_sparsity.set(xlim=(-0.1, self.epochs + 0.1), ylim=(0, 1), ylabel="sparsity s_t",
                                 xlabel=f"epoch ({self.steps_per_epoch} steps each)",
                                 title="sparsity schedule")
            self.ax_sparsity.legend(loc="lower right", fontsize=7, frameon=False)
            self.ax_accuracy.set(xlim=(-0.1, self.epochs + 0.1), xlabel="epoch", ylabel="test accuracy")
            self.ax_final.set(xlabel="final sparsity s_f", ylabel="final test accuracy",
                              title=f"after {self.epochs} epochs, every s_f")
            self.ax_final.legend(loc="lower left", fontsize=7, frameon=False)
            for ax in (self.ax_sparsity, self.ax_accuracy, self.ax_final):
                ax.grid(alpha=0.3)
        self.renderer = self.figure_renderer(self.fig, [*self.sparsity_lines.values(), *self.accuracy_lines.values(),
                                                        self.target_line, self.final_marker], keyed=True)

    def _accuracy_limits(self) -> tuple[float, float]:
        """The range of every shown schedule's accuracy over all s_f: the axis stays put while s_f moves."""
        runs = []
        for name in SCHEDULES:
            if self.show[name].value:
                for s in self.final_sparsities:
                    try:
                        runs.append(find_run(self.doc, name, s))
                    except ValueError:
                        continue               # an incomplete record: that s_f shows its error when chosen
        ys = [a for run in runs or self.shown.values() for _, a in run["accuracy"]]
        lo, hi = min(ys + [self.baseline]), max(ys + [self.baseline])
        pad = max(0.005, 0.08 * (hi - lo))
        return lo - pad, hi + pad

    def _static_parts(self) -> None:
        """The accuracy axis fits the shown schedules at every s_f: one background per (s_f, schedules shown), drawn the
        first time that state is shown and reused after."""
        self.ax_accuracy.set_ylim(*self._accuracy_limits())
        with matplotlib.rc_context({"font.size": 8}):
            self.ax_accuracy.set_title(f"test accuracy while pruning to s_f = {self.s_final:g}")
        self.renderer.use_background((self.s_final, *(box.value for box in self.show.values())))

    def _draw_backgrounds(self) -> None:
        """Draw the background of the next s_f in ``_undrawn`` (the schedules shown now; one drawn before is
        reused), then ask for the one after (``when_idle``: one at a time, so that the kernel answers the page in
        between). Afterwards a slider move only blits."""
        while self._undrawn:
            s = self._undrawn.pop(0)
            try:
                shown = {name: find_run(self.doc, name, s) for name in SCHEDULES}
            except ValueError:
                continue                   # an incomplete record: that s_f shows its error when chosen
            now = self.s_final, self.shown
            self.s_final, self.shown = s, shown
            self._static_parts()
            self.s_final, self.shown = now
            self._static_parts()           # the current state's axis range, title and background again
            if self._undrawn:
                self.when_idle(self._draw_backgrounds)
            return

    def _redraw(self) -> None:
        for name in SCHEDULES:
            (x_s, y_s), (x_a, y_a) = self.curves(name)
            self.sparsity_lines[name].set_data(x_s, y_s)
            self.accuracy_lines[name].set_data(x_a, y_a)
            for line in (self.sparsity_lines[name], self.accuracy_lines[name]):
                line.set_visible(self.show[name].value)
        self.target_line.set_ydata([self.s_final, self.s_final])
        self.final_marker.set_xdata([self.s_final, self.s_final])
        self._static_parts()
        self.image.value = self.renderer.png()
        self._redraw_readout()

    def _redraw_readout(self) -> None:
        shown = {name: round(100 * self.shown[name]["final_accuracy"], 2) for name in SCHEDULES}  # as printed
        rows, best = [], {name for name, a in shown.items() if a == max(shown.values())}         # ties: all bold
        for name in SCHEDULES:
            run = self.shown[name]
            lowest = min(a for _, a in run["accuracy"])
            bold = " style='font-weight:bold'" if name in best else ""
            rows.append(f"<tr{bold}><td>{html.escape(name)}</td><td>{len(run['prune_steps'])}</td>"
                        f"<td>{run['final_sparsity']:.2%}</td><td>{lowest:.2%}</td>"
                        f"<td>{run['final_accuracy']:.2%}</td>"
                        f"<td>{100 * (run['final_accuracy'] - self.baseline):+.2f}</td></tr>")
        cells = [f"<td style='padding:0 22px 0 0'><span style='font-size:13px'>{html.escape(name)}</span><br>"
                 f"<span style='font-size:24px;font-weight:{'bold' if name in best else 'normal'}'>"
                 f"{self.shown[name]['final_accuracy']:.2%}</span><br><span style='font-size:13px'>"
                 f"{100 * (self.shown[name]['final_accuracy'] - self.baseline):+.2f} points</span></td>"
                 for name in SCHEDULES]
        self.headline.value = (
            f"<div class='prunelab-accuracy'><span style='font-size:14px'>final test accuracy at s_f = "
            f"{self.s_final:g} (dense {self.baseline:.2%}; {self.test_images}); the best in bold:</span>"
            f"<table><tr>{''.join(cells)}</tr></table></div>")
        recipe = self.doc["recipe"]
        self.readout.value = (
            "<table style='font-family:monospace;font-size:12px'>"
            "<tr><th align=left>schedule</th><th align=left>prune events</th><th align=left>sparsity</th>"
            "<th align=left>lowest accuracy</th><th align=left>final accuracy</th>"
            "<th align=left>vs dense (points)</th></tr>" + "".join(rows) + "</table>"
            f"<div>same budget for all: {self.epochs} epochs of SGD (lr {recipe['lr']}, {recipe['lr_schedule']}, "
            f"weight decay {recipe['weight_decay']}); iterative: {recipe['rounds']} rounds; gradual: Δt = "
            f"{recipe['prune_every']} steps. Precomputed by <code>{html.escape(self.doc['command'])}</code> "
            f"(torch {self.doc['torch']}, {self.doc['threads']} thread(s)).</div>")
