"""Hostile YAML (issue 14): every probe of tests/support/hostile.py gives ONE clear finding, bounded in time and
memory (figures: bench/hostile_input.py), in `playground validate` (the console script, from outside the
repository), in the GitOps sync (a real git origin) and in the image automation (a real docker-registry)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest

from playground import yamlload
from playground.gitops import GitSource, SyncError, apply_sync, plan_sync
from playground.local import gitorigin
from playground.local.cluster import LocalCluster
from playground.manifests import load_tree, validate_set
from playground.pipeline import targets_from
from playground.textsafe import MAX_LINE, one_line
from tests.support.hostile import IN_GIT, PROBES

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
PLAYGROUND = Path(sys.executable).parent / "playground"


def _probe_tree(tmp_path: Path, *names: str) -> Path:
    d = tmp_path / "tree"
    d.mkdir(exist_ok=True)
    for name in names:
        PROBES[name][0](d)
    return d


def _assert_one_line(line: str) -> None:
    assert len(line) <= MAX_LINE and line.isprintable(), line[:200]


# --------------------------------------------------------------------------------------------- loader


@pytest.mark.parametrize("probe", list(PROBES))
def test_probe_gives_one_finding_naming_its_file(tmp_path, probe):
    tree = _probe_tree(tmp_path, probe)
    findings = [f for f in validate_set(load_tree(tree)) if f.is_error]
    assert len(findings) == 1, [str(f)[:200] for f in findings]
    line = str(findings[0])
    assert line.startswith(f"{tree}/{probe}.yaml:") and PROBES[probe][1] in line
    assert "Fix: " in line
    _assert_one_line(line)


def test_long_name_is_escaped_and_capped_keeping_the_fix(tmp_path):
    tree = _probe_tree(tmp_path, "longname")
    (line,) = [str(f) for f in validate_set(load_tree(tree))]
    assert "\u2028" not in line and "\u202e" not in line and "a\\u2028b\\u202ec" in line
    assert "characters cut]" in line and line.endswith("starting and ending with a letter or digit")
    assert ": metadata.name: invalid name 'a\\u2028b\\u202ec" in line


def test_limits_at_their_edges(tmp_path):
    def findings(text: str) -> list[str]:
        (tmp_path / "x.yaml").write_text(text)
        return [str(f) for f in validate_set(load_tree(tmp_path / "x.yaml")) if f.is_error]

    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n"
    # 100 levels is fine (the data value is the 2nd level), 101 is not
    assert findings(cm + "data: {k: '" + "x" * 10 + "'}\n") == []
    assert findings(cm + "x: " + "[" * 99 + "]" * 99 + "\n") == []
    assert "nested more than 100" in findings(cm + "x: " + "[" * 100 + "]" * 100 + "\n")[0]
    # aliases and merge keys within the budget load as before
    assert findings(cm + "base: &b {k: v}\ndata:\n  <<: *b\n  other: w\n") == []
    assert "recursive alias" in findings(cm + "x: &r [*r]\n")[0]
    # only JSON values: no infinity/NaN, no binary, no 5,000-digit integers; timestamps stay strings
    assert "not a finite number" in findings(cm + "x: .inf\n")[0]
    assert "not a finite number" in findings(cm + "x: 1.0e+400\n")[0]
    assert "!!binary is not allowed" in findings(cm + "x: !!binary aGVsbG8=\n")[0]
    assert "too large for Kubernetes" in findings(cm + "x: " + "9" * 5000 + "\n")[0]
    (tmp_path / "x.yaml").write_text(cm + "data: {when: 2024-13-45, at: 2024-05-01}\n")
    assert load_tree(tmp_path / "x.yaml").objects[0].raw["data"] == {"when": "2024-13-45", "at": "2024-05-01"}


def test_symlinks_inside_the_tree_are_read_outside_are_refused(tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    (tree / "link.yaml").symlink_to("sub/cm.yaml")  # inside: read (a duplicate object, reported as such)
    outside = tmp_path / "outside.yaml"
    outside.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n")
    (tree / "out.yaml").symlink_to(outside)
    (tree / "dangling.yaml").symlink_to(tree / "missing.yaml")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "c.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    (tree / "linked-out").symlink_to(tmp_path / "elsewhere")  # a directory outside: reported, not read
    (tree / "linked-in").symlink_to(tree / "sub")  # a directory inside: its files are read where they are
    mset = load_tree(tree)
    assert mset.files == ["link.yaml", "sub/cm.yaml"]
    lines = [str(f) for f in validate_set(mset)]
    assert any("out.yaml:1: symlink to" in line and "outside the manifests tree" in line for line in lines)
    assert any("dangling.yaml:1: cannot read file" in line for line in lines)
    assert any(
        "linked-out:1: symlink to the directory" in line and "outside the manifests tree" in line for line in lines
    )
    assert not any("linked-in" in line for line in lines)
    assert any("duplicate object" in line for line in lines)


def test_read_text_never_opens_a_fifo_for_reading_and_caps_the_size(tmp_path):
    os.mkfifo(tmp_path / "p")
    with pytest.raises(yamlload.Refused, match="FIFO"):
        yamlload.read_text(tmp_path / "p")  # would block forever if it opened the FIFO for reading
    (tmp_path / "big").write_bytes(b"x" * 11)
    with pytest.raises(yamlload.Refused, match="11 bytes, over the limit of 10"):
        yamlload.read_text(tmp_path / "big", max_bytes=10)
    (tmp_path / "latin1").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(yamlload.Refused, match="not UTF-8 text: byte 0xe9 at line 1"):
        yamlload.read_text(tmp_path / "latin1")


def test_one_line_escapes_every_non_printable_character():
    assert one_line("a\nb\rc\td\x00e\x1b[31mf\u2028g\u2029h\u202ei\u200bj\x85k") == (
        "a\\x0ab\\x0dc\\x09d\\x00e\\x1b[31mf\\u2028g\\u2029h\\u202ei\\u200bj\\x85k"
    )
    long = one_line("x" * 5000 + "END", limit=200)
    assert len(long) <= 200 and long.endswith("END") and "characters cut]" in long
    assert one_line("plain text") == "plain text"


def test_code_location_discovery_skips_hostile_files(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(MANIFESTS, tree)
    for name in PROBES:
        PROBES[name][0](tree / "prod")
    assert [t.key for t in targets_from(tree)] == [t.key for t in targets_from(MANIFESTS)]


# ------------------------------------------------------------------------------ the console script


@pytest.mark.integration
def test_validate_refuses_a_secret_holding_a_webhook_url(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(MANIFESTS, tree)
    url = "https://hooks.slack.com/services/T000/B000/XXXX"
    (tree / "prod" / "slack.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: on-call-slack, namespace: prod}\n"
        f"data:\n  address: {base64.b64encode(url.encode()).decode()}\n"
    )
    (tree / "prod" / "token.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: token, namespace: prod}\nstringData: {token: s3cr3t}\n"
    )
    (tree / "prod" / "empty.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: empty, namespace: prod}\n"
    )
    proc = subprocess.run(
        [str(PLAYGROUND), "validate", "--no-warnings", str(tree)], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 1
    slack, token, summary = proc.stdout.splitlines()
    assert slack.startswith(f"{tree}/prod/slack.yaml:5: Secret prod/on-call-slack: data.address: Secret committed")
    assert "key 'address' holds a URL (a webhook address is a credential)" in slack
    assert "kubectl create secret generic on-call-slack --from-literal=address=..." in slack
    assert "addressFromEnv" in slack and url not in slack
    assert token.startswith(f"{tree}/prod/token.yaml:4: Secret prod/token: stringData.token: Secret committed")
    assert summary.endswith("2 errors, 0 warnings")


@pytest.mark.integration
@pytest.mark.parametrize("probe", list(PROBES))
def test_validate_console_script_probe(tmp_path, probe):
    tree = _probe_tree(tmp_path, probe)
    proc = subprocess.run(
        [str(PLAYGROUND), "validate", str(tree)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 1 and proc.stderr == ""
    finding, summary = proc.stdout.splitlines()
    assert finding.startswith(f"{tree}/{probe}.yaml:") and PROBES[probe][1] in finding
    assert summary.endswith(": 1 error, 0 warnings")
    _assert_one_line(finding)


@pytest.mark.integration
def test_validate_console_script_with_every_probe_next_to_the_real_manifests(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(MANIFESTS, tree)
    for name in PROBES:
        PROBES[name][0](tree / "prod")
    proc = subprocess.run(
        [str(PLAYGROUND), "validate", "--no-warnings", str(tree)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 1 and proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == len(PROBES) + 1
    for name, line in zip(sorted(PROBES), lines):
        assert line.startswith(f"{tree}/prod/{name}.yaml:") and PROBES[name][1] in line
        _assert_one_line(line)


@pytest.mark.integration
def test_validate_piped_into_head_ends_quietly(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "many.yaml").write_text(
        "".join(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}, namespace: n{i}}}\n---\n" for i in range(5000)
        )
    )
    proc = subprocess.Popen(
        [str(PLAYGROUND), "validate", str(tree)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141
    assert b"namespace n0 is not defined" in first and err == b""


# ---------------------------------------------------------------------------------------- GitOps sync


@pytest.fixture
def hostile_origin(tmp_path) -> Path:
    """A bare origin with the project's manifests, then a commit adding every probe git can hold."""
    origin = tmp_path / "origin.git"
    gitorigin.ensure_origin(origin, seed=MANIFESTS)
    return origin


def _push_probes(origin: Path, work: Path) -> str:
    gitorigin.clone(origin, work)
    for name in IN_GIT:
        PROBES[name][0](work / "prod")
    return gitorigin.commit_and_push(work, "hostile files")


@pytest.mark.integration  # starts a process
def test_sync_of_a_hostile_commit_reports_one_finding_per_file_and_applies_nothing(tmp_path, hostile_origin):
    source = GitSource(str(hostile_origin), tmp_path / "checkout")
    source.fetch()
    cluster = LocalCluster(tmp_path / "home")
    try:
        apply_sync(cluster, plan_sync(cluster, source.path))  # the valid tree first
        before = sorted(r[0] for r in cluster.store._read("SELECT body FROM objects"))
        _push_probes(hostile_origin, tmp_path / "person")
        # git stored the symlink as a symlink
        tree = git.Repo(hostile_origin).commit("main").tree
        assert tree["prod/devzero.yaml"].mode == 0o120000
        source.fetch()
        plan = plan_sync(cluster, source.path)
        assert plan.items == []
        assert sorted(f.file.rsplit("/", 1)[-1] for f in plan.errors) == sorted(f"{n}.yaml" for n in IN_GIT)
        for f in plan.errors:
            probe = f.file.rsplit("/", 1)[-1].removesuffix(".yaml")
            assert PROBES[probe][1] in str(f)
            _assert_one_line(str(f))
        with pytest.raises(SyncError, match="nothing was applied"):
            apply_sync(cluster, plan)
        assert sorted(r[0] for r in cluster.store._read("SELECT body FROM objects")) == before
    finally:
        cluster.close()


# ----------------------------------------------------------------------------------- image automation


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from tests.support.registry import docker_registry

    with docker_registry(tmp_path_factory.mktemp("registry")) as url:
        yield url


@pytest.mark.integration
def test_image_automation_updates_the_good_files_next_to_hostile_ones(tmp_path, hostile_origin, registry):
    from playground.images import RegistryClient, scan_and_update
    from playground.local.registry import push_tag

    _push_probes(hostile_origin, tmp_path / "person")
    host = registry.removeprefix("http://")
    repo = "hostile/stefanprodan/podinfo"
    for tag in ["6.7.0", "6.8.0"]:
        push_tag(registry, repo, tag)
    source = GitSource(str(hostile_origin), tmp_path / "checkout")
    updates = scan_and_update(source, RegistryClient(), {"ghcr.io/stefanprodan/podinfo": f"{host}/{repo}"})
    assert {(u.policy, u.new_tag) for u in updates} == {("prod:backend", "6.8.0"), ("prod:frontend", "6.8.0")}
    commit = git.Repo(hostile_origin).commit("main")
    assert sorted(commit.stats.files) == ["prod/backend/deployment.yaml", "prod/frontend/deployment.yaml"]
    assert commit.tree["prod/devzero.yaml"].mode == 0o120000  # the hostile files are left as they were


# ---------------------------------------------------------------------------------------------- backtest

BACKTEST_DATA = ROOT / "tests" / "data" / "backtest"
WEIGHTED = (BACKTEST_DATA / "weighted.yaml").read_text()
WEIGHTED_PASS = (BACKTEST_DATA / "weighted_pass.csv").read_text()


def _playground(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PLAYGROUND), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.integration
@pytest.mark.parametrize(
    "old, new, field",
    [
        ("stepWeight: 20", "stepWeight: -20", "spec.analysis.stepWeight: -20 is outside 0..100"),
        ("maxWeight: 50", "maxWeight: 100050", "spec.analysis.maxWeight: 100050 is outside 0..100"),
        ("min: 99", "min: .inf", "not a finite number"),
        ("max: 500", "max: 1.0e+400", "not a finite number"),
    ],
    ids=["negative-stepWeight", "maxWeight-100050", "inf-threshold", "1e400-threshold"],
)
def test_backtest_refuses_what_validate_refuses_with_the_same_line(tmp_path, old, new, field):
    assert old in WEIGHTED
    (tmp_path / "canary.yaml").write_text(WEIGHTED.replace(old, new))
    (tmp_path / "trace.csv").write_text(WEIGHTED_PASS)
    validate = _playground(tmp_path, "validate", "--no-warnings", "canary.yaml")
    finding = [line for line in validate.stdout.splitlines() if field in line]
    assert validate.returncode == 1 and len(finding) == 1
    backtest = _playground(tmp_path, "backtest", "canary.yaml", "trace.csv")
    assert backtest.returncode == 2 and backtest.stdout == ""
    assert backtest.stderr == f"playground backtest: {finding[0]}\n"


@pytest.mark.integration
@pytest.mark.parametrize("probe", ["bomb", "nul", "depth", "fifo", "devzero", "longname"])
def test_backtest_canary_probe_gives_one_line(tmp_path, probe):
    path = PROBES[probe][0](tmp_path)
    (tmp_path / "trace.csv").write_text(WEIGHTED_PASS)
    proc = _playground(tmp_path, "backtest", path.name, "trace.csv")
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("playground backtest: ")
    _assert_one_line(line.removeprefix("playground backtest: "))
    # a single file named on the command line is no tree: the link is followed, to a device, refused as such
    expected = {"devzero": "a character device, not a regular file"}.get(probe, PROBES[probe][1])
    assert expected in line


@pytest.mark.integration
@pytest.mark.parametrize("value", ["inf", "-inf", "1e400", "Infinity"])
def test_backtest_refuses_infinite_trace_values(tmp_path, value):
    (tmp_path / "canary.yaml").write_text(WEIGHTED)
    (tmp_path / "trace.csv").write_text(f"request-success-rate,request-duration\n100,100\n{value},100\n")
    proc = _playground(tmp_path, "backtest", "canary.yaml", "trace.csv")
    assert proc.returncode == 2
    assert proc.stderr == (
        f"playground backtest: trace.csv: row 1 (line 3), column 'request-success-rate': {value!r} is not a finite "
        "number (Prometheus values are finite; leave it empty or write NaN for no values)\n"
    )
    assert len(proc.stdout.splitlines()) == 1  # streamed: the tick before the bad row, no result line


@pytest.mark.integration
def test_backtest_takes_a_utf8_bom_and_crlf_as_excel_writes_them(tmp_path):
    (tmp_path / "canary.yaml").write_text(WEIGHTED)
    (tmp_path / "plain.csv").write_text(WEIGHTED_PASS)
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + WEIGHTED_PASS.replace("\n", "\r\n").encode())
    plain = _playground(tmp_path, "backtest", "canary.yaml", "plain.csv")
    excel = _playground(tmp_path, "backtest", "canary.yaml", "excel.csv")
    assert plain.returncode == excel.returncode == 0 and excel.stderr == ""
    assert excel.stdout == plain.stdout and '"result": "Succeeded"' in excel.stdout


@pytest.mark.integration
def test_backtest_piped_into_head_ends_quietly(tmp_path):
    canary = WEIGHTED.replace("maxWeight: 50\n    stepWeight: 20\n", "iterations: 10000000\n")
    (tmp_path / "canary.yaml").write_text(canary)
    (tmp_path / "trace.csv").write_text("request-success-rate,request-duration\n" + "100,100\n" * 200_000)
    proc = subprocess.run(
        f"{PLAYGROUND} backtest canary.yaml trace.csv 2>err.txt | head -1; echo status=${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    first, status = proc.stdout.splitlines()
    assert first.startswith('{"tick": 0, "phase": "Progressing"')
    assert status == "status=141" and (tmp_path / "err.txt").read_text() == ""


# ------------------------------------------------------------------------------------- code location


@pytest.mark.integration  # starts a process
def test_code_location_graph_from_a_hostile_gitops_head(tmp_path, monkeypatch):
    """The daemon's code servers build the asset graph from the GitOps HEAD (kubernetes backend: their own
    clone): a hostile commit there leaves them with the targets of the valid files, never a hang or a crash."""
    from assets.graph import fetch_state
    from playground.runtime import Runtime, RuntimeConfig

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    origin = tmp_path / "gitops.git"
    gitorigin.ensure_origin(origin, seed=MANIFESTS)
    _push_probes(origin, tmp_path / "person")
    env = {"TMPDIR": str(tmp_path / "tmp")}
    state = fetch_state(lambda: Runtime(RuntimeConfig.from_env(env, backend="kubernetes", gitops_url=str(origin))))
    assert state.error is None and state.source == "gitops head"
    assert [t.key for t in state.targets] == [t.key for t in targets_from(MANIFESTS)]
