"""The README's first command ends in `jupyter lab notebooks/`: check that JupyterLab really serves the kit."""

import json
import urllib.request
from pathlib import Path

from conftest import REPO


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def test_jupyterlab_lists_and_opens_the_notebooks(jupyter_lab):
    status, body = get(jupyter_lab + "/api/contents/")
    names = {item["name"] for item in json.loads(body)["content"]}
    assert status == 200 and names >= {p.name for p in (REPO / "notebooks").glob("*.ipynb")}
    status, body = get(jupyter_lab + "/api/contents/01_start_here.ipynb")
    assert status == 200 and json.loads(body)["content"]["cells"]
    status, body = get(jupyter_lab + "/lab/tree/01_start_here.ipynb")
    assert status == 200 and "JupyterLab" in body


def test_jupyterlab_never_pops_up_to_ask_about_news(jupyter_lab):
    """The README's set-up runs `.binder/postBuild` (Binder runs it too): it writes JupyterLab's default settings
    to where this environment's JupyterLab reads them, and the running server serves them as the defaults."""
    import runpy

    from jupyterlab.labapp import LabApp

    post_build = runpy.run_path(str(REPO / ".binder" / "postBuild"), run_name="postBuild")
    written = post_build["settings_file"]()
    assert written.parent == Path(LabApp().app_settings_dir) / "overrides.d"
    assert written.is_file(), f"{written} is missing: run the README's command (`.venv/bin/python .binder/postBuild`)"
    assert json.loads(written.read_text()) == post_build["OVERRIDES"]

    status, body = get(jupyter_lab + "/lab/api/settings/@jupyterlab/apputils-extension:notification")
    defaults = {key: spec["default"] for key, spec in json.loads(body)["schema"]["properties"].items()}
    assert status == 200 and defaults["fetchNews"] == "false" and defaults["checkForUpdates"] is False


def test_a_learner_meets_no_nbgrader_menus(jupyter_lab):
    """nbgrader is installed for teachers (class editions); `.binder/postBuild` turns its JupyterLab extension and
    its server extensions (formgrader, assignment list) off in this environment, so a learner's JupyterLab has no
    Nbgrader menu or pages."""
    import re
    import urllib.error

    status, body = get(jupyter_lab + "/lab")
    config = json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', body,
                                  re.S).group(1))
    assert status == 200 and "@jupyter/nbgrader" in config["disabledExtensions"]
    for page in ("/formgrader", "/assignments"):
        try:
            status = get(jupyter_lab + page)[0]
        except urllib.error.HTTPError as e:
            status = e.code
        assert status == 404, f"{page} answers {status}: run `.venv/bin/python .binder/postBuild`"
