"""The asset graph follows the GitOps repository: which canary targets the code location declares, and how a sync
makes the running Dagster show a new set of targets.

State: the targets of the GitOps revision that ``gitops_sync`` applied. The sync records them on its
``gitops/commit`` materialization (metadata ``targets``, with the ``sha``), in the Dagster instance, so every
process that has the instance reads the same answer on either backend (the local playground's SQLite
instance; Postgres on a cluster). Before any sync has recorded them, the targets of the GitOps origin's HEAD
are read from a checkout of its own (the local playground's bare repository, or ``PLAYGROUND_GITOPS_URL`` on
a real cluster).

Loading: ``definitions.py`` builds the definitions with a state-backed component (``dg.StateBackedComponent``,
state kept as a code-server snapshot): the state above is fetched when a code server loads the location, and
carried to run workers as reconstruction metadata, so a run is executed against exactly the graph it was
launched from (never a graph changed in between).

Change: after recording new targets, the sync asks the webserver to reload the code location through Dagster's
GraphQL API (``DagsterGraphQLClient.reload_repository_location``: the UI's "Reload" button), waits until the
graph shows the new targets, and only then records the workloads (and lets ``release_on_sync`` start their
releases), so no event lands on an asset key missing from the graph. ``PLAYGROUND_DAGSTER_URL`` tells where the
webserver is (``playground up`` sets it; on a cluster, the webserver's service).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from assets import GITOPS_COMMIT
from playground.errors import PlaygroundError
from playground.pipeline import Target, targets_from_json, targets_to_json
from playground.runtime import Runtime

DAGSTER_URL_ENV = "PLAYGROUND_DAGSTER_URL"
TARGET_KINDS = ("workloads", "releases", "release_metrics", "promotions", "rollbacks")


@dataclass
class GraphState:
    """The canary targets the graph declares and where they come from."""

    targets: list[Target] = field(default_factory=list)
    sha: str | None = None
    source: str = "none"  # "sync" (recorded by gitops_sync) | "gitops head" | "none" (with ``error``)
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "targets": json.loads(targets_to_json(self.targets)),
                "sha": self.sha,
                "source": self.source,
                "error": self.error,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> GraphState:
        d = json.loads(text)
        return cls(targets_from_json(json.dumps(d["targets"])), d.get("sha"), d.get("source", "none"), d.get("error"))


def recorded_state(instance: dg.DagsterInstance) -> GraphState | None:
    """The targets recorded by the last successful gitops_sync (its ``gitops/commit`` materialization)."""
    res = instance.fetch_materializations(GITOPS_COMMIT, limit=1, ascending=False)
    for r in res.records:
        meta = r.asset_materialization.metadata if r.asset_materialization else {}
        if "targets" in meta:
            sha = meta.get("sha")
            return GraphState(
                targets_from_json(str(meta["targets"].value)),
                str(sha.value) if sha is not None else None,
                "sync",
            )
    return None


def fetch_state(runtime_factory: Callable[[], Runtime], instance: dg.DagsterInstance | None = None) -> GraphState:
    """The graph's state for a code server that is loading: the last sync's record in the instance, else the
    GitOps origin's HEAD. Never raises: a code location must load even when git is unreachable (the graph then
    has no targets and says why in the log)."""
    from playground.pipeline import gitops_head_targets

    errors = []
    own = None
    try:
        if instance is None and os.environ.get("DAGSTER_HOME"):
            instance = own = dg.DagsterInstance.get()
        if instance is not None:
            state = recorded_state(instance)
            if state is not None:
                return state
    except Exception as e:  # an unreadable instance: fall back to git
        errors.append(f"cannot read the Dagster instance: {e}")
    finally:
        if own is not None:
            own.dispose()
    rt = None
    try:
        rt = runtime_factory()
        sha, targets = gitops_head_targets(rt)
        return GraphState(targets, sha, "gitops head")
    except Exception as e:
        errors.append(f"cannot read the GitOps repository: {e}")
    finally:
        if rt is not None:
            rt.close()
    return GraphState([], None, "none", "; ".join(errors))


def target_keys(targets: list[Target]) -> set[tuple[str, ...]]:
    return {(kind, t.namespace, t.name) for t in targets for kind in TARGET_KINDS}


# ------------------------------------------------------------------------------------------------ reload


class GraphReloadError(PlaygroundError, RuntimeError):
    pass


LOCATIONS_QUERY = """
query GraphLocations {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { repositories { jobs { name } } }
          ... on PythonError { message }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

RELOAD_MUTATION = """
mutation GraphReload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      locationOrLoadError { __typename ... on PythonError { message } }
    }
    ... on ReloadNotSupported { message }
    ... on RepositoryLocationNotFound { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}
"""

ASSET_KEYS_QUERY = "query GraphAssetKeys { assetNodes { assetKey { path } } }"


def graphql(url: str, query: str, variables: dict | None = None, timeout: float = 120.0) -> dict:
    """One request to the webserver's GraphQL API (``url`` = the UI address); raises ``GraphReloadError``."""
    import httpx

    endpoint = url.rstrip("/") + "/graphql"
    try:
        with httpx.Client(trust_env=False, timeout=timeout) as c:
            r = c.post(endpoint, json={"query": query, "variables": variables or {}})
    except httpx.HTTPError as e:
        raise GraphReloadError(f"cannot reach the Dagster webserver at {endpoint}: {e}") from e
    if r.status_code != 200:
        raise GraphReloadError(f"the Dagster webserver at {endpoint} answered HTTP {r.status_code}: {r.text[:300]}")
    body = r.json()
    if body.get("errors"):
        raise GraphReloadError(f"GraphQL errors from {endpoint}: {body['errors']}")
    return body["data"]


def graph_asset_keys(url: str) -> set[tuple[str, ...]]:
    """Every asset key the webserver's graph declares (what the UI shows)."""
    return {tuple(n["assetKey"]["path"]) for n in graphql(url, ASSET_KEYS_QUERY)["assetNodes"]}


def our_locations(url: str) -> list[str]:
    """The code locations serving gitops_sync (this code location, whatever the workspace names it), and those
    that failed to load (a reload may fix them)."""
    data = graphql(url, LOCATIONS_QUERY)["workspaceOrError"]
    if data["__typename"] != "Workspace":
        raise GraphReloadError(f"the webserver cannot list its workspace: {data.get('message', data['__typename'])}")
    names = []
    for entry in data["locationEntries"]:
        loc = entry["locationOrLoadError"] or {}
        jobs = {j["name"] for r in loc.get("repositories") or [] for j in r["jobs"]}
        if "gitops_sync" in jobs or loc.get("__typename") != "RepositoryLocation":
            names.append(entry["name"])
    return names


def reload_location(url: str, name: str) -> None:
    """``reloadRepositoryLocation`` (the UI's Reload): the webserver restarts or reloads the code server, which
    loads the definitions again (fetching the graph state anew)."""
    res = graphql(url, RELOAD_MUTATION, {"name": name})["reloadRepositoryLocation"]
    if res["__typename"] != "WorkspaceLocationEntry":
        raise GraphReloadError(f"reload of code location {name!r} refused: {res['__typename']}: {res.get('message')}")
    loc = res.get("locationOrLoadError") or {}
    if loc.get("__typename") == "PythonError":
        raise GraphReloadError(f"code location {name!r} failed to load after the reload: {loc.get('message')}")


def reload_graph(
    url: str, targets: list[Target], *, timeout: float = 90.0, log: Callable[[str], None] = lambda _l: None
) -> float:
    """Ask the webserver at ``url`` to reload this code location, then wait until its graph declares exactly
    ``targets`` (their workloads/releases/release_metrics/promotions/rollbacks assets). Returns the seconds it
    took; raises ``GraphReloadError`` with the reason otherwise."""
    start = time.monotonic()
    want = target_keys(targets)
    while True:
        for name in our_locations(url):
            reload_location(url, name)
        have = {k for k in graph_asset_keys(url) if len(k) == 3 and k[0] in TARGET_KINDS}
        if have == want:
            return time.monotonic() - start
        reason = f"missing {sorted(want - have)[:3]}, not removed {sorted(have - want)[:3]}"
        if time.monotonic() - start > timeout:
            raise GraphReloadError(f"the graph does not show the synced targets {timeout:.0f}s after reloads: {reason}")
        log(f"graph not updated yet ({reason}); reloading again")
        time.sleep(2.0)
