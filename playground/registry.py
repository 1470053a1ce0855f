"""Container image references and the OCI distribution API client that lists a repository's tags.

* :func:`parse_image` splits ``[host[:port]/]path[:tag][@digest]`` with Docker Hub's rules.
* :class:`RegistryClient` lists tags over the OCI distribution API (``GET /v2/<name>/tags/list``, ``Link``
  pagination, anonymous or basic-auth Bearer token flow as used by ghcr.io and Docker Hub).

Used by the image automation (``playground.images``); the local playground's registry server is
``playground.local.registry``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from playground.errors import PlaygroundError

__all__ = ["RegistryError", "ImageRef", "parse_image", "RegistryClient", "DOCKER_HUB"]

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


# =========================================================================================== references


class RegistryError(PlaygroundError, RuntimeError):
    """Listing tags failed; the message names the registry and the repository."""


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference: ``registry`` (host[:port], ``docker.io`` by default), ``repository`` (path on
    the registry, with Docker Hub's ``library/`` rule applied), optional ``tag`` and ``digest``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The image name without tag or digest, as users write it (``docker.io/library/`` left out)."""
        if self.registry == DOCKER_HUB:
            repo = self.repository.removeprefix("library/") if self.repository.count("/") == 1 else self.repository
            return repo
        return f"{self.registry}/{self.repository}"


def parse_image(ref: str) -> ImageRef:
    """Parse ``[host[:port]/]path[:tag][@digest]``. The first component is a registry host when it contains a
    ``.`` or ``:`` or is ``localhost``; otherwise the image is on Docker Hub, where a single-segment name gets
    ``library/``."""
    s = ref.strip()
    if not s:
        raise ValueError("empty image reference")
    digest = None
    if "@" in s:
        s, digest = s.split("@", 1)
    tag = None
    slash, colon = s.rfind("/"), s.rfind(":")
    if colon > slash:
        s, tag = s[:colon], s[colon + 1 :]
    first, _, rest = s.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repo = first, rest
    else:
        registry, repo = DOCKER_HUB, s
    if registry in ("index.docker.io", DOCKER_HUB_API):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repo:
        repo = f"library/{repo}"
    if not repo or repo != repo.lower() or any(c in repo for c in " \t\n"):
        raise ValueError(
            f"invalid image reference {ref!r}: the repository must be lower case, like ghcr.io/stefanprodan/podinfo"
        )
    return ImageRef(registry, repo, tag or None, digest)


def _is_local(host: str) -> bool:
    return host.rsplit(":", 1)[0] in _LOCAL_HOSTS or host in _LOCAL_HOSTS


# ============================================================================================= registry


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^\s,]+)')


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="..."`` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for m in _CHALLENGE_PARAM.finditer(rest):
        if m.group(1):
            params[m.group(1).lower()] = m.group(2)
        else:
            params[m.group(3).lower()] = m.group(4)
    return scheme.lower(), params


def _next_link(header: str | None, current: str) -> str | None:
    """The ``rel="next"`` target of a Link header, resolved against the current URL."""
    if not header:
        return None
    for part in header.split(","):
        m = re.match(r"\s*<([^>]*)>\s*;(.*)", part)
        if m and re.search(r'rel\s*=\s*"?next"?', m.group(2)):
            return urljoin(current, m.group(1))
    return None


class RegistryClient:
    """Read-only client of an OCI distribution registry (tags only).

    ``base_url`` None: the registry comes from each image name (``ghcr.io/...`` -> ``https://ghcr.io``, Docker
    Hub names -> ``https://registry-1.docker.io``, ``127.0.0.1:5000/...``/``localhost`` -> plain http).
    ``base_url`` given (``http://127.0.0.1:5000``): every image is looked up on that registry by its repository
    path (a registry host in the image name is ignored; no ``library/`` rule).

    ``username``/``password`` are used for HTTP basic auth and for the token request; without them the
    anonymous token flow is used (public images on ghcr.io and Docker Hub). ``page_size`` sends ``n=`` to ask
    for pages of that many tags (the registry may ignore it; ``Link`` headers are followed either way).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 15.0,
        page_size: int | None = None,
        max_pages: int = 1000,
    ):
        self.base_url = base_url.rstrip("/") if base_url else None
        self.auth = (username, password or "") if username else None
        self.timeout = timeout
        self.page_size = page_size
        self.max_pages = max_pages
        self._tokens: dict[tuple[str, str, str], str] = {}

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url!r})"

    def endpoint(self, image_repository: str) -> tuple[str, str]:
        """(registry base URL, repository path) where the tags of ``image_repository`` are listed."""
        try:
            ref = parse_image(image_repository)
        except ValueError as e:
            raise RegistryError(str(e)) from e
        if self.base_url:
            repo = ref.repository
            if ref.registry == DOCKER_HUB and image_repository.count("/") == 0:
                repo = repo.removeprefix("library/")
            return self.base_url, repo
        host = DOCKER_HUB_API if ref.registry == DOCKER_HUB else ref.registry
        scheme = "http" if _is_local(host) else "https"
        return f"{scheme}://{host}", ref.repository

    def list_tags(self, image_repository: str) -> list[str]:
        """Every tag of ``image_repository`` (in registry order, usually lexical), following pagination.

        Raises :class:`RegistryError` naming the registry and repository on any failure (unreachable registry,
        authentication refused, repository not found, malformed answer).
        """
        base, repo = self.endpoint(image_repository)
        where = f"registry {base} repository {repo}"
        url = f"{base}/v2/{repo}/tags/list"
        if self.page_size:
            url += f"?n={int(self.page_size)}"
        local = _is_local(urlsplit(base).netloc)
        tags: list[str] = []
        seen: set[str] = set()
        with httpx.Client(timeout=self.timeout, trust_env=not local, follow_redirects=True) as client:
            for _ in range(self.max_pages):
                if url in seen:
                    break
                seen.add(url)
                r = self._get(client, url, repo, where)
                try:
                    body = r.json()
                except (json.JSONDecodeError, ValueError) as e:
                    raise RegistryError(f"{where}: the tags list is not JSON: {r.text[:200]!r}") from e
                page = body.get("tags") if isinstance(body, dict) else None
                if page is not None and not isinstance(page, list):
                    raise RegistryError(f"{where}: unexpected tags list {body!r:.200}")
                tags.extend(str(t) for t in page or [])
                next_url = _next_link(r.headers.get("link"), url)
                if next_url is None:
                    return tags
                url = next_url
            raise RegistryError(f"{where}: more than {self.max_pages} pages of tags; giving up")
        return tags  # pragma: no cover - loop exits by return or raise

    def _get(self, client: httpx.Client, url: str, repo: str, where: str) -> httpx.Response:
        headers = {"Accept": "application/json"}
        token = self._cached_token(url)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            r = client.get(url, headers=headers, auth=self.auth if not token else None)
            if r.status_code == 401:
                r = self._authenticate_and_retry(client, url, r, repo, where)
        except httpx.HTTPError as e:
            raise RegistryError(
                f"{where}: cannot reach the registry ({type(e).__name__}: {e}); check the "
                "address and that the registry is running"
            ) from e
        if r.status_code == 404:
            raise RegistryError(
                f"{where}: repository not found (HTTP 404); check the image name in the "
                "ImageRepository (spec.image) and any registry override"
            )
        if r.status_code in (401, 403):
            raise RegistryError(
                f"{where}: access denied (HTTP {r.status_code}); the image may be private: give registry credentials"
            )
        if r.status_code != 200:
            raise RegistryError(f"{where}: listing tags failed with HTTP {r.status_code}: {r.text[:200]}")
        return r

    def _cached_token(self, url: str) -> str | None:
        host = urlsplit(url).netloc
        for (h, _, _), tok in self._tokens.items():
            if h == host:
                return tok
        return None

    def _authenticate_and_retry(
        self, client: httpx.Client, url: str, first: httpx.Response, repo: str, where: str
    ) -> httpx.Response:
        scheme, params = _parse_challenge(first.headers.get("www-authenticate", ""))
        if scheme == "basic":
            if not self.auth:
                return first
            return client.get(url, auth=self.auth)
        if scheme != "bearer" or "realm" not in params:
            return first
        service = params.get("service", "")
        scope = params.get("scope") or f"repository:{repo}:pull"
        query = {k: v for k, v in (("service", service), ("scope", scope)) if v}
        tr = client.get(params["realm"], params=query, auth=self.auth)
        if tr.status_code != 200:
            raise RegistryError(
                f"{where}: the token service {params['realm']} refused a pull token "
                f"(HTTP {tr.status_code}); the image may be private: give registry credentials"
            )
        try:
            data = tr.json()
        except ValueError as e:
            raise RegistryError(f"{where}: the token service {params['realm']} answered no JSON") from e
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RegistryError(f"{where}: the token service {params['realm']} answered no token")
        self._tokens[(urlsplit(url).netloc, service, scope)] = token
        return client.get(url, headers={"Accept": "application/json", "Authorization": f"Bearer {token}"})
