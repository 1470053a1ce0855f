"""`playground backtest`: table-driven replays of recorded traces (tests/data/backtest), bad input, CLI wiring.

Every scenario lists the expected output tick by tick as "phase canaryWeight primary/canary failedChecks
iterations"; the expectations were worked out from docs/design.md's canary semantics, not recorded from the program.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from playground import cli
from playground.backtest import TraceRow, load_canary, load_trace, replay, replay_jsonl

DATA = Path(__file__).parent / "data" / "backtest"
ROOT = Path(__file__).parent.parent

SCENARIOS = {
    # weighted canary, stepWeight 20 / maxWeight 50 (not a clamp: 20, 40, 60), every check passing
    "weighted-all-pass": (
        "weighted",
        "weighted_pass",
        """
        Progressing 0 100/0 0 0
        Progressing 20 80/20 0 0
        Progressing 40 60/40 0 0
        Progressing 60 40/60 0 0
        Promoting 60 40/60 0 0
        Finalising 0 100/0 0 0
        Succeeded 0 100/0 0 0
        """,
        "Succeeded",
    ),
    # tick 1 is the pre-rollout tick (metrics not read: its 50% is ignored); failures on ticks 2 and 5 are not
    # consecutive, the second one reaches threshold 2, the rollback happens on the next tick; rows after the end
    # are not replayed
    "non-consecutive-failures": (
        "weighted",
        "weighted_failures",
        """
        Progressing 0 100/0 0 0
        Progressing 20 80/20 0 0
        Progressing 20 80/20 1 0
        Progressing 40 60/40 1 0
        Progressing 60 40/60 1 0
        Progressing 60 40/60 2 0
        Failed 0 100/0 2 0
        """,
        "Failed",
    ),
    "pre-rollout-failures": (
        "weighted",
        "pre_rollout_fail",
        """
        Progressing 0 100/0 0 0
        Progressing 0 100/0 1 0
        Progressing 0 100/0 2 0
        Failed 0 100/0 2 0
        """,
        "Failed",
    ),
    "step-weights": (
        "stepweights",
        "stepweights_pass",
        """
        Progressing 0 100/0 0 0
        Progressing 5 95/5 0 0
        Progressing 10 90/10 0 0
        Progressing 30 70/30 0 0
        Progressing 60 40/60 0 0
        Promoting 60 40/60 0 0
        Finalising 0 100/0 0 0
        Succeeded 0 100/0 0 0
        """,
        "Succeeded",
    ),
    # confirm-rollout denied twice (Waiting), traffic increase denied once (no failure counted), promotion denied
    # twice (WaitingPromotion: status weight 0, traffic stays on the canary), then approved
    "gates": (
        "gates",
        "gates",
        """
        Waiting 0 100/0 0 0
        Waiting 0 100/0 0 0
        Progressing 0 100/0 0 0
        Progressing 0 100/0 0 0
        Progressing 50 50/50 0 0
        Progressing 100 0/100 0 0
        WaitingPromotion 0 0/100 0 0
        WaitingPromotion 0 0/100 0 0
        Promoting 0 0/100 0 0
        Finalising 0 100/0 0 0
        Succeeded 0 100/0 0 0
        """,
        "Succeeded",
    ),
    "rollback-webhook": (
        "rollback_hook",
        "rollback_hook",
        """
        Progressing 0 100/0 0 0
        Progressing 25 75/25 0 0
        Progressing 50 50/50 0 0
        Progressing 75 25/75 0 0
        Failed 0 100/0 0 0
        """,
        "Failed",
    ),
    # A/B (Canary is the 2nd YAML document): matching requests on the canary from the first iteration; a failed
    # check does not count an iteration; error-rate at its inclusive max passes
    "ab-testing": (
        "ab",
        "ab",
        """
        Progressing 0 100/0 0 0
        Progressing 0 0/100 0 1
        Progressing 0 0/100 0 2
        Progressing 0 0/100 1 2
        Progressing 0 0/100 1 3
        Promoting 0 0/100 1 3
        Finalising 0 100/0 1 0
        Succeeded 0 100/0 1 0
        """,
        "Succeeded",
    ),
    "blue-green": (
        "bluegreen",
        "bluegreen",
        """
        Progressing 0 100/0 0 0
        Progressing 0 100/0 0 1
        Progressing 0 100/0 0 2
        Progressing 0 0/100 0 3
        Promoting 0 0/100 0 3
        Finalising 0 100/0 0 0
        Succeeded 0 100/0 0 0
        """,
        "Succeeded",
    ),
    # mirroring is not visible in [primary, canary]: same weights as without it (see test_analysis for the flag)
    "blue-green-mirror": (
        "bluegreen_mirror",
        "bluegreen",
        """
        Progressing 0 100/0 0 0
        Progressing 0 100/0 0 1
        Progressing 0 100/0 0 2
        Progressing 0 0/100 0 3
        Promoting 0 0/100 0 3
        Finalising 0 100/0 0 0
        Succeeded 0 100/0 0 0
        """,
        "Succeeded",
    ),
    # one mirrored tick at weight 0, then 30, 60 (maxWeight 60)
    "canary-mirror": (
        "mirror",
        "mirror",
        """
        Progressing 0 100/0 0 0
        Progressing 0 100/0 0 0
        Progressing 30 70/30 0 0
        Progressing 60 40/60 0 0
        Promoting 60 40/60 0 0
        Finalising 0 100/0 0 0
        Succeeded 0 100/0 0 0
        """,
        "Succeeded",
    ),
    # revision r2 on tick 3 restarts the analysis: routes, weight and failed checks back to 0
    "restart-on-new-revision": (
        "weighted",
        "restart",
        """
        Progressing 0 100/0 0 0
        Progressing 20 80/20 0 0
        Progressing 20 80/20 1 0
        Progressing 0 100/0 0 0
        Progressing 20 80/20 0 0
        Progressing 40 60/40 0 0
        Progressing 60 40/60 0 0
        Promoting 60 40/60 0 0
        Finalising 0 100/0 0 0
        Succeeded 0 100/0 0 0
        """,
        "Succeeded",
    ),
    "step-weight-promotion": (
        "promotion_steps",
        "promotion_steps",
        """
        Progressing 0 100/0 0 0
        Progressing 50 50/50 0 0
        Progressing 100 0/100 0 0
        Promoting 100 0/100 0 0
        Promoting 70 30/70 0 0
        Promoting 40 60/40 0 0
        Promoting 10 90/10 0 0
        Finalising 0 100/0 0 0
        Succeeded 0 100/0 0 0
        """,
        "Succeeded",
    ),
    # skipAnalysis ignores metrics and the primary's readiness: promoted on the tick after detection
    "skip-analysis": (
        "skip",
        "skip",
        """
        Progressing 0 100/0 0 0
        Succeeded 0 100/0 0 0
        """,
        "Succeeded",
    ),
    # canary not ready: wait; past its deadline: roll back
    "canary-deadline": (
        "weighted",
        "canary_deadline",
        """
        Progressing 0 100/0 0 0
        Progressing 0 100/0 0 0
        Progressing 0 100/0 0 0
        Failed 0 100/0 0 0
        """,
        "Failed",
    ),
    # primary not ready while Promoting: wait; past its deadline: all traffic to the canary, Failed, weight 100
    "primary-deadline-while-promoting": (
        "promotion_steps",
        "primary_deadline",
        """
        Progressing 0 100/0 0 0
        Progressing 50 50/50 0 0
        Progressing 100 0/100 0 0
        Promoting 100 0/100 0 0
        Promoting 70 30/70 0 0
        Promoting 70 30/70 0 0
        Failed 100 0/100 0 0
        """,
        "Failed",
    ),
    # empty and NaN are "no values": failed checks by default
    "no-data-fails": (
        "weighted",
        "nodata_fail",
        """
        Progressing 0 100/0 0 0
        Progressing 20 80/20 0 0
        Progressing 20 80/20 1 0
        Progressing 20 80/20 2 0
        Failed 0 100/0 2 0
        """,
        "Failed",
    ),
    # noData: pass on the success rate; deprecated duration threshold 500 passes at 500
    "no-data-pass": (
        "nodata_pass",
        "nodata_pass",
        """
        Progressing 0 100/0 0 0
        Progressing 50 50/50 0 0
        Progressing 100 0/100 0 0
        Promoting 100 0/100 0 0
        Finalising 0 100/0 0 0
        Succeeded 0 100/0 0 0
        """,
        "Succeeded",
    ),
}


def expected_lines(table: str, result: str) -> list[dict]:
    lines = []
    for i, row in enumerate(r.split() for r in table.strip().splitlines()):
        phase, weight, routes, failed, iterations = row
        primary, canary = routes.split("/")
        lines.append(
            {
                "tick": i,
                "phase": phase,
                "canaryWeight": int(weight),
                "routes": [int(primary), int(canary)],
                "failedChecks": int(failed),
                "iterations": int(iterations),
            }
        )
    return lines + [{"result": result, "ticks": len(lines)}]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["backtest", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_cli_output(name, capsys):
    canary, trace, table, result = SCENARIOS[name]
    code, out, err = run_cli(capsys, DATA / f"{canary}.yaml", DATA / f"{trace}.csv")
    assert code == 0, err
    lines = out.splitlines()
    expected = expected_lines(table, result)
    assert [json.loads(line) for line in lines] == expected
    # key order is part of the contract
    assert all(list(json.loads(line)) == list(exp) for line, exp in zip(lines, expected))


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_replay_engine(name):
    """The reusable engine gives the same lines from rows built in memory."""
    canary_name, trace, table, result = SCENARIOS[name]
    canary = load_canary(DATA / f"{canary_name}.yaml")
    rows, _ = load_trace(DATA / f"{trace}.csv", canary)
    assert list(replay(canary, iter(rows))) == expected_lines(table, result)
    # the command's formatter gives exactly json.dumps of these lines
    assert "".join(replay_jsonl(canary, rows)) == "".join(json.dumps(line) + "\n" for line in replay(canary, rows))


@pytest.mark.integration  # starts a process
def test_exact_jsonl_of_a_weighted_promotion_through_the_console_script():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "playground.cli",
            "backtest",
            str(DATA / "weighted.yaml"),
            str(DATA / "weighted_pass.csv"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        '{"tick": 0, "phase": "Progressing", "canaryWeight": 0, "routes": [100, 0], "failedChecks": 0, "iterations": 0}\n'
        '{"tick": 1, "phase": "Progressing", "canaryWeight": 20, "routes": [80, 20], "failedChecks": 0, "iterations": 0}\n'
        '{"tick": 2, "phase": "Progressing", "canaryWeight": 40, "routes": [60, 40], "failedChecks": 0, "iterations": 0}\n'
        '{"tick": 3, "phase": "Progressing", "canaryWeight": 60, "routes": [40, 60], "failedChecks": 0, "iterations": 0}\n'
        '{"tick": 4, "phase": "Promoting", "canaryWeight": 60, "routes": [40, 60], "failedChecks": 0, "iterations": 0}\n'
        '{"tick": 5, "phase": "Finalising", "canaryWeight": 0, "routes": [100, 0], "failedChecks": 0, "iterations": 0}\n'
        '{"tick": 6, "phase": "Succeeded", "canaryWeight": 0, "routes": [100, 0], "failedChecks": 0, "iterations": 0}\n'
        '{"result": "Succeeded", "ticks": 7}\n'
    )


def test_trace_ending_before_the_end_reports_the_last_phase(tmp_path, capsys):
    trace = tmp_path / "short.csv"
    trace.write_text("request-success-rate,request-duration\n100,100\n100,100\n")
    code, out, _ = run_cli(capsys, DATA / "weighted.yaml", trace)
    assert code == 0
    assert json.loads(out.splitlines()[-1]) == {"result": "Progressing", "ticks": 2}


def test_missing_metric_column_means_no_values_and_is_noted(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("request-success-rate\n100\n100\n100\n100\n")
    code, out, err = run_cli(capsys, DATA / "weighted.yaml", trace)
    assert code == 0
    assert "no column for metric 'request-duration'" in err
    assert [json.loads(x)["failedChecks"] for x in out.splitlines()[:-1]] == [0, 0, 1, 2]


def test_replay_of_rows_without_a_trace_file():
    canary = load_canary(DATA / "skip.yaml")
    assert list(replay(canary, [TraceRow(), TraceRow()]))[-1] == {"result": "Succeeded", "ticks": 2}
    assert list(replay(canary, [])) == [{"result": "Initialized", "ticks": 0}]


# ------------------------------------------------------------------------------------------- bad input

CANARY = DATA / "weighted.yaml"


@pytest.mark.parametrize(
    "content, expected",
    [
        ("request-succes-rate\n100\n", ["unknown column 'request-succes-rate'", "request-success-rate"]),
        ("request-success-rate\n100\nabc\n", ["row 1 (line 3)", "'request-success-rate'", "'abc' is not a number"]),
        ("canary_ready\nmaybe\n", ["row 0 (line 2)", "'canary_ready'", "not true or false"]),
        ("webhook:smoke\n200\n2000\n", ["row 1 (line 3)", "'webhook:smoke'", "not an HTTP status"]),
        ("webhook:smok\n200\n", ["column 'webhook:smok'", "no webhook named 'smok'"]),
        ("request-success-rate,request-duration\n100\n", ["row 0 (line 2) has 1 fields, the header has 2"]),
        ("request-success-rate,request-success-rate\n1,1\n", ["'request-success-rate' appears twice"]),
        ("request-success-rate\n", ["header but no rows"]),
        ("", ["empty trace"]),
    ],
)
def test_bad_trace_exits_2_naming_file_row_and_column(tmp_path, capsys, content, expected):
    trace = tmp_path / "trace.csv"
    trace.write_text(content)
    code, out, err = run_cli(capsys, CANARY, trace)
    assert code == 2
    # the trace is streamed: the ticks before the bad row are out already, never a result line
    assert all('"result"' not in line for line in out.splitlines())
    bad_row = next((int(t.split()[1]) for t in expected if t.startswith("row ")), 0)
    assert len(out.splitlines()) == bad_row
    assert str(trace) in err
    for text in expected:
        assert text in err


@pytest.mark.parametrize(
    "content, expected",
    [
        (
            CANARY.read_text().replace("stepWeight: 20", "stepweight: 20"),
            ["canary.yaml:17: Canary prod/backend: spec.analysis.stepweight: unknown field; did you mean stepWeight?"],
        ),
        (
            CANARY.read_text().replace("interval: 15s", "interval: 15 seconds"),
            ["spec.analysis.interval", "invalid duration"],
        ),
        (CANARY.read_text().replace("port: 9898", "port: http"), ["spec.service.port", "expected an integer"]),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n", ["no document with kind: Canary"]),
        ("kind: Canary\n  bad: [\n", ["invalid YAML"]),
    ],
)
def test_bad_canary_exits_2_naming_file_and_field(tmp_path, capsys, content, expected):
    canary = tmp_path / "canary.yaml"
    canary.write_text(content)
    code, _, err = run_cli(capsys, canary, DATA / "weighted_pass.csv")
    assert code == 2
    assert str(canary) in err
    for text in expected:
        assert text in err


def test_engine_caps_step_weights_over_100_but_the_command_refuses_them_as_validate_does(capsys):
    """Flagger caps a step weight of 120 at 100 (the engine does too); validate refuses it, so backtest does."""
    import yaml

    from playground.models import Canary

    code, out, err = run_cli(capsys, DATA / "stepweights_over.yaml", DATA / "stepweights_over_pass.csv")
    assert code == 2 and out == ""
    assert err == (
        f"playground backtest: {DATA / 'stepweights_over.yaml'}:15: Canary prod/backend: "
        "spec.analysis.stepWeights[2]: step weight 120 is outside 1..100. Fix: use percentages between 1 and 100\n"
    )
    canary = Canary.model_validate(yaml.safe_load((DATA / "stepweights_over.yaml").read_text()))
    rows, _ = load_trace(DATA / "stepweights_over_pass.csv", canary)
    table = """
        Progressing 0 100/0 0 0
        Progressing 10 90/10 0 0
        Progressing 50 50/50 0 0
        Progressing 100 0/100 0 0
        Promoting 100 0/100 0 0
        Finalising 0 100/0 0 0
        Succeeded 0 100/0 0 0
        """
    assert list(replay(canary, rows)) == expected_lines(table, "Succeeded")


def test_missing_files_exit_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, tmp_path / "nope.yaml", DATA / "weighted_pass.csv")
    assert code == 2 and "nope.yaml" in err and "cannot read" in err
    code, _, err = run_cli(capsys, CANARY, tmp_path / "nope.csv")
    assert code == 2 and "nope.csv" in err and "cannot read" in err


def test_prometheus_source_arguments(capsys):
    code, _, err = run_cli(capsys, CANARY, DATA / "weighted_pass.csv", "--prometheus", "http://localhost:9090")
    assert code == 2 and "exactly one" in err
    code, _, err = run_cli(capsys, CANARY)
    assert code == 2 and "exactly one" in err
    code, _, err = run_cli(capsys, CANARY, "--prometheus", "http://localhost:9090", "--from", "2024-05-01T00:00:00Z")
    assert code == 2 and "--to" in err
    code, _, err = run_cli(
        capsys, CANARY, "--prometheus", "http://127.0.0.1:1", "--from", "yesterday", "--to", "1714521600"
    )
    assert code == 2 and "--from 'yesterday'" in err
    code, _, err = run_cli(capsys, CANARY, DATA / "weighted_pass.csv", "--from", "1714521600")
    assert code == 2 and "only apply with --prometheus" in err
    # a Prometheus that cannot be reached (nothing listens on port 1): a clear error, exit 2
    code, _, err = run_cli(
        capsys, CANARY, "--prometheus", "http://127.0.0.1:1", "--from", "2024-05-01T00:00:00Z", "--to", "1714525200"
    )
    assert code == 2 and "cannot reach Prometheus" in err


def test_help_describes_the_trace_format(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["backtest", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for text in ("CANARY.yaml", "TRACE.csv", "webhook:<name>", "canary_deadline_exceeded", "--prometheus", "revision"):
        assert text in out
