"""Start-up cost of the `playground` console script, beside the interpreter's own.

Runs, from a directory outside the repository, each command N times as a fresh process and prints the wall time
(min and median), the CPU time (user+sys of the child, median) and the peak RSS (max) of:

* ``python -c pass``                        the floor: the interpreter with the venv's site-packages;
* ``playground --help``                     target <= 0.3 s (the lazy command table: no command module imported);
* ``playground validate manifests/``        target <= 1 s (the project's manifests: load, models, every rule).

    .venv/bin/python bench/cli_startup.py [--runs 15]

The machine is shared: the minimum is the figure to compare with the targets, the median shows the load.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGETS = {"playground --help": 0.3, "playground validate manifests/": 1.0}


def measure(argv: list[str], cwd: str, runs: int) -> tuple[list[float], list[float], int]:
    walls, cpus, rss = [], [], 0
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode not in (0, 2):  # --help exits 0; validate 0 (2 would be a usage error)
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        rss = max(rss, after.ru_maxrss)  # KiB, the largest child so far
    return walls, cpus, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    playground = str(BIN / "playground")
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "playground --help": [playground, "--help"],
        "playground validate manifests/": [playground, "validate", str(ROOT / "manifests")],
    }
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as outside:
        print(f"{args.runs} runs each from {outside} (outside the repository); load average {os.getloadavg()[0]:.2f}")
        print(f"{'command':34} {'wall min':>9} {'wall med':>9} {'cpu med':>9} {'peak RSS':>9}  target")
        for name, argv in cases.items():
            measure(argv, outside, 1)  # warm the page cache and the bytecode caches
            walls, cpus, rss = measure(argv, outside, args.runs)
            target = TARGETS.get(name)
            verdict = "" if target is None else f"<= {target:g} s: {'met' if min(walls) <= target else 'MISSED'}"
            print(
                f"{name:34} {min(walls):8.3f}s {statistics.median(walls):8.3f}s {statistics.median(cpus):8.3f}s "
                f"{rss / 1024:7.1f}MB  {verdict}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
