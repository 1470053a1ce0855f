"""One error base class: every exception the engine and the Dagster layer define derives from
playground.errors.PlaygroundError, each name is defined once, and the CLI turns one into one line on stderr and
an exit status (the installed console script, run from outside the repository)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import assets
import playground
from playground.errors import PlaygroundError

PLAYGROUND = str(Path(sys.executable).parent / "playground")


def _exception_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for package in (playground, assets):
        modules = [package.__name__] + [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
        for name in modules:
            module = importlib.import_module(name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == name and obj not in found:
                    found.append(obj)
    return found


def test_every_exception_class_derives_from_playground_error() -> None:
    classes = _exception_classes()
    assert len(classes) >= 20
    public = [c for c in classes if not c.__name__.startswith("_")]
    assert [c.__qualname__ for c in public if not issubclass(c, PlaygroundError)] == []


def test_no_exception_name_is_defined_twice() -> None:
    names = [c.__name__ for c in _exception_classes()]
    assert sorted({n for n in names if names.count(n) > 1}) == []


@pytest.mark.integration  # runs the console script
def test_the_cli_prints_a_playground_error_as_one_line_with_its_exit_status(tmp_path: Path) -> None:
    broken = tmp_path / "instance"
    broken.mkdir()
    (broken / "dagster.yaml").write_text("storage: [unterminated\n")
    out = subprocess.run(
        [PLAYGROUND, "history", "--dagster-home", str(broken)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"playground history: cannot read the Dagster instance at {broken}")
    assert "Traceback" not in out.stderr

    missing = subprocess.run(
        [PLAYGROUND, "history", "--dagster-home", str(tmp_path / "none")], cwd=tmp_path, capture_output=True, text=True
    )
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [
        f"playground history: no Dagster instance at {tmp_path / 'none'}: run releases first (`playground up`), "
        "or set DAGSTER_HOME / --dagster-home"
    ]


@pytest.mark.integration  # runs the console script
@pytest.mark.parametrize(
    "argv",
    [
        ["release", "prod/backend"],
        ["canaries"],
        ["status"],
        ["sync"],
        ["pause", "prod/backend"],
        ["watch", "prod/backend", "--once"],
    ],
    ids=lambda a: a[0],
)
def test_bad_backend_options_are_one_line_and_exit_2_in_every_command(tmp_path: Path, argv: list[str]) -> None:
    """Every command that builds the runtime from its options reports contradictory ones the same way (one
    place, cli.main): one line naming the command and the fix, exit status 2, nothing started."""
    out = subprocess.run(
        [PLAYGROUND, *argv, "--backend", "local", "--context", "prod-cluster"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        f"playground {argv[0]}: --context only applies to the kubernetes backend, but the backend is local "
        "(--backend or PLAYGROUND_BACKEND); drop it or pass --backend kubernetes"
    ]
    assert not (tmp_path / ".playground").exists()
