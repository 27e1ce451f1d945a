"""Compressing the tiny GPT without retraining: validation perplexity after magnitude, Wanda and SparseGPT pruning
(50%, 2:4, 4:8), after round-to-nearest vs GPTQ quantization (4 and 3 bits), and after removing attention heads
by importance vs at random.

Model: the committed ``TinyGPT`` (``text.load_tiny_gpt``: 826k parameters, 4 blocks of 4 heads, E = 128). Every
Linear is compressed (qkv, proj, the MLP's fc and proj in each block, and the head: 794,496 weights); embeddings,
biases and LayerNorms stay float32. Calibration: --calibration blocks of 128 characters spread evenly over the
"train" split (``TextSet.blocks``). Measurement: ``text.perplexity`` on --blocks blocks of 128 characters spread
evenly over the "validation" split (Joshua and Acts).

- Pruning. Magnitude: ``prune(model, 0.5)`` (each layer to 50% by |W|; N:M: ``granularity="n:m"``). Wanda:
  ``prune(..., criterion="wanda", data=calibration)`` (|W_ij|·‖X_j‖₂ per output row). SparseGPT:
  ``one_shot.sparsegpt`` (blocksize 128, damp 0.01), its wall time (calibration passes included) beside it.
- Quantization, symmetric, one scale per row and per group of 32 input columns (or per row): RTN
  (``gptq.rtn``, ``quantization.fake_quantize_groups``) vs GPTQ (``gptq.gptq``, damp 0.01). Bytes: the Linear
  weights at ``bits`` bits each plus one float16 scale per row and group (float32 weights: 3,177,984 bytes).
- Heads (16 in all). Greedy: remove the head of lowest importance I_h (``heads.head_importance`` on
  --importance-batches × 32 training blocks, Michel et al. 2019), recompute the importance of the heads left,
  repeat; also with I_h / ‖I_layer‖₂ (``heads.normalize_per_layer``, the paper's layer normalisation). Random: heads
  removed in a random order over all layers, mean (min, max) of --seeds orders. Per layer: ``prune(model, s,
  granularity="head", criterion=...)`` removes the same number from every layer (1 or 2 of 4).

Measured on a 2-core AMD EPYC shared with other work (load average 1.2), torch 2.14.1, 2 threads, with the defaults
(131 s in all); dense validation perplexity 3.3750 on the 512 blocks (3.3993 on all 1,796):

    what                               setting           ppl  vs dense  seconds  notes
    magnitude                          50%            4.2021   +0.8271
    wanda                              50%            3.7302   +0.3552
    sparsegpt                          50%            3.5244   +0.1494      8.5
    magnitude                          2:4            4.8192   +1.4442
    wanda                              2:4            4.4045   +1.0295
    sparsegpt                          2:4            3.7036   +0.3286      8.0
    magnitude                          4:8            4.2661   +0.8910
    wanda                              4:8            4.0035   +0.6285
    sparsegpt                          4:8            3.5883   +0.2133      7.6
    rtn                                4-bit g32      3.4249   +0.0499           446,904 B
    gptq                               4-bit g32      3.3952   +0.0201      7.4  446,904 B
    rtn                                4-bit row      3.4635   +0.0885           406,590 B
    gptq                               4-bit row      3.4057   +0.0307      6.9  406,590 B
    rtn                                3-bit g32      3.7843   +0.4093           347,592 B
    gptq                               3-bit g32      3.4924   +0.1174      7.0  347,592 B
    rtn                                3-bit row      4.2630   +0.8880           307,278 B
    gptq                               3-bit row      3.5603   +0.1853      6.9  307,278 B
    heads greedy I_h                   -4 of 16       3.4703   +0.0953           heads left per layer 4 2 4 2
    heads greedy I_h                   -8 of 16       3.5893   +0.2143     10.8  heads left per layer 4 2 2 0
    heads greedy I_h/|I_layer|         -4 of 16       4.4014   +1.0264           heads left per layer 2 2 4 4
    heads greedy I_h/|I_layer|         -8 of 16      10.6431   +7.2680     11.3  heads left per layer 1 2 3 2
    heads random order                 -4 of 16       4.7055   +1.3304           min 3.5499 max 9.2635 (5 orders)
    heads random order                 -8 of 16       9.4412   +6.0662           min 3.8000 max 19.7530 (5 orders)
    heads per layer, head_importance   -4 of 16       3.5069   +0.1319
    heads per layer, head_importance   -8 of 16       4.5838   +1.2088
    heads per layer, l1                -4 of 16       3.5077   +0.1327
    heads per layer, l1                -8 of 16       4.5766   +1.2016
    heads per layer, random            -4 of 16       4.3586   +0.9835
    heads per layer, random            -8 of 16      20.8578  +17.4828

(seconds: SparseGPT's and GPTQ's wall time per call, calibration passes included; for greedy heads, all 8 steps.)
GPTQ cuts RTN's loss of perplexity by 2.5x (4-bit g32) to 4.8x (3-bit per row): 3-bit GPTQ per row (307 kB)
beats 3-bit RTN with groups of 32 (348 kB). SparseGPT's weight updates are worth more than
Wanda's per-row criterion at every pattern. Heads: the last layers' heads each matter little, and greedy I_h takes
all four heads of block 3 while the perplexity rises by 0.21; normalising I per layer, as Michel et al. do, hides
that and does worse than a random order. Forcing the same count per layer costs more than choosing where; within a
layer, I_h and the L1 norm choose alike here.

    python benches/bench_gpt_compression.py [--calibration 128] [--blocks 512] [--importance-batches 8]
        [--seeds 5] [--threads N]
"""

import argparse
import math
import os
import platform
import statistics
import time

import torch

import prunelab as pl
from machine import cpu_name
from prunelab import masks as M
from prunelab import text
from prunelab.gptq import gptq, rtn
from prunelab.heads import head_importance, normalize_per_layer
from prunelab.one_shot import linear_layers, sparsegpt
from prunelab.pruning import attention_layers, head_masks_to_parameters

BLOCK = 128


def spread_blocks(text_set: text.TextSet, n: int) -> torch.Tensor:
    """n blocks of BLOCK characters spread evenly over ``text_set``, int64 [n, BLOCK] (as ``perplexity`` picks)."""
    x, _ = text_set.blocks(BLOCK)
    return x[torch.arange(n) * len(x) // n]


def weight_bytes(model, bits: int, group_size: int | None) -> int:
    """Bytes of the Linear weights at ``bits`` bits each, plus one float16 scale per row and group of columns."""
    total = 0
    for layer in linear_layers(model).values():
        out, cols = layer.weight.shape
        groups = 1 if group_size is None else math.ceil(cols / group_size)
        total += math.ceil(out * cols * bits / 8) + 2 * out * groups
    return total


def set_heads(model, alive: dict[str, torch.Tensor]) -> None:
    """Mask ``model`` so that exactly the heads where ``alive[attention]`` [H] is True compute."""
    M.set_masks(model, head_masks_to_parameters(model, alive))


def greedy_heads(base, train, removals: list[int], batches: int, *, normalize: bool) -> dict[int, tuple]:
    """{k: (a copy of ``base`` with k heads removed greedily, {attention: heads alive [H]})} for k in ``removals``:
    each step removes the head of lowest I_h (or, with ``normalize``, I_h / ‖I_layer‖₂), the importance
    recomputed on the heads left."""
    model = M.copy_model(base)
    alive = {name: torch.ones(layout.heads, dtype=torch.bool) for name, layout in attention_layers(model).items()}
    models = {}
    for k in range(1, max(removals) + 1):
        importance = head_importance(model, train, n_batches=batches, batch_size=32)
        importance = normalize_per_layer(importance) if normalize else importance
        name, h = min(((name, h) for name in alive for h in alive[name].nonzero().flatten().tolist()),
                      key=lambda nh: float(importance[nh[0]][nh[1]]))
        alive[name][h] = False
        set_heads(model, alive)
        if k in removals:
            models[k] = (M.copy_model(model), {n: a.clone() for n, a in alive.items()})
    return models


def random_heads(base, k: int, seed: int):
    """A copy of ``base`` with k heads, drawn at random over all layers, removed."""
    model = M.copy_model(base)
    layouts = attention_layers(model)
    heads = [(name, h) for name, layout in layouts.items() for h in range(layout.heads)]
    order = torch.randperm(len(heads), generator=torch.Generator().manual_seed(seed))[:k].tolist()
    alive = {name: torch.ones(layout.heads, dtype=torch.bool) for name, layout in layouts.items()}
    for i in order:
        alive[heads[i][0]][heads[i][1]] = False
    set_heads(model, alive)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=int, default=128, help="training blocks of 128 characters")
    parser.add_argument("--blocks", type=int, default=512, help="validation blocks of 128 characters")
    parser.add_argument("--importance-batches", type=int, default=8, help="batches of 32 training blocks")
    parser.add_argument("--seeds", type=int, default=5, help="random head orders")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start_all = time.perf_counter()
    print(f"CPU: {cpu_name()} ({platform.machine()}, {os.cpu_count()} logical cores); torch {torch.__version__} "
          f"with {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}")
    base = text.load_tiny_gpt()
    train, validation = text.load_corpus("train"), text.load_corpus("validation")
    calibration = spread_blocks(train, args.calibration)

    def ppl(model) -> float:
        return text.perplexity(model, validation, n_blocks=args.blocks)

    dense = ppl(base)
    dense_bytes = 4 * sum(layer.weight.numel() for layer in linear_layers(base).values())
    print(f"tiny GPT dense: validation perplexity {dense:.4f} on {args.blocks} blocks; calibration: "
          f"{args.calibration} training blocks; Linear weights {dense_bytes:,} bytes in float32")
    rows = []                                    # (key, what, setting, perplexity, seconds or None, extra)

    # 1. pruning
    patterns = {"50%": {}, "2:4": {"n": 2, "m": 4}, "4:8": {"n": 4, "m": 8}}
    for label, nm in patterns.items():
        key = "unstructured50" if label == "50%" else label.replace(":", "of")
        mask_args = {"granularity": "n:m", **nm} if nm else {}
        for method, extra in (("magnitude", {}), ("wanda", {"criterion": "wanda", "data": calibration})):
            model = M.copy_model(base)
            pl.prune(model, 0.5, **mask_args, **extra)
            rows.append((f"{method}_{key}", method, label, ppl(model), None, ""))
        start = time.perf_counter()
        pruned = sparsegpt(base, calibration, 0.5 if not nm else 0.0, **nm)
        seconds = time.perf_counter() - start
        rows.append((f"sparsegpt_{key}", "sparsegpt", label, ppl(pruned), seconds, ""))

    # 2. quantization
    for bits in (4, 3):
        for group_size in (32, None):
            grouping = f"g{group_size}" if group_size else "row"
            setting = f"{bits}-bit {grouping}"
            size = weight_bytes(base, bits, group_size)
            rows.append((f"rtn_{bits}bit_{grouping}", "rtn", setting, ppl(rtn(base, bits, group_size=group_size)),
                         None, f"{size:,} B"))
            start = time.perf_counter()
            quantized = gptq(base, calibration, bits, group_size=group_size)
            seconds = time.perf_counter() - start
            rows.append((f"gptq_{bits}bit_{grouping}", "gptq", setting, ppl(quantized), seconds, f"{size:,} B"))

    # 3. heads: 4 and 8 of the 16
    removals = [4, 8]
    for normalize, key, what in ((False, "importance", "heads greedy I_h"),
                                 (True, "normalized_importance", "heads greedy I_h/|I_layer|")):
        start = time.perf_counter()
        greedy = greedy_heads(base, train, removals, args.importance_batches, normalize=normalize)
        seconds = time.perf_counter() - start
        for k, (model, alive) in greedy.items():
            left = " ".join(str(int(a.sum())) for a in alive.values())
            rows.append((f"heads_greedy_{key}_{k}of16", what, f"-{k} of 16", ppl(model),
                         seconds if k == max(removals) else None, f"heads left per layer {left}"))
    for k in removals:
        values = [ppl(random_heads(base, k, seed)) for seed in range(args.seeds)]
        rows.append((f"heads_random_{k}of16", "heads random order", f"-{k} of 16", statistics.mean(values), None,
                     f"min {min(values):.4f} max {max(values):.4f} ({args.seeds} orders)"))
    for criterion in ("head_importance", "l1", "random"):
        for k in removals:
            model = M.copy_model(base)
            pl.prune(model, k / 16, granularity="head", criterion=criterion, data=train, seed=0)
            rows.append((f"heads_per_layer_{criterion}_{k}of16", f"heads per layer, {criterion}", f"-{k} of 16",
                         ppl(model), None, ""))

    print(f"\n{'what':<34s} {'setting':<12s} {'ppl':>8s} {'vs dense':>9s} {'seconds':>8s}  notes")
    print(f"{'dense':<34s} {'':<12s} {dense:8.4f} {0:+9.4f} {'':>8s}  Linear weights {dense_bytes:,} B")
    for _, what, setting, value, seconds, extra in rows:
        sec = f"{seconds:8.1f}" if seconds is not None else f"{'':>8s}"
        print(f"{what:<34s} {setting:<12s} {value:8.4f} {value - dense:+9.4f} {sec}  {extra}")
    total = time.perf_counter() - start_all
    print(f"\nwhole bench: {total:.0f} s")

    print(f"RESULT gpt_dense_validation_perplexity={dense:.4f} unit=perplexity target=reference")
    for key, _, _, value, seconds, _ in rows:
        print(f"RESULT gpt_{key}_perplexity={value:.4f} unit=perplexity target=reference")
        if seconds is not None:
            print(f"RESULT gpt_{key}_seconds={seconds:.2f} unit=s target=reference")
    for bits in (4, 3):
        for group_size in (32, None):
            grouping = f"g{group_size}" if group_size else "row"
            print(f"RESULT gpt_{bits}bit_{grouping}_weight_bytes={weight_bytes(base, bits, group_size)} unit=bytes "
                  "target=reference")
    print(f"RESULT gpt_compression_bench_seconds={total:.1f} unit=s target=reference")


if __name__ == "__main__":
    main()
