"""The local OCI registry (Debian ``docker-registry``) and a tiny client for image tags.

``playground up`` runs ``docker-registry serve $HOME/registry/config.yml`` (filesystem storage under
``$HOME/registry/data``, listening on ``127.0.0.1:<port>``). The image sensor lists tags from it; tests and
demos create tags with :func:`push_tag`, which uploads an OCI image config blob and an OCI image manifest
with no layers (enough for a tag to exist; nothing ever pulls the image: the node agent runs programs from
the image catalog).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from urllib.parse import urljoin

import httpx
import yaml

from playground.errors import PlaygroundError

__all__ = ["registry_binary", "write_config", "registry_args", "push_tag", "list_tags", "LocalRegistryError"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


class LocalRegistryError(PlaygroundError, RuntimeError):
    """The local docker-registry cannot be started or reached (playground.registry.RegistryError is the client's)."""


def registry_binary() -> str:
    """Path of ``docker-registry``; raises with the install command when it is missing."""
    found = shutil.which("docker-registry")
    if not found:
        raise LocalRegistryError(
            "docker-registry not found: install the Debian package (apt-get install docker-registry)"
        )
    return found


def write_config(directory: Path, port: int) -> Path:
    """Write ``config.yml`` (filesystem storage in ``directory/data``, http on 127.0.0.1:port); return its path."""
    directory = Path(directory)
    (directory / "data").mkdir(parents=True, exist_ok=True)
    config = {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str((directory / "data").resolve())},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {"addr": f"127.0.0.1:{int(port)}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    path = directory / "config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def registry_args(config_path: Path) -> list[str]:
    return [registry_binary(), "serve", str(config_path)]


def _client() -> httpx.Client:
    return httpx.Client(timeout=10, trust_env=False)  # local registry: never through a proxy


def push_tag(registry_url: str, repo: str, tag: str, *, labels: dict[str, str] | None = None) -> str:
    """Create (or move) the tag ``repo:tag`` with a layer-less OCI image; return the manifest digest.

    ``registry_url`` is like ``http://127.0.0.1:5000``; ``repo`` like ``stefanprodan/podinfo``.
    """
    base = registry_url.rstrip("/") + "/"
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": dict(labels or {}, **{"org.opencontainers.image.version": tag})},
            "rootfs": {"type": "layers", "diff_ids": []},
        },
        sort_keys=True,
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    with _client() as c:
        r = c.post(urljoin(base, f"v2/{repo}/blobs/uploads/"))
        if r.status_code != 202 or "location" not in r.headers:
            raise LocalRegistryError(
                f"{registry_url}: starting a blob upload for {repo} failed: HTTP {r.status_code} {r.text[:200]}"
            )
        location = urljoin(base, r.headers["location"])
        sep = "&" if "?" in location else "?"
        r = c.put(
            f"{location}{sep}digest={config_digest}",
            content=config,
            headers={"Content-Type": "application/octet-stream"},
        )
        if r.status_code != 201:
            raise LocalRegistryError(
                f"{registry_url}: uploading the config blob of {repo} failed: HTTP {r.status_code} {r.text[:200]}"
            )
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [],
            },
            sort_keys=True,
        ).encode()
        r = c.put(urljoin(base, f"v2/{repo}/manifests/{tag}"), content=manifest, headers={"Content-Type": OCI_MANIFEST})
        if r.status_code != 201:
            raise LocalRegistryError(
                f"{registry_url}: pushing the manifest {repo}:{tag} failed: HTTP {r.status_code} {r.text[:200]}"
            )
        return r.headers.get("docker-content-digest") or "sha256:" + hashlib.sha256(manifest).hexdigest()


def list_tags(registry_url: str, repo: str) -> list[str]:
    """Tags of ``repo`` (``[]`` when the repository does not exist), following pagination."""
    base = registry_url.rstrip("/") + "/"
    url: str | None = urljoin(base, f"v2/{repo}/tags/list")
    tags: list[str] = []
    with _client() as c:
        while url:
            r = c.get(url)
            if r.status_code == 404:
                return []
            if r.status_code != 200:
                raise LocalRegistryError(
                    f"{registry_url}: listing the tags of {repo} failed: HTTP {r.status_code} {r.text[:200]}"
                )
            tags.extend(r.json().get("tags") or [])
            link = r.headers.get("link", "")
            url = urljoin(base, link.split(";")[0].strip("<> ")) if 'rel="next"' in link else None
    return tags
