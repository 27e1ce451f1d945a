"""First paint of every explorer app served by Voila, as a class would open it on a projector: the time from
asking for the page to the app's figure shown (decoded) with its slider, in Debian's headless Chromium.

`voila notebooks/` serves every app at /voila/render/<notebook>; each page load starts a fresh kernel (Voila
runs the notebook for that page), so a load's time includes starting Python, importing torch and prunelab,
reading the data and model and drawing the first picture. Voila streams outputs as cells finish, so the app
shows before the notebook's check cells (tagged skip-execution: Voila skips them) would have run.

    python benches/bench_voila_first_paint.py [--repeats 3] [--apps explore_thresholds ...] [--plain]

Target: under 5 s on 2 cores (issue 15), in projector mode (`?projector`). `--plain` measures without it too.
The machine's cores may be shared: the load average is printed; repeat when it is high.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))   # the browser harness of the tests
from jupyter_browser import CHROMIUM, CHROMIUM_MISSING, VOILA_READY_PATH, free_port, launch_chromium, serve

APPS = ["explore_thresholds", "explore_granularity", "explore_quantization", "explore_sensitivity",
        "explore_schedules"]


def first_paint(browser, base: str, app: str, query: str) -> float:
    """Seconds from page.goto to the app's first figure decoded and its slider visible."""
    context = browser.new_context(viewport={"width": 1024, "height": 700})
    try:
        page = context.new_page()
        t0 = time.perf_counter()
        page.goto(f"{base}/voila/render/{app}.ipynb{query}", wait_until="commit")
        image = page.locator("img.widget-image").first
        expect(image).not_to_have_js_property("naturalWidth", 0, timeout=180_000)
        expect(page.locator(".widget-slider").first).to_be_visible(timeout=180_000)
        return time.perf_counter() - t0
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--apps", nargs="+", default=APPS, choices=APPS)
    parser.add_argument("--plain", action="store_true", help="also measure without ?projector")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(CHROMIUM_MISSING)
    modes = {"projector": "?projector", **({"plain": ""} if args.plain else {})}
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs")
    port = free_port()
    voila = ["voila", "notebooks/", "--no-browser", "--Voila.ip=127.0.0.1", f"--port={port}"]
    with tempfile.TemporaryDirectory() as home, serve(voila, port, Path(home), ready_path=VOILA_READY_PATH) as base:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            first_paint(browser, base, "explore_schedules", "")       # warm the disk cache and Voila's templates
            for app in args.apps:
                for mode, query in modes.items():
                    times = [first_paint(browser, base, app, query) for _ in range(args.repeats)]
                    print(f"{app:<22} {mode:<9} " + "  ".join(f"{t:5.2f}" for t in times) + " s")
                    print(f"RESULT voila_first_paint_{app.removeprefix('explore_')}_{mode}_median_s="
                          f"{statistics.median(times):.2f} unit=s target=<5")
            browser.close()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
