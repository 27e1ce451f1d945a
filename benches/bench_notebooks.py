"""Every notebook run top to bottom in a fresh kernel, as a learner would: wall time per notebook (target: at
most 90 s each on a 2-core CPU) and for the whole series (target: at most 10 minutes).

Each notebook runs with nbclient (what nbval uses) in its own kernel, started in notebooks/, one after the
other; the time includes the kernel's start and prunelab's import. The load average is printed before and
after: on a busy machine everything is slower, so repeat on a quiet one.

    python benches/bench_notebooks.py [NAME_PART ...]     # e.g. 07 13 to time only those
"""

import argparse
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run(path: Path) -> float:
    """Seconds to execute ``path`` in a fresh kernel (raises on the first failing cell)."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="run only notebooks whose name contains one of these")
    args = parser.parse_args()
    paths = [p for p in sorted(NOTEBOOKS.glob("*.ipynb")) if not args.only or any(o in p.name for o in args.only)]
    print(f"{len(paths)} notebooks, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    times = {}
    for path in paths:
        times[path.stem] = run(path)
        print(f"{times[path.stem]:7.1f} s  {path.name}", flush=True)
    slowest = max(times, key=times.get)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    for name, seconds in times.items():
        print(f"RESULT notebook_{name}_s={seconds:.1f} unit=s target=<=90")
    print(f"RESULT notebook_slowest_s={times[slowest]:.1f} unit=s target=<=90 ({slowest})")
    print(f"RESULT notebooks_total_s={sum(times.values()):.1f} unit=s target=<=600")


if __name__ == "__main__":
    main()
