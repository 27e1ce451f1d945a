"""Exercise checks: the verdict is a word in text and colour (PASSED / NOT YET / TO DO), never an emoji."""

import re

import pytest

from prunelab.exercises import COLOURS, Exercise, Feedback, close_to

# pictographs, dingbats (✅ ❌ ✏), arrows-and-symbols blocks and the emoji variation selector
EMOJI = re.compile("[\u2600-\u27bf\u2b00-\u2bff\ufe0f\U0001f000-\U0001faff]")


@pytest.fixture
def ex():
    return Exercise("2.1", "v_thr that prunes 75% of fc2", close_to(0.25, rel=0.01, what="v_thr"))


def test_each_verdict_says_what_happened_in_words(ex):
    assert repr(ex.check()).startswith("[to do] 2.1 — v_thr that prunes 75% of fc2: not answered yet")
    assert str(ex.check(0.25)) == "[passed] 2.1 — v_thr that prunes 75% of fc2."
    assert str(ex.check(0.5)) == "[not yet] 2.1: v_thr 0.5 is too high."
    assert ex.check("a string").verdict == "not yet" and "could not use this answer" in ex.check("a string").text


@pytest.mark.parametrize("answer, word, colour", [(0.25, "PASSED", "#1b7a1b"), (0.1, "NOT YET", "#b00020"),
                                                  (..., "TO DO", "#595959")])
def test_html_shows_the_verdict_as_a_coloured_word_and_no_emoji(ex, answer, word, colour):
    shown = ex.check(answer)._repr_html_()
    assert re.search(rf"<span style='background:{colour};color:#fff;[^']*'>{word}</span>", shown)
    assert COLOURS[ex.check(answer).verdict] == colour
    assert not EMOJI.search(shown) and not EMOJI.search(repr(ex.check(answer)))


def test_the_text_is_escaped_in_html():
    shown = Feedback("not yet", "1.2: 3 < 4 & <b>")._repr_html_()
    assert "3 &lt; 4 &amp; &lt;b&gt;" in shown and "<b>" not in shown


def test_calling_the_exercise_prints_the_plain_text_verdict_outside_ipython_and_returns_whether_it_passed(ex, capsys):
    assert ex(0.25) is True
    assert ex(1.0) is False
    assert ex() is False
    assert capsys.readouterr().out.splitlines() == [
        "[passed] 2.1 — v_thr that prunes 75% of fc2.",
        "[not yet] 2.1: v_thr 1 is too high.",
        "[to do] 2.1 — v_thr that prunes 75% of fc2: not answered yet. Replace the ... with your answer and run "
        "the cell again."]


def test_in_ipython_the_verdict_is_displayed_with_an_html_and_a_text_form(ex, monkeypatch):
    import IPython
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", shown.append)
    assert ex(0.25)
    (feedback,) = shown
    assert isinstance(feedback, Feedback) and "PASSED" in feedback._repr_html_()
    assert repr(feedback) == "[passed] 2.1 — v_thr that prunes 75% of fc2."
