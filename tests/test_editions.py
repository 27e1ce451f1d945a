"""The student and instructor editions (prunelab.editions), and that Run All in a lesson never runs a solution.

The lessons hold their solutions as folded Markdown, so nbval (which runs the lessons) no longer runs them; the
instructor editions do, here: every lesson's instructor edition runs top to bottom and each of its autograded
test cells passes. That is the check of every solution. The two short lessons in SHORT are run here in full, both
editions, and nbgrader releases and validates one of them; the other lessons' instructor editions run in
``test_every_solution_passes_in_the_instructor_edition``: 6 to 7.5 minutes for lessons 01-17 on a shared 2-core
CPU with one torch thread (load 3-5). Select them with ``-k every_solution``, leave them out with
``-k "not every_solution"`` (2 minutes there).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO
from prunelab import editions

NOTEBOOKS = REPO / "notebooks"
LESSONS = editions.lessons(NOTEBOOKS)
SHORT = ["14_pytorch_pruning_apis.ipynb", "17_transformers_for_pruners.ipynb"]   # the quickest two to run
GRADED = SHORT[0]                                      # the lesson nbgrader releases and validates here


def has_exercises(lesson):
    try:
        return bool(editions.exercises(editions.read(lesson)))
    except ValueError:
        return True                 # its tests below say what is wrong


WITH_EXERCISES = [lesson for lesson in LESSONS if has_exercises(lesson)]


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    """edition("instructor" or "student", lesson name): its path, built once per lesson, as `build` writes it (a
    lesson that breaks the pattern fails its own tests only)."""
    out = tmp_path_factory.mktemp("editions")

    def path(folder, name):
        if not (out / folder / name).exists():
            instructor = editions.instructor_edition(editions.read(NOTEBOOKS / name), where=name)
            for kind, nb in (("instructor", instructor), ("student", editions.student_edition(instructor))):
                (out / kind).mkdir(exist_ok=True)
                editions.write(nb, out / kind / name)
        return out / folder / name
    return path


def cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def nbgrader(cell):
    return cell["metadata"].get("nbgrader", {})


def is_test(cell):
    return nbgrader(cell).get("grade", False)


def solution_region(cell):
    """The code between ### BEGIN SOLUTION and ### END SOLUTION."""
    match = re.search(r"^### BEGIN SOLUTION\n(.*?)\n### END SOLUTION$", "".join(cell["source"]), re.S | re.M)
    return match.group(1)


def run(path):
    """Top to bottom in a fresh kernel, from notebooks/ as nbval runs the lessons; the executed notebook. Only
    cells tagged raises-exception (the autograded tests) may fail without stopping the run."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def errors(nb):
    return {cell.id: output.ename for cell in nb.cells if cell.cell_type == "code"
            for output in cell.outputs if output.output_type == "error"}


# ------------------------------------------------------------------------------------------- the lessons

@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.name)
def test_run_all_in_a_lesson_never_runs_a_solution(lesson):
    nb = json.loads(lesson.read_text(encoding="utf-8"))
    tagged = [cell for cell in nb["cells"] if "solution" in cell["metadata"].get("tags", [])]
    assert all(cell["cell_type"] == "markdown" for cell in tagged), (
        f"{lesson.name}: a cell tagged `solution` must be Markdown (a folded <details> block), not code")
    assert not any("BEGIN SOLUTION" in "".join(cell["source"]) for cell in nb["cells"])
    found = editions.exercises(nb, where=lesson.name)           # every answer cell has its solution, in order
    assert len(found) == len(tagged)
    for cell in tagged:
        text = "".join(cell["source"])
        assert text.startswith("<details><summary>Solution ") and text.rstrip().endswith("</details>")


@pytest.mark.parametrize("lesson", WITH_EXERCISES, ids=lambda p: p.name)
def test_the_checks_are_in_one_collapsed_cell_and_the_answer_cells_hold_two_lines(lesson):
    nb = editions.read(lesson)
    checks = [cell for cell in nb["cells"] if "exercise-checks" in cell["metadata"].get("tags", [])]
    assert len(checks) == 1 and checks[0]["metadata"]["jupyter"]["source_hidden"] is True
    first_answer = min(exercise.answer for exercise in editions.exercises(nb))
    assert nb["cells"].index(checks[0]) < first_answer
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and cell is not checks[0]:
            assert "Exercise(" not in "".join(cell["source"]), f"{lesson.name}: checks belong in the checks cell"


# ------------------------------------------------------------------------------------------- the editions

def test_the_command_builds_both_editions_of_every_lesson(tmp_path, capsys):
    editions.main(["build", str(tmp_path)])                     # python -m prunelab.editions build OUT_DIR
    assert f"{len(LESSONS)} lessons" in capsys.readouterr().out
    for folder in ("instructor", "student"):
        assert [p.name for p in editions.lessons(tmp_path / folder)] == [p.name for p in LESSONS]
    assert "ClearSolutions.code_stub" in (tmp_path / "nbgrader_config.py").read_text()


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.name)
def test_the_instructor_edition_holds_each_solution_and_a_locked_test_per_exercise(edition, lesson):
    found = editions.exercises(editions.read(lesson))
    instructor = cells(edition("instructor", lesson.name))
    answers = [cell for cell in instructor if nbgrader(cell).get("solution")]
    tests = [cell for cell in instructor if is_test(cell)]
    assert [solution_region(cell) for cell in answers] == [exercise.code for exercise in found]
    assert ["".join(cell["source"]) for cell in tests] == [
        f'assert {e.check}.check({e.name}).verdict == "passed"' for e in found]
    assert [instructor.index(test) - 1 for test in tests] == [instructor.index(answer) for answer in answers]
    assert all(nbgrader(test)["locked"] and nbgrader(test)["points"] == 1 for test in tests)
    assert [nbgrader(cell)["grade_id"] for cell in answers + tests] == (
        [f"answer_{e.grade_id}" for e in found] + [f"test_{e.grade_id}" for e in found])
    assert not any("solution" in cell["metadata"].get("tags", []) for cell in instructor)


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.name)
def test_the_metadata_follows_nbgraders_schema_version_3(edition, lesson):
    from nbgrader.nbgraderformat import MetadataValidator

    for folder in ("instructor", "student"):
        nb = nbformat.read(edition(folder, lesson.name), as_version=4)
        MetadataValidator().validate_nb(nb)                       # raises on a bad cell or a duplicate grade_id
        assert all(nbgrader(cell)["schema_version"] == 3 for cell in nb.cells if "nbgrader" in cell.metadata)


def code_lines(text):
    """Lines of code without their comments, stripped."""
    return {re.sub(r"\s+#.*$", "", line).strip() for line in text.splitlines()} - {""}


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.name)
def test_the_student_edition_holds_no_solution(edition, lesson):
    instructor = cells(edition("instructor", lesson.name))
    student = cells(edition("student", lesson.name))
    student_text = "\n".join("".join(cell["source"]) for cell in student)
    assert not any("solution" in cell["metadata"].get("tags", []) for cell in student)
    assert "BEGIN SOLUTION" not in student_text and "<details>" not in student_text
    shown = set().union(*(code_lines("".join(cell["source"])) for cell in instructor   # what the lesson shows anyway
                          if not nbgrader(cell).get("solution")))
    for cell in instructor:
        if nbgrader(cell).get("solution"):
            code = solution_region(cell)
            own = {line for line in code_lines(code) if len(line) > 12} - shown
            assert code not in student_text and not own & code_lines(student_text), (
                f"{lesson.name}: solution code in the student edition: {own & code_lines(student_text)}")
    lesson_answers = ["".join(cells(lesson)[e.answer]["source"]) for e in editions.exercises(editions.read(lesson))]
    assert ["".join(cell["source"]) for cell in student if nbgrader(cell).get("solution")] == lesson_answers
    as_graded = lambda nb: [(cell["source"], nbgrader(cell)) for cell in nb if is_test(cell)]
    assert as_graded(student) == as_graded(instructor)
    assert all(cell["metadata"]["editable"] is False for cell in student if nbgrader(cell).get("locked"))


def test_a_broken_exercise_is_refused_with_a_reason():
    nb = editions.read(NOTEBOOKS / "02_magnitude_pruning.ipynb")
    solution = next(cell for cell in nb["cells"] if "solution" in cell["metadata"].get("tags", []))
    as_code = json.loads(json.dumps(nb))
    as_code["cells"][nb["cells"].index(solution)]["cell_type"] = "code"
    with pytest.raises(ValueError, match="must be a Markdown cell"):
        editions.exercises(as_code)
    other_name = json.loads(json.dumps(nb))
    other_name["cells"][nb["cells"].index(solution)]["source"] = [
        "<details><summary>Solution 2.1</summary>\n\n```python\nsomething_else = 1\n```\n\n</details>"]
    with pytest.raises(ValueError, match="must assign the answer variable v_thr_fc2"):
        editions.exercises(other_name)
    del nb["cells"][nb["cells"].index(solution)]
    with pytest.raises(ValueError, match="exercise 2.1 has no solution cell"):
        editions.exercises(nb)


# ------------------------------------------------------------------------------------------- running them

@pytest.mark.parametrize("lesson", SHORT)
def test_the_instructor_edition_of_a_short_lesson_passes_every_autograded_test(edition, lesson):
    nb = run(edition("instructor", lesson))
    tests = [cell for cell in nb.cells if is_test(cell)]
    assert tests and all(cell.execution_count for cell in tests) and errors(nb) == {}


@pytest.mark.parametrize("lesson", SHORT)
def test_the_student_edition_runs_and_only_its_autograded_tests_fail(edition, lesson):
    nb = run(edition("student", lesson))                        # tolerates only the cells tagged raises-exception
    tests = [cell.id for cell in nb.cells if is_test(cell)]
    assert all("raises-exception" in cell.metadata.tags for cell in nb.cells if is_test(cell))
    assert errors(nb) == {test: "AssertionError" for test in tests}
    answers = [cell for cell in nb.cells if nbgrader(cell).get("solution")]
    shown = [o.data["text/plain"] for cell in answers for o in cell.outputs if o.output_type == "display_data"]
    assert len(shown) == len(answers) and all(text.startswith("[to do]") for text in shown)


@pytest.mark.parametrize("lesson", [p.name for p in WITH_EXERCISES if p.name not in SHORT])
def test_every_solution_passes_in_the_instructor_edition(edition, lesson):
    """The CI check of the solutions that nbval no longer runs (SHORT's run above)."""
    assert errors(run(edition("instructor", lesson))) == {}          # the test cells are tagged raises-exception


# ------------------------------------------------------------------------------------------- nbgrader itself

@pytest.fixture(scope="module")
def course(edition, tmp_path_factory):
    """A course directory with GRADED's instructor edition as source/lesson/, and nbgrader's release of it."""
    root = tmp_path_factory.mktemp("course")
    (root / "nbgrader_config.py").write_text(editions.NBGRADER_CONFIG)
    (root / "source" / "lesson").mkdir(parents=True)
    shutil.copy(edition("instructor", GRADED), root / "source" / "lesson" / GRADED)
    done = nbgrader_command("generate_assignment", "lesson", cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def nbgrader_command(*args, cwd):
    """`nbgrader ...` as a teacher runs it, with this environment's bin/ on PATH (nbgrader runs `alembic` from it)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_nbgraders_release_of_the_instructor_edition_is_the_student_edition(edition, course):
    released = cells(course / "release" / "lesson" / GRADED)
    student = cells(edition("student", GRADED))
    no_blank = lambda cell: [line for line in "".join(cell["source"]).splitlines() if line.strip()]
    assert [no_blank(cell) for cell in released] == [no_blank(cell) for cell in student]
    assert [cell["cell_type"] for cell in released] == [cell["cell_type"] for cell in student]
    for mine, theirs in zip(student, released):                 # nbgrader adds a checksum and the cell type
        extra = {"checksum", "cell_type"}
        assert {k: v for k, v in nbgrader(theirs).items() if k not in extra} == nbgrader(mine)
        locks = ("deletable", "editable")
        assert [theirs["metadata"].get(k) for k in locks] == [mine["metadata"].get(k) for k in locks]


def test_nbgrader_validates_the_instructor_edition(course):
    done = nbgrader_command("validate", f"source/lesson/{GRADED}", cwd=course)
    assert done.returncode == 0 and "Success! Your notebook passes all the tests." in done.stdout, (
        done.stdout + done.stderr)
