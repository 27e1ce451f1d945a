"""The notebooks open on Colab and Binder: every notebook starts with the same Colab set-up cell, that cell
really clones the repository, installs prunelab and points it at the data, and the README's badges and the
Binder configuration point at what exists."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
README = (REPO / "README.md").read_text()


def colab_cell(notebook):
    """The source of the notebook's first code cell."""
    cells = json.loads(notebook.read_text())["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


CELL = colab_cell(REPO / "notebooks" / "01_start_here.ipynb")
REPOSITORY = re.search(r'PRUNELAB_REPOSITORY, CLONE = "([^"]+)", "([^"]+)"', CELL)


def test_the_colab_cell_names_the_repository_and_the_clone():
    assert REPOSITORY, "the Colab cell of 01_start_here must set PRUNELAB_REPOSITORY, CLONE = \"<url>\", \"<dir>\""
    assert REPOSITORY.group(1).startswith("https://github.com/")
    # the kernel's working directory (/content) is on sys.path: a clone named like the package would shadow it
    assert os.path.basename(REPOSITORY.group(2)) != "prunelab"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_starts_with_the_colab_cell(notebook):
    assert colab_cell(notebook) == CELL, (
        f"{notebook.name}: its first code cell must be the Colab set-up cell of 01_start_here.ipynb, unchanged")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_the_colab_cell_is_folded_to_one_line(notebook):
    """A learner's first code is the lesson's, not twenty lines of set-up: the cell is a form on Colab (its
    ``#@title`` line shows, the code does not) and its input is collapsed in JupyterLab and Notebook 7."""
    cells = json.loads(notebook.read_text())["cells"]
    metadata = next(c for c in cells if c["cell_type"] == "code")["metadata"]
    assert CELL.startswith("#@title On Colab only"), "the Colab cell's first line is its title on Colab's form"
    assert metadata.get("cellView") == "form", f"{notebook.name}: the Colab cell needs metadata cellView: form"
    assert metadata.get("jupyter", {}).get("source_hidden") is True, (
        f"{notebook.name}: the Colab cell needs metadata jupyter.source_hidden: true (collapsed in JupyterLab)")


def test_the_colab_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.delenv("PRUNELAB_DATA", raising=False)
    monkeypatch.delenv("PRUNELAB_DEVICE", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    namespace = {}
    exec(CELL, namespace)
    assert "PRUNELAB_REPOSITORY" not in namespace and "PRUNELAB_DATA" not in os.environ
    assert "PRUNELAB_DEVICE" not in os.environ


def test_on_colab_the_cell_clones_installs_and_finds_the_data(tmp_path):
    """Colab simulated: a kernel whose Python has no prunelab, where ``google.colab`` imports. The cell runs
    with the repository's address replaced by this clone and /content by a temporary folder; pip builds and
    installs prunelab (without dependencies: Colab brings its own torch) into that kernel's environment."""
    url, clone = REPOSITORY.groups()
    kernel_env = tmp_path / "kernel-env"
    subprocess.run([sys.executable, "-m", "venv", kernel_env], check=True)
    python = kernel_env / "bin" / "python"
    fake = tmp_path / "fake-colab"
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "__init__.py").write_text("")
    (fake / "google" / "colab" / "__init__.py").write_text("")
    content = tmp_path / "content"
    cell = CELL.replace(url, str(REPO)).replace(os.path.dirname(clone), str(content))
    check = "import google.colab  # a Colab kernel has imported it before any cell runs\n" + cell + textwrap.dedent("""
        import importlib.util, json
        print(json.dumps({"origin": importlib.util.find_spec("prunelab").origin,
                          "data": os.environ["PRUNELAB_DATA"], "device": os.environ["PRUNELAB_DEVICE"]}))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PRUNELAB_DATA", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(fake)
    content.mkdir()   # the kernel's working directory, as /content is on Colab (and on its sys.path, as '')
    done = subprocess.run([python, "-c", check], env=env, cwd=content, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["origin"].startswith(str(kernel_env)), "prunelab must be installed into the kernel's Python"
    data = content / os.path.basename(clone) / "data"
    assert found["data"] == str(data)
    assert found["device"] == "cpu", "on Colab the notebooks must train on the CPU, where their figures come from"
    # the installed package, pointed at the clone's data, loads the data set and a checkpoint with their checks
    loaded = subprocess.run(
        [sys.executable, "-c", "import prunelab as pl; s = pl.load_fashion_mnist('test'); "
                               "m = pl.load_pretrained('lenet300'); print(len(s))"],
        env={**env, "PRUNELAB_DATA": found["data"], "PYTHONPATH": ""}, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split()[-1] == "10000"


def test_readme_has_a_colab_link_for_every_notebook_and_a_binder_badge():
    url = REPOSITORY.group(1).removeprefix("https://github.com/")
    colab = set(re.findall(rf"https://colab\.research\.google\.com/github/{url}/blob/main/(notebooks/[\w.]+\.ipynb)",
                           README))
    assert colab == {f"notebooks/{p.name}" for p in NOTEBOOKS}
    binder = re.findall(rf"https://mybinder\.org/v2/gh/{url}/main\?urlpath=lab/tree/(notebooks/[\w.]+\.ipynb)", README)
    assert binder and all((REPO / path).is_file() for path in binder)


def test_binder_installs_the_pinned_requirements_on_the_python_they_were_resolved_for():
    binder = REPO / ".binder"
    assert (binder / "requirements.txt").read_text().split() == ["-r", "../requirements.txt"]
    resolved_for = re.search(r"with Python (3\.\d+)", (REPO / "requirements.txt").read_text()).group(1)
    assert (binder / "runtime.txt").read_text().strip() == f"python-{resolved_for}"
