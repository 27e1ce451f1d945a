"""Exercises with an automatic check: a learner gets a clear pass / fail message, never a crash.

A notebook defines each exercise once, with a function that says what is wrong with an answer (or
nothing when it is right)::

    ex = Exercise("2.1", "v_thr that prunes 75% of fc2", lambda v: None if ok(v) else "too high: ...")
    ex(...)          # not answered yet: shows "TO DO 2.1 — ...: not answered yet ...", returns False
    ex(answer)       # shows "PASSED 2.1 — ..." or "NOT YET 2.1: <what is wrong>", returns True / False

The verdict is a word on a coloured label (green PASSED, red NOT YET, grey TO DO), not an emoji: emoji fonts
are missing on many machines, and a missing glyph is an empty box. Where no HTML is shown (a terminal, a
plain-text output) the same message reads ``[passed] 2.1 — ...``, ``[not yet] 2.1: ...`` or ``[to do] ...``.

A lesson defines its checks in one collapsed code cell tagged ``exercise-checks`` (they measure the answer, they do
not show it); the learner's answer cell holds ``answer = ...`` and ``ex_2_1(answer)``. Run All never runs a
solution: each is folded Markdown after its exercise (a ``<details>`` block with the code), opened on purpose.
``prunelab.editions`` builds from the lessons an instructor edition, where each solution runs in its answer cell and
an nbgrader test cell asserts ``ex_2_1.check(answer).verdict == "passed"``, and a student edition without them;
``tests/test_editions.py`` runs every instructor edition, so every solution is checked against its own checker.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Exercise", "Feedback", "close_to"]

Verdict = Literal["passed", "not yet", "to do"]

# label background per verdict; the label's text is white, so it reads on light and dark themes alike
COLOURS: dict[Verdict, str] = {"passed": "#1b7a1b", "not yet": "#b00020", "to do": "#595959"}


@dataclass(frozen=True, repr=False)
class Feedback:
    """What a check says: a verdict and one sentence; HTML shows the verdict as a coloured word, text as [verdict]."""

    verdict: Verdict
    text: str

    def __repr__(self) -> str:
        return f"[{self.verdict}] {self.text}"

    __str__ = __repr__

    def _repr_html_(self) -> str:
        label = (f"<span style='background:{COLOURS[self.verdict]};color:#fff;font-weight:bold;"
                 f"padding:0 0.4em;border-radius:3px'>{self.verdict.upper()}</span>")
        kind = "prunelab-" + self.verdict.replace(" ", "-")
        return f"<div class='prunelab-exercise {kind}'>{label} {html.escape(self.text)}</div>"


class Exercise:
    """One exercise: ``problem(answer)`` returns None when the answer is right, else what is wrong."""

    def __init__(self, number: str, title: str, problem: Callable[[Any], str | None]):
        self.number, self.title, self.problem = number, title, problem

    def check(self, answer: Any = ...) -> Feedback:
        """The verdict on ``answer`` (``...``: not answered yet), without showing it."""
        if answer is ...:
            return Feedback("to do", f"{self.number} — {self.title}: not answered yet. Replace the ... with your "
                                     "answer and run the cell again.")
        try:
            wrong = self.problem(answer)
        except Exception as exc:  # noqa: BLE001 -- a wrong type of answer is feedback, not a crash
            wrong = f"the check could not use this answer ({type(exc).__name__}: {exc})"
        if wrong is None:
            return Feedback("passed", f"{self.number} — {self.title}.")
        return Feedback("not yet", f"{self.number}: {wrong}")

    def __call__(self, answer: Any = ...) -> bool:
        """Show the verdict on ``answer`` below the cell (printed outside IPython); True when it passed."""
        feedback = self.check(answer)
        _show(feedback)
        return feedback.verdict == "passed"


def _show(feedback: Feedback) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(feedback)       # text/html and text/plain: each front end shows what it can
            return
    except ImportError:
        pass
    print(feedback)


def close_to(expected: float, *, rel: float = 1e-6, abs_tol: float = 1e-9, what: str = "the value") -> Callable:
    """A ``problem`` function: the answer must be a number within ``rel`` (relative) of ``expected``."""
    def problem(answer) -> str | None:
        value = float(answer)
        if math.isclose(value, expected, rel_tol=rel, abs_tol=abs_tol):
            return None
        direction = "too high" if value > expected else "too low"
        return f"{what} {value:.6g} is {direction}."
    return problem
