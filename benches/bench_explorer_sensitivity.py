"""The sensitivity and schedule explorers on LeNet-300-100: how long the sensitivity scan takes (20
sparsities per layer, all 10,000 test images) and the kernel-side time of one slider event.

A sensitivity event = one layer's new mask, set on the model, the accuracy of all dials together on all
10,000 test images (from the moved layer on, LiveAccuracy), markers and lines moved, figure to PNG (blit),
readout. A schedule event = the precomputed runs of the new s_f drawn (the accuracy axis re-fitted, so the
static parts are drawn again), figure to PNG, readout. Target: median ≤ 50 ms. The machine's load average is
printed next to the figures: on a shared 2-core machine they move with it.

Run: python benches/bench_explorer_sensitivity.py
"""

from __future__ import annotations

import os
import time

import matplotlib

matplotlib.use("agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402

import prunelab as pl  # noqa: E402
from prunelab.explorers.schedule import ScheduleExplorer  # noqa: E402
from prunelab.explorers.sensitivity import SensitivityExplorer  # noqa: E402
from prunelab.sensitivity import sensitivity_scan  # noqa: E402


def stats(seconds: list[float]) -> tuple[float, float]:
    ms = 1000 * np.asarray(seconds)
    return float(np.median(ms)), float(np.quantile(ms, 0.9))


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {load()}")
    test = pl.load_fashion_mnist("test")
    model = pl.load_pretrained("lenet300")
    test.normalized()
    scans = []
    for _ in range(3):
        start = time.perf_counter()
        curves = sensitivity_scan(model, test)
        scans.append(time.perf_counter() - start)
    print(f"sensitivity scan, 3 layers × {len(curves.sparsities) - 1} sparsities, 10,000 images: "
          f"median {np.median(scans):.2f} s of {[round(s, 2) for s in scans]} ({load()})")

    explorer = SensitivityExplorer(model, test, curves=curves, exact_budget=float("inf"))   # exact every event
    print(f"one full accuracy pass: {1000 * explorer.meter.exact.seconds:.0f} ms")
    rng = np.random.default_rng(0)
    results = {}
    for name in explorer.dials:
        explorer.event_seconds.clear()
        for v in np.concatenate([np.linspace(0, 0.99, 25), rng.uniform(0, 0.99, 25)]):
            explorer.dials[name].value = float(v)
        assert explorer.error is None, explorer.error
        results[name] = stats(explorer.event_seconds)
    fits = []
    for f in (0.5, 0.2, 0.1, 0.05, 0.02) * 2:
        explorer.budget.value = f
        start = time.perf_counter()
        explorer.fit_button.click()           # (its quiet dial updates would skew event_seconds)
        fits.append(time.perf_counter() - start)
    assert explorer.error is None, explorer.error
    results["fit budget"] = stats(fits)
    explorer.reset()

    start = time.perf_counter()
    schedule = ScheduleExplorer()
    print(f"schedule explorer built in {time.perf_counter() - start:.2f} s (one background per s_f drawn)")
    schedule.event_seconds.clear()
    for _ in range(6):
        for s in schedule.final_sparsities:
            schedule.slider.value = s
    results["schedule s_f"] = stats(schedule.event_seconds)

    print(f"\nkernel-side time per event, LeNet-300-100, all 10,000 test images ({load()})")
    print(f"{'event':<24}{'median ms':>10}{'p90 ms':>9}")
    for name, (median, p90) in results.items():
        print(f"{name:<24}{median:>10.1f}{p90:>9.1f}")
    all_dials = [v for k, v in results.items() if k in explorer.dials]
    print(f"\nRESULT sensitivity_scan_s={np.median(scans):.2f} unit=s target=5")
    print(f"RESULT sensitivity_event_fc1_median_ms={results['fc1'][0]:.1f} unit=ms target=50")
    print(f"RESULT sensitivity_event_fc1_p90_ms={results['fc1'][1]:.1f} unit=ms")
    print(f"RESULT sensitivity_event_worst_layer_median_ms={max(m for m, _ in all_dials):.1f} unit=ms target=50")
    print(f"RESULT schedule_event_median_ms={results['schedule s_f'][0]:.1f} unit=ms target=50")
    print(f"RESULT schedule_event_p90_ms={results['schedule s_f'][1]:.1f} unit=ms")
    print(f"RESULT load_average_1min={os.getloadavg()[0]:.2f} unit=load target=reference")


if __name__ == "__main__":
    main()
