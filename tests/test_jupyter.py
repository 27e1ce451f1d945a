"""The README's first command ends in `jupyter lab notebooks/`: check that JupyterLab really serves the kit."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyter_lab(tmp_path_factory):
    port = free_port()
    home = tmp_path_factory.mktemp("jupyter-home")
    # As in the README (`jupyter lab notebooks/`, run in the repository), on loopback without a token;
    # CI runs as root, which JupyterLab refuses without --allow-root.
    cmd = [sys.executable, "-m", "jupyterlab", "notebooks/", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--IdentityProvider.token=", "--ServerApp.password=", "--allow-root"]
    env = {"HOME": str(home), "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "PATH": str(Path(sys.executable).parent)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/api/status", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(proc.stderr.read().decode()[-2000:])
                time.sleep(0.5)
        else:
            raise RuntimeError("JupyterLab did not answer within 60 s")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


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
