"""Kernel-side time per event of the granularity and quantization explorers, LeNet-300-100, full test set.

Events run inside an asyncio loop (as in a kernel), so ``later`` work (exact accuracy, latency, k-means, file
bytes) does not run inside the slider event; it is timed separately through ``settle()``.
Run: .venv/bin/python benches/bench_explorers_compression.py [threads]
"""
import asyncio
import os
import sys
import time

import numpy as np
import torch

import prunelab as pl
from prunelab.explorers.granularity import GranularityExplorer
from prunelab.explorers.quantization import QuantizationExplorer

if len(sys.argv) > 1:
    torch.set_num_threads(int(sys.argv[1]))


def stats(seconds):
    ms = 1000 * np.asarray(seconds)
    return f"median {np.median(ms):6.1f} ms  p90 {np.quantile(ms, 0.9):6.1f} ms  (n={len(ms)})"


def load():
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


async def sweep(explorer, widget, values):
    """Set ``widget`` to each value, yielding to the loop between events (the pending ``later`` stays pending)."""
    explorer.event_seconds.clear()
    for v in values:
        widget.value = v
        await asyncio.sleep(0)
    assert explorer.error is None, explorer.error
    times = list(explorer.event_seconds)
    if explorer._pending is not None:
        explorer._pending.cancel()
        explorer._pending = None
    return times


def settle_times(explorer, widget, values):
    out = []
    for v in values:
        widget.value = v
        start = time.perf_counter()
        explorer.settle()
        out.append(time.perf_counter() - start)
    return out


async def main():
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {load()}")
    model = pl.load_pretrained("lenet300")
    test = pl.load_fashion_mnist("test")
    values = [round(float(v), 2) for v in np.linspace(0.0, 0.98, 50)]
    rng = np.random.default_rng(0)
    random_values = [round(float(v), 2) for v in rng.uniform(0, 0.98, 50)]

    print("\n== GranularityExplorer, LeNet-300-100 ==")
    for budget, label in ((0.03, "default exact_budget=0.03"), (float("inf"), "exact every event")):
        start = time.perf_counter()
        g = GranularityExplorer(model, test, exact_budget=budget)
        init = time.perf_counter() - start
        g.settle()
        mode = "exact" if g.meters["weight"].exact_while_moving else f"estimate on {g.meters['weight'].n_estimate} images, exact later"
        t = await sweep(g, g.slider, values + random_values)
        print(f"{label:28s} [{mode}] init {init:.1f} s; slider event: {stats(t)}   ({load()})")
        if budget == 0.03:
            granularity_ms = 1000 * np.asarray(t)
    s = settle_times(g, g.slider, [0.35, 0.55, 0.75, 0.85, 0.95])
    print(f"{'  later: latency (shrink+2x20 runs)':28s} {stats(s)}")

    print("\n== QuantizationExplorer, LeNet-300-100 ==")
    start = time.perf_counter()
    q = QuantizationExplorer(model, test)
    init = time.perf_counter() - start
    mode = "exact" if q.meter.exact_while_moving else f"estimate on {q.meter.n_estimate} images, exact later"
    print(f"init {init:.1f} s, accuracy mode: {mode}")
    bits = list(range(8, 0, -1)) + list(range(1, 9))
    first = await sweep(q, q.bits, bits[:8])
    print(f"linear per tensor, new settings   : {stats(first)}   ({load()})")
    again = await sweep(q, q.bits, bits[8:] + bits[:8])
    print(f"linear per tensor, cached (back)   : {stats(again)}")
    q.per_channel.value = True
    pc = await sweep(q, q.bits, bits[:8])
    print(f"linear per channel, new settings  : {stats(pc)}")
    q.bits.value = 32
    q.per_channel.value = False
    s = settle_times(q, q.bits, [8, 6, 4, 2])
    print(f"later (exact accuracy + file bytes), linear: {stats(s)}")
    q.method.value = "kmeans"
    q.bits.value = 32
    km = await sweep(q, q.bits, bits[:8])
    print(f"k-means fast path (starting centroids): {stats(km)}   ({load()})")
    s = settle_times(q, q.bits, [8, 6, 4, 2])
    print(f"later: converged k-means (all layers) + accuracy + bytes: {stats(s)}")
    for b in (2, 8):
        W = model.fc1.weight.detach()
        start = time.perf_counter()
        pl.weight_sharing.kmeans_codebook(W, b)
        print(f"  kmeans_codebook(fc1, {b} bits): {1000 * (time.perf_counter() - start):.0f} ms")
    km_back = await sweep(q, q.bits, [8, 6, 4, 2])
    print(f"k-means cached (back)            : {stats(km_back)}")
    print(f"\n{load()}")
    linear_ms = 1000 * np.asarray(first + pc)
    print(f"RESULT granularity_event_median_ms={np.median(granularity_ms):.1f} unit=ms target=50")
    print(f"RESULT granularity_event_p90_ms={np.quantile(granularity_ms, 0.9):.1f} unit=ms")
    print(f"RESULT quantization_event_median_ms={np.median(linear_ms):.1f} unit=ms target=50")
    print(f"RESULT quantization_event_p90_ms={np.quantile(linear_ms, 0.9):.1f} unit=ms")


asyncio.run(main())
