"""Check, in headless Chromium, that the Dagster UI shows the release lineage and materializations.

Usage: python scripts/check_ui.py http://127.0.0.1:3000 [--screenshots DIR]

Loads pages of the running dagster-webserver the way a user's browser does (Debian's `chromium`, headless,
rendering the React app and its GraphQL calls), and checks the rendered DOM:

- the lineage commit -> workload -> release -> release metrics / promotion / rollback (the asset pages link
  their upstream and downstream assets);
- the `releases/prod/backend` asset shows materializations (one per analysis tick) with their metadata, and its
  metric checks (error_rate, latency);
- the `promotions/prod/backend` and `rollbacks/prod/backend` assets have a materialization each.

Exit 0 when every check passes; 1 with one line per failed check. Screenshots (PNG) of each page go to
--screenshots when given, so a person can look at them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1600,1000",
]

# (path, strings that must appear in the rendered page, what it proves)
PAGES = [
    (
        "/assets/workloads/prod/backend?view=overview",
        ['href="/assets/gitops/commit"', 'href="/assets/releases/prod/backend"'],
        "lineage: commit -> workload -> release",
    ),
    (
        "/assets/releases/prod/backend?view=overview",
        [
            'href="/assets/workloads/prod/backend"',
            'href="/assets/promotions/prod/backend"',
            'href="/assets/rollbacks/prod/backend"',
            'href="/assets/release_metrics/prod/backend"',
        ],
        "lineage: workload -> release -> metrics, promotion, rollback",
    ),
    (
        "/assets/releases/prod/backend?view=events",
        ["canary_weight", "failed_checks", "phase", "routes"],
        "release materializations per tick",
    ),
    ("/assets/release_metrics/prod/backend?view=checks", ["error_rate", "latency"], "metric checks"),
    ("/assets/promotions/prod/backend?view=events", ["Succeeded", "duration_s"], "a promotion"),
    ("/assets/rollbacks/prod/backend?view=events", ["Failed", "failed_checks"], "a rollback"),
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("chromium not found: apt-get install chromium (scripts/setup.sh installs it)")


def render(url: str, profile: Path, budget_ms: int = 20000, screenshot: Path | None = None) -> str:
    """The DOM of ``url`` after ``budget_ms`` of virtual time; with ``screenshot``, a PNG of the same render
    (one Chromium launch for both)."""
    out = subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            *([f"--screenshot={screenshot}"] if screenshot is not None else []),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out.stdout


def check(base: str, screenshots: Path | None = None) -> list[str]:
    problems = []
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="check-ui-") as tmp:
        profile = Path(tmp)
        for i, (path, needles, what) in enumerate(PAGES):
            url = base.rstrip("/") + path
            shot = None
            if screenshots is not None:
                shot = screenshots / f"{i}-{path.strip('/').split('?')[0].replace('/', '_')}.png"
            for budget in (15000, 30000, 60000):  # the app renders asynchronously: give it more time if needed
                dom = render(url, profile, budget, shot)  # the screenshot of the last attempt stays
                missing = [n for n in needles if n not in dom]
                if not missing:
                    break
            if missing:
                problems.append(f"{url}: {what}: missing {', '.join(repr(m) for m in missing)} in the rendered page")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="the Dagster UI, e.g. http://127.0.0.1:3000")
    p.add_argument("--screenshots", type=Path, default=None, help="directory for PNG screenshots of each page")
    args = p.parse_args(argv)
    problems = check(args.url, args.screenshots)
    for line in problems:
        print(line)
    print(f"Dagster UI check: {len(PAGES) - len(problems)} of {len(PAGES)} pages show what they should")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
