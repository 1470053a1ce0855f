"""The Kustomize renderer (playground/kustomize.py), feature by feature: each case writes a small repository,
builds one directory and compares the rendered objects with what ``kustomize build`` gives (cases marked "docs"
are the examples of Kubernetes' "Declarative Management of Kubernetes Objects Using Kustomize" page, with the
output it shows); refusals name the file, the field and what to do."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from playground import kustomize as k

DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: backend
  labels: {app: backend}
spec:
  selector: {matchLabels: {app: backend}}
  template:
    metadata: {labels: {app: backend}}
    spec:
      containers:
      - name: backend
        image: ghcr.io/stefanprodan/podinfo:5.0.0
        ports: [{containerPort: 9898, name: http}]
        env: [{name: A, value: "1"}]
        envFrom: [{configMapRef: {name: settings}}]
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: backend}
spec: {selector: {app: backend}, ports: [{port: 9898}]}
"""
HPA = """\
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: backend}
spec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: backend}, minReplicas: 1, maxReplicas: 2}
"""
CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {level: info}
"""
CANARY = """\
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: backend}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: backend}
  autoscalerRef: {apiVersion: autoscaling/v2, kind: HorizontalPodAutoscaler, name: backend}
  service: {port: 9898}
  analysis: {interval: 15s, threshold: 5, maxWeight: 50, stepWeight: 10}
"""
NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n"
BASE = {
    "base/kustomization.yaml": "resources: [deployment.yaml, service.yaml, hpa.yaml, configmap.yaml]\n",
    "base/deployment.yaml": DEPLOY,
    "base/service.yaml": SERVICE,
    "base/hpa.yaml": HPA,
    "base/configmap.yaml": CONFIGMAP,
}


def write(tmp: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return tmp


def render(tmp: Path, files: dict[str, str], directory: str = "overlay") -> k.Build:
    return k.build(write(tmp, files), directory)


def by_id(b: k.Build) -> dict[str, dict]:
    assert b.problems == [], b.problems
    return {f"{d.kind}/{d.namespace}/{d.name}": d.raw for d in b.objects}


def get(obj: dict, dotted: str):
    cur = obj
    for part in dotted.split("."):
        cur = cur[int(part)] if isinstance(cur, list) else cur[part]
    return cur


# (case, files beyond BASE, {object id: {dotted field: expected value}})
CASES = [
    (
        "resources: files and a sub-directory, recursively, in order",
        {"overlay/kustomization.yaml": "resources: [../base, canary.yaml]\n", "overlay/canary.yaml": CANARY},
        {
            "Deployment//backend": {"spec.template.spec.containers.0.image": "ghcr.io/stefanprodan/podinfo:5.0.0"},
            "Canary//backend": {"spec.targetRef.name": "backend"},
        },
    ),
    (
        "namespace: every namespaced object, not the Namespace itself",
        {
            "overlay/kustomization.yaml": "resources: [../base, ns.yaml]\nnamespace: prod\n",
            "overlay/ns.yaml": NAMESPACE,
        },
        {"Namespace//prod": {"metadata.name": "prod"}, "Service/prod/backend": {"spec.selector": {"app": "backend"}}},
    ),
    (
        "namePrefix/nameSuffix (docs): names change, the HPA target and the ConfigMap reference follow, selectors do not",
        {"overlay/kustomization.yaml": "resources: [../base]\nnamePrefix: dev-\nnameSuffix: '-001'\n"},
        {
            "Deployment//dev-backend-001": {
                "spec.selector.matchLabels": {"app": "backend"},
                "spec.template.spec.containers.0.envFrom.0.configMapRef.name": "dev-settings-001",
            },
            "HorizontalPodAutoscaler//dev-backend-001": {"spec.scaleTargetRef.name": "dev-backend-001"},
            "Service//dev-backend-001": {"spec.selector": {"app": "backend"}},
            "ConfigMap//dev-settings-001": {"data.level": "info"},
        },
    ),
    (
        "commonLabels (docs): metadata, selectors and pod template labels",
        {"overlay/kustomization.yaml": "resources: [../base]\ncommonLabels: {someName: someValue}\n"},
        {
            "Deployment//backend": {
                "metadata.labels": {"app": "backend", "someName": "someValue"},
                "spec.selector.matchLabels": {"app": "backend", "someName": "someValue"},
                "spec.template.metadata.labels": {"app": "backend", "someName": "someValue"},
            },
            "Service//backend": {"spec.selector": {"app": "backend", "someName": "someValue"}},
            "HorizontalPodAutoscaler//backend": {"metadata.labels": {"someName": "someValue"}},
        },
    ),
    (
        "labels without includeSelectors: metadata only; includeTemplates: pod templates too",
        {
            "overlay/kustomization.yaml": """\
                resources: [../base]
                labels:
                - pairs: {team: web}
                - pairs: {tier: api}
                  includeTemplates: true
                """
        },
        {
            "Deployment//backend": {
                "metadata.labels": {"app": "backend", "team": "web", "tier": "api"},
                "spec.selector.matchLabels": {"app": "backend"},
                "spec.template.metadata.labels": {"app": "backend", "tier": "api"},
            },
            "Service//backend": {"spec.selector": {"app": "backend"}},
        },
    ),
    (
        "commonAnnotations (docs): metadata and pod templates",
        {"overlay/kustomization.yaml": "resources: [../base]\ncommonAnnotations: {oncallPager: 800-555-1212}\n"},
        {
            "Deployment//backend": {"spec.template.metadata.annotations": {"oncallPager": "800-555-1212"}},
            "Service//backend": {"metadata.annotations": {"oncallPager": "800-555-1212"}},
        },
    ),
    (
        "images: newTag (gitops-istio), newName, digest wins over newTag",
        {
            "overlay/kustomization.yaml": "resources: [../base, pods.yaml]\n"
            "images:\n"
            "- {name: ghcr.io/stefanprodan/podinfo, newName: ghcr.io/stefanprodan/podinfo, newTag: 6.1.0}\n"
            "- {name: nginx, newName: my.image.registry/nginx, newTag: 1.4.0}\n"
            "- {name: alpine, newTag: '3.19', digest: 'sha256:24a0c4b4a4c0eb97a1aabb8e29f18e917d05abfe1b7a7c07857230879ce7d3d3'}\n",
            "overlay/pods.yaml": """\
                apiVersion: apps/v1
                kind: Deployment
                metadata: {name: web}
                spec:
                  template:
                    spec:
                      initContainers: [{name: init, image: alpine:3.18}]
                      containers: [{name: nginx, image: nginx:1.7.9}, {name: other, image: nginxinc/nginx}]
                """,
        },
        {
            "Deployment//backend": {"spec.template.spec.containers.0.image": "ghcr.io/stefanprodan/podinfo:6.1.0"},
            "Deployment//web": {
                "spec.template.spec.containers.0.image": "my.image.registry/nginx:1.4.0",
                "spec.template.spec.containers.1.image": "nginxinc/nginx",
                "spec.template.spec.initContainers.0.image": "alpine@sha256:24a0c4b4a4c0eb97a1aabb8e29f18e917d05abfe1b7a7c07857230879ce7d3d3",
            },
        },
    ),
    (
        "patchesStrategicMerge (docs: increase_replicas, set_memory): maps merged, containers merged by name",
        {
            "overlay/kustomization.yaml": "resources: [../base]\npatchesStrategicMerge: [replicas.yaml, memory.yaml]\n",
            "overlay/replicas.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: backend}\nspec: {replicas: 3}\n",
            "overlay/memory.yaml": """\
                apiVersion: apps/v1
                kind: Deployment
                metadata: {name: backend}
                spec:
                  template:
                    spec:
                      containers:
                      - name: backend
                        resources: {limits: {memory: 512Mi}}
                        env: [{name: B, value: "2"}]
                        ports: [{containerPort: 9898, protocol: TCP}]
                """,
        },
        {
            "Deployment//backend": {
                "spec.replicas": 3,
                "spec.template.spec.containers.0.image": "ghcr.io/stefanprodan/podinfo:5.0.0",
                "spec.template.spec.containers.0.resources": {"limits": {"memory": "512Mi"}},
                "spec.template.spec.containers.0.env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "spec.template.spec.containers.0.ports": [{"containerPort": 9898, "name": "http", "protocol": "TCP"}],
            }
        },
    ),
    (
        "strategic merge: null deletes a key, $patch: delete removes a list item, a custom resource's list is replaced",
        {
            "overlay/kustomization.yaml": "resources: [../base, canary.yaml]\npatches: [{path: p.yaml}, {path: c.yaml}]\n",
            "overlay/canary.yaml": CANARY.replace("analysis:", "analysis: {metrics: [{name: a}, {name: b}]}\n  x:"),
            "overlay/p.yaml": """\
                apiVersion: apps/v1
                kind: Deployment
                metadata: {name: backend, labels: {app: null}}
                spec:
                  template:
                    spec:
                      containers:
                      - {name: backend, env: [{name: A, $patch: delete}]}
                """,
            "overlay/c.yaml": """\
                apiVersion: flagger.app/v1beta1
                kind: Canary
                metadata: {name: backend}
                spec: {analysis: {metrics: [{name: c}]}}
                """,
        },
        {
            "Deployment//backend": {"metadata.labels": {}, "spec.template.spec.containers.0.env": []},
            "Canary//backend": {"spec.analysis.metrics": [{"name": "c"}]},
        },
    ),
    (
        "patchesJson6902 (docs, gitops-istio): operations on the target; ~1 escapes a slash",
        {
            "overlay/kustomization.yaml": """\
                resources: [../base]
                patchesJson6902:
                - path: patch.yaml
                  target: {group: apps, version: v1, kind: Deployment, name: backend}
                """,
            "overlay/patch.yaml": """\
                - op: replace
                  path: /spec/template/spec/containers/0/image
                  value: ghcr.io/stefanprodan/podinfo:6.0.0
                - op: add
                  path: /spec/template/metadata/annotations
                  value: {}
                - op: add
                  path: /spec/template/metadata/annotations/kubectl.kubernetes.io~1default-container
                  value: backend
                - op: add
                  path: /spec/replicas
                  value: 3
                """,
        },
        {
            "Deployment//backend": {
                "spec.replicas": 3,
                "spec.template.spec.containers.0.image": "ghcr.io/stefanprodan/podinfo:6.0.0",
                "spec.template.metadata.annotations": {"kubectl.kubernetes.io/default-container": "backend"},
            }
        },
    ),
    (
        "patches: inline JSON 6902 and strategic merge, a target selecting by regex and by label",
        {
            "overlay/kustomization.yaml": """\
                resources: [../base]
                patches:
                - target: {kind: Deployment|HorizontalPodAutoscaler, name: back.*}
                  patch: |-
                    - op: add
                      path: /metadata/annotations
                      value: {patched: "yes"}
                - target: {labelSelector: app=backend}
                  patch: |-
                    metadata:
                      labels: {selected: "true"}
                """
        },
        {
            "Deployment//backend": {"metadata.annotations": {"patched": "yes"}, "metadata.labels.selected": "true"},
            "HorizontalPodAutoscaler//backend": {"metadata.annotations": {"patched": "yes"}},
            "Service//backend": {"metadata": {"name": "backend"}},
        },
    ),
    (
        "replicas: by name",
        {"overlay/kustomization.yaml": "resources: [../base]\nreplicas: [{name: backend, count: 4}]\n"},
        {"Deployment//backend": {"spec.replicas": 4}},
    ),
    (
        "an overlay's patch names the base's objects before the overlay's prefix (as Kustomize matches)",
        {
            "mid/kustomization.yaml": "resources: [../base]\nnamePrefix: mid-\n",
            "overlay/kustomization.yaml": "resources: [../mid]\nnamespace: prod\npatchesJson6902:\n"
            "- {target: {version: v1, group: apps, kind: Deployment, name: backend}, path: p.yaml}\n",
            "overlay/p.yaml": "[{op: add, path: /spec/replicas, value: 2}]\n",
        },
        {
            "Deployment/prod/mid-backend": {"spec.replicas": 2},
            "HorizontalPodAutoscaler/prod/mid-backend": {"spec.scaleTargetRef.name": "mid-backend"},
        },
    ),
]


@pytest.mark.parametrize(("case", "files", "expected"), CASES, ids=[c[0][:60] for c in CASES])
def test_feature_renders_as_kustomize_build(tmp_path, case, files, expected):
    objects = by_id(render(tmp_path, {**BASE, **files}))
    for oid, fields in expected.items():
        assert oid in objects, f"{oid} not rendered; got {sorted(objects)}"
        for dotted, want in fields.items():
            assert get(objects[oid], dotted) == want, (oid, dotted)


def test_objects_keep_their_source_file_and_order(tmp_path):
    b = render(tmp_path, {**BASE, "overlay/kustomization.yaml": "resources: [../base]\n"})
    assert [(d.file, d.kind) for d in b.objects] == [
        ("base/deployment.yaml", "Deployment"),
        ("base/service.yaml", "Service"),
        ("base/hpa.yaml", "HorizontalPodAutoscaler"),
        ("base/configmap.yaml", "ConfigMap"),
    ]
    assert b.files == sorted([*BASE, "overlay/kustomization.yaml"])


def test_canary_not_rewritten_by_name_prefix_is_reported_on_the_kustomization(tmp_path):
    """Kustomize leaves a custom resource's references as written: the Canary still names "backend" after
    namePrefix renamed the Deployment and the HPA, and the build says so where the prefix is."""
    b = render(
        tmp_path,
        {
            **BASE,
            "overlay/canary.yaml": CANARY,
            "overlay/kustomization.yaml": "resources: [../base, canary.yaml]\nnamespace: prod\nnamePrefix: dev-\n",
        },
    )
    canary = next(d for d in b.objects if d.kind == "Canary")
    assert canary.name == "dev-backend" and canary.raw["spec"]["targetRef"]["name"] == "backend"
    assert {p.severity for p in b.problems} == {"warning"}
    assert [(p.file, p.line, p.field) for p in b.problems] == [
        ("overlay/kustomization.yaml", 3, "namePrefix"),
        ("overlay/kustomization.yaml", 3, "namePrefix"),
    ]
    assert "does not rewrite Canary dev-backend's spec.targetRef.name" in b.problems[0].message
    assert "write dev-backend in the Canary's spec.targetRef.name" in b.problems[0].fix
    assert "spec.autoscalerRef.name" in b.problems[1].message


REFUSALS = [
    ("components", "components: [../c]\n", "overlay/kustomization.yaml", 2, "components", "copy its resources"),
    ("helmCharts", "helmCharts: [{name: x}]\n", "overlay/kustomization.yaml", 2, "helmCharts", "helm template"),
    (
        "configMapGenerator",
        "configMapGenerator: [{name: x}]\n",
        "overlay/kustomization.yaml",
        2,
        "configMapGenerator",
        "ConfigMap as a resource",
    ),
    (
        "secretGenerator",
        "secretGenerator: [{name: x}]\n",
        "overlay/kustomization.yaml",
        2,
        "secretGenerator",
        "never live in git",
    ),
    ("replacements", "replacements: []\n", "overlay/kustomization.yaml", 2, "replacements", "write the values"),
    ("vars", "vars: []\n", "overlay/kustomization.yaml", 2, "vars", "write the values"),
    ("transformers", "transformers: [t.yaml]\n", "overlay/kustomization.yaml", 2, "transformers", "patches"),
    ("unknown field", "resourcez: []\n", "overlay/kustomization.yaml", 2, "resourcez", "supported fields"),
]


@pytest.mark.parametrize(("what", "extra", "file", "line", "field", "fix"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_unsupported_field_is_refused_by_name(tmp_path, what, extra, file, line, field, fix):
    b = render(tmp_path, {**BASE, "overlay/kustomization.yaml": "resources: [../base]\n" + extra})
    assert b.objects == []
    (p,) = b.problems
    assert (p.file, p.line, p.field) == (file, line, field)
    assert field in p.message and fix in p.fix


PATH_REFUSALS = [
    (
        "remote URL",
        "resources:\n- ../base\n- https://github.com/stefanprodan/podinfo//kustomize?ref=6.1.0\n",
        3,
        "remote resource",
        "vendor its manifests",
    ),
    (
        "git shorthand",
        "resources: ['github.com/fluxcd/flagger/kustomize/istio?ref=v1.44.0']\n",
        1,
        "remote resource",
        "vendor",
    ),
    ("outside the repository", "resources: [../../elsewhere]\n", 1, "outside the repository", "inside the repository"),
    ("absolute path", "resources: [/etc/passwd]\n", 1, "absolute path", "relative"),
    ("missing file", "resources: [../base, nothere.yaml]\n", 1, "not found", "fix the path"),
    ("cycle", "resources: [../overlay]\n", 1, "cycle", "remove the entry"),
    (
        "directory without kustomization",
        "resources: [../plain]\n",
        1,
        "has no kustomization.yaml",
        "add a kustomization",
    ),
    (
        "JSON 6902 patch on a missing field",
        "resources: [../base]\npatches:\n- target: {kind: Deployment}\n"
        "  patch: '[{op: replace, path: /spec/nothere/x, value: 1}]'\n",
        3,
        "JSON 6902 patch fails on Deployment backend",
        "use add",
    ),
    (
        "JSON 6902 target matches nothing",
        "resources: [../base]\npatchesJson6902:\n- target: {kind: Deployment, name: nope}\n"
        "  patch: '[{op: add, path: /spec/replicas, value: 1}]'\n",
        3,
        "no resource matches the target",
        "fix the target",
    ),
    (
        "strategic merge patch matches nothing",
        "resources: [../base]\npatchesStrategicMerge:\n- |-\n  kind: Deployment\n  metadata: {name: nope}\n",
        3,
        "no resource matches the patch Deployment nope",
        "metadata.name",
    ),
    (
        "set-based label selector",
        "resources: [../base]\npatches:\n- target: {labelSelector: 'app in (a,b)'}\n  patch: 'metadata: {}'\n",
        3,
        "only equality selectors",
        "a=b",
    ),
    (
        "Component kind",
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n",
        2,
        "kind: Component",
        "inline",
    ),
]


@pytest.mark.parametrize(("what", "text", "line", "message", "fix"), PATH_REFUSALS, ids=[r[0] for r in PATH_REFUSALS])
def test_bad_paths_and_patches_are_refused_with_file_line_and_fix(tmp_path, what, text, line, message, fix):
    (tmp_path / "repo" / "plain").mkdir(parents=True)
    (tmp_path / "repo" / "plain" / "a.yaml").write_text(SERVICE)
    b = render(tmp_path / "repo", {**BASE, "overlay/kustomization.yaml": text})
    assert b.objects == []
    (p,) = b.problems
    assert (p.file, p.line) == ("overlay/kustomization.yaml", line), p
    assert message in p.message and fix in p.fix, p


def test_duplicate_resource_is_refused_as_kustomize_does(tmp_path):
    b = render(tmp_path, {**BASE, "overlay/kustomization.yaml": "resources: [../base, ../base/service.yaml]\n"})
    (p,) = b.problems
    assert "Service backend is listed twice" in p.message and p.field == "resources"


def test_yaml_limits_apply_to_kustomization_and_patch_files(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi")
    )
    b = render(tmp_path, {**BASE, "overlay/kustomization.yaml": "resources: [../base]\npatchesStrategicMerge: [p.yaml]\n",
                          "overlay/p.yaml": bomb})  # fmt: skip
    (p,) = b.problems
    assert p.file == "overlay/kustomization.yaml" or p.file == "overlay/p.yaml"
    assert "invalid YAML in patch" in p.message


@pytest.mark.parametrize(
    ("image", "entry", "want"),
    [
        ("nginx:1.7.9", ("nginx", "my.registry/nginx", "1.4.0", None), "my.registry/nginx:1.4.0"),
        ("nginx", ("nginx", None, "1.4.0", None), "nginx:1.4.0"),
        ("nginx:1.7.9", ("nginx", "my.registry/nginx", None, None), "my.registry/nginx:1.7.9"),
        ("nginx@sha256:aa", ("nginx", None, "2", None), "nginx:2"),
        ("localhost:5000/app:1", ("localhost:5000/app", None, "2", None), "localhost:5000/app:2"),
        ("localhost:5000/app", ("localhost", None, "2", None), "localhost:5000/app"),
        ("nginx:1", ("nginx", None, None, "sha256:bb"), "nginx@sha256:bb"),
        ("nginxinc/nginx:1", ("nginx", None, "2", None), "nginxinc/nginx:1"),
    ],
)
def test_set_image(image, entry, want):
    assert k.set_image(image, *entry) == want


def test_strategic_merge_replace_directive_and_untouched_input():
    base = {"spec": {"a": {"x": 1, "y": 2}, "containers": [{"name": "c", "image": "i"}]}}
    patch = {"spec": {"a": {"$patch": "replace", "z": 3}}}
    assert k.strategic_merge(base, patch) == {"spec": {"a": {"z": 3}, "containers": [{"name": "c", "image": "i"}]}}
    assert base["spec"]["a"] == {"x": 1, "y": 2}
    assert yaml.safe_dump(
        k.strategic_merge(base, {"spec": {"containers": [{"name": "d", "image": "j"}]}}, builtin=False)
    ) == (yaml.safe_dump({"spec": {"a": {"x": 1, "y": 2}, "containers": [{"name": "d", "image": "j"}]}}))


# ============================================================================ loading (playground validate)
from playground import manifests as m  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PLAYGROUND = Path(sys.executable).parent / "playground"


def test_tree_is_read_as_flux_does(tmp_path):
    """No kustomization at the top: every YAML file is read, a sub-directory with a kustomization is built (its
    other files are not read on their own) and not descended into."""
    tree = write(
        tmp_path,
        {
            **{f"apps/{rel}": text for rel, text in BASE.items()},
            "apps/base/unlisted.yaml": "this is: [not read",
            "apps/base/nested/x.yaml": "neither: [is this",
            "namespace.yaml": NAMESPACE,
            "apps/overlay/kustomization.yaml": "resources: [../base]\nnamespace: prod\n",
        },
    )
    mset = m.load_tree(tree)
    assert mset.problems == []
    assert sorted(o.qualified_name for o in mset.objects if o.kind == "Deployment") == [
        "default/backend",
        "prod/backend",
    ]
    assert "apps/base/unlisted.yaml" not in mset.files and "apps/base/kustomization.yaml" in mset.files


def test_refused_kustomization_is_one_finding_naming_file_line_and_field(tmp_path):
    tree = write(
        tmp_path, {**BASE, "base/kustomization.yaml": "resources: [deployment.yaml]\nhelmCharts:\n- name: x\n"}
    )
    mset = m.load_tree(tree)
    assert mset.objects == []
    (f,) = m.validate_set(mset)
    assert str(f) == (
        f"{tree}/base/kustomization.yaml:2: Kustomization: helmCharts: helmCharts is not supported by the "
        "playground's Kustomize renderer. Fix: commit the rendered chart (helm template ... > chart.yaml) and list "
        "it in resources"
    )


def test_finding_on_a_patched_field_names_the_patch_file(tmp_path):
    """A JSON 6902 patch that sets a canary's maxWeight to 150: validate names the patch file, not the
    canary's file (a rendered resource's own mistakes name the resource file: see the gitops-istio test in
    test_manifests.py)."""
    tree = write(
        tmp_path,
        {
            **BASE,
            "base/kustomization.yaml": "resources: [deployment.yaml, hpa.yaml, canary.yaml]\nnamespace: prod\n"
            "patchesJson6902:\n- target: {group: flagger.app, version: v1beta1, kind: Canary, name: backend}\n"
            "  path: canary-patch.yaml\n",
            "base/canary.yaml": CANARY,
            "base/canary-patch.yaml": "- op: replace\n  path: /spec/analysis/maxWeight\n  value: 150\n",
        },
    )
    findings = [f for f in m.validate_set(m.load_tree(tree)) if f.is_error]
    by_field = {f.field: f for f in findings}
    assert by_field["spec.analysis.maxWeight"].file == f"{tree}/base/canary-patch.yaml"
    assert by_field["spec.analysis.maxWeight"].line == 1 and "150" in by_field["spec.analysis.maxWeight"].message


@pytest.mark.integration
def test_validate_console_script_on_gitops_istio(tmp_path):
    """`playground validate` as users run it, on gitops-istio's tree: exit 1 with exactly its real errors."""
    import subprocess

    tree = ROOT / "tests" / "data" / "gitops-istio"
    proc = subprocess.run(
        [str(PLAYGROUND), "validate", "--no-warnings", str(tree)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    backend, frontend, summary = proc.stdout.splitlines()
    assert backend.startswith(f"{tree}/apps/backend/hpa.yaml:1: HorizontalPodAutoscaler prod/backend: apiVersion:")
    assert frontend.startswith(f"{tree}/apps/frontend/hpa.yaml:1: HorizontalPodAutoscaler prod/frontend: apiVersion:")
    assert summary.endswith("2 errors, 0 warnings") or "2 errors" in summary


def test_corrected_gitops_istio_validates_clean(tmp_path):
    """gitops-istio with the fixes validate gives (autoscaling/v2 HPAs) and the playground's gateway, metric
    templates and loadtester: no finding at all (the live sync is tests/test_gitops_istio_live.py)."""
    from tests.support.gitops_istio import corrected_gitops_istio

    tree = corrected_gitops_istio(tmp_path / "gitops-istio")
    mset = m.load_tree(tree)
    assert m.validate_set(mset) == []
    assert sorted(f"{c.namespace}/{c.name}" for c in mset.canaries()) == ["prod/backend", "prod/frontend"]


# ============================================================================ GitOps sync and image release
def _origin_with(tmp_path: Path, files: dict[str, str]):
    """A bare GitOps origin holding ``files`` (and a checkout of it through GitSource)."""
    from playground.gitops import GitSource
    from playground.local import gitorigin

    seed = write(tmp_path / "seed", files)
    origin = tmp_path / "origin.git"
    gitorigin.ensure_origin(origin, seed=seed)
    src = GitSource(str(origin), tmp_path / "checkout")
    src.fetch()
    return src


@pytest.mark.integration
def test_sync_of_a_refused_kustomization_applies_nothing_and_names_it(tmp_path):
    """The GitOps sync reads the tree through the renderer: a kustomization using helmCharts is refused with its
    file, line and field, and nothing of the commit is applied (not even the valid plain files next to it)."""
    from playground.gitops import SyncError, apply_sync, plan_sync
    from playground.local.cluster import LocalCluster

    src = _origin_with(
        tmp_path,
        {
            "namespace.yaml": NAMESPACE,
            **{f"apps/{rel}": text for rel, text in BASE.items()},
            "apps/overlay/kustomization.yaml": "resources: [../base]\nnamespace: prod\nhelmCharts:\n- name: podinfo\n",
        },
    )
    cluster = LocalCluster(tmp_path / "home")
    try:
        plan = plan_sync(cluster, src.path)
        assert not plan.items
        (error,) = plan.errors
        assert str(error).startswith(f"{src.path}/apps/overlay/kustomization.yaml:3: Kustomization: helmCharts: ")
        with pytest.raises(SyncError):
            apply_sync(cluster, plan)
        assert cluster.get("v1", "Namespace", "", "prod") is None
    finally:
        cluster.close()


@pytest.mark.integration
def test_sync_applies_the_rendered_objects(tmp_path):
    from playground.gitops import apply_sync, plan_sync
    from playground.local.cluster import LocalCluster

    src = _origin_with(
        tmp_path,
        {
            "namespace.yaml": NAMESPACE,
            **{f"apps/{rel}": text for rel, text in BASE.items()},
            "apps/base/kustomization.yaml": "resources: [deployment.yaml, configmap.yaml]\nnamespace: prod\n"
            "namePrefix: dev-\nimages: [{name: ghcr.io/stefanprodan/podinfo, newTag: 6.1.0}]\n",
        },
    )
    cluster = LocalCluster(tmp_path / "home")
    try:
        plan = plan_sync(cluster, src.path)
        assert plan.ok, plan.report()
        apply_sync(cluster, plan)
        dep = cluster.get("apps/v1", "Deployment", "prod", "dev-backend")
        assert dep is not None
        spec = dep["spec"]["template"]["spec"]["containers"][0]
        assert spec["image"] == "ghcr.io/stefanprodan/podinfo:6.1.0"
        assert spec["envFrom"] == [{"configMapRef": {"name": "dev-settings"}}]
        assert cluster.get("v1", "ConfigMap", "prod", "dev-settings") is not None
        assert cluster.get("apps/v1", "Deployment", "prod", "backend") is None
    finally:
        cluster.close()


@pytest.mark.integration
def test_image_release_refuses_an_image_a_kustomization_sets(tmp_path):
    """Releasing a new image writes the Deployment's image line; when the kustomization's images transformer
    sets that image, the edit would change nothing: refused, naming the kustomization line, nothing pushed."""
    from playground.images import set_workload_image

    src = _origin_with(
        tmp_path,
        {
            **BASE,
            "base/kustomization.yaml": "resources: [deployment.yaml]\nnamespace: prod\n"
            "images: [{name: ghcr.io/stefanprodan/podinfo, newTag: 6.1.0}]\n",
        },
    )
    head = src.fetch()
    with pytest.raises(ValueError) as e:
        set_workload_image(src, "prod/backend", "ghcr.io/stefanprodan/podinfo:6.2.0")
    assert str(e.value).startswith("base/kustomization.yaml:3: the image of Deployment prod/backend is set by")
    assert "images: newTag" in str(e.value)
    assert src.fetch() == head


def test_hostile_layouts_are_refused_in_one_finding(tmp_path):
    """25 nested kustomizations, and a fan-out (each level includes the next twice under two prefixes, 9 levels: about 1,500
    builds): each is one finding, quickly, never a recursion error or an exponential build."""
    deep = {f"d{i}/kustomization.yaml": f"resources: [../d{i + 1}]\n" for i in range(25)}
    deep["d25/kustomization.yaml"] = "resources: [s.yaml]\n"
    deep["d25/s.yaml"] = SERVICE
    b = render(tmp_path / "deep", deep, "d0")
    (p,) = b.problems
    assert "nested more than 20 levels" in p.message and b.objects == []
    fan = {}
    for i in range(9):
        fan[f"f{i}/kustomization.yaml"] = f"resources: [../f{i}a, ../f{i}b]\n"
        for half in "ab":
            fan[f"f{i}{half}/kustomization.yaml"] = f"resources: [../f{i + 1}]\nnamePrefix: {half}-\n"
    fan["f9/kustomization.yaml"] = "resources: [s.yaml]\n"
    fan["f9/s.yaml"] = SERVICE
    b = render(tmp_path / "fan", fan, "f0")
    (p,) = b.problems
    assert "over 500 builds" in p.message and b.objects == []
