"""Fuzzing `playground validate` with 1,200 mutated copies of the project's manifests (tests/support/fuzz.py:
truncation, byte flips, type swaps, deletions, odd and huge unicode, control characters, duplicated documents,
renamed kinds). Every tree gives exit status 0 or 1, never a traceback, and every printed line is one line
(nothing unprintable, at most MAX_LINE characters). The image automation and the code location's target discovery
read the same trees without raising. In process for the 1,200 trees; through the console script (from outside
the repository) for 240 of them, in batches (a directory of 60 trees per run) and one by one."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from playground import cli
from playground.images import load_policies
from playground.manifests import load_tree
from playground.textsafe import MAX_LINE
from tests.support.fuzz import mutated_tree

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
PLAYGROUND = Path(sys.executable).parent / "playground"
TREES = 1200
FILES = {p.relative_to(MANIFESTS).as_posix(): p.read_bytes() for p in sorted(MANIFESTS.rglob("*.yaml"))}


def _bad_lines(text: str) -> list[str]:
    return [line[:200] for line in text.splitlines() if len(line) > MAX_LINE or not line.isprintable()]


def _write(tree: Path, changed: dict[str, bytes]) -> None:
    for rel, data in changed.items():
        (tree / rel).write_bytes(data)


@pytest.mark.integration  # no process, but ~100 s of fuzzing: in the full layer, not the fast one
def test_fuzzed_trees_in_process(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(MANIFESTS, tree)
    problems: list[str] = []
    codes: Counter[int] = Counter()
    previous: dict[str, bytes] = {}
    for seed in range(TREES):
        _write(tree, {rel: FILES[rel] for rel in previous})  # back to the project's manifests
        changed, applied = mutated_tree(FILES, seed)
        _write(tree, changed)
        previous = changed
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(["validate", str(tree)])
            codes[code] += 1
            if code not in (0, 1):
                problems.append(f"seed {seed} {applied}: exit {code}")
            bad = _bad_lines(out.getvalue() + err.getvalue())
            if bad:
                problems.append(f"seed {seed} {applied}: lines not one-line: {bad[:2]}")
            if seed % 4 == 0:  # the image automation and the code location read the same trees
                mset = load_tree(tree)
                load_policies(mset, errors=[])
                mset.canaries()
        except Exception as e:  # the point: any exception is a finding of this test
            problems.append(f"seed {seed} {applied}: {type(e).__name__}: {str(e)[:300]}")
    assert problems == [], "\n".join(problems[:20])
    assert codes[1] > TREES // 2 and codes[0] > 0  # the mutations do break things, and not always


@pytest.mark.integration
def test_fuzzed_trees_through_the_console_script(tmp_path):
    """240 trees: 3 runs over a directory of 60 trees each, then 60 runs of one tree."""
    runs: list[tuple[Path, list[str]]] = []
    for batch in range(3):
        base = tmp_path / f"batch{batch}"
        for i in range(60):
            seed = 100_000 + batch * 60 + i
            tree = base / f"tree{i:02d}"
            shutil.copytree(MANIFESTS, tree)
            changed, _ = mutated_tree(FILES, seed)
            _write(tree, changed)
        runs.append((base, [f"batch of 60 trees from seed {100_000 + batch * 60}"]))
    for i in range(60):
        seed = 200_000 + i
        tree = tmp_path / f"single{i:02d}"
        shutil.copytree(MANIFESTS, tree)
        changed, applied = mutated_tree(FILES, seed)
        _write(tree, changed)
        runs.append((tree, [f"seed {seed}", *applied]))
    problems = []
    for path, what in runs:
        proc = subprocess.run(
            [str(PLAYGROUND), "validate", str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=300
        )
        if proc.returncode not in (0, 1) or "Traceback" in proc.stderr or proc.stderr:
            problems.append(f"{what}: exit {proc.returncode}: {proc.stderr[-500:]}")
        bad = _bad_lines(proc.stdout)
        if bad:
            problems.append(f"{what}: lines not one-line: {bad[:2]}")
        if not proc.stdout.splitlines()[-1].startswith(str(path)):
            problems.append(f"{what}: no summary line")
    assert problems == [], "\n".join(problems[:20])
