"""Jupyter servers and Debian's headless Chromium, for the tests and the benchmark that drive the real front ends.

Servers listen on 127.0.0.1 without a token, with HOME in a fresh folder. Chromium resolves no host name but
loopback (a page that tries to reach the internet fails here as it would offline), and
``record_external_requests`` lists every such try, so that a test can refuse it.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import expect

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = "explore_thresholds.ipynb"
CHROMIUM = Path("/usr/bin/chromium")    # Debian's package `chromium`; Playwright's own browser downloads fail offline
CHROMIUM_MISSING = f"{CHROMIUM} is missing: install Debian's Chromium with `apt-get install -y chromium`"
CHROMIUM_ARGS = [
    "--no-first-run", "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-default-apps", "--disable-domain-reliability", "--no-pings",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",   # no host name resolves: nothing outside is reachable
]
# Voila's `lab` template links Font Awesome from a CDN (its bundle carries the same CSS, so nothing is missing offline)
VOILA_TEMPLATE_CDN = {
    "https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@%5E5/css/all.min.css",
    "https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@%5E5/css/v4-shims.min.css",
}
FC1_WEIGHTS = 300 * 784     # LeNet-300-100's first layer, W [300, 784]


# ---------------------------------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_args(port: int) -> list[str]:
    """The README's `jupyter lab notebooks/`, on loopback without a token. The same server serves Notebook 7
    (/tree, /notebooks/...), which `notebook` adds. CI runs as root, which JupyterLab refuses without --allow-root."""
    return ["jupyterlab", "notebooks/", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--IdentityProvider.token=", "--ServerApp.password=", "--allow-root"]


def voila_args(port: int) -> list[str]:
    """`voila notebooks/explore_thresholds.ipynb`, the stand-alone app, on loopback (Voila has no token by default)."""
    return ["voila", f"notebooks/{NOTEBOOK}", "--no-browser", "--Voila.ip=127.0.0.1", f"--port={port}"]


# Voila answers almost every path by running the notebook; its static handler answers a 404 at once
VOILA_READY_PATH = "/voila/static/"


@contextmanager
def serve(module_args: list[str], port: int, home: Path, *, ready_path: str = "/api/status",
          timeout: float = 60) -> Iterator[str]:
    """Run ``python -m <module_args>`` in the repository; yield its base URL once ``ready_path`` answers with
    any HTTP status; stop it afterwards. Its log goes to ``home/<module>.log`` (a file: a pipe nobody reads
    would fill up and block the server)."""
    env = {"HOME": str(home), "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "PATH": str(Path(sys.executable).parent)}
    log = home / f"{module_args[0]}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", *module_args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=sink)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(base + ready_path, timeout=1).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"{module_args[0]} exited: {log.read_text(errors='replace')[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{module_args[0]} did not answer within {timeout:.0f} s")
                time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def lab_server(home: Path) -> Iterator[str]:
    """`jupyter lab notebooks/` (``lab_args``) with HOME = ``home``: its base URL. Autosave is off and
    checkpoints go to ``home``, so the notebooks a browser runs are not written back into the repository; a
    notebook the server saved anyway (its log says so) is put back as it was, and the run fails."""
    settings = home / ".jupyter/lab/user-settings/@jupyterlab/docmanager-extension/plugin.jupyterlab-settings"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text('{"autosave": false}')
    notebooks = {p.name: p.read_bytes() for p in (REPO / "notebooks").glob("*.ipynb")}
    port = free_port()
    args = [*lab_args(port), f"--FileCheckpoints.checkpoint_dir={home / 'checkpoints'}"]
    try:
        with serve(args, port, home) as base:
            yield base
    finally:
        saved = sorted(set(re.findall(r"Saving file at /(\S+\.ipynb)", (home / "jupyterlab.log").read_text())))
        for name in saved:
            if name in notebooks:
                (REPO / "notebooks" / name).write_bytes(notebooks[name])
        assert not saved, f"the test's JupyterLab saved {saved} into notebooks/ (now restored)"


@contextmanager
def voila_server(home: Path) -> Iterator[str]:
    """`voila notebooks/explore_thresholds.ipynb` (``voila_args``) with HOME = ``home``: its base URL."""
    port = free_port()
    with serve(voila_args(port), port, home, ready_path=VOILA_READY_PATH) as base:
        yield base


def shutdown_kernels(context, base: str) -> None:
    """Shut down every kernel session of the Jupyter server at ``base``, through the browser ``context``'s
    cookies (the server wants its XSRF token back on a DELETE)."""
    xsrf = next((c["value"] for c in context.cookies(base) if c["name"] == "_xsrf"), "")
    for session in context.request.get(f"{base}/api/sessions").json():
        context.request.delete(f"{base}/api/sessions/{session['id']}", headers={"X-XSRFToken": xsrf})


# ---------------------------------------------------------------------------------------------------- browser
def launch_chromium(playwright):
    """Debian's Chromium, headless, with no way out but loopback."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("blob", "data", "about") or parts.hostname in ("127.0.0.1", "localhost")


def record_external_requests(context) -> list[str]:
    """A list that fills with the URL of every request of ``context``'s pages that leaves this machine."""
    seen: list[str] = []
    context.on("request", lambda request: None if is_local(request.url) else seen.append(request.url))
    return seen


def run_all_cells(page, timeout: float = 60_000) -> None:
    """Once the notebook's kernel is connected and idle, Run > Run All Cells from the menu bar, as a person
    would (JupyterLab and Notebook 7 share it). Cells run before the kernel is there are silently dropped,
    and the toolbar says "idle" before there is a kernel: its kernel name ("No Kernel" until then) tells."""
    page.wait_for_function("""() => {
        const name = document.querySelector(".jp-Toolbar-kernelName");
        const status = document.querySelector(".jp-Notebook-ExecutionIndicator");
        return name?.textContent.includes("Python 3") && status?.dataset.status === "idle";
    }""", timeout=timeout)
    page.locator(".lm-MenuBar-itemLabel").get_by_text("Run", exact=True).click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()


class ExplorerView:
    """Where a ThresholdExplorer's widgets are on a page: the slider "target sparsity s" (its handle and its own
    readout, in percent), the headline next to it (a widgets.HTML holding `.prunelab-accuracy`), the table of
    layers under the figure, and the figure (a widgets.Image)."""

    SLIDER_LABEL = "target sparsity s"

    def __init__(self, page):
        self.page = page
        self.slider = page.locator(".widget-slider").filter(
            has=page.locator(".widget-label").get_by_text(self.SLIDER_LABEL, exact=True))
        self.handle = self.slider.locator(".noUi-handle")
        self.track = self.slider.locator(".noUi-base")
        self.value = self.slider.locator(".widget-readout")
        self.readout = page.locator(".widget-html-content").filter(has=page.locator(".prunelab-accuracy"))
        self.accuracy = self.readout.locator(".prunelab-accuracy")
        self.table = page.locator(".widget-html-content").filter(has=page.get_by_role("cell", name="fc1", exact=True))
        self.fc1_row = self.table.locator("tr").filter(has=page.get_by_role("cell", name="fc1", exact=True))
        self.image = page.locator("img.widget-image")

    def wait_until_rendered(self, timeout: float = 120_000) -> None:
        """Until the readout shows an accuracy and the figure a decoded PNG (7.5 x 2.7 in at 80 dpi: 600 x 216 px)."""
        expect(self.accuracy).to_contain_text(re.compile(r"test accuracy: \d+\.\d\d%"), timeout=timeout)
        expect(self.image).to_have_js_property("naturalWidth", 600, timeout=timeout)
        expect(self.image).to_have_js_property("naturalHeight", 216)
        expect(self.handle).to_be_visible()

    def slider_value(self) -> float:
        """The slider's own readout, "60.0%", as a fraction."""
        return round(float(self.value.inner_text().rstrip("%")) / 100, 4)

    def drag_handle_to(self, fraction: float, timeout: float = 10.0) -> None:
        """Drag the slider's handle with the mouse to ``fraction`` of its track, as a person would: first
        scrolled into view and held still (a notebook still laying out outputs, or scrolling to the last
        cell after Run All, moves the slider between reading its position and pressing the button)."""
        self.handle.scroll_into_view_if_needed()
        deadline, last = time.monotonic() + timeout, None
        while True:
            boxes = (self.handle.bounding_box(), self.track.bounding_box())
            if boxes == last or time.monotonic() > deadline:
                break
            last = boxes
            self.page.wait_for_timeout(200)
        handle, track = boxes
        y = handle["y"] + handle["height"] / 2
        self.page.mouse.move(handle["x"] + handle["width"] / 2, y)
        self.page.mouse.down()
        self.page.mouse.move(track["x"] + fraction * track["width"], y, steps=4)
        self.page.mouse.up()

    def image_src(self) -> str:
        return self.image.get_attribute("src")

    def expect_fc1_pruned(self, s: float, timeout: float = 60_000) -> None:
        """The readout shows fc1 at sparsity s (k = round(s·n) weights removed) and the exact accuracy, on
        all 10,000 test images (an estimate while the slider moves is followed by it once the slider rests)."""
        kept = FC1_WEIGHTS - round(s * FC1_WEIGHTS)
        expect(self.fc1_row).to_contain_text(f"{kept:,} / {FC1_WEIGHTS:,}", timeout=timeout)
        expect(self.fc1_row).to_contain_text(f"{1 - kept / FC1_WEIGHTS:.1%}")
        expect(self.accuracy).to_contain_text("all 10,000 test images", timeout=timeout)
