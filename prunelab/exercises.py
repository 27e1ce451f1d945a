"""Exercises with an automatic check: a learner gets a clear pass / fail message, never a crash.

A notebook defines each exercise once, with a function that says what is wrong with an answer (or
nothing when it is right)::

    ex = Exercise("2.1", "v_thr that prunes 75% of fc2", lambda v: None if ok(v) else "too high: ...")
    ex(...)          # not answered yet: says so, returns False
    ex(answer)       # prints "✅ 2.1 passed" or "❌ 2.1: <what is wrong>", returns True / False

The solution cell (collapsed in the notebook) calls ``assert ex(solution)``, so the test run checks that
every solution passes its own checker.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

__all__ = ["Exercise", "close_to"]


class Exercise:
    """One exercise: ``problem(answer)`` returns None when the answer is right, else what is wrong."""

    def __init__(self, number: str, title: str, problem: Callable[[Any], str | None]):
        self.number, self.title, self.problem = number, title, problem

    def __call__(self, answer: Any = ...) -> bool:
        if answer is ...:
            self._say("✏️", f"{self.number} — {self.title}: not answered yet. Replace the ... with your answer "
                            "and run the cell again.", "#555")
            return False
        try:
            wrong = self.problem(answer)
        except Exception as exc:  # noqa: BLE001 -- a wrong type of answer is feedback, not a crash
            wrong = f"the check could not use this answer ({type(exc).__name__}: {exc})"
        if wrong is None:
            self._say("✅", f"{self.number} passed — {self.title}.", "#1b7a1b")
            return True
        self._say("❌", f"{self.number} not yet: {wrong}", "#b00020")
        return False

    @staticmethod
    def _say(mark: str, text: str, color: str) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import HTML, display

            if get_ipython() is not None:
                display(HTML(f"<div style='color:{color}'>{mark} {html.escape(text)}</div>"))
                return
        except ImportError:
            pass
        print(mark, text)


def close_to(expected: float, *, rel: float = 1e-6, abs_tol: float = 1e-9, what: str = "the value") -> Callable:
    """A ``problem`` function: the answer must be a number within ``rel`` (relative) of ``expected``."""
    def problem(answer) -> str | None:
        value = float(answer)
        if math.isclose(value, expected, rel_tol=rel, abs_tol=abs_tol):
            return None
        direction = "too high" if value > expected else "too low"
        return f"{what} {value:.6g} is {direction}."
    return problem
