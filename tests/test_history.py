"""Metric history against a real Prometheus holding known (backfilled) data: stored Parquet rows, charts, live judge
samples; `playground history` and the delivery-metrics asset over a Dagster instance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from playground import cli, history, history_recorder
from playground.judge import judge
from playground.local.procinfo import process_alive
from playground.models import Canary, MetricJudge
from tests.data.history import synthetic
from tests.support.dagster_playground import wait_for
from tests.support.prometheus import PrometheusProcess, prometheus_available

DATA = Path(__file__).parent / "data" / "history"


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    assert prometheus_available(), "prometheus binary not found: apt-get install prometheus"
    work = tmp_path_factory.mktemp("prom-history")
    data = synthetic.backfill(work / "data", work)
    with PrometheusProcess(work, extra_args=synthetic.PROMETHEUS_ARGS) as p:
        yield p, synthetic.Model(data)


def utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def window(release: str, minutes: int = 5) -> history.ReleaseWindow:
    start = synthetic.RELEASES[release]
    return history.ReleaseWindow("prod", "backend", f"rev-{release}", utc(start), utc(start + 60 * minutes))


TICKS = [
    history.TickWeight(utc(synthetic.RELEASES["B"] + 60 * i), 100 - w, w) for i, w in enumerate([0, 0, 20, 40, 40, 0])
]


def test_stored_parquet_rows_equal_the_known_data(prom, tmp_path):
    p, model = prom
    w = window("B")
    rel = history.record_release(tmp_path, p.url, w, TICKS, result="Failed")
    assert (
        rel.parquet == tmp_path / "history" / "metrics" / "target=prod_backend" / "revision=rev-B" / "metrics.parquet"
    )
    stored = pd.read_parquet(rel.parquet)
    assert list(stored.columns) == history.COLUMNS and len(stored) == rel.rows
    grid = list(range(synthetic.RELEASES["B"], synthetic.RELEASES["B"] + 301, 15))  # 21 steps of 15 s
    for role in history.ROLES:
        for metric in ("success_rate", "latency_p99", "request_rate"):
            rows = stored[(stored.role == role) & (stored.metric == metric)]
            assert [int(t.timestamp()) for t in rows.time] == grid, (role, metric)
            assert rows.value.tolist() == [model.value(metric, role, ts) for ts in grid], (role, metric)
        weights = stored[(stored.role == role) & (stored.metric == "weight")]
        assert weights.value.tolist() == [float(t.canary if role == "canary" else t.primary) for t in TICKS]
    assert len(stored) == 6 * 21 + 2 * len(TICKS)
    assert set(stored.namespace) == {"prod"} and set(stored.name) == {"backend"}
    # a few figures by hand: B's canary has 60 req/s, 1 of them slow from tick 2: p99 = 250 + 250 * 0.4
    canary_p99 = stored[(stored.role == "canary") & (stored.metric == "latency_p99")].value.tolist()
    assert canary_p99[0] == 248.5 and canary_p99[-1] == pytest.approx(350.0, abs=1e-9)
    assert stored[(stored.role == "primary") & (stored.metric == "request_rate")].value.unique().tolist() == [40.0]
    png = rel.chart.read_bytes()
    assert rel.chart.name == "chart.png" and png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.fixture
def recorder_homes(monkeypatch):
    """Homes whose history recorder a test started: stopped at the end (none outlives the test)."""
    monkeypatch.setenv(history_recorder.IDLE_ENV, "120")
    homes: list[Path] = []
    yield homes
    for home in homes:
        pid = history_recorder.stop(home)
        assert pid is None or not process_alive(pid), f"history recorder {pid} of {home} still runs"


def _ready_lines(home: Path) -> list[dict]:
    log = history_recorder.log_path(home).read_text()
    return [json.loads(line.split("ready: ", 1)[1]) for line in log.splitlines() if "history recorder ready" in line]


@pytest.mark.integration  # starts the pre-imported history recorder (python -m playground.history_recorder)
def test_isolated_recording_stores_the_same_rows_and_a_bad_address_is_one_line(prom, tmp_path, recorder_homes):
    """A release worker records through another process (it never loads pandas): same Parquet rows and chart as
    in-process; a failure comes back as the recording's HistoryError message, and the recorder goes on."""
    p, _ = prom
    w = window("B")
    home = tmp_path / "home"
    recorder_homes.append(home)
    rel = history.record_release_isolated(home, p.url, w, TICKS, result="Failed")
    here = history.record_release(tmp_path / "here", p.url, w, TICKS, result="Failed")
    assert rel.recorder is not None and rel.recorder != os.getpid()
    assert rel.rows == here.rows == len(pd.read_parquet(rel.parquet))
    pd.testing.assert_frame_equal(pd.read_parquet(rel.parquet), pd.read_parquet(here.parquet))
    assert rel.chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(history.HistoryError) as e:
        history.record_release_isolated(home, "http://127.0.0.1:9", w, TICKS)
    assert "127.0.0.1:9" in str(e.value) and "range query to Prometheus" in str(e.value) and "\n" not in str(e.value)
    assert history_recorder.ping(home)["pid"] == rel.recorder  # the failed recording was one child's, not its


@pytest.mark.integration  # starts the pre-imported history recorder
def test_consecutive_recordings_share_one_preimported_recorder(prom, tmp_path, recorder_homes):
    """The second recording is a fork of the recorder the first one started (no second import of the stack),
    and the recorder had a single thread when it forked."""
    p, _ = prom
    home = tmp_path / "home"
    recorder_homes.append(home)
    first = history.record_release_isolated(home, p.url, window("A"), result="Succeeded")
    started = history_recorder.ping(home)
    second = history.record_release_isolated(home, p.url, window("B"), TICKS, result="Failed")
    assert first.recorder == second.recorder == started["pid"]
    assert _ready_lines(home) == [{"ready": True, "pid": first.recorder, "threads": 1}]  # started once
    after = history_recorder.ping(home)
    assert after["pid"] == first.recorder and after["threads"] == 1 and after["cpu_s"] > 0  # still one thread
    stored = history.load_history(home)
    assert sorted(set(stored.revision)) == ["rev-A", "rev-B"]
    assert second.parquet.exists() and second.chart.exists() and first.parquet != second.parquet


_CALLER = """
import json, sys
from datetime import datetime, UTC
from playground import history
home, url, name, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
w = history.ReleaseWindow("prod", "backend", "rev-" + name, datetime.fromtimestamp(start, UTC),
                          datetime.fromtimestamp(start + 300, UTC))
rel = history.record_release_isolated(home, url, w, result="Succeeded")
print(json.dumps({"recorder": rel.recorder, "rows": rel.rows}))
"""


@pytest.mark.integration  # several caller processes and the recorder they start
def test_concurrent_callers_start_exactly_one_recorder(prom, tmp_path, recorder_homes):
    p, _ = prom
    home = tmp_path / "home"
    recorder_homes.append(home)
    names = ["A", "B", "C", "A2"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CALLER, str(home), p.url, n, str(synthetic.RELEASES[n[0]])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in names
    ]
    answers = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        answers.append(json.loads(out))
    (ready,) = _ready_lines(home)  # one recorder for four callers that all found none at first
    assert [a["recorder"] for a in answers] == [ready["pid"]] * 4
    assert all(a["rows"] > 0 for a in answers)
    assert sorted(set(history.load_history(home).revision)) == ["rev-A", "rev-A2", "rev-B", "rev-C"]


@pytest.mark.integration  # starts the pre-imported history recorder and waits for it to exit
def test_recorder_exits_after_its_idle_time(prom, tmp_path, monkeypatch):
    p, _ = prom
    monkeypatch.setenv(history_recorder.IDLE_ENV, "2")
    home = tmp_path / "home"
    rel = history.record_release_isolated(home, p.url, window("C"), result="Succeeded")
    assert rel.recorder is not None
    wait_for(lambda: not process_alive(rel.recorder), 90, "the idle history recorder to exit", poll=0.2)
    assert history_recorder.ping(home) is None
    assert f"history recorder {rel.recorder} exits" in history_recorder.log_path(home).read_text()


@pytest.mark.integration  # the fresh child of python -m playground.history
def test_without_a_recorder_a_fresh_child_records(prom, tmp_path, recorder_homes):
    """When the recorder cannot be started (here: its lock file cannot be opened), the recording runs in a
    fresh child as before: same rows."""
    p, _ = prom
    home = tmp_path / "home"
    recorder_homes.append(home)
    (home / "history" / "recorder.lock").mkdir(parents=True)  # a directory where the lock file belongs
    rel = history.record_release_isolated(home, p.url, window("B"), TICKS, result="Failed")
    assert rel.recorder is None and history_recorder.ping(home) is None
    here = history.record_release(tmp_path / "here", p.url, window("B"), TICKS, result="Failed")
    pd.testing.assert_frame_equal(pd.read_parquet(rel.parquet), pd.read_parquet(here.parquet))
    with pytest.raises(history.HistoryError) as e:
        history.record_release_isolated(home, "http://127.0.0.1:9", window("B"), TICKS)
    assert "127.0.0.1:9" in str(e.value) and "\n" not in str(e.value)


def test_history_dataset_appends_across_releases(prom, tmp_path):
    p, model = prom
    for name in ("A", "B", "C"):
        frame = history.fetch_history(p.url, window(name, 2))
        history.store_history(tmp_path, window(name, 2), frame)
    again = history.fetch_history(p.url, window("B", 2))
    history.store_history(tmp_path, window("B", 2), again)  # rewriting a release replaces its partition
    every = history.load_history(tmp_path)
    assert sorted(every.groupby(["target", "revision"]).size().items()) == [
        (("prod_backend", "rev-A"), 54),
        (("prod_backend", "rev-B"), 54),
        (("prod_backend", "rev-C"), 54),
    ]
    c = every[(every.revision == "rev-C") & (every.role == "canary") & (every.metric == "latency_p99")]
    assert c.value.tolist() == [model.latency_p99("canary", synthetic.RELEASES["C"] + 15 * i) for i in range(9)]
    one = history.load_history(tmp_path, target="prod/backend")
    assert len(one) == len(every)
    assert history.load_history(tmp_path / "nothing").empty


def test_chunked_range_queries_cover_a_long_window(prom, monkeypatch):
    p, model = prom
    monkeypatch.setattr(history, "MAX_POINTS", 7)  # force several chunks
    client = history.connect(p.url)
    q = history.history_queries("prod", "backend")[("primary", "request_rate")]
    ts, vs = history.query_range(client, q, utc(synthetic.T0), utc(synthetic.T0 + 600), "15s")
    assert ts.tolist() == [float(synthetic.T0 + 15 * i) for i in range(41)]
    assert vs.tolist() == [40.0] * 41


def test_live_judge_samples_from_prometheus(prom):
    p, model = prom
    canary = Canary.model_validate(
        {
            "metadata": {"name": "backend", "namespace": "prod"},
            "spec": {
                "targetRef": {"kind": "Deployment", "name": "backend"},
                "service": {"port": 9898},
                "analysis": {
                    "interval": "1m",
                    "metrics": [{"name": "request-duration", "interval": "1m", "judge": {"step": "15s"}}],
                },
            },
        }
    )
    metric = canary.spec.analysis.metrics[0]
    at = synthetic.RELEASES["C"] + 300
    s = history.query_samples(canary, metric, {}, default_prometheus=p.url, now=utc(at))
    assert s.error is None
    grid = range(at - 60, at + 1, 15)
    assert list(s.canary) == [model.latency_p99("canary", t) for t in grid] == [497.5] * 5
    assert list(s.primary) == [model.latency_p99("primary", t) for t in grid] == [248.5] * 5
    j = judge(s.canary, s.primary, MetricJudge())
    assert j.decision == "fail" and j.u == 25.0 and j.method == "asymptotic"  # all tied: normal approximation
    broken = history.query_samples(canary, metric, {}, default_prometheus="http://127.0.0.1:9", now=utc(at))
    assert broken.error and "127.0.0.1:9" in broken.error


# ---------------------------------------------------------------------------------- Dagster instance side


def _instance_with_history(path: Path) -> dg.DagsterInstance:
    path.mkdir(parents=True, exist_ok=True)
    inst = dg.DagsterInstance.local_temp(str(path))
    events = [
        (["gitops", "commit"], {"sha": "aaa"}),
        (["workloads", "prod", "backend"], {"sha": "aaa", "revision": "r1"}),
        (
            ["promotions", "prod", "backend"],
            {
                "target": "prod/backend",
                "revision": "r1",
                "phase": "Succeeded",
                "ticks": 8,
                "duration_s": 120.0,
                "failed_checks": 0,
                "strategy": "canary",
                "started": "2024-01-01T10:00:00Z",
                "worst_metric": "-",
            },
        ),
        (["workloads", "prod", "frontend"], {"sha": "bbb", "revision": "f1"}),
        (
            ["rollbacks", "prod", "frontend"],
            {
                "target": "prod/frontend",
                "revision": "f1",
                "phase": "Failed",
                "ticks": 5,
                "duration_s": 60.0,
                "failed_checks": 2,
                "strategy": "ab",
                "started": "2024-01-01T11:00:00Z",
                "worst_metric": "request_duration (2 failed, last 497.0)",
            },
        ),
    ]
    for key, meta in events:
        inst.report_runless_asset_event(dg.AssetMaterialization(key, metadata=meta))
    return inst


def test_playground_history_formats(tmp_path, capsys):
    inst = _instance_with_history(tmp_path / "dagster")
    inst.dispose()
    code = cli.main(["history", "--dagster-home", str(tmp_path / "dagster"), "--format", "json"])
    out = capsys.readouterr().out
    assert code == 0
    rows = json.loads(out)
    assert [(r["target"], r["revision"], r["strategy"], r["result"], r["failed_checks"]) for r in rows] == [
        ("prod/backend", "r1", "canary", "Succeeded", 0),
        ("prod/frontend", "f1", "ab", "Failed", 2),
    ]
    assert rows[0]["started"] == "2024-01-01T10:00:00Z" and rows[0]["duration_s"] == 120.0
    assert rows[1]["worst_metric"] == "request_duration (2 failed, last 497.0)"
    cli.main(["history", "--dagster-home", str(tmp_path / "dagster"), "--format", "csv", "--target", "prod/frontend"])
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0] == ",".join(history.HISTORY_FIELDS) and len(lines) == 2 and lines[1].startswith("prod/frontend,f1,ab,")
    )
    cli.main(["history", "--dagster-home", str(tmp_path / "dagster")])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == history.HISTORY_FIELDS and table[2].split()[:4] == [
        "prod/frontend",
        "f1",
        "ab",
        "2024-01-01T11:00:00Z",
    ]
    assert cli.main(["history", "--dagster-home", str(tmp_path / "missing")]) == 2
    assert "no Dagster instance" in capsys.readouterr().err


@pytest.mark.integration  # an on-disk Dagster instance: its compute-log manager starts `tail`
def test_delivery_metrics_asset_reads_the_lineage(tmp_path, monkeypatch):
    from assets.history import history_assets

    _, delivery_metrics = history_assets([])
    monkeypatch.setenv("PLAYGROUND_HOME", str(tmp_path / "home"))
    inst = _instance_with_history(tmp_path / "dagster")
    try:
        result = dg.materialize([delivery_metrics], instance=inst)
        assert result.success
        mat = result.asset_materializations_for_node("history__delivery")[0]
        assert mat.metadata["releases"].value == 2
    finally:
        inst.dispose()
    weekly = pd.read_csv(tmp_path / "home" / "history" / "delivery" / "weekly.csv")
    assert weekly.target.tolist() == ["prod/backend", "prod/frontend"]
    assert weekly.change_failure_rate.tolist() == [0.0, 1.0]
    assert (tmp_path / "home" / "history" / "delivery" / "delivery.png").stat().st_size > 10_000


@pytest.mark.integration  # a local playground (Envoy, Prometheus, registry, agent), the recorder, `playground down`
def test_playground_down_leaves_no_history_recorder(tmp_path, monkeypatch):
    """A recorder started for a playground's home (here by this process, as an in-process release does) exits
    when `playground down` stopped the environment, long before its idle time."""
    from tests.support.dagster_playground import run_cli
    from tests.support.playground_env import playground_env

    monkeypatch.setenv(history_recorder.IDLE_ENV, "600")
    home = tmp_path / "home"
    with playground_env(home) as env:
        end = datetime.now(UTC)
        w = history.ReleaseWindow("prod", "backend", "r1", end.replace(microsecond=0) - timedelta(minutes=2), end)
        rel = history.record_release_isolated(home, env.prometheus_url, w, result="Succeeded")
        assert rel.recorder is not None and process_alive(rel.recorder)
        done = run_cli("down", "--home", str(home), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: not process_alive(rel.recorder), 60, "the history recorder to exit after down", poll=0.2)
