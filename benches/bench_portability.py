"""Which notebook claims survive another CPU, another thread count or another seed?

Runs notebooks top to bottom (nbclient, a fresh kernel each, every cell run even after a failure) under numeric
configurations and seed offsets, and lists every cell that fails, with the first line of its error. A claim
that holds only on the machine where it was written fails here first.

Numeric configurations (environment variables of the kernel; each changes the bits that training produces):

- ``default``: this machine as it is.
- ``avx2-1t``: the configuration CI runs the notebooks under a second time (``.ci/run``): AVX2 kernels in ATen,
  oneDNN and MKL, one thread. On an AVX-512 machine this is another instruction set; on any machine another
  thread count, so other summation orders.
- ``scalar-1t``: ATen's non-vectorised kernels, MKL and oneDNN limited to SSE4, one thread: a CPU unlike any
  of the above (an ARM laptop also has other kernels).
- ``4t``, ``8t``: 4 or 8 threads (a bigger laptop or server; on 2 cores the threads share them, which is slow but
  sums in the same order as on 4 or 8 cores). Not run unless named: ``--configs 4t 8t``.

A seed offset ``k > 0`` adds ``k`` to every seed the notebook gives torch (``torch.manual_seed`` and
``torch.Generator().manual_seed``, so model initialisation, batch order and data subsets all change). A claim
that fails under another seed was a property of one run, not of the method; precomputed, committed results
(checkpoints, ``data/precomputed``) do not change with the offset.

    python benches/bench_portability.py                          # every notebook, the first three configs, seed 0
    python benches/bench_portability.py 08 09 --seeds 0 1 2 3     # those notebooks, four seeds each
    python benches/bench_portability.py --configs avx2-1t --jobs 2   # two kernels at a time (1 thread each)
    python benches/bench_portability.py 08 --seeds 0 1 2 --figures figs   # also keep every numeric global ...
    python benches/bench_portability.py 08 --spread figs                  # ... and print each one's range

It prints ``RESULT portability_<notebook>_<config>_seed<k>_failed=<n>`` per run and a total (target 0).
"""

import argparse
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CONFIGS = {
    "default": {},
    "avx2-1t": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                **ONE_THREAD},
    "scalar-1t": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                  "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", **ONE_THREAD},
    "4t": {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"},      # more threads than cores sum in yet another order
    "8t": {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8"},
}

SEED_OFFSET_CELL = """\
import torch as _torch
_OFFSET = {offset}
_manual_seed = _torch.manual_seed
_torch.manual_seed = lambda seed: _manual_seed(seed + _OFFSET)
class _OffsetGenerator(_torch.Generator):
    def manual_seed(self, seed):
        return super().manual_seed(seed + _OFFSET)
_torch.Generator = _OffsetGenerator
"""


# Appended when --figures is given: every number the notebook left in its globals (floats, ints, and dicts or
# lists of them, two levels deep), so the spread of each figure across runs can be read side by side.
FIGURES_CELL = """\
import json as _json, numbers as _numbers
def _flatten(name, v, depth=0):
    if isinstance(v, _numbers.Real) and not isinstance(v, bool):
        return {{name: float(v)}}
    items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, (list, tuple)) else ()
    if depth == 2 or not 0 < len(v if isinstance(v, (dict, list, tuple)) else ()) <= 64:
        return {{}}
    out = {{}}
    for k, vv in items:
        out.update(_flatten(f"{{name}}[{{k!r}}]", vv, depth + 1))
    return out
_figures = {{}}
for _k, _v in list(globals().items()):
    if not _k.startswith("_"):
        _figures.update(_flatten(_k, _v))
with open({path!r}, "w") as _f:
    _json.dump(_figures, _f, indent=0, sort_keys=True)
"""


def run(path: Path, config: str, seed_offset: int, figures: Path | None = None) -> tuple[float, list[str]]:
    """Seconds to run ``path``, and ``"cell N: first error line"`` for each cell that raised; with ``figures``,
    the notebook's numeric globals are written to ``figures/<notebook>_<config>_seed<k>.json``."""
    nb = nbformat.read(path, as_version=4)
    if seed_offset:
        nb.cells.insert(0, nbformat.v4.new_code_cell(SEED_OFFSET_CELL.format(offset=seed_offset)))
    if figures is not None:
        out = figures.resolve() / f"{path.stem}_{config}_seed{seed_offset}.json"
        nb.cells.append(nbformat.v4.new_code_cell(FIGURES_CELL.format(path=str(out))))
    env = {**os.environ, **CONFIGS[config]}
    client = NotebookClient(nb, timeout=900, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    start = time.perf_counter()
    client.execute(env=env)
    seconds = time.perf_counter() - start
    failures = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                where = i - 1 if seed_offset else i                  # the cell's index in the notebook file
                frames = _strip_ansi("\n".join(out.get("traceback", []))).splitlines()
                line = next((ln for ln in reversed(frames) if ln.lstrip().startswith("---->")), "")
                failures.append(f"cell {where}: {out['ename']} {out['evalue'][:120]} {line.strip()[:200]}")
    return seconds, failures


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text).strip()


def print_spread(folder: Path, only: list[str]) -> None:
    """For each notebook with figures in ``folder``: every figure that moves, its min and max over the runs."""
    runs: dict[str, dict[str, dict]] = {}
    for f in sorted(folder.glob("*.json")):
        stem, config, seed = f.stem.rsplit("_", 2)
        if not only or any(o in stem for o in only):
            runs.setdefault(stem, {})[f"{config}/{seed}"] = json.loads(f.read_text())
    for stem, by_run in runs.items():
        print(f"{stem}: {len(by_run)} runs ({', '.join(by_run)})")
        names = sorted(set().union(*by_run.values()))
        for name in names:
            values = [r[name] for r in by_run.values() if name in r]
            if len(values) > 1 and max(values) != min(values):
                print(f"  {name:<48} {min(values):>12.6g} .. {max(values):<12.6g}  "
                      f"[{' '.join(f'{v:.4g}' for v in values)}]")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="run only notebooks whose name contains one of these")
    parser.add_argument("--configs", nargs="+", default=["default", "avx2-1t", "scalar-1t"], choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seed offsets (0: as written)")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks run at the same time")
    parser.add_argument("--figures", type=Path, help="write each run's numeric globals to a JSON file here")
    parser.add_argument("--spread", type=Path, help="print the spread of the figures in this folder, run nothing")
    args = parser.parse_args()
    if args.spread:
        print_spread(args.spread, args.only)
        return 0
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
    paths = [p for p in sorted(NOTEBOOKS.glob("*.ipynb")) if not args.only or any(o in p.name for o in args.only)]
    runs = [(p, c, s) for c in args.configs for s in args.seeds for p in paths]
    print(f"{len(runs)} runs, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)

    def one(job):
        path, config, seed = job
        seconds, failures = run(path, config, seed, args.figures)
        print(f"{seconds:6.1f} s  {path.stem:<40} {config:<10} seed+{seed}: "
              f"{'ok' if not failures else f'{len(failures)} failed'}", flush=True)
        for f in failures:
            print(f"          {f}", flush=True)
        return job, failures

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, runs))
    total = 0
    for (path, config, seed), failures in results:
        total += len(failures)
        print(f"RESULT portability_{path.stem[:2] if path.stem[0].isdigit() else path.stem}_{config}_seed{seed}"
              f"_failed={len(failures)} unit=cells target=0")
    print(f"RESULT portability_failed_total={total} unit=cells target=0")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
