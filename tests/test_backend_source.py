"""Unpacking NVIDIA's backend archives on a Python without tarfile's "data" filter (3.11 before 3.11.4, e.g. Debian
12's python3): members are checked to stay inside the destination, and a member that would escape is refused."""
from __future__ import annotations

import io
import tarfile

import pytest

from exporter.errors import BackendBuildError
from exporter.triton.backend_source import _extract


def _tar(path, members: dict[str, bytes], link: tuple[str, str] | None = None):
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            archive.addfile(info)
    return path


@pytest.mark.parametrize("has_filter", [True, False])
def test_a_plain_archive_extracts(tmp_path, monkeypatch, has_filter):
    if not has_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = _tar(tmp_path / "a.tar.gz", {"common/CMakeLists.txt": b"project(x)\n"}, ("common/link", "CMakeLists.txt"))
    with tarfile.open(archive) as tar:
        _extract(tar, tmp_path / "out")
    assert (tmp_path / "out" / "common" / "CMakeLists.txt").read_bytes() == b"project(x)\n"


@pytest.mark.parametrize("members, link", [({"../evil": b"x"}, None), ({"ok": b"x"}, ("common/up", "../../evil"))])
def test_an_escaping_member_is_refused_without_the_filter(tmp_path, monkeypatch, members, link):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = _tar(tmp_path / "bad.tar.gz", members, link)
    with tarfile.open(archive) as tar, pytest.raises(BackendBuildError, match="outside"):
        _extract(tar, tmp_path / "out")
    assert not (tmp_path / "evil").exists()
