"""The README's first command ends in `jupyter lab notebooks/`: check that JupyterLab really serves the kit."""

import json
import urllib.request

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
