"""The promises of the README: two commands, pinned installs, CI running the README's test command."""

import os
import re
import subprocess
from importlib.metadata import version

import pytest

from conftest import REPO

README = (REPO / "README.md").read_text()


def readme_command(marker):
    match = re.search(rf"<!-- command:{marker} -->\s*```bash\n(.+?)\n```", README)
    assert match, f"README.md has no ```bash block after <!-- command:{marker} -->"
    return match.group(1)


def test_readme_has_one_command_to_open_the_kit_and_one_to_test_it():
    assert readme_command("open").endswith("jupyter lab notebooks/")
    assert readme_command("test").endswith("python -m pytest")
    for marker in ("open", "test"):
        assert "pip install -r requirements.txt" in readme_command(marker)


def test_both_commands_apply_the_kits_jupyterlab_settings_as_binder_does():
    """`.binder/postBuild` (JupyterLab's news pop-up off; tests/test_jupyter.py checks the running server) runs
    right after the install, with the environment's own Python; Binder runs it as an executable."""
    for marker in ("open", "test"):
        steps = readme_command(marker).split(" && ")
        assert steps[1:3] == [".venv/bin/pip install -r requirements.txt", ".venv/bin/python .binder/postBuild"]
    post_build = REPO / ".binder" / "postBuild"
    assert post_build.read_text().startswith("#!/usr/bin/env python3\n") and os.access(post_build, os.X_OK)


def test_ci_runs_exactly_the_readmes_test_command():
    script = (REPO / ".ci" / "run").read_text()
    extracted = subprocess.run(
        ["bash", "-c", re.search(r"^cmd=\$\((.+)\)$", script, re.M).group(1)],
        cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert extracted == readme_command("test")
    assert 'eval "$cmd"' in script


def requirement_lines():
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and line != "-e .":
            yield line


def test_every_requirement_is_pinned_to_one_version():
    lines = list(requirement_lines())
    assert len(lines) > 20
    unpinned = [line for line in lines if not re.match(r"^[A-Za-z0-9_.\-\[\]]+==[\w.+]+(\s*;.*)?$", line)]
    assert not unpinned


def test_torch_and_torchvision_are_a_matched_pair_and_installed_as_pinned():
    pins = dict(line.split(";")[0].strip().split("==") for line in requirement_lines())
    torch_v, vision_v = pins["torch"], pins["torchvision"]
    # torchvision 0.N pairs with torch 2.(N - 15): 0.29 with 2.14
    assert int(vision_v.split(".")[1]) - 15 == int(torch_v.split(".")[1])
    for name in ("torch", "torchvision", "jupyterlab", "ipywidgets", "matplotlib", "nbval"):
        assert version(name).split("+")[0] == pins[name], name


def test_pytest_collects_every_notebook_with_nbval():
    import tomllib

    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "notebooks" in options["testpaths"] and "--nbval-lax" in options["addopts"]


@pytest.mark.parametrize("notebook", sorted((REPO / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(notebook):
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    stored = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not stored, f"{notebook.name}: cells {stored} hold outputs; clear them before committing"


@pytest.mark.parametrize("notebook", sorted((REPO / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_every_notebook_is_on_the_readme_map(notebook):
    assert f"](notebooks/{notebook.name})" in README, (
        f"{notebook.name} is not in README.md's notebook map; add a row (title, what it teaches, minutes to run)")


def test_the_readmes_python_version_satisfies_every_pinned_package():
    from importlib.metadata import metadata

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    stated = re.search(r"with Python (\d+\.\d+(?:\.\d+)?) or newer", README)
    assert stated, "README.md must say which Python the commands need ('with Python X.Y or newer')"
    too_new = {}
    for line in requirement_lines():
        pin = Requirement(line)
        if pin.marker is not None and not pin.marker.evaluate():
            continue   # not installed on this platform (the CUDA libraries off Linux x86-64)
        name = pin.name
        requires = metadata(name).get("Requires-Python")
        if requires and not SpecifierSet(requires).contains(stated.group(1)):
            too_new[name] = requires
    assert not too_new, f"README.md says Python {stated.group(1)}, but these pins need more: {too_new}"


def test_pytest_runs_every_notebook_in_the_repository():
    """A notebook added anywhere in the repository (tracked or not ignored) is collected by nbval, or this fails."""
    import sys

    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stdout[-2000:] + listed.stderr[-2000:]
    collected = {line.split("::")[0] for line in listed.stdout.splitlines() if ".ipynb::Cell" in line}
    everywhere = set(subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.ipynb"],
                                    cwd=REPO, capture_output=True, text=True, check=True).stdout.split())
    assert everywhere and everywhere <= collected, f"not run by pytest: {sorted(everywhere - collected)}"
