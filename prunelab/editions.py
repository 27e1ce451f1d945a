"""Student and instructor editions of the lessons, built from the notebooks in ``notebooks/``: one source for both.

The lessons in ``notebooks/`` are what learners open (a clone, Binder, Colab), and there Run All never runs a
solution. Their Exercises section starts with one collapsed code cell tagged ``exercise-checks`` that defines every
check (``ex_2_1 = Exercise(...)``, see ``prunelab.exercises``); then each exercise is three cells:

- its statement (Markdown);
- its answer cell, two lines (comment lines may stand above them)::

      v_thr_fc2 = ...            # your answer
      ex_2_1(v_thr_fc2)

  The first line names the answer variable, the second calls the check ``ex_<lesson>_<part>`` on it;
- its solution: a Markdown cell tagged ``solution`` holding a folded block, ``<details><summary>Solution 2.1 ...
  </summary>``, then the code in a fenced ``python`` block, then ``</details>``. The code assigns the answer
  variable; a learner opens the block on purpose and copies the code into the answer cell.

For a class, one command builds two editions of every lesson (``NN_*.ipynb``)::

    python -m prunelab.editions build OUT_DIR

- ``OUT_DIR/instructor/``: each answer cell holds its solution between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION``, after the ``name = ...`` line and before the check; it is an nbgrader solution cell
  (grade_id ``answer_2_1``). After it comes an autograded test cell, locked, worth one point (grade_id
  ``test_2_1``): ``assert ex_2_1.check(v_thr_fc2).verdict == "passed"``, tagged ``raises-exception`` so that
  Run All goes on past a test that fails. The solution cells are gone (their code is in the answer cells) and the
  checks cell is locked, so that nbgrader restores it before grading. It runs top to bottom with every test
  passing: ``tests/test_editions.py`` runs the instructor edition of every lesson, which is how the solutions are
  tested.
- ``OUT_DIR/student/``: the same notebooks without any solution: the answer cells as in the lesson (``...``) and
  the same test cells, which fail until the exercise is answered. This is what ``nbgrader generate_assignment``
  releases from the instructor edition with the configuration below (nbgrader adds checksums, and an empty line
  where the solution was).
- ``OUT_DIR/nbgrader_config.py``: that configuration, for a course directory. The released answer cell keeps its
  ``name = ...`` line instead of nbgrader's ``raise NotImplementedError()``, and a cell may run for 10 minutes
  (nbgrader's default is 30 s; some lessons train for longer).

Hand out ``student/`` as it is (each check still answers PASSED, NOT YET or TO DO), or grade with nbgrader
(pinned in requirements.txt), one assignment per lesson::

    python -m prunelab.editions build class
    mkdir -p course/source/lesson02
    cp class/nbgrader_config.py course/
    cp class/instructor/02_magnitude_pruning.ipynb course/source/lesson02/
    source .venv/bin/activate                  # nbgrader runs `alembic`, which must be on PATH
    cd course
    nbgrader generate_assignment lesson02      # release/lesson02/: what class/student/ holds, with checksums
    # hand out release/lesson02/; put the returned notebooks in submitted/<student id>/lesson02/
    nbgrader autograde lesson02                # restores the checks, runs the test cells: a point per exercise
    nbgrader generate_feedback lesson02        # feedback/<student id>/lesson02/*.html

The Python kernel that grades needs prunelab and its data, as the lessons do.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ExerciseCells", "build", "clear_solution", "exercises", "instructor_edition", "lessons", "read",
           "student_edition", "write"]

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
POINTS = 1                     # per exercise
CHECKS_TAG, SOLUTION_TAG = "exercise-checks", "solution"
RAISES = "raises-exception"    # a test cell's tag: Run All goes on past it (JupyterLab, nbclient, nbval)

# the answer cell: comment lines, `name = ...  # ...`, `ex_N_M(name)`
ANSWER = re.compile(r"(?:#[^\n]*\n)*(?P<name>[A-Za-z_]\w*) = \.\.\.[^\n]*\n"
                    r"(?P<check>ex_(?P<lesson>\d+)_(?P<part>\d+))\((?P=name)\)\s*")
# the solution cell: <summary>Solution N.M ...</summary>, then ```python ... ```
SOLUTION = re.compile(r"<summary>Solution (?P<number>\d+\.\d+)\b.*?</summary>.*?```python\n(?P<code>.*?)\n```", re.S)

NBGRADER_CONFIG = '''\
# nbgrader's configuration for prunelab's editions (python -m prunelab.editions build): copy it into the course
# directory, next to source/.
c = get_config()  # noqa: F821 -- nbgrader defines it

# the released answer cell keeps the lesson's `name = ...  # your answer` line above the removed solution
c.ClearSolutions.code_stub = {"python": ""}
# some lessons train for a minute or two in one cell; nbgrader's default is 30 s per cell
c.Execute.timeout = 600
'''


@dataclass(frozen=True)
class ExerciseCells:
    """Where one exercise sits in a lesson: its answer cell and its solution cell (indices into the cells)."""

    number: str        # "2.1"
    check: str         # "ex_2_1", the Exercise the answer cell calls
    name: str          # the answer variable, "v_thr_fc2"
    answer: int
    solution: int
    code: str          # the solution's code; it assigns ``name``

    @property
    def grade_id(self) -> str:
        return self.check.removeprefix("ex_")          # "2_1"


def lessons(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered lessons, in order: NN_*.ipynb."""
    return sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write(nb: dict, path: Path) -> None:
    """As the repository stores notebooks: JSON indented by one, UTF-8 as is, a trailing newline."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(nb, f, indent=1, ensure_ascii=False)
        f.write("\n")


def source(cell: dict) -> str:
    return "".join(cell["source"])


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _assigned_names(code: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def exercises(nb: dict, *, where: str = "the notebook") -> list[ExerciseCells]:
    """Every exercise of a lesson, with its answer variable; ``ValueError`` where a cell breaks the pattern."""
    found, pending = [], None          # pending: the answer cell waiting for its solution
    for i, cell in enumerate(nb["cells"]):
        text = source(cell)
        if cell["cell_type"] == "code" and SOLUTION_TAG in _tags(cell):
            raise ValueError(f"{where}, cell {cell.get('id')}: a solution must be a Markdown cell (Run All would run "
                             "this one)")
        if cell["cell_type"] == "code" and (answer := ANSWER.fullmatch(text)):
            if pending:
                raise ValueError(f"{where}: exercise {pending[1]} has no solution cell")
            pending = (i, f"{answer['lesson']}.{answer['part']}", answer)
        elif cell["cell_type"] == "markdown" and SOLUTION_TAG in _tags(cell):
            solution = SOLUTION.search(text)
            if solution is None:
                raise ValueError(f"{where}, cell {cell.get('id')}: a solution cell holds <summary>Solution N.M"
                                 "</summary> and a ```python block")
            if pending is None or pending[1] != solution["number"]:
                raise ValueError(f"{where}: solution {solution['number']} does not follow the answer cell "
                                 f"`name = ...` / `ex_{solution['number'].replace('.', '_')}(name)` of its exercise")
            i_answer, number, answer = pending
            try:
                assigned = _assigned_names(solution["code"])
            except SyntaxError as exc:
                raise ValueError(f"{where}: solution {number} is not valid Python ({exc})") from exc
            if answer["name"] not in assigned:
                raise ValueError(f"{where}: solution {number} must assign the answer variable {answer['name']}")
            found.append(ExerciseCells(number, answer["check"], answer["name"], i_answer, i, solution["code"]))
            pending = None
    if pending:
        raise ValueError(f"{where}: exercise {pending[1]} has no solution cell")
    return found


def _nbgrader(grade_id: str, *, grade: bool = False, solution: bool = False, locked: bool = False) -> dict:
    """nbgrader's cell metadata, schema version 3 (nbgrader/nbgraderformat/v3.json)."""
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution,
            "task": False}
    if grade:
        meta["points"] = POINTS
    return dict(sorted(meta.items()))


def _with_solution(answer_cell: str, code: str) -> str:
    """The answer cell with the solution between the markers, after the `name = ...` line, before the check."""
    *above, check = answer_cell.rstrip("\n").split("\n")
    return "\n".join([*above, BEGIN, code.rstrip("\n"), END, check])


def _test_cell(exercise: ExerciseCells) -> dict:
    return {"cell_type": "code", "execution_count": None, "id": f"test-{exercise.grade_id.replace('_', '-')}",
            "metadata": {"nbgrader": _nbgrader(f"test_{exercise.grade_id}", grade=True, locked=True),
                         "tags": [RAISES]},
            "outputs": [], "source": _lines(f'assert {exercise.check}.check({exercise.name}).verdict == "passed"')}


def instructor_edition(nb: dict, *, where: str = "the notebook") -> dict:
    """Solutions in the answer cells (nbgrader solution cells), a locked test cell after each, checks locked."""
    found = exercises(nb, where=where)
    edition = copy.deepcopy(nb)
    cells = edition["cells"]
    for cell in cells:
        if cell["cell_type"] == "code" and CHECKS_TAG in _tags(cell):
            cell["metadata"]["nbgrader"] = _nbgrader("exercise_checks", locked=True)
    tests = {}
    for exercise in found:
        answer = cells[exercise.answer]
        answer["source"] = _lines(_with_solution(source(answer), exercise.code))
        answer["metadata"]["nbgrader"] = _nbgrader(f"answer_{exercise.grade_id}", solution=True)
        tests[exercise.answer] = _test_cell(exercise)
    solutions = {exercise.solution for exercise in found}
    edition["cells"] = [c for i, cell in enumerate(cells) if i not in solutions
                        for c in ([cell, tests[i]] if i in tests else [cell])]
    ids = [cell.get("id") for cell in edition["cells"]]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: cell ids clash with the test cells' ids (test-N-M)")
    return edition


def clear_solution(text: str) -> str:
    """The cell without its ### BEGIN SOLUTION ... ### END SOLUTION lines."""
    kept, inside = [], False
    for line in text.split("\n"):
        if line.strip() == BEGIN:
            inside = True
        elif line.strip() == END:
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept)


def student_edition(instructor: dict) -> dict:
    """The instructor edition without its solutions: what nbgrader generate_assignment releases (answer cells
    cannot be deleted, locked cells cannot be edited either), less its checksums."""
    edition = copy.deepcopy(instructor)
    for cell in edition["cells"]:
        grading = cell["metadata"].get("nbgrader", {})
        if grading.get("solution"):
            cell["source"] = _lines(clear_solution(source(cell)))
        if grading.get("solution") or grading.get("locked"):
            cell["metadata"]["deletable"] = False
        if grading.get("locked"):
            cell["metadata"]["editable"] = False
    return edition


def build(out_dir: Path, notebooks: Path = NOTEBOOKS) -> list[Path]:
    """Write out_dir/instructor/ and out_dir/student/ (every lesson) and out_dir/nbgrader_config.py."""
    out_dir = Path(out_dir)
    written = []
    for folder in ("instructor", "student"):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    for lesson in lessons(notebooks):
        instructor = instructor_edition(read(lesson), where=lesson.name)
        for folder, edition in (("instructor", instructor), ("student", student_edition(instructor))):
            write(edition, out_dir / folder / lesson.name)
            written.append(out_dir / folder / lesson.name)
    (out_dir / "nbgrader_config.py").write_text(NBGRADER_CONFIG, encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prunelab.editions", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("build", help="write OUT_DIR/instructor/, OUT_DIR/student/ and "
                                                "OUT_DIR/nbgrader_config.py")
    command.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    command.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="the lessons' folder (default: %(default)s)")
    args = parser.parse_args(argv)
    written = build(args.out_dir, args.notebooks)
    n_exercises = sum(len(exercises(read(lesson))) for lesson in lessons(args.notebooks))
    print(f"{len(written) // 2} lessons, {n_exercises} exercises: {args.out_dir / 'instructor'} (solutions, "
          f"nbgrader test cells), {args.out_dir / 'student'} (no solutions), {args.out_dir / 'nbgrader_config.py'}")


if __name__ == "__main__":
    main()
