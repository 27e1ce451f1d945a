"""What every explorer shares: it is an object that owns its widgets, figure and state.

- ``view``: the widget to show; displaying the explorer itself shows it.
- Every callback goes through ``handler``, which times it (``event_seconds``, kernel side) and shows an
  error in the explorer itself (``error_box``, and ``error`` holds the exception) instead of losing it in
  the browser's log.
- Slow work can be split in two: a fast result at once, the exact one once the slider rests
  (``later``). In a running kernel "later" is ``settle_delay`` seconds after the last event; with no event
  loop (a script, a test) it is at once. ``settle()`` does it now.
"""

from __future__ import annotations

import asyncio
import functools
import html
import time
import traceback
from collections.abc import Callable

import ipywidgets as widgets

__all__ = ["Explorer"]


class Explorer:
    """Base class. Subclasses build ``self.view`` and wrap their callbacks with ``self.handler``."""

    settle_delay = 0.4   # seconds of rest before the exact (slow) result is computed

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.error_box = widgets.HTML(layout=widgets.Layout(display="none"))
        self.event_seconds: list[float] = []
        self.view: widgets.Widget = widgets.VBox()
        self._pending: asyncio.TimerHandle | None = None
        self._later: Callable[[], None] | None = None

    # ---------------------------------------------------------------- display
    def _repr_mimebundle_(self, **kwargs):
        return self.view._repr_mimebundle_(**kwargs)

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

    def settle(self) -> None:
        """Run the pending exact computation now, if there is one."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        fn, self._later = self._later, None
        if fn is not None:
            fn()
