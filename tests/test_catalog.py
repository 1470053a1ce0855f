"""The image catalog: image reference -> local program, built-ins and the user's catalog.yaml."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from playground.local.catalog import (
    Catalog,
    CatalogError,
    UnknownImage,
    catalog_path,
    lookup,
    parse_image,
)
from tests.support.procs import free_port, start_process, stop_process, wait_for_http

REPO = Path(__file__).resolve().parents[1]
PODINFO_CONTAINER = {
    "name": "backend",
    "image": "ghcr.io/stefanprodan/podinfo:6.7.0",
    "command": ["./podinfo", "--port=9898", "--level=info", "--random-delay=false", "--random-error"],
    "env": [{"name": "PODINFO_UI_COLOR", "value": "#34577c"}],
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_HOME", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    "image, registry, path, tag, digest",
    [
        ("ghcr.io/stefanprodan/podinfo:6.7.0", "ghcr.io", "stefanprodan/podinfo", "6.7.0", None),
        ("stefanprodan/podinfo:6.0.1", None, "stefanprodan/podinfo", "6.0.1", None),
        ("127.0.0.1:5000/stefanprodan/podinfo:6.8.0", "127.0.0.1:5000", "stefanprodan/podinfo", "6.8.0", None),
        ("localhost:5000/podinfo", "localhost:5000", "podinfo", None, None),
        (
            "ghcr.io/stefanprodan/podinfo@sha256:" + "a" * 64,
            "ghcr.io",
            "stefanprodan/podinfo",
            None,
            "sha256:" + "a" * 64,
        ),
        ("quay.io/org/team/podinfo:1.0@sha256:" + "b" * 64, "quay.io", "org/team/podinfo", "1.0", "sha256:" + "b" * 64),
        ("nginx", None, "nginx", None, None),
    ],
)
def test_parse_image(image, registry, path, tag, digest):
    ref = parse_image(image)
    assert (ref.registry, ref.path, ref.tag, ref.digest) == (registry, path, tag, digest)


def test_parse_image_rejects_garbage():
    for bad in ("", "UPPER/case", "a/b:bad tag", "a/b@nodigest"):
        with pytest.raises(ValueError):
            parse_image(bad)


@pytest.mark.parametrize(
    "image",
    [
        "ghcr.io/stefanprodan/podinfo:6.7.0",
        "stefanprodan/podinfo:6.0.1",
        "docker.io/stefanprodan/podinfo:6.0.1",
        "quay.io/stefanprodan/podinfo",
        "127.0.0.1:5000/stefanprodan/podinfo:6.8.0",
        "ghcr.io/stefanprodan/podinfo@sha256:" + "c" * 64,
    ],
)
def test_podinfo_images_map_to_podinfo(image, home):
    assert lookup(image).name == "podinfo"


@pytest.mark.parametrize("image", ["ghcr.io/fluxcd/flagger-loadtester:0.34.0", "weaveworks/flagger-loadtester:0.18.0"])
def test_loadtester_images(image, home):
    assert lookup(image).name == "loadtester"


def test_podinfo_launch_keeps_flags_and_overrides_port_and_version(home):
    launch = lookup("ghcr.io/stefanprodan/podinfo:6.7.0").launch(
        {**PODINFO_CONTAINER, "args": ["--port", "1111", "--version=0.0.1", "--ui-message=hi"]}, port=20001, tag="6.7.0"
    )
    assert launch.argv == [
        sys.executable,
        "-m",
        "playground.local.podinfo",
        "--port=20001",
        "--version=6.7.0",
        "--level=info",
        "--random-delay=false",
        "--random-error",
        "--ui-message=hi",
    ]
    assert launch.env == {"PODINFO_UI_COLOR": "#34577c"}
    bare = lookup("stefanprodan/podinfo").launch({"name": "x"}, port=1, tag=None)
    assert bare.argv[-2:] == ["--port=1", "--version=latest"]


def test_loadtester_launch_needs_the_allowlist(home, tmp_path):
    container = {"command": ["./loadtester", "-port=8080", "-log-level=info", "-timeout=1h"]}
    program = lookup("ghcr.io/fluxcd/flagger-loadtester:0.34.0")
    launch = program.launch(container, port=20002, tag="0.34.0", allowlist=tmp_path / "allow.json")
    assert launch.argv == [
        sys.executable,
        "-m",
        "playground.local.loadtester",
        "--port=20002",
        f"--allowlist={tmp_path / 'allow.json'}",
        "-log-level=info",
        "-timeout=1h",
    ]
    with pytest.raises(ValueError, match="allowlist"):
        program.launch(container, port=1, tag="0.34.0")


def test_unknown_image_names_it_and_says_how_to_register(home):
    with pytest.raises(UnknownImage) as info:
        lookup("ghcr.io/acme/orders:1.2.3")
    message = str(info.value)
    assert "ghcr.io/acme/orders:1.2.3" in message
    assert "stefanprodan/podinfo" in message and "fluxcd/flagger-loadtester" in message
    assert str(catalog_path(home)) in message and "argv" in message and "acme/orders" in message
    with pytest.raises(UnknownImage):
        lookup("NOT A REFERENCE")


def test_user_catalog_merges_over_builtins(home):
    (home / "bin").mkdir()
    (home / "catalog.yaml").write_text(
        "images:\n"
        "  ghcr.io/acme/orders:\n"
        '    argv: ["bin/orders", "--listen=127.0.0.1:{port}", "--release={tag}", "{{literal}}"]\n'
        '    env: {ORDERS_HOME: "{catalog_dir}/data", ORDERS_PORT: "{port}"}\n'
        "    args: true\n"
        "  acme/frontend:\n"
        "    builtin: podinfo\n"
        "  stefanprodan/podinfo:\n"
        '    argv: ["{python}", "-c", "print({port})"]\n'
    )
    catalog = Catalog.load()
    assert {"ghcr.io/acme/orders", "acme/frontend", "stefanprodan/podinfo"} <= set(catalog.repositories())
    orders = catalog.lookup("registry.local:5000/acme/orders:2.0")  # matched on the last two segments
    launch = orders.launch({"args": ["--verbose"], "env": [{"name": "A", "value": "1"}]}, port=7000, tag="2.0")
    assert launch.argv == [
        str(home.resolve() / "bin/orders"),
        "--listen=127.0.0.1:7000",
        "--release=2.0",
        "{literal}",
        "--verbose",
    ]
    assert launch.env == {"A": "1", "ORDERS_HOME": f"{home.resolve()}/data", "ORDERS_PORT": "7000"}
    assert catalog.lookup("acme/frontend:1").name == "podinfo"
    assert catalog.lookup("ghcr.io/stefanprodan/podinfo:6.7.0").launch({}, port=5, tag="x").argv == [
        sys.executable,
        "-c",
        "print(5)",
    ]


@pytest.mark.parametrize(
    "text, error",
    [
        ("images: [1, 2]\n", "images"),
        ("other: {}\n", "unknown top-level"),
        ('images:\n  acme/x: {argv: "run --port={port}"}\n', "list of strings"),
        ("images:\n  acme/x: {env: {A: b}}\n", "argv"),
        ('images:\n  acme/x: {argv: ["x", "{nope}"]}\n', "unknown placeholder {nope}"),
        ("images:\n  acme/x:1.0: {argv: [x]}\n", "without tag"),
        ("images:\n  acme/x: {builtin: nginx}\n", "builtin"),
        ("images:\n  acme/x: {argv: [x], color: red}\n", "unknown field"),
        ("images: {\n", "cannot read"),
    ],
)
def test_bad_user_catalog_is_a_clear_error(home, text, error):
    (home / "catalog.yaml").write_text(text)
    with pytest.raises(CatalogError) as info:
        Catalog.load().lookup("acme/x").launch({}, port=1, tag="t")
    assert error in str(info.value) and str(home / "catalog.yaml") in str(info.value)


@pytest.mark.integration  # starts a process
def test_launched_podinfo_serves_the_image_tag(home, tmp_path):
    """The argv/env a Program builds really start a replica on the given port reporting the image tag."""
    image = "127.0.0.1:5000/stefanprodan/podinfo:6.8.0"
    port = free_port()
    # without --random-error: a third of the requests would fail by design
    container = {**PODINFO_CONTAINER, "command": [a for a in PODINFO_CONTAINER["command"] if a != "--random-error"]}
    launch = lookup(image).launch(container, port=port, tag=parse_image(image).tag)
    proc = start_process(
        launch.argv, log_path=tmp_path / "replica.log", env={**launch.env, "HTTP_PROXY": "", "http_proxy": ""}, cwd=REPO
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", proc=proc, timeout=10)
        info = httpx.get(f"http://127.0.0.1:{port}/api/info", trust_env=False).json()
    finally:
        stop_process(proc)
    assert info["version"] == "6.8.0" and info["color"] == "#34577c"
