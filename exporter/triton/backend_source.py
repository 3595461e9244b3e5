"""Where the sources of NVIDIA's LibTorch backend come from, and unpacking them for a build.

The backend is four repositories of the triton-inference-server organisation at one release branch:
``pytorch_backend`` (the backend), ``backend``, ``core`` and ``common`` (its CMake FetchContent dependencies).
They come from, in this order:

1. ``--source PATH`` or ``$TEI_EXPORT_BACKEND_SOURCE``: a folder holding the four archives
   ``<repo>-<branch>.tar.gz`` (``git archive --prefix=<repo>/``, optionally with a ``SHA256SUMS`` file that is then
   checked), or the four source trees ``<repo>/``;
2. ``git clone --branch <branch>`` of the four GitHub repositories (needs git and network).

The checksum that keys the build cache is the sha256 of the four archives, of the four trees' files, or of the four
commits a clone resolved to.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import BackendBuildError

REPOS = ("pytorch_backend", "backend", "core", "common")
GITHUB = "https://github.com/triton-inference-server/{repo}"
SOURCE_ENV = "TEI_EXPORT_BACKEND_SOURCE"
_SKIP_DIRS = {".git", "build", "__pycache__"}

Log = Callable[[str], None]


@dataclass(frozen=True)
class BackendSource:
    branch: str
    kind: str  # "archives", "trees" or "git"
    location: str  # the folder, or the GitHub URL pattern
    checksum: str  # sha256 of what is built (hex)
    commits: tuple[tuple[str, str], ...] = ()  # (repo, commit) for a git source

    def describe(self) -> str:
        what = {"archives": "source archives in", "trees": "source trees in", "git": "git clones of"}[self.kind]
        return f"pytorch_backend {self.branch}: {what} {self.location} (sha256 {self.checksum[:12]})"


def _both_ways(branch: str) -> str:
    return (f"pass --source FOLDER (or set ${SOURCE_ENV}) holding {', '.join(f'{r}-{branch}.tar.gz' for r in REPOS)} "
            f"or the four source trees, or make git and github.com reachable so that "
            f"`git clone --branch {branch} {GITHUB.format(repo='<repo>')}` works")


def _archive(folder: Path, repo: str, branch: str) -> Path:
    return folder / f"{repo}-{branch}.tar.gz"


def _sha256_file(path: Path, digest=None):
    digest = digest or hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest


def _check_sums(folder: Path, archives: list[Path]) -> None:
    """Compare the archives with ``SHA256SUMS`` when the folder has one: a corrupt copy fails here, not in cmake."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return
    wanted = {}
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            wanted[parts[1].lstrip("*")] = parts[0]
    for archive in archives:
        expected = wanted.get(archive.name)
        if expected and _sha256_file(archive).hexdigest() != expected:
            raise BackendBuildError(f"{archive.name} does not match its checksum in SHA256SUMS",
                                    fix="copy the archive again", where=str(archive))


def _tree_checksum(trees: list[Path]) -> str:
    digest = hashlib.sha256()
    for tree in trees:
        for dirpath, dirnames, filenames in os.walk(tree):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.is_file():
                    digest.update(str(path.relative_to(tree.parent)).encode() + b"\0")
                    _sha256_file(path, digest)
    return digest.hexdigest()


def _from_folder(folder: Path, branch: str) -> BackendSource:
    if not folder.is_dir():
        raise BackendBuildError("the backend source folder does not exist", fix=_both_ways(branch), where=str(folder))
    archives = [_archive(folder, repo, branch) for repo in REPOS]
    if all(a.is_file() for a in archives):
        _check_sums(folder, archives)
        digest = hashlib.sha256()
        for archive in archives:
            _sha256_file(archive, digest)
        return BackendSource(branch, "archives", str(folder), digest.hexdigest())
    trees = [folder / repo for repo in REPOS]
    if all((t / "CMakeLists.txt").is_file() for t in trees):
        return BackendSource(branch, "trees", str(folder), _tree_checksum(trees))
    other = sorted({p.name[len("pytorch_backend-"):-len(".tar.gz")] for p in folder.glob("pytorch_backend-*.tar.gz")})
    hint = f"; it has archives for {', '.join(other)} (build those with --branch)" if other else ""
    missing = [a.name for a in archives if not a.is_file()]
    raise BackendBuildError(
        f"the backend source folder holds neither the archives for {branch} (missing {', '.join(missing)}) nor the "
        f"four source trees {', '.join(r + '/' for r in REPOS)}{hint}",
        fix=_both_ways(branch), where=str(folder))


def _from_git(branch: str, timeout: float) -> BackendSource:
    git = shutil.which("git")
    if git is None:
        raise BackendBuildError(f"no backend sources given and git is not installed to clone {branch}",
                                fix=_both_ways(branch))
    commits = []
    for repo in REPOS:
        url = GITHUB.format(repo=repo)
        try:
            done = subprocess.run([git, "ls-remote", url, f"refs/heads/{branch}"], capture_output=True, text=True,
                                  timeout=timeout, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
        except subprocess.TimeoutExpired:
            done = None
        line = done.stdout.split() if done is not None and done.returncode == 0 else []
        if not line:
            why = "timed out" if done is None else (done.stderr.strip().splitlines() or ["no such branch"])[-1]
            raise BackendBuildError(f"no backend sources given, and {url} branch {branch} cannot be reached ({why})",
                                    fix=_both_ways(branch))
        commits.append((repo, line[0]))
    digest = hashlib.sha256("".join(f"{r}={c}\n" for r, c in commits).encode())
    return BackendSource(branch, "git", GITHUB.format(repo="<repo>"), digest.hexdigest(), tuple(commits))


def locate_source(branch: str, explicit: str | os.PathLike | None = None, git_timeout: float = 30.0) -> BackendSource:
    """The sources to build ``branch`` from: ``explicit``, else ``$TEI_EXPORT_BACKEND_SOURCE``, else git."""
    chosen = explicit if explicit is not None else os.environ.get(SOURCE_ENV) or None
    if chosen is not None:
        return _from_folder(Path(chosen).expanduser().absolute(), branch)
    return _from_git(branch, git_timeout)


def _extract(archive: tarfile.TarFile, dest: Path) -> None:
    """Extract ``archive`` under ``dest`` only. Python 3.11.4+ has the "data" filter for that; older 3.11 (Debian 12's
    3.11.2) has no ``filter`` argument, so there every member is checked to stay inside ``dest`` first."""
    if hasattr(tarfile, "data_filter"):
        archive.extractall(dest, filter="data")
        return
    root = dest.resolve()
    for member in archive.getmembers():
        target = (root / member.name).resolve()
        link = (target.parent / member.linkname).resolve() if member.issym() or member.islnk() else root
        if root not in (target, *target.parents) or root not in (link, *link.parents) or member.isdev():
            raise BackendBuildError(f"the archive member {member.name!r} would be written outside {dest}",
                                    fix="use the source archives as NVIDIA publishes them", where=archive.name)
    archive.extractall(dest)


def unpack(source: BackendSource, dest: Path, log: Log) -> dict[str, Path]:
    """Make the four trees available under ``dest`` (extracted, linked, or cloned); returns ``{repo: tree}``."""
    dest.mkdir(parents=True, exist_ok=True)
    trees = {}
    for repo in REPOS:
        target = dest / repo
        if source.kind == "archives":
            with tarfile.open(_archive(Path(source.location), repo, source.branch)) as archive:
                _extract(archive, dest)
        elif source.kind == "trees":
            target.symlink_to(Path(source.location) / repo, target_is_directory=True)
        else:
            commit = dict(source.commits)[repo]
            url = GITHUB.format(repo=repo)
            log(f"$ git clone --depth 1 --branch {source.branch} {url}")
            done = subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", source.branch, url,
                                   str(target)], capture_output=True, text=True)
            log(done.stdout + done.stderr)
            if done.returncode != 0:
                raise BackendBuildError(f"git clone of {url} failed: {done.stderr.strip()[-300:]}",
                                        fix=_both_ways(source.branch))
            head = subprocess.run(["git", "-C", str(target), "rev-parse", "HEAD"], capture_output=True, text=True)
            if head.stdout.strip() != commit:  # the branch moved between ls-remote and clone: the key would lie
                raise BackendBuildError(f"{url} branch {source.branch} moved while it was cloned",
                                        fix="run the build again")
        if not (target / "CMakeLists.txt").is_file():
            raise BackendBuildError(f"the {repo} source has no CMakeLists.txt at its top",
                                    fix=f"archives must be made with `git archive --prefix={repo}/`",
                                    where=str(target))
        trees[repo] = target
    return trees
