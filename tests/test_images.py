"""Image automation: semver ranges (Masterminds semantics), setter markers, the OCI tags client (against the
real Debian docker-registry and a small paginating/token-protected fake), and scan_and_update commits."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import git
import pytest

from playground.gitops import GitSource
from playground.images import (
    ImagePolicy,
    RegistryClient,
    RegistryError,
    SemverRange,
    Version,
    apply_policy_update,
    commit_message,
    find_markers,
    latest,
    load_policies,
    parse_image,
    scan_and_update,
)
from playground.local import gitorigin
from playground.local.registry import push_tag
from tests.support.http_server import QuietHTTPServer
from tests.support.procs import free_port
from tests.support.registry import docker_registry

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
PODINFO = "ghcr.io/stefanprodan/podinfo"

# ----------------------------------------------------------------------------------------------- semver

# (range, version, matches): cases from Masterminds/semver v3's constraint tests plus Flux-style ranges.
SEMVER_CASES = [
    # plain comparisons
    (">=6.0.0 <7.0.0", "6.7.0", True),
    (">=6.0.0 <7.0.0", "7.0.0", False),
    (">=6.0.0 <7.0.0", "5.9.9", False),
    (">=6.0.0, <7.0.0", "6.0.0", True),
    ("=2.0.0", "2.0.0", True),
    ("=2.0.0", "1.2.3", False),
    ("2.0.0", "2.0.1", False),
    ("!=4.1.0", "4.1.1", True),
    ("!=4.1.0", "4.1.0", False),
    (">1.1", "1.1.0", False),
    (">1.1", "4.1.0", True),
    (">11.1", "11.1.1", False),
    (">11.1", "11.2.1", True),
    ("<1.1", "1.1.0", False),
    ("<1.1", "0.1.0", True),
    ("<=1.1", "1.1.1", True),
    ("<=11", "11.2.3", True),
    ("<=11", "12.2.3", False),
    ("=> 1.2", "1.2.0", True),
    (">= 1.2.3, < 2.0", "1.9.9", True),
    ("v6.1.0", "6.1.0", True),
    (">=v6.0.0", "v6.2.0", True),
    # x-ranges and wildcards
    ("6.x", "6.9.0", True),
    ("6.x", "7.0.0", False),
    ("6.1.*", "6.1.9", True),
    ("6.1.*", "6.2.0", False),
    ("2", "2.1.1", True),
    ("2.1", "2.2.1", False),
    ("*", "4.5.6", True),
    ("", "4.5.6", True),
    ("!=4.x", "4.1.0", False),
    ("!=4.x", "5.1.0", True),
    ("<1.x", "0.1.1", True),
    ("<1.x", "1.1.1", False),
    ("<=2.x", "3.0.0", False),
    ("<=1.x", "1.1.0", True),
    (">= 1.2.x", "1.2.0", True),
    # OR
    (">=1.1 <2 !=1.2.3 || > 3", "4.1.2", True),
    (">=1.1 <2 !=1.2.3 || > 3", "3.1.2", False),
    (">=1.1 <2 !=1.2.3 || > 3", "1.2.3", False),
    (">=1.1, <2, !=1.2.3 || >= 3", "3.0.0", True),
    ("5.x || 6.1.x", "6.1.4", True),
    ("5.x || 6.1.x", "6.2.0", False),
    # hyphen ranges
    ("1.2 - 1.4.5", "1.4.5", True),
    ("1.2 - 1.4.5", "1.4.6", False),
    ("1.2 - 1.4.5", "1.1.9", False),
    ("1.5.0 - 4.5", "3.7.0", True),
    ("1.1 - 2", "1.1.1", True),
    # tilde
    ("~1.2.3", "1.2.5", True),
    ("~1.2.3", "1.2.2", False),
    ("~1.2.3", "1.3.0", False),
    ("~1.2", "1.2.4", True),
    ("~1", "1.9.0", True),
    ("~1", "2.0.0", False),
    ("~> 6.1", "6.1.7", True),
    ("~1.x", "1.4.0", True),
    ("~*", "2.1.1", True),
    # caret
    ("^1.2.3", "1.8.9", True),
    ("^1.2.3", "2.0.0", False),
    ("^1.2.3", "1.2.1", False),
    ("^1.x", "1.1.1", True),
    ("^0.2.3", "0.2.5", True),
    ("^0.2.3", "0.3.0", False),
    ("^0.0.3", "0.0.3", True),
    ("^0.0.3", "0.0.4", False),
    ("^0.0", "0.0.9", True),
    ("^0.0", "0.1.0", False),
    ("^0", "0.9.0", True),
    ("^0", "1.0.0", False),
    # prereleases: only when the constraint names one
    (">=6.0.0 <7.0.0", "6.9.0-rc.1", False),
    ("*", "1.2.3-alpha.1", False),
    ("6.x", "6.1.0-beta", False),
    ("^1.2.0", "1.2.1-alpha.1", False),
    ("~1.1", "1.1.1-alpha", False),
    ("*-0", "1.2.3-alpha.1", True),
    (">=0.0.0-0", "3.4.5-beta.1", True),
    (">=6.9.0-0", "6.9.0-rc.1", True),
    (">=6.9.0-rc.2", "6.9.0-rc.1", False),
    (">=6.9.0-rc.2", "6.9.0-rc.10", True),  # numeric identifiers compare as numbers
    (">=6.9.0-rc.2", "6.9.0", True),
    ("^1.2.0-alpha.0", "1.2.1-alpha.1", True),
    ("~1.2.3-beta.2", "1.2.3-beta.4", True),
    ("~1.2.3-beta.2", "1.3.4-beta.2", False),
    ("!=4.1", "5.1.0-alpha.1", False),
    # not a version: never matches
    ("*", "latest", False),
    (">=1.0.0", "sha-1234abc", False),
]


@pytest.mark.parametrize("expr,version,expected", SEMVER_CASES)
def test_semver_range_table(expr, version, expected):
    assert SemverRange(expr).matches(version) is expected, f"{expr!r} vs {version}"


def test_semver_table_is_large_enough():
    assert len(SEMVER_CASES) >= 30


@pytest.mark.parametrize("expr", [">= bar", "BAR >= 1.2.3", "1.2.3.4", "12.3.34~ 1.2.3", ">=1.0.0 <"])
def test_invalid_ranges_raise(expr):
    with pytest.raises(ValueError, match="invalid semver range"):
        SemverRange(expr)


def test_version_ordering():
    order = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.2",
        "v1.10.0",
        "2.0.0",
    ]
    parsed = [Version.parse(v) for v in order]
    assert parsed == sorted(reversed(parsed))
    assert Version.parse("1.2") == Version.parse("1.2.0+build.5")
    assert Version.try_parse("latest") is None and Version.try_parse("1.0.0-01") is None


def test_latest_picks_highest_matching_tag():
    tags = ["latest", "6.6.3", "6.7.0", "6.8.0", "6.9.0-rc.1", "7.0.0", "v6.7.1", "main-abc123", "6.10.0"]
    assert latest(tags, ">=6.0.0 <7.0.0") == "6.10.0"
    assert latest(tags, "~6.7") == "v6.7.1"
    assert latest(tags, ">=6.9.0-0 <7.0.0") == "6.10.0"  # a prerelease range still prefers higher releases
    assert latest(["6.9.0-rc.1", "6.8.0"], ">=6.9.0-0") == "6.9.0-rc.1"
    assert latest(tags, ">=8") is None
    assert latest([], "*") is None
    assert latest(["6.7", "6.7.0"], "6.x") == "6.7"  # equal versions: the first listed wins


# ----------------------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    "image,base,repo",
    [
        ("ghcr.io/stefanprodan/podinfo", "https://ghcr.io", "stefanprodan/podinfo"),
        ("stefanprodan/podinfo", "https://registry-1.docker.io", "stefanprodan/podinfo"),
        ("nginx", "https://registry-1.docker.io", "library/nginx"),
        ("docker.io/nginx", "https://registry-1.docker.io", "library/nginx"),
        ("127.0.0.1:5000/stefanprodan/podinfo", "http://127.0.0.1:5000", "stefanprodan/podinfo"),
        ("localhost:5000/podinfo", "http://localhost:5000", "podinfo"),
        ("registry.example.com:8443/team/app:1.0", "https://registry.example.com:8443", "team/app"),
    ],
)
def test_registry_endpoint(image, base, repo):
    assert RegistryClient().endpoint(image) == (base, repo)


def test_registry_endpoint_with_base_url():
    c = RegistryClient("http://127.0.0.1:5000/")
    assert c.endpoint("ghcr.io/stefanprodan/podinfo") == ("http://127.0.0.1:5000", "stefanprodan/podinfo")
    assert c.endpoint("podinfo") == ("http://127.0.0.1:5000", "podinfo")


def test_parse_image():
    r = parse_image("ghcr.io/stefanprodan/podinfo:6.7.0@sha256:abc")
    assert (r.registry, r.repository, r.tag, r.digest) == ("ghcr.io", "stefanprodan/podinfo", "6.7.0", "sha256:abc")
    assert parse_image("127.0.0.1:5000/podinfo").tag is None
    assert parse_image("nginx:1.25").name == "nginx"


# -------------------------------------------------------------------------------------------- markers

DEPLOYMENT = (
    "spec:\r\n"
    "  template:\r\n"
    "    spec:\r\n"
    "      containers:\r\n"
    "        - name: backend\r\n"
    '          image: ghcr.io/stefanprodan/podinfo:6.7.0 # {"$imagepolicy": "prod:backend"}\r\n'
    "        - name: sidecar\r\n"
    '          image: "ghcr.io/stefanprodan/podinfo:6.7.0"   # {"$imagepolicy": "prod:frontend"} keep me\r\n'
    "        - name: helm-style\r\n"
    '          repository: ghcr.io/stefanprodan/podinfo # {"$imagepolicy": "prod:backend:name"}\r\n'
    '          tag: \'6.7.0\' # {"$imagepolicy": "prod:backend:tag"}\r\n'
    "      initContainers:\r\n"
    '        - image: ghcr.io/stefanprodan/podinfo:6.7.0 # {"$imagepolicy": "prod:backend"}\r\n'
    '# image: ghcr.io/stefanprodan/podinfo:6.7.0 # {"$imagepolicy": "prod:backend"} (in a comment)\r\n'
)


def test_find_markers():
    found = [(m.line, m.policy, m.field, m.value, m.tag) for m in find_markers(DEPLOYMENT)]
    assert found == [
        (6, "prod:backend", "image", "ghcr.io/stefanprodan/podinfo:6.7.0", "6.7.0"),
        (8, "prod:frontend", "image", "ghcr.io/stefanprodan/podinfo:6.7.0", "6.7.0"),
        (10, "prod:backend", "name", "ghcr.io/stefanprodan/podinfo", None),
        (11, "prod:backend", "tag", "6.7.0", "6.7.0"),
        (13, "prod:backend", "image", "ghcr.io/stefanprodan/podinfo:6.7.0", "6.7.0"),
    ]


def test_apply_policy_update_rewrites_only_marked_values():
    new, changed = apply_policy_update(DEPLOYMENT, "prod:backend", "6.8.0")
    assert changed
    expected = DEPLOYMENT.replace(
        'podinfo:6.7.0 # {"$imagepolicy": "prod:backend"}\r\n',
        'podinfo:6.8.0 # {"$imagepolicy": "prod:backend"}\r\n',
        2,
    ).replace("tag: '6.7.0'", "tag: '6.8.0'")
    # the commented-out line starts with '#': not a value, untouched
    assert new == expected
    assert '"ghcr.io/stefanprodan/podinfo:6.7.0"   # {"$imagepolicy": "prod:frontend"} keep me' in new
    assert new.count("\r\n") == DEPLOYMENT.count("\r\n")
    # idempotent
    again, changed_again = apply_policy_update(new, "prod:backend", "6.8.0")
    assert again == new and not changed_again


def test_apply_policy_update_name_and_image_override_and_if_newer():
    new, changed = apply_policy_update(DEPLOYMENT, "prod:frontend", "6.9.0", image="docker.io/stefanprodan/podinfo")
    assert changed and '"docker.io/stefanprodan/podinfo:6.9.0"   # {' in new
    # if_newer vetoes: nothing changes
    same, changed = apply_policy_update(DEPLOYMENT, "prod:backend", "6.6.0", if_newer=lambda cur: False)
    assert same == DEPLOYMENT and not changed
    unknown, changed = apply_policy_update(DEPLOYMENT, "prod:other", "9.9.9")
    assert unknown == DEPLOYMENT and not changed


def test_load_policies_from_project_manifests():
    policies = {p.key: p for p in load_policies(MANIFESTS)}
    assert set(policies) >= {"prod:backend", "prod:frontend"}
    p = policies["prod:backend"]
    assert (p.image, p.kind, p.range) == (PODINFO, "semver", ">=6.0.0 <7.0.0")
    assert p.select(["6.7.0", "6.8.0", "7.0.0"]) == "6.8.0"
    assert p.is_newer("6.8.0", "6.7.0") and not p.is_newer("6.6.0", "6.7.0") and not p.is_newer("6.7.0", "6.7.0")


def test_policy_errors_name_file_and_fix(tmp_path):
    from playground.images import PolicyError

    (tmp_path / "p.yaml").write_text(
        "apiVersion: image.toolkit.fluxcd.io/v1beta2\nkind: ImagePolicy\nmetadata: {name: a, namespace: prod}\n"
        "spec: {imageRepositoryRef: {name: nope}, policy: {semver: {range: '>=1'}}}\n"
    )
    with pytest.raises(PolicyError, match=r"p.yaml:1: ImagePolicy prod/a: ImageRepository prod/nope not found"):
        load_policies(tmp_path)
    errors = []
    assert load_policies(tmp_path, errors=errors) == [] and errors[0][0] == "prod:a"


def test_filter_tags_and_other_policies():
    p = ImagePolicy(
        "ns", "x", "img", kind="numerical", filter_pattern=r"^main-[a-f0-9]+-(?<ts>\d+)$", filter_extract="$ts"
    )
    assert p.select(["main-abc-100", "main-def-99", "main-fff-1000", "v1"]) == "main-fff-1000"
    a = ImagePolicy("ns", "x", "img", kind="alphabetical", order="desc")
    assert a.select(["b", "a", "c"]) == "a"


def test_commit_message_flux_style():
    from playground.images import ImageUpdate

    one = commit_message([ImageUpdate("prod:backend", PODINFO, "6.7.0", "6.8.0", ["prod/backend/deployment.yaml"])])
    assert one.splitlines()[0] == "Update image ghcr.io/stefanprodan/podinfo to 6.8.0 (prod:backend)"
    assert "6.7.0 -> 6.8.0" in one and "prod/backend/deployment.yaml" in one


# ---------------------------------------------------------------------------- fake registry (auth, pages)


class _FakeRegistry(BaseHTTPRequestHandler):
    """Serves /v2/team/app/tags/list 2 tags per page (Link: relative next URL) behind an anonymous Bearer
    token; /token issues the token for the scope the challenge announced."""

    TAGS = ["1.0.0", "1.1.0", "1.2.0", "2.0.0", "latest"]
    token_requests: list[dict] = []

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        host = self.headers["Host"]
        if url.path == "/token":
            type(self).token_requests.append(q)
            return self._send(200, {"token": "tok-" + q.get("scope", "")})
        if url.path == "/v2/team/app/tags/list":
            if self.headers.get("Authorization") != "Bearer tok-repository:team/app:pull":
                return self._send(
                    401,
                    {"errors": [{"code": "UNAUTHORIZED"}]},
                    {
                        "WWW-Authenticate": f'Bearer realm="http://{host}/token",service="fake",'
                        'scope="repository:team/app:pull"'
                    },
                )
            n = int(q.get("n", 2))
            start = self.TAGS.index(q["last"]) + 1 if "last" in q else 0
            page = self.TAGS[start : start + n]
            headers = {}
            if start + n < len(self.TAGS):
                headers["Link"] = f'</v2/team/app/tags/list?n={n}&last={page[-1]}>; rel="next"'
            return self._send(200, {"name": "team/app", "tags": page}, headers)
        return self._send(404, {"errors": [{"code": "NAME_UNKNOWN"}]})


@pytest.fixture(scope="module")
def fake_registry():
    server = QuietHTTPServer(("127.0.0.1", 0), _FakeRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_pagination_and_bearer_token_flow(fake_registry):
    _FakeRegistry.token_requests.clear()
    client = RegistryClient()
    tags = client.list_tags(f"{fake_registry}/team/app")
    assert tags == _FakeRegistry.TAGS
    # one token for all pages, asked with the challenge's service and scope
    assert _FakeRegistry.token_requests == [{"service": "fake", "scope": "repository:team/app:pull"}]
    assert RegistryClient(page_size=3).list_tags(f"{fake_registry}/team/app") == _FakeRegistry.TAGS


def test_registry_errors_name_registry_and_repository(fake_registry):
    with pytest.raises(RegistryError, match=rf"http://{fake_registry}.*team/missing.*not found"):
        RegistryClient().list_tags(f"{fake_registry}/team/missing")
    port = free_port()
    with pytest.raises(RegistryError, match=rf"127.0.0.1:{port}.*team/app.*cannot reach"):
        RegistryClient().list_tags(f"127.0.0.1:{port}/team/app")


# ------------------------------------------------------------------------------- real docker-registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """The Debian docker-registry on a free port; yields its base URL (http://127.0.0.1:PORT)."""
    with docker_registry(tmp_path_factory.mktemp("registry")) as url:
        yield url


@pytest.mark.integration
def test_real_registry_tags_list(registry):
    for tag in ["6.7.0", "6.8.0", "latest", "6.9.0-rc.1"]:
        push_tag(registry, "team/tags", tag)
    host = registry.removeprefix("http://")
    assert sorted(RegistryClient().list_tags(f"{host}/team/tags")) == ["6.7.0", "6.8.0", "6.9.0-rc.1", "latest"]
    # n= is sent; docker-registry 2.8 answers all tags in one page, newer ones paginate with Link: same result
    assert sorted(RegistryClient(registry, page_size=2).list_tags("team/tags")) == [
        "6.7.0",
        "6.8.0",
        "6.9.0-rc.1",
        "latest",
    ]
    with pytest.raises(RegistryError, match="team/nothing"):
        RegistryClient(registry).list_tags("team/nothing")


# ------------------------------------------------------------------------------------ scan_and_update


@pytest.fixture
def gitops(tmp_path):
    """A bare origin seeded with the project's manifests and a GitSource checkout of it."""
    origin = tmp_path / "origin.git"
    gitorigin.ensure_origin(origin, seed=MANIFESTS)
    src = GitSource(str(origin), tmp_path / "checkout")
    src.fetch()
    return origin, src


def _origin_log(origin: Path) -> list[str]:
    return [c.hexsha for c in git.Repo(origin).iter_commits("main")]


@pytest.mark.integration
def test_scan_commits_new_matching_tag(registry, gitops):
    origin, src = gitops
    host = registry.removeprefix("http://")
    repo = "scan1/stefanprodan/podinfo"
    for tag in ["6.6.0", "6.7.0", "6.8.0", "6.9.0-rc.1", "7.0.0", "latest"]:
        push_tag(registry, repo, tag)
    before = _origin_log(origin)
    updates = scan_and_update(src, RegistryClient(), {PODINFO: f"{host}/{repo}"})
    assert {(u.policy, u.old_tag, u.new_tag) for u in updates} == {
        ("prod:backend", "6.7.0", "6.8.0"),
        ("prod:frontend", "6.7.0", "6.8.0"),
    }
    after = _origin_log(origin)
    assert len(after) == len(before) + 1 and after[1:] == before  # exactly ONE new commit on the origin
    commit = git.Repo(origin).commit("main")
    assert commit.hexsha == updates[0].commit
    assert commit.message.startswith("Update images: ghcr.io/stefanprodan/podinfo to 6.8.0 (prod:backend)")
    assert "6.7.0 -> 6.8.0" in commit.message and "prod/frontend/deployment.yaml" in commit.message
    assert commit.author.name == "gitops-playground"
    changed = sorted(commit.stats.files)
    assert changed == ["prod/backend/deployment.yaml", "prod/frontend/deployment.yaml"]
    text = commit.tree["prod/backend/deployment.yaml"].data_stream.read().decode()
    # the public name is kept, with the new tag
    assert 'image: ghcr.io/stefanprodan/podinfo:6.8.0 # {"$imagepolicy": "prod:backend"}' in text
    old = (MANIFESTS / "prod/backend/deployment.yaml").read_text()
    assert text == old.replace("podinfo:6.7.0", "podinfo:6.8.0")

    # a second scan with nothing new: no commit
    assert scan_and_update(src, RegistryClient(), {PODINFO: f"{host}/{repo}"}) == []
    assert _origin_log(origin) == after


@pytest.mark.integration
def test_scan_ignores_older_and_non_matching_tags(registry, gitops):
    origin, src = gitops
    host = registry.removeprefix("http://")
    repo = "scan2/stefanprodan/podinfo"
    for tag in ["6.6.0", "6.7.0", "7.0.0", "7.1.0", "6.8.0-rc.1", "latest"]:  # nothing newer inside >=6 <7
        push_tag(registry, repo, tag)
    before = _origin_log(origin)
    assert scan_and_update(src, RegistryClient(), {PODINFO: f"{host}/{repo}"}) == []
    assert _origin_log(origin) == before


@pytest.mark.integration
def test_scan_single_policy_message_and_registry_error_handling(registry, gitops, tmp_path):
    origin, src = gitops
    host = registry.removeprefix("http://")
    # only the frontend's policy can move: the backend's range is narrowed in a person's commit first
    work = tmp_path / "person"
    gitorigin.clone(origin, work)
    pol = work / "prod/backend/image-policy.yaml"
    pol.write_text(pol.read_text().replace('">=6.0.0 <7.0.0"', '"~6.7"'))
    gitorigin.commit_and_push(work, "Pin backend to 6.7.x")
    repo = "scan3/stefanprodan/podinfo"
    for tag in ["6.7.0", "6.8.1"]:
        push_tag(registry, repo, tag)
    updates = scan_and_update(src, RegistryClient(), {PODINFO: f"{host}/{repo}"})
    assert [(u.policy, u.new_tag) for u in updates] == [("prod:frontend", "6.8.1")]
    msg = git.Repo(origin).commit("main").message
    assert msg.splitlines()[0] == "Update image ghcr.io/stefanprodan/podinfo to 6.8.1 (prod:frontend)"

    # an unreachable registry raises (no commit), or is reported per policy with on_error
    before = _origin_log(origin)
    dead = f"127.0.0.1:{free_port()}/x/podinfo"
    with pytest.raises(RegistryError):
        scan_and_update(src, RegistryClient(), {PODINFO: dead})
    seen = []
    assert scan_and_update(src, RegistryClient(), {PODINFO: dead}, on_error=lambda key, e: seen.append(key)) == []
    assert sorted(seen) == ["prod:backend", "prod:frontend"]
    assert _origin_log(origin) == before
