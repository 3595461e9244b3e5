"""The rule "under CI=true a part the set-up installs fails when missing, never skips", checked two ways.

- A run: a small pytest session in a subprocess, with every part hidden ($TEI_EXPORT_TEST_MISSING=all, which
  tests/conftest.py's require() honours), on one test per way a test can need a part (a module-level import, the
  ``binary`` fixture, NVIDIA's backends, the compiler, the weights, the build tools). Its junit report is read: under
  CI=true each test fails (or its module fails to collect) naming the part, and no skip names one; without CI the
  same tests skip, naming the part.
- The source: every skip in tests/ goes through require() or skip_not_installed() (tests/conftest.py), or is one of
  the few skips for what the set-up never installs here (a CUDA device, infinity-emb).
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import MISSING_ENV, PARTS, setup_backend_source

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# One test per way of needing a part; each needs that part first (session fixtures are set up in argument order).
PROBES = {
    "test_differential.py::test_load_refusals": "tritonclient",  # module-level import: a collection error
    "test_backend_build.py::test_backend_status_cli": "tritonserver",  # the binary fixture
    "test_corpus.py::test_every_kind_present": "minilm-weights",  # a module fixture importing the weights
    "test_libtorch_check.py::test_find_compiler_honours_cxx": "compiler",  # require() in the test
    "test_libtorch_check.py::test_build_checker_compiles_once_and_caches": "compiler",  # the cxx_compiler fixture
    "test_backend_build.py::test_a_failed_build_keeps_its_log_and_nothing_else": "build-tools",
    "test_soak.py::test_soak_on_nvidia_backend_checks_every_answer_and_samples_memory": "nvidia-backend",
    "test_newest_backend.py::test_exports_verify_on_the_newest_backend": "newest-backend",
}
# Parts the set-up installs only when it has sources to build from (scripts/backend.sh); without them, a skip.
NEEDS_SOURCES = {"build-tools": ("TEI_EXPORT_BACKEND_SOURCE", "triton-r24.10"),
                 "nvidia-backend": ("TEI_EXPORT_BACKEND_SOURCE", "triton-r24.10"),
                 "newest-backend": ("TEI_EXPORT_NEWEST_BACKEND_SOURCE", "triton-main-*")}
# Skips allowed outside require()/skip_not_installed(): what the set-up never installs on this project's machines.
ALLOWED_SKIP_REASONS = ("CUDA", "infinity-emb")


def _outcomes(xml_path: Path) -> dict[str, tuple[str, str]]:
    """{"file.py::test" or "file.py" (a module that did not collect): (outcome, message)} from a junit report."""
    outcomes = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        key = (f"{classname.split('.')[-1]}.py::{name}" if classname else f"{name.split('.')[-1]}.py")
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                outcome, message = kind, f"{element.get('message', '')}\n{element.text or ''}"
                break
        outcomes[key] = (outcome, message)
    return outcomes


def _start(tmp_path: Path, ci: bool) -> tuple[subprocess.Popen, Path]:
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_")}
    env[MISSING_ENV] = "all"
    if ci:
        env["CI"] = "true"
    xml = tmp_path / f"{'ci' if ci else 'local'}.xml"
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors",
            f"--junitxml={xml}", "-o", "junit_family=xunit1", "--rootdir", str(ROOT),
            # files and -k, not node ids: a node id in a module that fails to collect stops the whole session
            "-k", " or ".join(node.split("::")[1] for node in PROBES),
            *sorted({str(TESTS / node.split("::")[0]) for node in PROBES})]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), xml


def _expected_installed(part: str) -> bool:
    """Whether the set-up installs ``part`` on this machine."""
    return part not in NEEDS_SOURCES or setup_backend_source(*NEEDS_SOURCES[part]) is not None


def test_a_ci_run_fails_on_every_missing_part_and_a_local_run_skips(tmp_path):
    runs = {ci: _start(tmp_path, ci) for ci in (True, False)}
    results = {}
    for ci, (proc, xml) in runs.items():
        out, _ = proc.communicate(timeout=600)
        assert xml.is_file(), out[-3000:]
        results[ci] = _outcomes(xml)
    for node, part in PROBES.items():
        module = node.split("::")[0]
        ci_outcome, ci_message = results[True].get(node) or results[True][module]
        local_outcome, local_message = results[False].get(node) or results[False][module]
        # without CI: a skip that names the part, whatever the set-up installs
        assert local_outcome == "skipped" and f"missing {part}" in local_message or \
            not _expected_installed(part) and local_outcome == "skipped", (node, local_outcome, local_message)
        if _expected_installed(part):
            assert ci_outcome in ("failure", "error"), (node, ci_outcome, ci_message)
            assert f"CI: missing {part}" in ci_message and MISSING_ENV in ci_message, (node, ci_message)
        else:  # the set-up builds nothing here: a skip that says so, also under CI
            assert ci_outcome == "skipped" and "does not install it here" in ci_message, (node, ci_message)
    # no skip of the CI run names a part the set-up installs
    for node, (outcome, message) in results[True].items():
        if outcome == "skipped":
            assert not any(f"missing {p}" in message for p in PARTS if _expected_installed(p)), (node, message)


def _skip_calls(tree: ast.AST):
    """(line, call name, reason text) of every pytest.skip / skipif / importorskip call in a module."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        if name.split(".")[-1] in ("skip", "skipif", "importorskip") and name.startswith("pytest"):
            yield node.lineno, name, ast.unparse(node)


def test_every_skip_in_the_suite_goes_through_require_or_names_what_is_never_installed():
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        allowed_lines = set()
        if path.name == "conftest.py":  # the helpers themselves
            for fn in ast.walk(tree):
                if isinstance(fn, ast.FunctionDef) and fn.name in ("require", "skip_not_installed"):
                    allowed_lines |= {n.lineno for n in ast.walk(fn) if hasattr(n, "lineno")}
        for line, name, text in _skip_calls(tree):
            if line in allowed_lines or name != "pytest.importorskip" and any(r in text for r in ALLOWED_SKIP_REASONS):
                continue
            offenders.append(f"{path.name}:{line}: {text[:120]}")
    assert not offenders, ("skips that would hide a missing part under CI; use require()/require_module() or "
                           "skip_not_installed() from tests/conftest.py:\n" + "\n".join(offenders))


def test_the_static_check_sees_a_bare_skip():
    """The scan above is not blind: the forms it must catch are caught, the allowed ones not."""
    source = ("import pytest\nmod = pytest.importorskip('tritonclient')\n"
              "@pytest.mark.skipif(True, reason='no compiler')\ndef test_a():\n    pytest.skip('no server')\n"
              "@pytest.mark.skipif(True, reason='no CUDA device')\ndef test_b(): pass\n")
    found = [(line, name) for line, name, text in _skip_calls(ast.parse(source))
             if not (name != "pytest.importorskip" and any(r in text for r in ALLOWED_SKIP_REASONS))]
    assert sorted(found) == [(2, "pytest.importorskip"), (3, "pytest.mark.skipif"), (5, "pytest.skip")]


@pytest.mark.parametrize("part", PARTS)
def test_every_part_has_a_probe(part):
    assert part in PROBES.values()
