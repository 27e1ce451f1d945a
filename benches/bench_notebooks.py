"""Every notebook run top to bottom in a fresh kernel, as a learner would: wall time per notebook (target: at
most 90 s each on a 2-core CPU) and for the whole series (target: at most 10 minutes), and the kernel's memory:
what a JupyterHub needs per learner.

Each notebook runs with nbclient (what nbval uses) in its own kernel, started in notebooks/, one after the
other; the time includes the kernel's start and prunelab's import. Memory is read by one cell appended to a
copy of the notebook (/proc/self/status, Linux): the kernel's peak resident set (VmHWM) and, at the end, its
private memory (RssAnon: what stays while a learner keeps the notebook open, and what each further learner adds).
The rest of the resident set is the libraries' code (torch's alone about 230 MB), read from the same files by
every kernel on a machine and held once in its page cache. A bare kernel that imports prunelab is measured the
same way, as the floor. The load average is printed before and after: on a busy machine everything is slower,
so repeat on a quiet one.

    python benches/bench_notebooks.py [NAME_PART ...]     # e.g. 07 13 to time only those
"""

import argparse
import os
import re
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MEMORY_CELL = ("print(*[line.split()[:2] for line in open('/proc/self/status')"
               " if line.startswith(('VmHWM', 'RssAnon'))])")


def run(nb: nbformat.NotebookNode) -> tuple[float, float, float]:
    """Seconds to execute ``nb`` in a fresh kernel (raises on the first failing cell), the kernel's peak resident
    memory and its private memory at the end, in MB."""
    nb.cells.append(nbformat.v4.new_code_cell(MEMORY_CELL))
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    seconds = time.perf_counter() - start
    text = nb.cells[-1].outputs[0]["text"]
    peak_kb, private_kb = (re.search(rf"'{key}:', '(\d+)'", text).group(1) for key in ("VmHWM", "RssAnon"))
    return seconds, int(peak_kb) / 1024, int(private_kb) / 1024


def bare_kernel() -> nbformat.NotebookNode:
    """A notebook that only imports prunelab (and torch with it): the floor every notebook starts from."""
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import prunelab")])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="run only notebooks whose name contains one of these")
    args = parser.parse_args()
    paths = [p for p in sorted(NOTEBOOKS.glob("*.ipynb")) if not args.only or any(o in p.name for o in args.only)]
    print(f"{len(paths)} notebooks, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    _, floor_peak, floor_private = run(bare_kernel())
    print(f"a kernel that imports prunelab: peak {floor_peak:.0f} MB, private {floor_private:.0f} MB")
    print("seconds  peak MB  private MB  notebook")
    times, peaks, private = {}, {}, {}
    for path in paths:
        times[path.stem], peaks[path.stem], private[path.stem] = run(nbformat.read(path, as_version=4))
        print(f"{times[path.stem]:7.1f} {peaks[path.stem]:8.0f} {private[path.stem]:11.0f}  {path.name}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"RESULT kernel_import_prunelab_peak_mb={floor_peak:.0f} unit=MB")
    print(f"RESULT kernel_import_prunelab_private_mb={floor_private:.0f} unit=MB")
    for name, seconds in times.items():
        target = " target=<=500" if name.startswith("explore_") else ""
        print(f"RESULT notebook_{name}_s={seconds:.1f} unit=s target=<=90")
        print(f"RESULT notebook_{name}_peak_mb={peaks[name]:.0f} unit=MB")
        print(f"RESULT notebook_{name}_private_mb={private[name]:.0f} unit=MB{target}")
    slowest, largest = max(times, key=times.get), max(peaks, key=peaks.get)
    print(f"RESULT notebook_slowest_s={times[slowest]:.1f} unit=s target=<=90 ({slowest})")
    print(f"RESULT notebooks_total_s={sum(times.values()):.1f} unit=s target=<=600")
    print(f"RESULT notebook_largest_peak_mb={peaks[largest]:.0f} unit=MB ({largest})")


if __name__ == "__main__":
    main()
