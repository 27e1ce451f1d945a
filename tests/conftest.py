"""Shared fixtures. Every test runs with outbound network connections refused: the kit must work offline."""

import ipaddress
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch

import prunelab as pl
from jupyter_browser import CHROMIUM, CHROMIUM_MISSING, launch_chromium, lab_server

REPO = Path(__file__).resolve().parent.parent


def _is_loopback(host) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test whose code connects anywhere but this machine's loopback."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise AssertionError(f"prunelab tried to reach the network: {address}")

    monkeypatch.setattr(socket.socket, "connect", lambda s, a: (check(s, a), real_connect(s, a))[1])
    monkeypatch.setattr(socket.socket, "connect_ex", lambda s, a: (check(s, a), real_connect_ex(s, a))[1])


@pytest.fixture(scope="session")
def chromium():
    """Skip without Debian's Chromium, but fail in CI, which must have it (.ci/run installs it). Tests that drive the
    browser ask for it first (``pytest.mark.usefixtures("chromium")``), before any server starts."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM_MISSING} (CI is set, so .ci/run should have installed it)")
        pytest.skip(CHROMIUM_MISSING)


@pytest.fixture(scope="module")
def browser(chromium):
    """Debian's headless Chromium, driven by Playwright (tests/jupyter_browser.py). Per module, not per session:
    while Playwright's sync API runs, the main thread has a running asyncio loop of Playwright's, and the
    explorers' tests after the browser modules schedule their settle on the loop they find."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def jupyter_lab(tmp_path_factory):
    """Base URL of `jupyter lab notebooks/` (as in the README), on loopback without a token, HOME in a fresh folder."""
    with lab_server(tmp_path_factory.mktemp("jupyter-home")) as base:
        yield base


@pytest.fixture(scope="session")
def train_set():
    return pl.load_fashion_mnist("train")


@pytest.fixture(scope="session")
def test_set():
    return pl.load_fashion_mnist("test")


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (restored after): the precomputed records were trained so, and on a shared
    2-core machine two threads per process can be many times slower. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data_copy(tmp_path):
    """A private copy of the committed Fashion-MNIST files (the .gz files and SHA256SUMS only)."""
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    src = REPO / "data" / "FashionMNIST" / "raw"
    for f in [*src.glob("*.gz"), src / "SHA256SUMS"]:
        shutil.copy(f, raw / f.name)
    return tmp_path


def snapshot(model):
    """Copies of every tensor of the model's state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b, *, ordered=False):
    """Two state-dict snapshots hold the same keys (in the same order, if ``ordered``) and bit-identical tensors."""
    keys_match = list(a) == list(b) if ordered else a.keys() == b.keys()
    return keys_match and all(torch.equal(a[k], b[k]) for k in a)


def randomize_batchnorm(model, g):
    """Non-trivial running statistics and affine parameters, so a slicing error cannot hide behind 0 and 1."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model
