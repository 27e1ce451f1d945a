"""Structured pruning that really shrinks: CPU latency of dense vs masked vs shrunk models, against their MACs.

VGGSmall (pretrained) loses 50% of the channels of every conv, the filters with the smallest L1 norm
sum |W[c]|. Three models are timed, interleaved repeat by repeat so that load on the shared CPU hits them alike:
(a) dense, (b) masked only (same shapes, the removed filters and their BatchNorm weight/bias zeroed),
(c) shrunk with ``prunelab.shrink.shrink``. Target: the speedup of (c) over (a) is at least 0.8 of the MAC
reduction dense / shrunk. Masks alone should give no speed (b ≈ 1x); (b) and (c) must have equal accuracy.
Second row: ResNet-18 (random init, no checkpoint) with 50% of the internal channels of every BasicBlock removed.

MACs count only Conv2d and Linear; BatchNorm, ReLU and pooling cost time in proportion to the activations,
which halve (not quarter) when half the channels go. The "per-layer bound" line times each layer of the dense
model and divides it by that layer's own reduction (MACs or activation elements): the speedup to expect when
nothing else changes. On a shared CPU, other processes change the timings several-fold: read the load average.

Measured 2026-11-26 (torch 2.14.1, 2 threads, load average 1.1, AVX-512 Xeon): MACs 3.94x fewer, speedup 2.58x
at batch 256 = **0.65 of the MAC ratio, short of the 0.8 target**; the per-layer bound is also 0.65 (Conv2d and
Linear take only 47% of the dense model's time), and the shrunk model reaches 1.01 of that bound: the shortfall
is the work that scales with activations, not the slicing. Masked only: 1.06x. Under torch.compile (--compile;
BatchNorm, ReLU and pooling fused): 0.68 of the MAC ratio in one run (dense 32.2 ms, shrunk 11.9 ms), 0.56 in
another (eager 0.54 in that same run). Repeated runs on this machine spread from 0.54 to 0.76 (eager) with the
load. ResNet-18 internal channels: 1.41x for 1.94x
fewer MACs (0.73). Even a convolution alone falls short when it gets narrow: timed by itself at batch 256,
16->16 channels at 28x28 against 8->8 is 1.87x faster for 4x fewer MACs, 64->64 at 7x7 against 32->32 is 2.8-3.6x
(8 channels fill half of a 16-float AVX-512 register).

    python benches/bench_structured.py [--repeats 30] [--eval-repeats 3] [--threads N] [--compile]
"""

import argparse
import copy
import os
import statistics
import time

import torch
from torch import nn
from torch.nn.utils import prune

import prunelab as pl
from prunelab.shrink import channels_to_keep, shrink


def leaves(model: nn.Module) -> dict[str, nn.Module]:
    """The modules that compute (conv, BatchNorm, ReLU, pool, Linear, ...); Flatten is a view and left out."""
    return {name: m for name, m in model.named_modules() if not list(m.children()) and not isinstance(m, nn.Flatten)}


def work_per_module(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, int]]:
    """Per leaf module: (MACs, output elements) of one forward pass per image, counted by forward hooks.

    MACs: Conv2d and Linear only. Output elements: a proxy for the memory traffic of every layer, the
    elementwise ones (BatchNorm, ReLU, pooling) included, which MACs do not count.
    """
    work = {}

    def count(name):
        def hook(m, inputs, out):
            per_output = (m.in_features if isinstance(m, nn.Linear) else
                          m.in_channels // m.groups * m.weight[0, 0].numel() if isinstance(m, nn.Conv2d) else 0)
            macs, elements = work.get(name, (0, 0))
            work[name] = (macs + out[0].numel() * per_output, elements + out[0].numel())
        return hook

    handles = [m.register_forward_hook(count(name)) for name, m in leaves(model).items()]
    try:
        with torch.inference_mode():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return work


def work_per_image(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(MACs, activation elements) of one forward pass per image, summed over all layers."""
    work = work_per_module(model, x).values()
    return sum(w[0] for w in work), sum(w[1] for w in work)


def module_times(model: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Per leaf module: median wall time (ms) it takes within a forward pass of ``x``, by pre/post hooks."""
    times, start = {}, {}
    pre = lambda name: lambda m, inputs: start.__setitem__(name, time.perf_counter())  # noqa: E731
    post = lambda name: lambda m, inputs, out: times.setdefault(name, []).append(      # noqa: E731
        (time.perf_counter() - start[name]) * 1000)
    handles = [h for name, m in leaves(model).items()
               for h in (m.register_forward_pre_hook(pre(name)), m.register_forward_hook(post(name)))]
    try:
        with torch.inference_mode():
            for _ in range(repeats):
                model(x)
    finally:
        for h in handles:
            h.remove()
    return {name: statistics.median(t) for name, t in times.items()}


def amdahl_speedup(dense: nn.Module, small: nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """The speedup to expect if each layer of ``dense`` got faster by exactly its own work reduction (MACs for
    Conv2d/Linear, output elements for BatchNorm, ReLU, pooling): sum t_i / sum (t_i / r_i); and the share of
    the dense model's time spent in Conv2d/Linear layers."""
    t = module_times(dense, x, repeats)
    w_dense, w_small = work_per_module(dense, x), work_per_module(small, x)
    ratio = {k: w_dense[k][0] / w_small[k][0] if w_dense[k][0] else w_dense[k][1] / w_small[k][1] for k in t}
    mac_share = sum(t[k] for k in t if w_dense[k][0]) / sum(t.values())
    return sum(t.values()) / sum(t[k] / ratio[k] for k in t), mac_share


def l1_keep(model: nn.Module, layers: list[str], fraction: float = 0.5) -> dict[str, torch.Tensor]:
    """Per layer: indices of the filters with the largest L1 norm sum |W[c]| (the others are removed), sorted."""
    keep = {}
    for name in layers:
        W = model.get_submodule(name).weight.detach()              # [C_out, C_in, kH, kW]
        norms = W.abs().flatten(1).sum(1)                            # [C_out]
        keep[name] = norms.topk(round(len(norms) * fraction)).indices.sort().values
    return keep


def masked_copy(model: nn.Module, keep: dict[str, torch.Tensor], bn_of) -> nn.Module:
    """torch.nn.utils.prune masks on each layer's removed filters and on the following BatchNorm's weight and bias."""
    masked = copy.deepcopy(model)
    for name, idx in keep.items():
        unit = torch.zeros(masked.get_submodule(name).weight.shape[0])
        unit[idx] = 1
        conv, bn = masked.get_submodule(name), masked.get_submodule(bn_of(name))
        prune.custom_from_mask(conv, "weight", unit.view(-1, 1, 1, 1).expand_as(conv.weight))
        prune.custom_from_mask(bn, "weight", unit)
        prune.custom_from_mask(bn, "bias", unit)
    return masked


def interleaved_medians(fns: dict, repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median wall time (ms) of each function, timed in turn within every repeat."""
    times = {k: [] for k in fns}
    for r in range(warmup + repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            if r >= warmup:
                times[k].append((time.perf_counter() - start) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def forward(model, x):
    def run():
        with torch.inference_mode():
            model(x)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="repeats of the batch-256 forward pass")
    parser.add_argument("--eval-repeats", type=int, default=3, help="repeats of the full test-set evaluation")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true",
                        help="also time dense and shrunk VGGSmall under torch.compile (inductor fuses BatchNorm, "
                             "ReLU and pooling; needs a C++ compiler; about 40 s to compile)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores, {args.repeats} repeats")
    test_set = pl.load_fashion_mnist("test")
    x = test_set.normalized()[:256]

    # --- VGGSmall: 50% of every conv's channels, smallest L1 norm removed
    dense = pl.load_pretrained("vgg_small").eval()
    keep = l1_keep(dense, [f"conv{i}" for i in range(1, 7)])
    masked = masked_copy(dense, keep, lambda name: name.replace("conv", "bn")).eval()
    found = channels_to_keep(masked)
    assert found.keys() == keep.keys() and all(torch.equal(found[k], keep[k]) for k in keep)
    small = shrink(masked, found).eval()
    models = {"dense": dense, "masked": masked, "shrunk": small}

    work = {k: work_per_image(m, x) for k, m in models.items()}
    batch = interleaved_medians({k: forward(m, x) for k, m in models.items()}, args.repeats)
    evals = {}
    full = interleaved_medians({k: (lambda k=k, m=m: evals.__setitem__(k, pl.evaluate(m, test_set)))
                                for k, m in models.items()}, args.eval_repeats, warmup=1)
    acc = {k: e.accuracy for k, e in evals.items()}

    print("\nVGGSmall, 50% of channels of every conv removed (smallest L1 norm), no fine-tuning")
    print(f"{'model':8s} {'params':>8s} {'MACs/img':>10s} {'act/img':>8s} {'batch256 ms':>12s} {'test set ms':>12s} "
          f"{'accuracy':>9s}")
    for k, m in models.items():
        print(f"{k:8s} {pl.count_parameters(m):8,d} {work[k][0]:10,d} {work[k][1]:8,d} {batch[k]:12.1f} "
              f"{full[k]:12.0f} {acc[k]:9.4f}")
    mac_ratio = work["dense"][0] / work["shrunk"][0]
    act_ratio = work["dense"][1] / work["shrunk"][1]
    speedup, speedup_full = batch["dense"] / batch["shrunk"], full["dense"] / full["shrunk"]
    masked_speedup = batch["dense"] / batch["masked"]
    bound, mac_share = amdahl_speedup(dense, small, x, max(5, args.repeats // 3))
    print(f"MAC reduction {mac_ratio:.2f}x, activation reduction {act_ratio:.2f}x; shrunk speedup {speedup:.2f}x "
          f"(batch 256), {speedup_full:.2f}x (test set); speedup / MAC ratio {speedup / mac_ratio:.2f}; "
          f"masked speedup {masked_speedup:.2f}x")
    print(f"Conv2d/Linear take {mac_share:.0%} of the dense model's time, BatchNorm/ReLU/pooling the rest. "
          f"Per-layer bound (each layer faster by its own MAC or activation reduction): {bound:.2f}x = "
          f"{bound / mac_ratio:.2f} of the MAC ratio; shrunk reaches {speedup / bound:.2f} of it")

    compiled_ratio = None
    if args.compile:
        compiled = {k: torch.compile(copy.deepcopy(models[k])) for k in ("dense", "shrunk")}
        start = time.perf_counter()
        with torch.inference_mode():
            for m in compiled.values():
                m(x)
        c_batch = interleaved_medians({k: forward(m, x) for k, m in compiled.items()}, args.repeats)
        compiled_ratio = c_batch["dense"] / c_batch["shrunk"] / mac_ratio
        print(f"torch.compile (compiled in {time.perf_counter() - start:.0f} s): dense {c_batch['dense']:.1f} ms, "
              f"shrunk {c_batch['shrunk']:.1f} ms, speedup {c_batch['dense'] / c_batch['shrunk']:.2f}x = "
              f"{compiled_ratio:.2f} of the MAC ratio")

    # --- ResNet-18: 50% of the internal channels (conv1 -> bn1 -> relu -> conv2) of every BasicBlock
    r_dense = pl.build_model("resnet18").eval()
    r_keep = l1_keep(r_dense, [f"layer{s}.{b}.conv1" for s in range(1, 5) for b in range(2)])
    r_small = shrink(r_dense, r_keep).eval()
    r_models = {"dense": r_dense, "shrunk": r_small}
    r_work = {k: work_per_image(m, x) for k, m in r_models.items()}
    r_batch = interleaved_medians({k: forward(m, x) for k, m in r_models.items()}, max(5, args.repeats // 3))
    r_mac_ratio, r_speedup = r_work["dense"][0] / r_work["shrunk"][0], r_batch["dense"] / r_batch["shrunk"]
    print("\nResNet-18 (random init), 50% of the internal channels of every BasicBlock removed (smallest L1 norm)")
    for k, m in r_models.items():
        print(f"{k:8s} {pl.count_parameters(m):11,d} params {r_work[k][0]:12,d} MACs/img "
              f"{r_batch[k]:9.1f} ms/batch256")
    print(f"MAC reduction {r_mac_ratio:.2f}x; speedup {r_speedup:.2f}x; "
          f"speedup / MAC ratio {r_speedup / r_mac_ratio:.2f}")

    print()
    print(f"RESULT vgg_small_speedup_over_mac_ratio={speedup / mac_ratio:.2f} unit=ratio target=>=0.8")
    if compiled_ratio is not None:
        print(f"RESULT vgg_small_compiled_speedup_over_mac_ratio={compiled_ratio:.2f} unit=ratio target=>=0.8")
    print(f"RESULT vgg_small_mac_reduction={mac_ratio:.2f} unit=x target=reference")
    print(f"RESULT vgg_small_activation_reduction={act_ratio:.2f} unit=x target=reference")
    print(f"RESULT vgg_small_per_layer_bound_over_mac_ratio={bound / mac_ratio:.2f} unit=ratio target=reference")
    print(f"RESULT vgg_small_speedup_over_per_layer_bound={speedup / bound:.2f} unit=ratio target=reference")
    print(f"RESULT vgg_small_shrunk_speedup_batch256={speedup:.2f} unit=x target=reference")
    print(f"RESULT vgg_small_shrunk_speedup_testset={speedup_full:.2f} unit=x target=reference")
    print(f"RESULT vgg_small_masked_speedup_batch256={masked_speedup:.2f} unit=x target=~1")
    for k in models:
        print(f"RESULT vgg_small_accuracy_{k}={acc[k]:.4f} unit=fraction target=reference")
    print(f"RESULT vgg_small_accuracy_masked_minus_shrunk={acc['masked'] - acc['shrunk']:.4f} unit=fraction target=0")
    print(f"RESULT resnet18_internal_mac_reduction={r_mac_ratio:.2f} unit=x target=reference")
    print(f"RESULT resnet18_internal_speedup_batch256={r_speedup:.2f} unit=x target=reference")
    print(f"RESULT resnet18_internal_speedup_over_mac_ratio={r_speedup / r_mac_ratio:.2f} unit=ratio "
          "target=reference")


if __name__ == "__main__":
    main()
