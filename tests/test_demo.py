"""The README's main command, end to end: `playground demo` (the installed console script, run from a directory
outside the repository) on free ports, then the Dagster UI in Chromium.

This is the slowest test (about three minutes): a fresh playground with Dagster's daemon and webserver, the
bootstrap through the sensors, a tag push released to backend (canary) and frontend (A/B), a faulty commit
rolled back. It checks the demo's own verdict, its final table, and what the UI shows in headless Chromium.

The analysis ticks every second (the demo's own ``--interval 1s``; its default is 2 s), as in the other live
tests: the same releases, steps, thresholds and outcomes, each release in half the ticks' time. A first tick
that finds no values yet (the canary's first scrape) counts a failed check either way, far below the
Canaries' threshold of 10.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: the installed console script, as `bash scripts/demo.sh` runs it (that script only adds the setup before it)
PLAYGROUND = Path(sys.executable).with_name("playground")


@pytest.mark.integration
def test_demo_runs_three_releases_and_the_ui_shows_them(tmp_path):
    home = tmp_path / "playground"
    try:
        proc = subprocess.run(
            [str(PLAYGROUND), "demo", "--home", str(home), "--free-ports", "--interval", "1s", "--timeout", "240"],
            cwd=tmp_path,  # outside the repository
            capture_output=True,
            text=True,
            timeout=900,
        )
        out = proc.stdout
        assert proc.returncode == 0, f"demo failed ({proc.returncode}):\n{out[-6000:]}\n{proc.stderr[-3000:]}"
        rows = [
            line.split() for line in out.splitlines() if re.match(r"^prod/(backend|frontend)\s+[0-9a-f]{16}\s", line)
        ]
        assert [(r[0], r[2]) for r in rows] == [
            ("prod/backend", "canary"),
            ("prod/frontend", "A/B"),
            ("prod/backend", "canary"),
        ]
        assert "promoted" in " ".join(rows[0]) and "promoted" in " ".join(rows[1])
        assert "rolled back" in " ".join(rows[2])
        assert re.search(r"gateway traffic during the releases: [1-9]\d* requests, 0 failed", out)
        url = re.search(r"Dagster UI: (http://127\.0\.0\.1:\d+)/", out).group(1)
        ui = subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "check_ui.py"),
                url,
                "--screenshots",
                str(tmp_path / "screenshots"),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert ui.returncode == 0, ui.stdout + ui.stderr
        assert "6 of 6 pages" in ui.stdout
        shots = sorted((tmp_path / "screenshots").glob("*.png"))
        assert len(shots) == 6 and all(p.stat().st_size > 10_000 for p in shots), [
            (p.name, p.stat().st_size) for p in shots
        ]
    finally:
        subprocess.run(
            [str(PLAYGROUND), "down", "--home", str(home), "--purge"],
            cwd=tmp_path,
            capture_output=True,
            timeout=120,
        )
