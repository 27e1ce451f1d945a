"""What every explorer shares: it is an object that owns its widgets, figure and state.

- ``view``: the widget to show; displaying the explorer itself shows it.
- Every callback goes through ``handler``, which times it (``event_seconds``, kernel side) and shows an
  error in the explorer itself (``error_box``, and ``error`` holds the exception) instead of losing it in
  the browser's log.
- Slow work can be split in two: a fast result at once, the exact one once the slider rests
  (``later``). In a running kernel "later" is ``settle_delay`` seconds after the last event; with no event
  loop (a script, a test) it is at once. ``settle()`` does it now.
- ``AccuracyMeter`` (and ``MeteredExplorer``, an explorer with one): the accuracy readout, exact on every
  event when that is fast enough, else an estimate now and the exact figure later.
- ``quiet()``: set widgets from code without their observers reacting.
- Projector mode (``projector_mode()``, read once per explorer from the environment): turned on by the page's
  address in Voila (``.../explore_thresholds.ipynb?projector``; Voila hands the query string to the kernel as
  ``QUERY_STRING``) or by ``PRUNELAB_PROJECTOR=1``. Displaying the explorer then also brings a style sheet, scoped
  to its widgets, that makes every widget text at least ``PROJECTOR_TEXT_PX`` px, and ``figure_renderer`` draws the
  figure with ``PROJECTOR_PIXEL_RATIO`` device pixels per CSS pixel (sharp on a projector and on HiDPI screens). In
  every mode the figure is shown at its own size (inches × dpi CSS pixels), never stretched.
- ``FloatSlider``: ipywidgets' FloatSlider whose value is always one the page's slider shows exactly, so that the
  page never sends back a value the kernel did not set (see ``page_value``).
- ``when_idle(fn)``: work that the first picture does not need (e.g. backgrounds for other slider positions), done
  once the kernel has nothing else to do.
"""

from __future__ import annotations

import asyncio
import functools
import html
import math
import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import parse_qs

import ipywidgets as widgets
from matplotlib.figure import Figure
from torch import nn
from traitlets import CFloat

from ..data import Data, as_image_set
from ..live_accuracy import LiveAccuracy
from ..plots import FigureImage, KeyedFigureImage

__all__ = ["Explorer", "MeteredExplorer", "AccuracyMeter", "FloatSlider", "page_value", "projector_mode"]

PROJECTOR_QUERY = "projector"              # .../voila/render/explore_thresholds.ipynb?projector
PROJECTOR_VARIABLE = "PRUNELAB_PROJECTOR"  # PRUNELAB_PROJECTOR=1 voila notebooks/explore_thresholds.ipynb
PROJECTOR_TEXT_PX = 16                     # the smallest widget text in projector mode
PROJECTOR_PIXEL_RATIO = 2                  # device pixels per CSS pixel of the figure in projector mode
PROJECTOR_CLASS = "prunelab-projector"     # the CSS class that scopes the projector style sheet


def projector_mode(environ: Mapping[str, str] | None = None) -> bool:
    """Whether explorers are drawn for a projector. The page's query string decides when it names ``projector``
    (``?projector``, ``?projector=1`` on; ``?projector=0``, ``=off``, ``=false``, ``=no`` off): Voila puts it in
    the kernel's environment as ``QUERY_STRING``. Otherwise ``PRUNELAB_PROJECTOR`` (``1``, ``true``, ``yes``,
    ``on``). ``environ``: default ``os.environ``."""
    environ = os.environ if environ is None else environ
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if PROJECTOR_QUERY in query:
        return query[PROJECTOR_QUERY][-1].strip().lower() not in {"0", "off", "false", "no"}
    return environ.get(PROJECTOR_VARIABLE, "").strip().lower() in {"1", "on", "true", "yes"}


def projector_css(text_px: int = PROJECTOR_TEXT_PX) -> str:
    """The projector style sheet, scoped to ``.prunelab-projector``: ipywidgets' own text (labels, readouts,
    buttons, dropdowns) through its CSS variables, buttons as wide as their text, and the explorers' HTML, whose
    smaller inline sizes (``font-size:6px`` .. ``15px``) are raised to ``text_px``; larger ones (a headline's
    figure) stay."""
    scope = f".{PROJECTOR_CLASS}"
    small = ", ".join(f'{scope} [style*="font-size:{n}px"], {scope} [style*="font-size: {n}px"]'
                      for n in range(6, text_px))
    return (f"{scope} {{--jp-widgets-font-size: {text_px}px; --jp-ui-font-size1: {text_px}px; "
            f"--jp-content-font-size1: {text_px}px; --jp-code-font-size: {text_px}px; "
            f"--jp-widgets-inline-height: {2 * text_px}px; font-size: {text_px}px}}\n"
            f"{scope} .widget-html-content {{font-size: {text_px}px; line-height: 1.35}}\n"
            f"{scope} .jupyter-button {{width: auto; min-width: var(--jp-widgets-inline-width-short); "
            f"padding: 0 {text_px // 2}px}}\n"
            f"{small} {{font-size: {text_px}px !important}}\n")


_projector_style: widgets.HTML | None = None


# ---------------------------------------------------------------------------------------------------- sliders
def page_value(value: float, low: float, high: float, step: float) -> float:
    """The value the page's slider (noUiSlider 15 in ipywidgets 8) makes of ``value`` on [low, high] with ``step``:
    its position p = 100 (v − low) / (high − low) in percent, rounded to a multiple of the step in percent,
    100 step / (high − low), clamped to [0, 100] and turned back into p (high − low) / 100 + low, in the same
    order of float operations as its JavaScript (doubles on both sides), with JavaScript's Math.round."""
    span = high - low
    if value >= high:
        p = 100.0
    else:
        p = 100 * (value + abs(low) if low < 0 else value - low) / span / (100 / (100 - 0))
        step_pct = 100 * step / span / (100 / (100 - 0))
        p = 0 + math.floor((p - 0) / step_pct + 0.5) * step_pct
    p = max(min(p, 100.0), 0.0)
    if p >= 100:
        return float(high)
    return (p - 0) * (100 / (100 - 0)) * span / 100 + low


def _on_a_grid(slider: widgets.FloatSlider, value) -> bool:
    return bool(slider.step) and slider.max > slider.min and isinstance(value, float) and math.isfinite(value)


def _to_page(value: float, slider: widgets.FloatSlider):
    """The value as sent to the page: already the one its slider will show (``page_value``)."""
    return page_value(value, slider.min, slider.max, slider.step) if _on_a_grid(slider, value) else value


def _from_page(value: float, slider: widgets.FloatSlider):
    """A value from the page, back on the kernel's grid: 0.8800000000000001 is 0.88 (the step's decimals)."""
    if not _on_a_grid(slider, value):
        return value
    decimals = f"{slider.step:.12g}".partition(".")[2]
    return round(value, len(decimals)) if "e" not in decimals else value


class FloatSlider(widgets.FloatSlider):
    """ipywidgets' FloatSlider that sends the page each value as the page's slider will show it (``page_value``)
    and reads the page's values back on its own grid (0.8800000000000001 is 0.88), so that ``value`` stays what the
    code set (0.88, or an allocation's 0.9034) and the page never answers with a value of its own. With the plain
    widget the page sends back every value it rounds differently (0.88 on a slider up to 0.99 becomes
    0.8800000000000001); when the code has set other values since (a check cell that moves a slider and then
    resets it), that late answer arrives after them and puts the explorer back where the code had left it."""

    value = CFloat(0.0, help="Float value").tag(sync=True, to_json=_to_page, from_json=_from_page)


def projector_style() -> widgets.HTML:
    """One hidden widget (shared by every explorer of the kernel) that holds the projector style sheet."""
    global _projector_style
    if _projector_style is None:
        _projector_style = widgets.HTML(f"<style>{projector_css()}</style>",
                                        layout=widgets.Layout(display="none"))
    return _projector_style


class AccuracyMeter:
    """The accuracy of ``model`` on ``data`` while controls move its masks or weights.

    When one pass over ``data`` takes at most ``exact_budget`` seconds (``passes`` of them per event, e.g. one per
    model copy), every event measures all of ``data`` (``exact_while_moving``). Otherwise an event measures an
    estimate on a fixed subset of ``estimate_images`` images, by default as many as ``passes`` passes over them
    fit in ``exact_budget`` (at least ``MIN_ESTIMATE_IMAGES``), and ``settle()``, called once the controls rest,
    measures the exact figure. Both run from the first layer that changed (``LiveAccuracy``).

    ``baseline``: the accuracy before any event; ``value`` and ``is_exact``: the latest figure;
    ``seconds_per_image``: one image's share of a whole pass. A meter for another copy of the same model (a masked
    copy, ``prunelab.masks.copy_model``) on the same data shares the first one's (``like``): its timing decision,
    its estimate images and what the copies compute before their first weights (``LiveAccuracy(like=)``).
    ``max_estimate_images``: a bound on the estimate's size when the meter chooses it (each image's activations are
    kept: memory). ``keep=False``: this meter keeps no layer output and reruns its model from the images after every change (for
    masks that change many weights at once, where updating a kept output never pays).
    """

    MIN_ESTIMATE_IMAGES = 200   # fewer would make the estimate's spread larger than the changes it should show

    def __init__(self, model: nn.Module, data: Data, *, exact_budget: float = 0.1, estimate_images: int | None = None,
                 passes: int = 1, like: AccuracyMeter | None = None, keep: bool = True,
                 max_estimate_images: int | None = None):
        data = like.data if like is not None else as_image_set(data, "The accuracy readout")
        self.data = data
        budget = {} if keep else {"max_cache_bytes": 0}
        self.exact = LiveAccuracy(model, data, like=like.exact if like is not None else None, **budget)
        if like is None:
            self.baseline = self.exact.accuracy()      # the first pass also normalises the images: time another
            if self.exact.seconds < 10 * exact_budget:
                self.exact.accuracy(None)
            self.seconds_per_image = self.exact.seconds / len(data)
            self.exact_while_moving = passes * self.exact.seconds <= exact_budget
        else:
            self.baseline, self.exact_while_moving = like.baseline, like.exact_while_moving
            self.seconds_per_image = like.seconds_per_image
        if estimate_images is None and like is not None:
            estimate_images = like.n_estimate
        elif estimate_images is None and not self.exact_while_moving:
            estimate_images = max(self.MIN_ESTIMATE_IMAGES, int(exact_budget / passes / self.seconds_per_image))
            estimate_images = min(estimate_images, max_estimate_images or estimate_images)
        elif estimate_images is None:
            estimate_images = len(data)
        self.n_estimate = min(estimate_images, len(data))
        if self.exact_while_moving:
            self.estimate = None
        elif like is not None and like.estimate is not None and like.n_estimate == self.n_estimate:
            self.estimate = LiveAccuracy(model, like.estimate.data, like=like.estimate, **budget)  # one subset
        else:
            self.estimate = LiveAccuracy(model, data.subset(self.n_estimate, seed=0), **budget)
        self.value, self.is_exact = self.baseline, True
        self._changed_since_exact: list[str] | None = []

    def measure(self, changed: list[str] | None, *, exact: bool = False) -> None:
        """After the layers ``changed`` moved (None: anything may have; [] nothing): the exact figure when it is
        fast enough or ``exact`` is asked for, else an estimate."""
        if changed is not None and not changed:
            return
        pending = self._changed_since_exact
        pending = None if changed is None or pending is None else sorted({*pending, *changed})
        if exact or self.exact_while_moving:
            self.value, self.is_exact = self.exact.accuracy(pending), True
            self._changed_since_exact = []
        else:
            self.value, self.is_exact = self.estimate.accuracy(changed), False
            self._changed_since_exact = pending

    def settle(self) -> None:
        """The exact figure now, when the latest one is an estimate."""
        if not self.is_exact:
            changed, self._changed_since_exact = self._changed_since_exact, []
            self.value, self.is_exact = self.exact.accuracy(changed), True

    def where(self, when: str = "the slider rests", *, exact: bool | None = None) -> str:
        """HTML: which images a figure is on (the latest one, or one that is ``exact`` or not): "all 10,000
        test images" or an estimate's note."""
        if self.is_exact if exact is None else exact:
            return f"all {self.data.images_label()}"
        return f"<i>estimate on {self.data.images_label(self.n_estimate)}; the exact figure follows when {when}</i>"


class Explorer:
    """Base class. Subclasses build ``self.view`` and wrap their callbacks with ``self.handler``."""

    settle_delay = 0.4   # seconds of rest before the exact (slow) result is computed
    idle_delay = 2.0     # seconds after the cell before ``when_idle`` work starts (the page draws the widgets first)

    def __init__(self) -> None:
        self.projector = projector_mode()
        self.pixel_ratio = PROJECTOR_PIXEL_RATIO if self.projector else 1
        self._projector_view: widgets.Box | None = None
        self.error: BaseException | None = None
        self.error_box = widgets.HTML(layout=widgets.Layout(display="none"))
        self.event_seconds: list[float] = []
        self.view: widgets.Widget = widgets.VBox()
        self.readout = widgets.HTML()                  # the figures in words, under the plot
        self.image = widgets.Image(format="png")       # the plot (see plots.FigureImage)
        self._pending: asyncio.TimerHandle | None = None
        self._later: Callable[[], None] | None = None
        self._quiet = False

    # ---------------------------------------------------------------- controls
    def observe(self, callbacks: dict[widgets.Widget, Callable]) -> None:
        """Call each control's callback (through ``handler``) when its value changes."""
        for control, callback in callbacks.items():
            control.observe(self.handler(callback), names="value")

    def make_reset_button(self, tooltip: str) -> widgets.Button:
        """A "reset" button that calls ``self.reset()`` (through ``handler``)."""
        button = widgets.Button(description="reset", icon="undo", tooltip=tooltip)
        button.on_click(self.handler(lambda _: self.reset()))
        return button

    # ---------------------------------------------------------------- widgets set from code
    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Inside the block, observers that check ``self._quiet`` ignore widget changes (also after an error)."""
        before, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = before

    # ---------------------------------------------------------------- display
    def _repr_mimebundle_(self, **kwargs):
        return self.display_widget()._repr_mimebundle_(**kwargs)

    def display_widget(self) -> widgets.Widget:
        """What displaying the explorer shows: ``view``, and in projector mode ``view`` in a box of class
        ``prunelab-projector`` together with the (hidden) projector style sheet."""
        if not self.projector:
            return self.view
        if self._projector_view is None or self._projector_view.children[1] is not self.view:
            self._projector_view = widgets.VBox([projector_style(), self.view])
            self._projector_view.add_class(PROJECTOR_CLASS)
        return self._projector_view

    def figure_renderer(self, fig: Figure, animated: list | None = None, *, keyed: bool = False) -> FigureImage:
        """The renderer (``FigureImage``, or ``KeyedFigureImage`` when ``keyed``) of ``fig`` into ``self.image``.
        The image is shown at the figure's own size, width × dpi CSS pixels (scaled down whole where the page is
        narrower), and drawn with ``pixel_ratio``
        device pixels per CSS pixel (2 in projector mode): text and lines keep their size, with twice the
        detail. Call it before the first drawing: it sets the figure's dpi."""
        self.image.layout.width = f"{round(fig.get_figwidth() * fig.dpi)}px"
        self.image.layout.max_width = "100%"         # in a narrower notebook, scaled down whole: never cut
        self.image.layout.height = "auto"            # the height follows the width: never stretched
        fig.set_dpi(fig.dpi * self.pixel_ratio)
        return (KeyedFigureImage if keyed else FigureImage)(fig, animated)

    # ---------------------------------------------------------------- callbacks
    def handler(self, fn: Callable) -> Callable:
        """``fn`` timed and with its errors shown in the explorer (the last good figure stays)."""
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            start = time.perf_counter()
            self.clear_error()          # a new event replaces the last message (an error inside it shows)
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 -- shown to the user, not swallowed: see error_box
                self.show_error(exc)
                return None
            self.event_seconds.append(time.perf_counter() - start)
            return result
        return wrapped

    def show_error(self, exc: BaseException) -> None:
        self.error = exc
        tb = "".join(traceback.format_exception(exc)[-3:])
        self.error_box.value = (f"<div style='color:#b00020;border:1px solid #b00020;padding:4px'>"
                                f"<b>{html.escape(type(exc).__name__)}:</b> {html.escape(str(exc))}"
                                f"<details><summary>traceback</summary><pre>{html.escape(tb)}</pre></details></div>")
        self.error_box.layout.display = None

    def clear_error(self) -> None:
        if self.error is not None:
            self.error = None
            self.error_box.value = ""
            self.error_box.layout.display = "none"

    # ---------------------------------------------------------------- fast now, exact later
    def later(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the controls have been still for ``settle_delay`` s (at once without an event loop)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._later = self.handler(fn)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.settle()
            return
        self._pending = loop.call_later(self.settle_delay, self.settle)

    def when_idle(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` ``idle_delay`` s after the current cell, once the page has had time to draw the widgets (at
        once without an event loop). For work the first picture does not need; an error in it is shown in the
        explorer, and an error already shown stays."""
        def run() -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 -- shown to the user, not swallowed: see error_box
                self.show_error(exc)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            run()
            return
        loop.call_later(self.idle_delay, run)

    def settle(self) -> None:
        """Run the pending exact computation now, if there is one."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        fn, self._later = self._later, None
        if fn is not None:
            fn()


class MeteredExplorer(Explorer):
    """An explorer whose readout is the accuracy of one model: it sets ``self.meter`` (an ``AccuracyMeter``) and
    draws everything in ``_redraw()``."""

    meter: AccuracyMeter

    def _redraw(self) -> None:
        raise NotImplementedError

    def update(self, changed: list[str] | None) -> None:
        """After the layers ``changed`` moved (None: anything may have): accuracy (exact, or an estimate now and
        the exact figure once the controls rest), then the figure and the readout."""
        self.meter.measure(changed)
        if not self.meter.is_exact:
            self.later(self._exact_accuracy)
        self._redraw()

    def _exact_accuracy(self) -> None:
        self.meter.settle()
        self._redraw()

    @property
    def accuracy(self) -> float:
        """The latest accuracy (fraction): exact, or an estimate while the controls move (``accuracy_is_exact``)."""
        return self.meter.value

    @property
    def accuracy_is_exact(self) -> bool:
        return self.meter.is_exact

    @property
    def baseline(self) -> float:
        """The accuracy before any control moved."""
        return self.meter.baseline
