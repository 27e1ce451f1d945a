"""Kernel-side latency of one slider event in the threshold explorer (LeNet-300-100, full test set), and
how the figure is rendered, chosen by measurement.

One event = new mask(s), masks set on the model, accuracy on all 10,000 test images, mask image and histogram
updated, figure encoded to PNG for the ``ipywidgets.Image``, readout HTML. Target: median ≤ 50 ms.

Rendering candidates, each drawing the same two panels (mask 300 × 784 and histogram):
- ``inline``: a new matplotlib figure per event shown through an Output widget (what a naive notebook does);
- ``agg full``: the explorer's figure, fully redrawn with Agg and encoded to PNG;
- ``agg blit``: the static parts drawn once, only the changing artists redrawn (what the explorer does).

Run: python benches/bench_explorer.py   (prints RESULT lines; run when the machine is otherwise idle)

Measured 2026-11-26 (torch 2.14.1, 2 threads, load average about 1): fc1 layer-wise median 47.5 ms, p90 60.9 ms
(accuracy 31.7 ms, blit + PNG 10.5 ms); fc2 26.2 ms; global 42.6-60.9 ms over three runs; peak memory 894 MB.
Drawing the 300 × 784 mask with interpolation_stage="data" (same pixels, tests/test_plots.py) took the PNG step
from 16-20 ms to 10.5 ms; the fc1 matmul on 10,000 images (about 18 ms) is the floor of the accuracy step.
"""

from __future__ import annotations

import io
import os
import resource
import time

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

import prunelab as pl
from prunelab.explorers import ThresholdExplorer


def stats(seconds: list[float]) -> tuple[float, float]:
    ms = 1000 * np.asarray(seconds)
    return float(np.median(ms)), float(np.quantile(ms, 0.9))


def sweep(explorer: ThresholdExplorer, values) -> list[float]:
    explorer.event_seconds.clear()
    for v in values:
        explorer.slider.value = float(v)
    assert explorer.error is None, explorer.error
    return list(explorer.event_seconds)


def render_inline(W: torch.Tensor, v_thr: float) -> None:
    """The naive way: a brand-new figure per event (savefig to PNG = what the inline backend does)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3), dpi=80)
    M = W.abs() > v_thr
    a.imshow(M.numpy(), cmap="Greys", aspect="auto", interpolation="nearest")
    b.hist(W.flatten().numpy(), bins=81)
    b.axvline(v_thr)
    b.axvline(-v_thr)
    fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    model = pl.load_pretrained("lenet300")
    test = pl.load_fashion_mnist("test")
    explorer = ThresholdExplorer(model, test, exact_budget=float("inf"))
    values = np.linspace(0.0, 0.98, 50)
    rng = np.random.default_rng(0)
    random_values = rng.uniform(0, 0.98, 50)

    results = {}
    results["fc1 layer-wise"] = stats(sweep(explorer, values) + sweep(explorer, random_values))
    explorer.layer.value = "fc2"
    results["fc2 layer-wise"] = stats(sweep(explorer, values))
    explorer.scope.value = "global"
    results["global (all layers)"] = stats(sweep(explorer, values))
    explorer.reset()
    explorer.layer.value = "fc1"
    explorer.scope.value = "layer"

    print("\nkernel-side time per slider event, LeNet-300-100, accuracy on all 10,000 test images")
    print(f"{'setting':<22}{'median ms':>10}{'p90 ms':>9}")
    for name, (median, p90) in results.items():
        print(f"{name:<22}{median:>10.1f}{p90:>9.1f}")

    # where an event's time goes (fc1, the largest layer)
    W = pl.masks.original(model, "fc1.weight").detach()
    t_acc, t_png = [], []
    for v in values:
        explorer.slider.value = float(v)
        t_acc.append(explorer.meter.exact.seconds)
        start = time.perf_counter()
        explorer.renderer.png()
        t_png.append(time.perf_counter() - start)
    print(f"\nof which: accuracy {stats(t_acc)[0]:.1f} ms, figure to PNG (blit) {stats(t_png)[0]:.1f} ms")

    # rendering candidates
    full, inline = [], []
    for v in values[:20]:
        start = time.perf_counter()
        explorer.renderer.canvas.draw()
        explorer.renderer.capture_background()
        explorer.renderer.png()
        full.append(time.perf_counter() - start)
        start = time.perf_counter()
        render_inline(W, float(v) * 0.1)
        inline.append(time.perf_counter() - start)
    print("\nrendering the two panels, per event:")
    print(f"  new inline figure (Output widget)  {stats(inline)[0]:6.1f} ms")
    print(f"  Agg full redraw + PNG              {stats(full)[0]:6.1f} ms")
    print(f"  Agg blit + PNG (the explorer)      {stats(t_png)[0]:6.1f} ms")

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    median, p90 = results["fc1 layer-wise"]
    print(f"\nRESULT kernel_event_median_ms={median:.1f} unit=ms target=50")
    print(f"RESULT kernel_event_p90_ms={p90:.1f} unit=ms")
    print(f"RESULT kernel_event_global_median_ms={results['global (all layers)'][0]:.1f} unit=ms target=50")
    print(f"RESULT render_blit_ms={stats(t_png)[0]:.1f} unit=ms render_full_ms={stats(full)[0]:.1f} "
          f"render_inline_ms={stats(inline)[0]:.1f}")
    print(f"RESULT kernel_peak_memory_mb={peak_mb:.0f} unit=MB")


if __name__ == "__main__":
    main()
