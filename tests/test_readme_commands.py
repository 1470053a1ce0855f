"""Every command of the README, run as users run it: the installed console script as a subprocess, from a
directory outside the repository, against ONE real local playground brought up once for the module with
``playground up`` (Envoy, Prometheus, the registry, git, the node agent, Dagster's daemon and webserver).

The commands are read from README.md's code blocks: ``COVERED`` maps each one (normalised: no ``.venv/bin/``,
no comment, single spaces) to how it is exercised, and the first test asserts that the README's set equals the
table's, so a command added to the README without a test here fails the suite.

The working directory of every command is a temporary directory holding ``manifests/`` (a copy of the project's,
with the backend's load test and metric windows shortened as in tests/conftest.py) and the playground home in
``.playground`` (the default ``PLAYGROUND_HOME``), so the README's commands run literally, without ``--home``.
Analyses tick every second (``up --interval 1s`` for Dagster's runs, ``PLAYGROUND_INTERVAL=1s`` for the CLI).

Real state, in order: the bootstrap release through the sensors; a ``canary_release`` launched with the README's
``dagster job launch`` command, paused by the ``canary_control`` job and by ``playground pause``, resumed,
promoted step by step and then fully, followed by ``playground watch`` until it ends, and listed by
``playground history``; a foreground ``playground release --image`` aborted, then retried; a commit applied by
``playground sync`` and released by ``playground release``; a backtest over the playground's Prometheus of the
Dagster release's window; ``down`` and ``down --purge``. The kubernetes-backend commands run against
tests/support/fake_kube.py's API server.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from playground.local.env import process_alive
from playground.local.store import Home
from tests.support.dagster_playground import (
    FINISHED,
    PLAYGROUND,
    DagsterPlayground,
    clean_env,
    short_windows,
    start,
    stop,
    wait_for,
)
from tests.support.fake_kube import FakeKube
from tests.support.playground_env import PlaygroundEnv, container, deployment, routes, status
from tests.support.procs import log_tail, start_process, stop_process
from tests.test_k8s_release import kubeconfig_for, seed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DAGSTER = PLAYGROUND.parent / "dagster"
PODINFO = "ghcr.io/stefanprodan/podinfo"

# README command (normalised) -> how it is exercised. "here: ..." = a test of this module, run against the module's
# playground; anything else names the test that covers it.
COVERED: dict[str, str] = {
    "bash scripts/demo.sh": "tests/test_demo.py (`playground demo`, as demo.sh runs it, at --interval 1s); CI itself",
    "bash scripts/test.sh": "CI itself (.ci/run runs the gates and the suite the way scripts/test.sh does)",
    "playground validate manifests/": "here: test_validate_and_backtest_a_trace",
    "playground validate manifests": "here: test_validate_and_backtest_a_trace",
    "playground backtest CANARY.yaml TRACE.csv": "here: test_validate_and_backtest_a_trace",
    "playground up [--interval 3s]": "here: the module's playground, then test_up_again_starts_nothing",
    "playground up --storage postgres": "tests/test_postgres_storage.py::test_sync_and_concurrent_releases_on_postgres",
    "playground status [--backend kubernetes]": "here: test_status_and_canaries, test_kubernetes_backend_commands",
    "playground down [--purge]": "here: test_down_then_purge",
    "playground release prod/backend [--image IMG] [--backend kubernetes]": (
        "here: test_abort_then_retry (--image), test_sync_then_release, test_kubernetes_backend_commands"
    ),
    "playground canaries": "here: test_status_and_canaries",
    "playground history [--format csv|json]": "here: test_dagster_release_with_operator_controls_then_history",
    "playground backtest CANARY.yaml --prometheus URL --templates manifests/metrics/ --from T --to T "
    "[--sweep latency:thresholdRange.max=300,500]": "here: test_backtest_over_the_playgrounds_prometheus",
    "playground promote prod/backend [--full]": "here: test_dagster_release_with_operator_controls_then_history",
    "playground abort prod/backend": "here: test_abort_then_retry",
    "playground retry prod/backend": "here: test_abort_then_retry",
    "playground pause prod/backend": "here: test_dagster_release_with_operator_controls_then_history",
    "playground sync": "here: test_sync_then_release",
    "playground watch prod/backend": "here: test_dagster_release_with_operator_controls_then_history",
    "playground release prod/backend --backend kubernetes": "here: test_kubernetes_backend_commands",
    "playground canaries --backend kubernetes --context kind-gitops-playground": (
        "here: test_kubernetes_backend_commands"
    ),
    "dagster job launch -j canary_control -w workspace.yaml --config-json "
    """'{"ops": {"control_release": {"config": {"target": "prod/backend", "action": "pause"}}}}'""": (
        "here: test_dagster_release_with_operator_controls_then_history"
    ),
    "dagster job launch -j canary_release -w workspace.yaml --config-json "
    """'{"ops": {"release": {"config": {"target": "prod/backend", "image": "ghcr.io/stefanprodan/podinfo:6.7.5", """
    """"interval": "2s"}}}}'""": "here: test_dagster_release_with_operator_controls_then_history",
}

COMMAND = re.compile(r"(?:^|[\s/])(playground [a-z].*|dagster job .*|bash scripts/\S+)")


def readme_commands(text: str) -> set[str]:
    """Every ``playground``, ``dagster`` and ``bash scripts/`` command in the README's fenced code blocks,
    normalised: continuation lines joined, comments and ``.venv/bin/`` dropped, whitespace collapsed."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)
    found = set()
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            if line.lstrip().startswith("#"):
                continue
            code = re.split(r"\s#\s", line, maxsplit=1)[0]
            m = COMMAND.search(code)
            if m is None or not re.match(r"(playground|dagster|bash) ", m[1]):
                continue
            found.add(" ".join(m[1].split()))
    return found


def test_every_readme_command_is_covered() -> None:
    commands = readme_commands(README.read_text())
    assert "playground history [--format csv|json]" in commands  # the parser reads what it should
    assert commands == set(COVERED), (
        f"README commands without a test here: {sorted(commands - set(COVERED))}; "
        f"table entries no longer in the README: {sorted(set(COVERED) - commands)}"
    )


# ------------------------------------------------------------------------------------------------- the playground


@dataclass
class Readme:
    """The module's playground and the directory the commands run in (holding ``manifests/`` and ``.playground``)."""

    pg: DagsterPlayground
    cwd: Path
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.pg.home

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(PLAYGROUND_INTERVAL="1s", **extra)

    def run(self, *args: str, timeout: float = 240, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(PLAYGROUND), *args],
            cwd=self.cwd,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, name: str, *args: str, exe: Path = PLAYGROUND, **extra: str):
        return start_process([str(exe), *args], log_path=self.cwd / f"{name}.log", env=self.env(**extra), cwd=self.cwd)

    def dagster_launch(self, job: str, config: dict) -> subprocess.CompletedProcess[str]:
        """The README's ``dagster job launch`` (with its ``export PLAYGROUND_HOME=... DAGSTER_HOME=...``)."""
        return subprocess.run(
            [
                str(DAGSTER),
                "job",
                "launch",
                "-j",
                job,
                "-w",
                str(ROOT / "workspace.yaml"),
                "--config-json",
                json.dumps(config),
            ],
            cwd=self.cwd,
            env=self.env(PLAYGROUND_HOME=str(self.home), DAGSTER_HOME=str(self.home / "dagster")),
            capture_output=True,
            text=True,
            timeout=300,
        )

    @property
    def local(self) -> PlaygroundEnv:
        """The engine's view of the same home (canary status, routes, deployments)."""
        if "local" not in self.state:
            self.state["local"] = PlaygroundEnv(home=self.home, ports=self.pg.ports)
        return self.state["local"]

    def release_run(self, run_id: str) -> dict:
        """The canary_release run ``run_id`` (its status, tags, times)."""
        runs = {run["runId"]: run for run in self.pg.runs("canary_release")}
        assert run_id in runs, f"no canary_release run {run_id}: {sorted(runs.items())}"
        return runs[run_id]


@pytest.fixture(scope="module")
def readme(tmp_path_factory) -> Iterator[Readme]:
    cwd = tmp_path_factory.mktemp("readme")
    assert ROOT not in cwd.parents
    manifests = cwd / "manifests"
    shutil.copytree(ROOT / "manifests", manifests)
    canary = manifests / "prod" / "backend" / "canary.yaml"
    canary.write_text(short_windows(canary.read_text()))
    home = cwd / ".playground"
    pg = start(home, manifests=manifests, cwd=cwd, interval="1s")  # `playground up --manifests DIR ...`
    r = Readme(pg=pg, cwd=cwd)
    try:
        # the bootstrap through the sensors: gitops_sync, then one canary_release per canary
        wait_for(lambda: pg.sync_run_of(pg.head()), 240, "the first gitops_sync run")
        wait_for(
            lambda: len([x for x in pg.runs("canary_release") if x["status"] == "SUCCESS"]) >= 2,
            300,
            "the bootstrap releases of prod/backend and prod/frontend",
        )
        yield r
    finally:
        r.local.close_all()
        stop(home)


def wait_status(r: Readme, what: str, cond, timeout: float = 180, proc=None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        st = status(r.local)
        if st is not None and cond(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what} (status {st})" + (f"\n{log_tail(proc, 60)}" if proc else "")
            )
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------------------- tests


def test_validate_and_backtest_a_trace(readme: Readme) -> None:
    for arg in ("manifests/", "manifests"):
        done = readme.run("validate", arg)
        assert done.returncode == 0 and done.stderr == "", done.stdout + done.stderr
        assert "0 errors, 0 warnings" in done.stdout, done.stdout
    broken = readme.cwd / "broken"
    shutil.copytree(readme.cwd / "manifests", broken)
    canary = broken / "prod" / "backend" / "canary.yaml"
    canary.write_text(canary.read_text().replace("stepWeight: 5", "stepWeight: five"))
    done = readme.run("validate", "broken/")
    assert done.returncode == 1 and "stepWeight" in done.stdout + done.stderr, done.stdout + done.stderr
    shutil.rmtree(broken)

    for name in ("weighted.yaml", "weighted_pass.csv", "weighted_failures.csv"):
        shutil.copy(ROOT / "tests" / "data" / "backtest" / name, readme.cwd / name)
    for trace, result in (("weighted_pass.csv", "Succeeded"), ("weighted_failures.csv", "Failed")):
        done = readme.run("backtest", "weighted.yaml", trace)
        assert done.returncode in (0, 1), done.stdout + done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert len(lines) > 2 and result in json.dumps(lines[-1]), done.stdout[-2000:]


def test_up_again_starts_nothing(readme: Readme) -> None:
    comps = (Home(readme.home).read_env() or {})["components"]
    done = readme.run("up", "--interval", "1s", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "already running" in done.stdout
    for port in readme.pg.ports.values():  # every address of the running playground is printed
        assert f"127.0.0.1:{port}" in done.stdout, done.stdout
    assert (Home(readme.home).read_env() or {})["components"] == comps


def test_status_and_canaries(readme: Readme) -> None:
    done = readme.run("status")
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("envoy", "prometheus", "registry", "agent", "dagster-daemon", "dagster-webserver"):
        assert name in done.stdout, done.stdout
    assert "backend-primary" in done.stdout and "frontend-primary" in done.stdout, done.stdout
    done = readme.run("canaries")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows[0][:5] == ["NAMESPACE", "NAME", "PHASE", "WEIGHT", "FAILEDCHECKS"], done.stdout
    assert ["prod", "backend", "Initialized", "0", "0"] in [row[:5] for row in rows], done.stdout


def test_dagster_release_with_operator_controls_then_history(readme: Readme) -> None:
    r = readme
    started = time.time()
    # pause first, on the idle canary: no process drives it, so the canary_control run applies it itself; the
    # release launched next then holds its new revision until `resume` (however slow the launches are)
    control = r.dagster_launch(
        "canary_control",
        {"ops": {"control_release": {"config": {"target": "prod/backend", "action": "pause"}}}},
    )
    assert control.returncode == 0, control.stdout + control.stderr
    wait_status(r, "the pause of the canary_control run", lambda st: st.paused, timeout=180)
    launch = r.dagster_launch(
        "canary_release",
        {"ops": {"release": {"config": {"target": "prod/backend", "image": f"{PODINFO}:6.7.5", "interval": "2s"}}}},
    )
    assert launch.returncode == 0, launch.stdout + launch.stderr
    held = wait_status(
        r, "the release run holding the paused canary", lambda st: (st.driver or "").startswith("dagster run")
    )
    assert held.paused and held.canaryWeight == 0 and routes(r.local) == (100, 0)
    run_id = held.driver.removeprefix("dagster run ")
    watch = r.start("watch", "watch", "prod/backend")
    try:
        time.sleep(1.0)  # the watch prints its first frame (the paused canary) before anything moves
        done = r.run("resume", "prod/backend")
        assert done.returncode == 0 and "resume applied by dagster run" in done.stdout, done.stdout + done.stderr
        done = r.run("pause", "prod/backend")
        assert done.returncode == 0 and "pause applied by dagster run" in done.stdout, done.stdout + done.stderr
        paused = status(r.local)
        assert paused.paused and paused.phase.value == "Progressing", paused
        assert r.run("resume", "prod/backend").returncode == 0
        done = r.run("promote", "prod/backend")
        assert done.returncode == 0 and "promote applied by dagster run" in done.stdout, done.stdout + done.stderr
        done = r.run("promote", "prod/backend", "--full")
        if status(r.local).phase.value == "Progressing":
            assert done.returncode == 0 and "promote-full applied" in done.stdout, done.stdout + done.stderr
        # this run, by its id: another canary_release run ending meanwhile (a sensor's) must not end the wait
        wait_for(lambda: r.release_run(run_id)["status"] in FINISHED, 180, f"the canary_release run {run_id} to end")
        assert r.release_run(run_id)["status"] == "SUCCESS", r.pg.run_failure(run_id)
        assert status(r.local).phase.value == "Succeeded"
        assert container(deployment(r.local, "backend-primary"))["image"] == f"{PODINFO}:6.7.5"
        assert watch.wait(timeout=60) == 0, log_tail(watch)
        shown = Path(watch.log_path).read_text(errors="replace")
        assert "PAUSED" in shown and "prod/backend: release ended Succeeded" in shown, shown[-3000:]
    finally:
        stop_process(watch)
    r.state["dagster_release"] = (started, time.time())

    table = r.run("history")
    assert table.returncode == 0, table.stdout + table.stderr
    assert any(line.startswith("prod/backend") and "Succeeded" in line for line in table.stdout.splitlines()), (
        table.stdout
    )
    csv = r.run("history", "--format", "csv")
    assert csv.returncode == 0 and csv.stdout.splitlines()[0].startswith("target,"), csv.stdout + csv.stderr
    rows = json.loads(r.run("history", "--format", "json").stdout)
    promoted = [row for row in rows if row["target"] == "prod/backend" and row["result"] == "Succeeded"]
    assert promoted, rows


def test_abort_then_retry(readme: Readme) -> None:
    r = readme
    image = f"{PODINFO}:6.7.6"
    rel = r.start("release-abort", "release", "prod/backend", "--image", image)
    try:
        wait_status(
            r,
            "the foreground release at weight 10",
            lambda st: st.phase.value == "Progressing" and st.canaryWeight >= 10,
            proc=rel,
        )
        done = r.run("abort", "prod/backend")
        assert done.returncode == 0 and "abort applied by pid" in done.stdout, done.stdout + done.stderr
        assert rel.wait(timeout=60) == 1, log_tail(rel)  # 1: rolled back
        st = status(r.local)
        assert st.phase.value == "Failed" and routes(r.local) == (100, 0)
    finally:
        stop_process(rel)
    done = r.run("retry", "prod/backend")  # nobody drives the canary now: the command drives it to the end
    assert done.returncode == 0 and "retry applied by pid" in done.stdout, done.stdout + done.stderr
    assert status(r.local).phase.value == "Succeeded"
    assert container(deployment(r.local, "backend-primary"))["image"] == image


def test_sync_then_release(readme: Readme) -> None:
    r = readme
    image = f"{PODINFO}:6.7.7"
    r.pg.commit(
        {"prod/backend/deployment.yaml": lambda t: re.sub(r"podinfo:[0-9.]+", image.split("/")[-1], t, count=1)},
        "backend: podinfo 6.7.7",
    )
    done = r.run("sync")
    assert done.returncode == 0 and "prod/backend: new revision" in done.stdout, done.stdout + done.stderr
    done = r.run("release", "prod/backend")
    assert done.returncode == 0 and "Succeeded" in done.stdout, done.stdout[-3000:] + done.stderr
    assert container(deployment(r.local, "backend-primary"))["image"] == image


def test_backtest_over_the_playgrounds_prometheus(readme: Readme) -> None:
    r = readme
    start_t, end_t = r.state["dagster_release"]
    done = r.run(
        "backtest",
        "manifests/prod/backend/canary.yaml",
        "--prometheus",
        r.local.prometheus_url,
        "--templates",
        "manifests/metrics/",
        "--from",
        str(int(start_t)),
        "--to",
        str(int(end_t)),
        "--sweep",
        "latency:thresholdRange.max=300,500",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows[0][0] == "setting" and rows[0][-2:] == ["rolled", "back"], done.stdout
    # one replay per value over the Dagster release's real metric history: promoted or rolled back, counted
    assert [row[0] for row in rows[1:]] == ["latency:thresholdRange.max=300", "latency:thresholdRange.max=500"]
    label = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(start_t)))
    assert f"release 1 ({label})" in done.stdout.splitlines()[0], done.stdout
    for line in done.stdout.splitlines()[1:]:  # the shipped canary ticks every 15 s: the window holds a few ticks
        assert re.search(
            r"  (promoted \(\d+ ticks\)|ROLLED BACK \(tick \d+\)|Progressing \(\d+ ticks\))  +[01]/1$", line
        ), line


def test_kubernetes_backend_commands(readme: Readme) -> None:
    with FakeKube(auto_rollout=True) as kube:
        seed(kube, "prod", "http://127.0.0.1:9", "http://127.0.0.1:9")
        cfg = kubeconfig_for(kube, readme.cwd / "kubeconfig")
        text = cfg.read_text().replace("fake", "kind-gitops-playground")
        cfg.write_text(text)
        done = readme.run("release", "prod/backend", "--backend", "kubernetes", KUBECONFIG=str(cfg))
        assert done.returncode == 0 and "Initialized" in done.stdout, done.stdout + done.stderr
        assert kube.object("apps/v1", "Deployment", "prod", "backend-primary") is not None
        done = readme.run("status", "--backend", "kubernetes", KUBECONFIG=str(cfg))
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[1].split()[:4] == ["prod", "backend", "Initialized", "0"], done.stdout
        done = readme.run(
            "canaries", "--backend", "kubernetes", "--context", "kind-gitops-playground", KUBECONFIG=str(cfg)
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[1].split()[:4] == ["prod", "backend", "Initialized", "0"], done.stdout


def test_down_then_purge(readme: Readme) -> None:
    comps = (Home(readme.home).read_env() or {})["components"]
    pids = [(c["pid"], c.get("ticks")) for c in comps.values()]
    done = readme.run("down", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    deadline = time.monotonic() + 60
    while any(process_alive(p, t) for p, t in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p, t in pids if process_alive(p, t)]
    assert readme.home.exists()
    done = readme.run("down", "--purge", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not readme.home.exists()
