"""The import boundaries of pyproject's [tool.importlinter] contracts hold: the engine (playground/) never imports
Dagster or the Dagster layer, the backends never import each other, the judge never imports the analysis (no
cycle), the pure modules do no I/O."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

# every test here starts a process (Envoy, git, the workload programs, lint-imports...)
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint_imports)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert f"{len(contracts)} kept, 0 broken" in out.stdout, out.stdout


def test_the_engine_is_importable_without_the_dagster_layer():
    # Every engine module imports in a process where dagster and the Dagster layer cannot be imported.
    code = (
        "import sys, importlib, pkgutil\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('dagster', 'assets', 'jobs', 'sensors', 'definitions'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import playground\n"
        "for m in pkgutil.walk_packages(playground.__path__, 'playground.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
