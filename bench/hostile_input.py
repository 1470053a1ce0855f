"""Time and peak memory per hostile manifest (issue 14's probes, tests/support/hostile.py), per reader.

For each probe (alias bomb, NUL byte, 100k-deep nesting, FIFO, symlink to /dev/zero, 300 KB name with U+2028 and
U+202E, 3 MiB file) next to the project's manifests, one fresh process per reader, measured with wait4 (wall
time, CPU time, peak RSS):

* ``validate``: the console script ``playground validate DIR``, from outside the repository;
* ``sync``: the GitOps sync's validation and plan (``plan_sync``) of a checkout of a real git origin holding the
  probe (a FIFO cannot be committed: its directory is planned directly);
* ``sensors``: what the image automation and the code location read (``load_policies``, ``targets_from``);
* ``backtest``: ``playground backtest PROBE.yaml TRACE.csv`` with the probe as the canary file.

Each line also gives the exit status and the number of findings (or output lines), and the longest line printed.
A baseline row (the project's manifests alone) shows what a process costs without any probe.

    .venv/bin/python bench/hostile_input.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playground.local import gitorigin  # noqa: E402
from tests.support.hostile import IN_GIT, PROBES  # noqa: E402

PLAYGROUND = str(Path(sys.executable).parent / "playground")
SYNC = """
import sys
from playground.gitops import plan_sync
from playground.local.cluster import LocalCluster
cluster = LocalCluster(sys.argv[2])
plan = plan_sync(cluster, sys.argv[1])
cluster.close()
for f in plan.errors:
    print(f)
"""
SENSORS = """
import sys
from playground.images import load_policies
from playground.pipeline import targets_from
errors = []
policies = load_policies(sys.argv[1], errors=errors)
targets = targets_from(sys.argv[1])
print(f"{len(policies)} policies, {len(errors)} policy errors, {len(targets)} targets")
"""
TRACE = "request-success-rate,request-duration\n100,100\n100,100\n"


def measure(argv: list[str], cwd: Path) -> tuple[int, float, float, int, list[str]]:
    """(exit status, wall s, CPU s, peak RSS KiB, stdout+stderr lines) of one process."""
    out = cwd / "out.txt"
    with open(out, "wb") as fh:
        wall = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - wall
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = out.read_text(errors="replace").splitlines()
    return proc.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, lines


def report(probe: str, reader: str, result: tuple[int, float, float, int, list[str]]) -> None:
    code, wall, cpu, rss, lines = result
    longest = max((len(line) for line in lines), default=0)
    print(
        f"{probe:9} {reader:9} exit {code:3}  {wall:6.2f} s wall  {cpu:6.2f} s CPU  peak RSS {rss / 1024:6.0f} MiB  "
        f"{len(lines):3} lines, longest {longest:4} chars"
    )


def main() -> None:
    print(__doc__.split("\n\n")[0])
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        base = Path(tmp)
        for probe in ["baseline", *PROBES]:
            d = base / probe
            tree = d / "manifests"
            shutil.copytree(ROOT / "manifests", tree)
            write = PROBES[probe][0] if probe != "baseline" else None
            if write is not None:
                write(tree / "prod")
            report(probe, "validate", measure([PLAYGROUND, "validate", "--no-warnings", str(tree)], d))

            if probe == "baseline" or probe in IN_GIT:
                origin = d / "origin.git"
                gitorigin.ensure_origin(origin, seed=tree)
                checkout = d / "checkout"
                subprocess.run(["git", "clone", "-q", str(origin), str(checkout)], check=True)
                planned = checkout
            else:
                planned = tree
            report(probe, "sync", measure([sys.executable, "-c", SYNC, str(planned), str(d / "home")], d))
            report(probe, "sensors", measure([sys.executable, "-c", SENSORS, str(planned)], d))

            if write is not None:
                (d / "trace.csv").write_text(TRACE)
                canary = write(d)
                report(probe, "backtest", measure([PLAYGROUND, "backtest", canary.name, "trace.csv"], d))


if __name__ == "__main__":
    main()
