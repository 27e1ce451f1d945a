"""The course guides: every lesson says which part of the course it is in and ends by linking the next lesson,
notebook 01 ends with the map of all parts, and every link between the notebooks leads to a file.

The parts are defined once, in the README's table after ``<!-- course:parts -->``: what a reader of the README
sees is what the notebooks are checked against, so the two cannot drift apart. A new lesson
(``notebooks/NN_*.ipynb``) is checked as soon as it exists: it needs a row in that table, the part line and a
Next link, and the lesson before it must link to it.
"""

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from conftest import REPO

NOTEBOOKS = REPO / "notebooks"
FIRST = NOTEBOOKS / "01_start_here.ipynb"
LINK = re.compile(r"\[([^\]]+)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")   # [text](target "title")
HTML_LINK = re.compile(r"""<(?:a|img)\s[^>]*?(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)


def lessons() -> list[Path]:
    """The numbered lessons, in order: notebooks/NN_*.ipynb."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def number(lesson: Path) -> str:
    return lesson.name[:2]


def markdown_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown"]


def title(lesson: Path) -> str:
    """The lesson's name in links, 'NN · Title': its first heading up to the first colon."""
    heading = re.match(r"# (.+)", markdown_cells(lesson)[0])
    assert heading, f"{lesson.name}: the first cell must start with its '# {number(lesson)} · Title' heading"
    return heading.group(1).split(": ")[0].strip()       # "21 · 2:4 sparsity …: …" keeps its 2:4


def parts() -> list[tuple[str, list[str]]]:
    """The README's table of parts: (name, lesson numbers) per part, in order."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "<!-- course:parts -->" in readme, "README.md has no table of parts after <!-- course:parts -->"
    rows = readme.split("<!-- course:parts -->", 1)[1].strip().splitlines()
    table = []
    for row in rows[2:]:                       # after the header and the |---| line
        if not row.startswith("|"):
            break
        name, numbers = (cell.strip() for cell in row.strip().strip("|").split("|"))
        table.append((name, numbers.split(" · ")))
    return table


def part_line(lesson: Path) -> str:
    """The line every lesson's first cell holds: '*Part 2 of 5 · Name:* 02 · **03** · 04 · 05 · 06'."""
    table = parts()
    for k, (name, numbers) in enumerate(table, 1):
        if number(lesson) in numbers:
            listed = " · ".join(f"**{n}**" if n == number(lesson) else n for n in numbers)
            return f"*Part {k} of {len(table)} · {name}:* {listed}"
    raise AssertionError(f"{lesson.name} is in no part of README.md's table after <!-- course:parts -->")


def next_lesson(lesson: Path) -> Path:
    """The lesson after this one; after the last, back to 01 (which ends with the map of the course)."""
    order = lessons()
    i = order.index(lesson)
    return order[i + 1] if i + 1 < len(order) else FIRST


def next_paragraph(lesson: Path) -> str:
    """The last paragraph of the lesson's last cell, which must be its '**Next:** [NN · Title](file)' line."""
    cells = json.loads(lesson.read_text(encoding="utf-8"))["cells"]
    assert cells[-1]["cell_type"] == "markdown", f"{lesson.name} must end with a markdown cell (summary and Next)"
    return "".join(cells[-1]["source"]).strip().split("\n\n")[-1]


def test_the_parts_hold_every_lesson_once_in_order():
    table = parts()
    listed = [n for _, numbers in table for n in numbers]
    assert listed == [number(lesson) for lesson in lessons()], (
        "README.md's table of parts (after <!-- course:parts -->) must list every notebooks/NN_*.ipynb once, in order")
    assert listed == [f"{i:02d}" for i in range(1, len(listed) + 1)], "lessons are numbered 01, 02, ... without gaps"
    assert 3 <= len(table) <= 8 and all(name and numbers for name, numbers in table)


@pytest.mark.parametrize("lesson", lessons(), ids=lambda p: p.name)
def test_each_lesson_says_where_it_sits_in_the_course(lesson):
    first = markdown_cells(lesson)[0].splitlines()
    expected = part_line(lesson)
    said = [line for line in first if line.startswith("*Part ")]
    assert said == [expected], f"{lesson.name}: its first cell needs the line\n{expected}\n(found {said})"


@pytest.mark.parametrize("lesson", lessons(), ids=lambda p: p.name)
def test_each_lesson_ends_by_linking_the_next_one(lesson):
    paragraph = next_paragraph(lesson)
    target = next_lesson(lesson)
    expected = f"**Next:** [{title(target)}]({target.name})"
    assert paragraph.startswith("**Next:**"), (
        f"{lesson.name} must end with a line that starts '{expected}' (found: {paragraph[:120]!r})")
    text, link = LINK.search(paragraph).groups()
    assert (link, " ".join(text.split())) == (target.name, title(target)), (
        f"{lesson.name}: the Next link must lead to the next lesson, '{expected}'")
    assert (NOTEBOOKS / link).is_file()


def test_notebook_01_ends_with_the_map_of_every_part_and_lesson():
    last = "".join(json.loads(FIRST.read_text(encoding="utf-8"))["cells"][-1]["source"])
    items = re.findall(r"^(\d+)\. \*\*(.+?)\*\*: (.+?)(?=^\d+\. |\n\n|\Z)", last, re.M | re.S)
    in_map = [(int(k), name, [(" ".join(text.split()), link) for text, link in LINK.findall(body)])
              for k, name, body in items]
    expected = [(k, name, [(title(lesson), lesson.name)
                           for lesson in lessons() if number(lesson) in numbers])
                for k, (name, numbers) in enumerate(parts(), 1)]
    assert in_map == expected, "01's last cell must list every part ('1. **Name**: ') with a link to each lesson"


def relative_links(notebook: Path) -> list[str]:
    """Targets of the links and images in the notebook's markdown that point into the repository."""
    targets = []
    for text in markdown_cells(notebook):
        text = re.sub(r"`[^`\n]*`", "", text)                   # code spans hold no links
        targets += [target for _, target in LINK.findall(text)] + HTML_LINK.findall(text)
    return [t for t in targets if not urlsplit(t).scheme and not t.startswith(("#", "//"))]


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_every_link_between_notebooks_leads_to_a_file_jupyterlab_can_open(notebook):
    """JupyterLab serves notebooks/ (the README's `jupyter lab notebooks/`), so a link must stay inside it."""
    broken, outside = [], []
    for target in relative_links(notebook):
        path = (NOTEBOOKS / unquote(urlsplit(target).path)).resolve()
        if not path.exists():
            broken.append(target)
        elif not path.is_relative_to(NOTEBOOKS):
            outside.append(target)
    assert not broken, f"{notebook.name} links to files that do not exist: {broken}"
    assert not outside, (f"{notebook.name} links outside notebooks/, which JupyterLab (started on notebooks/) "
                         f"cannot open: {outside}")
