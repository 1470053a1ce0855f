"""The Flagger-compatible load tester: real processes, real commands (bash, curl, hey)."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from playground.durations import parse_duration
from playground.local.loadtester import command_argv, needs_shell
from tests.support.forward_proxy import ForwardProxy
from tests.support.procs import free_port, start_process, stop_process, wait_for_http

REPO = Path(__file__).resolve().parents[1]
NO_PROXY_ENV = {
    k: ""
    for k in (
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "PODINFO_ERROR_RATE",
        "PODINFO_EXTRA_LATENCY_MS",
    )
}


def write_allowlist(path: Path, commands: list[str]) -> None:
    """Atomic rewrite, as the local cluster does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"commands": commands}))
    os.replace(tmp, path)


def start_loadtester(tmp_path: Path, allowlist: Path, *flags: str, env: dict[str, str] | None = None):
    port = free_port()
    proc = start_process(
        [
            sys.executable,
            "-m",
            "playground.local.loadtester",
            f"-port={port}",
            f"--allowlist={allowlist}",
            "-log-level=info",
            *flags,
        ],
        log_path=tmp_path / f"loadtester-{port}.log",
        env={**NO_PROXY_ENV, **(env or {})},
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(url + "/healthz", proc=proc, timeout=10)
    return proc, url


def hook(
    cmd: str | None, *, type_: str | None = None, name: str = "podinfo", namespace: str = "test", **extra: str
) -> dict:
    metadata = {**({"cmd": cmd} if cmd is not None else {}), **({"type": type_} if type_ else {}), **extra}
    return {"name": name, "namespace": namespace, "phase": "Progressing", "checksum": "abc", "metadata": metadata}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A podinfo replica plus a load tester whose allowlist the tests rewrite."""
    tmp = tmp_path_factory.mktemp("loadtester")
    pport = free_port()
    podinfo = start_process(
        [sys.executable, "-m", "playground.local.podinfo", f"--port={pport}"],
        log_path=tmp / "podinfo.log",
        env=NO_PROXY_ENV,
        cwd=REPO,
    )
    allowlist = tmp / "allowlist.json"
    write_allowlist(allowlist, [])
    lt = None
    try:
        wait_for_http(f"http://127.0.0.1:{pport}/healthz", proc=podinfo)
        lt, url = start_loadtester(tmp, allowlist, "-timeout=20s")
        yield {"url": url, "allowlist": allowlist, "podinfo": f"http://127.0.0.1:{pport}", "tmp": tmp, "proc": lt}
    finally:
        stop_process(lt)
        stop_process(podinfo)


@pytest.fixture
def client():
    with httpx.Client(trust_env=False, timeout=30) as c:
        yield c


def allow(env, *commands: str) -> None:
    write_allowlist(env["allowlist"], list(commands))


# -------------------------------------------------------------------------------------------- units


def test_shell_syntax_detection():
    assert not needs_shell("hey -z 1m -q 10 -c 2 http://backend-canary.prod:9898/")
    assert command_argv("curl -sd 'test' http://x/token") == ["curl", "-sd", "test", "http://x/token"]
    for cmd in (
        "curl -sd 'test' http://x/token | grep token",
        "a && b",
        "a; b",
        "echo $HOME",
        "cat < f",
        "echo hi > f",
        "ls *.py",
        "FOO=1 env",
        "echo `id`",
        'echo "$X"',
        "(a)",
        "a\nb",
        "echo 'oops",
    ):
        assert needs_shell(cmd), cmd
        assert command_argv(cmd) == ["bash", "-c", cmd]
    assert parse_duration("1h") == 3600 and parse_duration("1m30s") == 90 and parse_duration("500ms") == 0.5
    with pytest.raises(ValueError):
        parse_duration("soon")


# ------------------------------------------------------------------------------------------- policy


def test_healthz_and_bad_requests(env, client):
    url = env["url"]
    assert client.get(url + "/healthz").text == "OK"
    assert client.post(url + "/", content=b"not json").status_code == 400
    r = client.post(url + "/", json={"name": "podinfo", "namespace": "test"})
    assert r.status_code == 400 and "metadata not found" in r.text
    r = client.post(url + "/", json=hook(None, logCmdOutput="true"))
    assert r.status_code == 400 and "cmd not found" in r.text
    r = client.post(url + "/", json=hook("helm test x", type_="helmv3"))
    assert r.status_code == 400 and "unknown task type helmv3" in r.text


def test_commands_outside_the_allowlist_are_refused(env, client):
    allow(env, "echo allowed")
    for type_ in (None, "bash"):
        r = client.post(env["url"] + "/", json=hook("rm -rf /tmp/nothing-here", type_=type_))
        assert r.status_code == 403
        assert "'rm -rf /tmp/nothing-here'" in r.text and "webhook of a synced Canary" in r.text


def test_allowlist_is_reloaded_when_the_file_changes(env, client):
    allow(env, "echo one")
    assert client.post(env["url"] + "/", json=hook("echo two", type_="bash")).status_code == 403
    allow(env, "echo one", "echo two")
    r = client.post(env["url"] + "/", json=hook("echo two", type_="bash"))
    assert r.status_code == 200 and r.text == "two\n"
    allow(env, "echo one")
    assert client.post(env["url"] + "/", json=hook("echo two", type_="bash")).status_code == 403
    # a broken rewrite keeps the previous list
    env["allowlist"].write_text("{not json")
    assert client.post(env["url"] + "/", json=hook("echo one", type_="bash")).status_code == 200


# ------------------------------------------------------------------------------------------ bash tasks


def test_bash_success_and_failure(env, client):
    ok, bad = "echo hello && echo world >&2", "echo oops; exit 3"
    allow(env, ok, bad)
    r = client.post(env["url"] + "/", json=hook(ok, type_="bash"))
    assert r.status_code == 200 and "hello" in r.text and "world" in r.text
    r = client.post(env["url"] + "/", json=hook(bad, type_="bash"))
    assert r.status_code == 500 and "exit status 3" in r.text and "oops" in r.text


def test_conformance_curl_token_end_to_end(env, client):
    cmd = f"curl -sd 'test' {env['podinfo']}/token | grep token"
    allow(env, cmd)
    r = client.post(env["url"] + "/", json=hook(cmd, type_="bash"))
    assert r.status_code == 200, r.text
    assert '"token"' in r.text


@pytest.mark.integration  # starts a process
def test_bash_timeout_kills_the_command(tmp_path, client):
    allowlist = tmp_path / "allow.json"
    write_allowlist(allowlist, ["sleep 30"])
    proc, url = start_loadtester(tmp_path, allowlist, "-timeout=1s")
    try:
        r = client.post(url + "/", json=hook("sleep 30", type_="bash"))
        assert r.status_code == 500 and "killed" in r.text  # killed at its 1s timeout, not after 30s
    finally:
        stop_process(proc)


# ------------------------------------------------------------------------------------------- cmd tasks


def test_cmd_runs_async_and_is_deduplicated(env, client):
    marker = env["tmp"] / "runs.txt"
    cmd = f"echo run >> {marker}; sleep 2; echo done >> {marker}"
    allow(env, cmd)
    assert client.post(env["url"] + "/", json=hook(cmd)).status_code == 202
    assert "done" not in (marker.read_text() if marker.exists() else "")  # answered before the command ended
    assert client.post(env["url"] + "/", json=hook(cmd)).status_code == 202  # same canary: skipped
    assert client.post(env["url"] + "/", json=hook(cmd, name="other")).status_code == 202  # other canary: runs
    _wait(lambda: marker.exists() and marker.read_text().count("done") == 2)  # both runs finished
    assert marker.read_text().count("run") == 2
    assert client.post(env["url"] + "/", json=hook(cmd)).status_code == 202  # finished: runs again
    _wait(lambda: marker.read_text().count("run") == 3)


def test_cmd_without_shell_syntax_runs_as_argv(env, client):
    target = env["tmp"] / "touched"
    cmd = f"touch {target}"
    allow(env, cmd)
    assert client.post(env["url"] + "/", json=hook(cmd, logCmdOutput="true")).status_code == 202
    _wait(target.exists)
    log = Path(env["proc"].log_path).read_text()
    assert "mode=argv" in log and "command finished" in log


def test_hey_load_test_task(env, client):
    cmd = f"hey -z 2s -q 5 -c 1 {env['podinfo']}/"
    allow(env, cmd)
    before = _root_requests(client, env["podinfo"])
    assert client.post(env["url"] + "/", json=hook(cmd)).status_code == 202
    _wait(lambda: _root_requests(client, env["podinfo"]) - before >= 5, timeout=5)
    _wait(lambda: "loadtester_running_tasks 0" in client.get(env["url"] + "/metrics").text, timeout=5)
    done = _root_requests(client, env["podinfo"]) - before
    assert 5 <= done <= 13  # 5 req/s for 2 s
    assert re.search(r"command finished .*hey -z 2s", Path(env["proc"].log_path).read_text())


# ------------------------------------------------------------------------------------------------ gates


def test_gates(env, client):
    url = env["url"]
    a, b = hook(None, name="a"), hook(None, name="b")
    assert client.get(url + "/gate/approve").status_code == 200
    assert client.post(url + "/gate/halt", json=a).status_code == 403
    assert client.post(url + "/gate/check", json=a).status_code == 403  # closed by default
    assert client.post(url + "/gate/open", json=a).status_code == 202
    assert client.post(url + "/gate/check", json=a).status_code == 200
    assert client.post(url + "/gate/check", json=b).status_code == 403  # per canary
    assert client.post(url + "/gate/close", json=a).status_code == 202
    assert client.post(url + "/gate/check", json=a).status_code == 403
    assert client.post(url + "/rollback/check", json=a).status_code == 403
    assert client.post(url + "/rollback/open", json=a).status_code == 202
    assert client.post(url + "/rollback/check", json=a).status_code == 200
    assert client.post(url + "/gate/check", json=a).status_code == 403  # separate flags
    assert client.post(url + "/rollback/close", json=a).status_code == 202
    assert client.post(url + "/rollback/check", json=a).status_code == 403
    assert client.post(url + "/gate/check", content=b"junk").status_code == 400


# ------------------------------------------------------------------------------------- proxy + signals


@pytest.mark.integration  # starts a process
def test_children_use_the_mesh_proxy_and_die_on_sigterm(env, tmp_path, client):
    proxy = ForwardProxy({"backend-canary.prod:9898": int(env["podinfo"].rsplit(":", 1)[1])})
    allowlist = tmp_path / "allow.json"
    via_proxy = "curl -sf http://backend-canary.prod:9898/version | grep version"
    hey = "hey -n 3 -c 1 http://backend-canary.prod:9898/"
    write_allowlist(allowlist, [via_proxy, hey, "sleep 41.5"])
    proc, url = start_loadtester(
        tmp_path, allowlist, env={"http_proxy": proxy.url, "HTTP_PROXY": proxy.url, "NO_PROXY": "127.0.0.1,localhost"}
    )
    try:
        r = client.post(url + "/", json=hook(via_proxy, type_="bash"))
        assert r.status_code == 200 and '"version"' in r.text
        assert proxy.seen == ["http://backend-canary.prod:9898/version"]
        # hey only proxies with -x: the load tester's shim adds it from http_proxy
        assert client.post(url + "/", json=hook(hey)).status_code == 202
        _wait(lambda: proxy.seen.count("http://backend-canary.prod:9898/") == 3)
        assert client.post(url + "/", json=hook("sleep 41.5")).status_code == 202
        _wait(lambda: _pids_running("sleep\x0041.5"))
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(5) == 0
        _wait(lambda: not _pids_running("sleep\x0041.5"), timeout=3)
    finally:
        stop_process(proc)
        proxy.close()


# ------------------------------------------------------------------------------------------- helpers


def _wait(predicate, timeout: float = 5.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def _root_requests(client: httpx.Client, podinfo: str) -> int:
    text = client.get(podinfo + "/metrics").text
    return sum(
        int(float(m)) for m in re.findall(r'http_requests_total\{method="GET",path="root",status="\d+"\} (\S+)', text)
    )


def _pids_running(cmdline: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if fh.read().decode(errors="replace").rstrip("\x00").endswith(cmdline):
                        with open(f"/proc/{entry}/stat") as st:
                            if st.read().split(") ", 1)[1].startswith("Z"):
                                continue
                        pids.append(int(entry))
            except OSError:
                pass
    return pids
