"""Real-world manifests from Flagger's public documentation and e2e tests (tests/data/flagger-corpus, origin in
each file's first comment and in its README), each validated with Flagger's podinfo demo target and checked
against its expected verdict (tests/data/flagger-corpus/expected.yaml): nothing the playground does not
implement passes silently, and each refusal names the field and what to do.

The same verdict is given at release time: the controller refuses such a Canary (``support.refusal``) before it
creates anything.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from playground import manifests as m
from playground import support

CORPUS = Path(__file__).resolve().parent / "data" / "flagger-corpus"
EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text())
FILES = sorted(p.name for p in CORPUS.glob("*.yaml") if p.name != "expected.yaml")


def _validate(tmp_path: Path, name: str) -> list[m.Finding]:
    """Validate one corpus file together with Flagger's podinfo target (Deployment, HPA, namespaces)."""
    shutil.copytree(CORPUS / "_podinfo", tmp_path / "_podinfo")
    shutil.copy(CORPUS / name, tmp_path / name)
    return m.validate(tmp_path)


def test_every_corpus_file_has_an_expected_verdict():
    assert sorted(EXPECTED) == FILES
    for name in FILES:
        first = (CORPUS / name).read_text().splitlines()[0]
        assert first.startswith("# Origin: "), f"{name}: first line must name its origin"


@pytest.mark.parametrize("name", FILES)
def test_corpus_verdict(tmp_path, name):
    want = EXPECTED[name]
    findings = _validate(tmp_path, name)
    errors = [f for f in findings if f.is_error]
    got = sorted({f.field for f in errors if f.file.endswith(name)})
    assert not [f for f in errors if not f.file.endswith(name)], "the podinfo base must stay valid"
    assert got == sorted(want.get("errors") or {}), "\n".join(str(f) for f in errors)
    assert ("accepted" if not errors else "refused") == want["verdict"]
    # Every refusal says what to do, and says it about the named field.
    for f in errors:
        assert f.fix, str(f)
        wanted = (want.get("errors") or {})[f.field]
        assert wanted.lower() in str(f).lower(), f"{f} should mention {wanted!r}"


@pytest.mark.parametrize("name", FILES)
def test_release_time_refusal_agrees_with_validate(name):
    """What the controller answers at release time (``support.refusal`` on the stored Canary) names exactly the
    fields validate refuses as unsupported or required by Flagger's CRD; an accepted canary is not refused."""
    want = set(EXPECTED[name].get("errors") or {})
    for doc in yaml.safe_load_all((CORPUS / name).read_text()):
        if not doc or doc.get("kind") != "Canary":
            continue
        gaps = support.required_gaps(doc) + support.unsupported(doc)
        reason = support.refusal(doc)
        named = {m.format_field(g.path) for g in gaps if g.severity == "error"}
        assert named <= want
        if not named:
            assert reason is None
        for field in named:
            assert f"{field}: " in reason
