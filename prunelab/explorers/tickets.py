"""The lottery-ticket explorer: three restarts of the same sparse network, over the rounds of iterative magnitude
pruning (IMP), from the precomputed record of notebook 08 (``prunelab.resets.load_tickets()``).

- IMP ticket: the round-k mask M_k, its survivors rewound to θ0 and trained (θ0 ⊙ M_k);
- random re-init (the control): the same M_k on a fresh initialisation θ'0, trained;
- one-shot ticket: round 0's θ_T pruned once to round k's layer sparsities, rewound to θ0 and trained.

One slider picks the round by its fraction of weights kept, 1 − s_k; the figure shows the validation accuracy of
each restart against it (mean of the seeds, a band from the lowest to the highest seed), and the readout the
figures at the chosen fraction: each restart's mean and range over the seeds, and the gap ticket − re-init with
the number of seeds in which the ticket is ahead. Choices are made on validation; test only reports. Nothing is
trained here: the runs take 7 minutes and are read from the record.
"""

from __future__ import annotations

import html
import itertools

import ipywidgets as widgets
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.ticker import FormatStrFormatter

from ..resets import load_tickets
from .base import Explorer

__all__ = ["TicketExplorer", "RESTARTS", "record_accuracies"]

RESTARTS = {"ticket": "IMP ticket (rewind to θ0)", "control": "random re-init (control)",
            "one_shot": "one-shot ticket"}                          # record key prefix: label
COLORS = {"ticket": "#2ca02c", "control": "#d62728", "one_shot": "#ff7f0e"}   # tab: green, red, orange (notebook 08)
SPLITS = ("validation", "test")
HOW_TO_FIX = ("Pass the record of prunelab.resets.load_tickets() (data/precomputed/tickets_lenet300.json), or make "
              "it again with `python benches/bench_lottery_ticket.py --write data/precomputed/tickets_lenet300.json`.")


def record_accuracies(record: dict) -> tuple[list[float], dict[tuple[str, str], np.ndarray]]:
    """The fraction of weights kept per round, 1 − s_k [rounds], and every restart's accuracy per seed and round,
    ``{(restart, split): array [seeds, rounds]}``, from a record of ``prunelab.resets.precompute_tickets``.

    Every seed must have the same rounds (the same sparsities) and every round all six accuracies; otherwise a
    ``ValueError`` names what is missing."""
    if not isinstance(record, dict) or not isinstance(record.get("runs"), list) or not record["runs"]:
        got = (f"a dict with keys {sorted(record)[:6]}" if isinstance(record, dict)
               else f"a {type(record).__name__}")
        raise ValueError(f"The ticket record needs 'runs', a list with one entry per seed; got {got}. {HOW_TO_FIX}")
    keys = ["sparsity", *(f"{r}_{split}" for r in RESTARTS for split in SPLITS)]
    kept, columns = None, {key: [] for key in keys}
    for i, run in enumerate(record["runs"]):
        where = f"run {i} (seed {run.get('seed', '?')})" if isinstance(run, dict) else f"run {i}"
        rounds = run.get("rounds") if isinstance(run, dict) else None
        if not isinstance(rounds, list) or not rounds:
            raise ValueError(f"The ticket record's {where} has no 'rounds' (a list, round 0 first). {HOW_TO_FIX}")
        for k, r in enumerate(rounds):
            missing = [key for key in keys if not isinstance(r, dict) or key not in r]
            if missing:
                raise ValueError(f"The ticket record's {where}, round {k}, has no {', '.join(map(repr, missing))}; "
                                 f"every round needs {', '.join(map(repr, keys))}. {HOW_TO_FIX}")
        run_kept = [1 - float(r["sparsity"]) for r in rounds]
        if kept is None:
            kept = run_kept
        elif len(run_kept) != len(kept) or not np.allclose(run_kept, kept, rtol=0, atol=1e-9):
            raise ValueError(f"The ticket record's {where} has other rounds than run 0 ({len(run_kept)} rounds, "
                             f"{run_kept[-1]:.2%} kept last, against {len(kept)} and {kept[-1]:.2%}): every seed must "
                             f"prune the same rounds. {HOW_TO_FIX}")
        for key in keys[1:]:
            columns[key].append([float(r[key]) for r in rounds])
    return kept, {(r, split): np.array(columns[f"{r}_{split}"]) for r in RESTARTS for split in SPLITS}


def kept_label(kept: float) -> str:
    """A fraction of weights kept as the slider shows it: "100%", "80%", "13.5%", "1.85%" (3 digits)."""
    return f"{100 * kept:.3g}%"


class TicketExplorer(Explorer):
    """The precomputed IMP record: a slider over the rounds' fractions of weights kept, a checkbox per restart.

    ``record``: from ``prunelab.resets.load_tickets()`` (the default); ``kept``: the fraction the slider starts at
    (one of the rounds'; default 1.0, the dense round 0), and the one ``reset`` comes back to.
    State: ``kept`` and ``k`` (the round), ``accuracies[(restart, split)]`` (arrays [seeds, rounds]);
    ``summary(restart)`` gives (mean, lowest, highest) over the seeds at the chosen round, ``gaps()`` the ticket −
    re-init per seed, ``seeds_ahead`` how many of them are positive.
    """

    def __init__(self, record: dict | None = None, *, kept: float | None = None):
        super().__init__()
        self.record = record if record is not None else load_tickets()
        self.kept_fractions, self.accuracies = record_accuracies(self.record)
        self.n_seeds = self.accuracies["ticket", "validation"].shape[0]
        self.first_kept = self._check_kept(1.0 if kept is None else kept)
        self.kept = self.first_kept
        self.k = self.kept_fractions.index(self.kept)

        style = {"description_width": "initial"}
        self.slider = widgets.SelectionSlider(options=[(kept_label(f), f) for f in self.kept_fractions],
                                              value=self.kept, description="weights kept", continuous_update=True,
                                              style=style, layout=widgets.Layout(width="350px"))
        self.show = {r: widgets.Checkbox(value=True, description=label, indent=False,
                                         layout=widgets.Layout(width="auto"))
                     for r, label in RESTARTS.items()}
        self.reset_button = self.make_reset_button(f"{kept_label(self.first_kept)} kept and every restart shown")
        self.headline = widgets.HTML(layout=widgets.Layout(margin="0 0 0 12px"))   # the figures, large, by the slider

        self._build_figure()
        self.observe({self.slider: self._on_slider, **{box: self._on_show for box in self.show.values()}})
        controls = widgets.VBox([self.slider, *self.show.values(), self.reset_button],
                                layout=widgets.Layout(width="360px"))
        self.view = widgets.VBox([widgets.HBox([controls, self.headline],
                                               layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start")),
                                  self.error_box, self.image, self.readout])
        self._redraw()
        self._undrawn = [shown for shown in itertools.product((True, False), repeat=len(RESTARTS))
                         if shown != self._shown()]
        self.when_idle(self._draw_backgrounds)     # the other sets of checkboxes' backgrounds, after the first picture

    def _check_kept(self, kept) -> float:
        for f in self.kept_fractions:
            if isinstance(kept, (int, float)) and not isinstance(kept, bool) and abs(kept - f) < 5e-5:
                return f
        raise ValueError(f"kept must be the fraction of weights kept at one of the record's rounds: "
                         f"{', '.join(f'{f:.4g}' for f in self.kept_fractions)}; got {kept!r}.")

    # ------------------------------------------------------------------ the numbers
    def summary(self, restart: str, split: str = "validation") -> tuple[float, float, float]:
        """(mean, lowest, highest) over the seeds of ``restart``'s accuracy at the chosen round."""
        a = self.accuracies[restart, split][:, self.k]          # [seeds]
        return float(a.mean()), float(a.min()), float(a.max())

    def gaps(self, split: str = "validation") -> np.ndarray:
        """Ticket − random re-init per seed at the chosen round [seeds] (fractions; × 100 for points)."""
        return self.accuracies["ticket", split][:, self.k] - self.accuracies["control", split][:, self.k]

    @property
    def seeds_ahead(self) -> int:
        """In how many seeds the ticket's validation accuracy is above the re-init's at the chosen round."""
        return int((self.gaps() > 0).sum())

    def curve(self, restart: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(kept %, mean %, lowest %, highest %) over the seeds of ``restart``'s validation accuracy, per round:
        the line and the band drawn."""
        a = 100 * self.accuracies[restart, "validation"]        # [seeds, rounds]
        return 100 * np.array(self.kept_fractions), a.mean(0), a.min(0), a.max(0)

    # ------------------------------------------------------------------ events
    def _on_slider(self, change) -> None:
        if self._quiet:
            return
        kept = self._check_kept(change["new"])
        self.kept, self.k = kept, self.kept_fractions.index(kept)
        self._redraw()

    def _on_show(self, change) -> None:
        if self._quiet:
            return
        self._redraw()

    def reset(self) -> None:
        """The first fraction kept and every restart shown."""
        with self.quiet():
            self.slider.value = self.first_kept
            for box in self.show.values():
                box.value = True
        self.kept, self.k = self.first_kept, self.kept_fractions.index(self.first_kept)
        self._redraw()

    # ------------------------------------------------------------------ drawing
    def _build_figure(self) -> None:
        with matplotlib.rc_context({"font.size": 10}):
            self.fig = Figure(figsize=(10.5, 3.7), dpi=80, layout="constrained")   # 840 x 296 px: drawn as shown
            ax = self.ax = self.fig.subplots()
            self.lines, self.bands, self.dots = {}, {}, {}
            for r, label in RESTARTS.items():
                x, mean, lo, hi = self.curve(r)
                (self.lines[r],) = ax.plot(x, mean, marker="o", ms=3, lw=1.5, color=COLORS[r], animated=True,
                                           label=f"{label}: mean of {self.n_seeds} seeds")
                self.bands[r] = ax.fill_between(x, lo, hi, color=COLORS[r], alpha=0.2, lw=0, animated=True)
                (self.dots[r],) = ax.plot([], [], "o", ms=8, color=COLORS[r], mec="black", animated=True)
            self.dense = ax.axhline(self.curve("ticket")[1][0], color="gray", lw=0.8, ls="--",
                                    label="dense network (100% kept, mean)")
            self.marker = ax.axvline(100 * self.kept, color="black", ls=":", lw=1.2, animated=True)
            self.marker_text = ax.text(100 * self.kept, 0.97, "", transform=ax.get_xaxis_transform(), va="top",
                                       fontsize=10, fontweight="bold", animated=True)
            everything = np.concatenate([100 * a.ravel() for (_, split), a in self.accuracies.items()
                                         if split == "validation"])
            pad = 0.06 * (everything.max() - everything.min()) + 0.1   # every restart fits, shown or not: fixed
            ax.set_xscale("log")
            ticks = [t for t in (100, 50, 20, 10, 5, 2, 1) if 100 * min(self.kept_fractions) * 0.9 <= t]
            ax.set_xticks(ticks, labels=[f"{t}%" for t in ticks])
            ax.minorticks_off()
            ax.set(xlim=(100 * 1.1, 100 * min(self.kept_fractions) / 1.15),
                   ylim=(everything.min() - pad, everything.max() + 3 * pad),     # the top: the marker's label
                   xlabel="weights kept (log scale; pruning goes right)", ylabel="validation accuracy (%)")
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g%%"))
            ax.grid(alpha=0.3)
        self._legends: dict[tuple[bool, ...], Legend] = {}     # one per background
        moving = [*self.bands.values(), *self.lines.values(), *self.dots.values(), self.marker, self.marker_text]
        self.renderer = self.figure_renderer(self.fig, moving, keyed=True)

    def _shown(self) -> tuple[bool, ...]:
        return tuple(box.value for box in self.show.values())

    def _background(self, shown: tuple[bool, ...]) -> None:
        """The static parts for the restarts ``shown`` (axes, grid, the dense line and a legend of those restarts):
        one background per set of checkboxes, drawn the first time (a full draw: 40 to 70 ms on a 2-core Xeon) and
        reused after. The rest is blitted onto it on every event (lines, bands, dots, marker: 8 to 25 ms with PNG)."""
        if shown not in self._legends:
            if self.ax.get_legend() is not None:
                self.ax.get_legend().remove()
            handles = [self.lines[r] for r, visible in zip(RESTARTS, shown) if visible] + [self.dense]
            with matplotlib.rc_context({"font.size": 10}):
                self._legends[shown] = self.ax.legend(handles=handles, loc="lower left", fontsize=9, frameon=False,
                                                      title=f"band: lowest to highest of {self.n_seeds} seeds",
                                                      title_fontsize=9, alignment="left")
        self.renderer.use_background(shown)

    @property
    def legend(self) -> Legend:
        """The legend drawn in the current background: the restarts shown, and the dense line."""
        return self._legends[self._shown()]

    def _draw_backgrounds(self) -> None:
        """Draw one not yet drawn set of checkboxes' background, then ask for the next (``when_idle``: one at a time,
        so that the kernel answers the page in between). Afterwards a checkbox only blits too."""
        if self._undrawn:
            self._background(self._undrawn.pop(0))
            self._background(self._shown())          # the current one again (already drawn: reused)
            if self._undrawn:
                self.when_idle(self._draw_backgrounds)

    def _redraw(self) -> None:
        x = 100 * self.kept
        for r, dot in self.dots.items():
            dot.set_data([x], [100 * self.summary(r)[0]])
            for artist in (dot, self.lines[r], self.bands[r]):
                artist.set_visible(self.show[r].value)
        self._background(self._shown())
        self.marker.set_xdata([x, x])
        self.marker_text.set_x(x)
        right = self.kept > 0.05                   # the label right of the marker; near the axis' end, left of it
        self.marker_text.set_text(f" {kept_label(self.kept)} kept " if right else f"{kept_label(self.kept)} kept ")
        self.marker_text.set_horizontalalignment("left" if right else "right")
        self.image.value = self.renderer.png()
        self._redraw_readout()

    def _redraw_readout(self) -> None:
        small, large = "font-size:13px", "font-size:24px;font-weight:bold"
        rows = []
        for r, label in RESTARTS.items():
            if not self.show[r].value:
                continue
            mean, lo, hi = self.summary(r)
            rows.append(f"<tr><td style='{small};color:{COLORS[r]};padding-right:10px'>{html.escape(label)}</td>"
                        f"<td style='{large};padding-right:10px'>{mean:.2%}</td>"
                        f"<td style='{small}'>seeds: {100 * lo:.2f} to {100 * hi:.2f}%</td></tr>")
        gaps = 100 * self.gaps()
        rows.append(f"<tr><td style='{small};padding-right:10px'>ticket − re-init</td>"
                    f"<td style='{large};padding-right:10px'>{gaps.mean():+.2f} points</td>"
                    f"<td style='{small}'>ahead in <b>{self.seeds_ahead} of {self.n_seeds}</b> seeds<br>"
                    f"each {gaps.min():+.2f} to {gaps.max():+.2f}</td></tr>")
        test = ", ".join(f"{label.split(' (')[0]} {self.summary(r, 'test')[0]:.2%}"
                         for r, label in RESTARTS.items() if self.show[r].value)
        self.headline.value = (
            f"<div class='prunelab-accuracy' style='line-height:1.25;max-width:520px'><span style='font-size:14px'>"
            f"validation accuracy at <b>{kept_label(self.kept)}</b> kept (round {self.k}), mean of {self.n_seeds} "
            f"seeds:</span><table>{''.join(rows)}</table><span style='font-size:12px;color:#555'>test (reported "
            f"only){': ' + test if test else ''}; ticket − re-init {100 * self.gaps('test').mean():+.2f} points"
            "</span></div>")
        self.readout.value = (
            f"<div style='font-size:12px'>Precomputed IMP runs of LeNet-300-100, {self.n_seeds} seeds, every training "
            f"{self.record.get('recipe', {}).get('epochs', '?')} epochs; nothing is trained here. At each fraction "
            "kept the three restarts train the same number of weights: the IMP ticket and the re-init share the mask "
            "M_k, the one-shot ticket has the same layer sparsities, pruned once from round 0's θ_T.</div>")
