"""The Triton model repository on disk: <repo>/<model>/config.pbtxt and <repo>/<model>/<version>/...

Writes are all-or-nothing: a model version is assembled in a staging folder inside the repository (same
file system) and renamed into place, so a failed export leaves nothing behind and a reader never sees half a model.
The renames run under an exclusive lock on the repository folder itself (``flock``, so no lock file is left in the
repository): of two exports of one model version at once, one wins and the other fails, and a model's config.pbtxt
and version folder always come from the same export.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import RepositoryError

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
METADATA_FILE = "tei_export.json"
STAGING_PREFIX = ".tei-export-staging-"


def validate_model_name(name: str) -> str:
    if not _MODEL_NAME.match(name) or ".." in name:
        raise RepositoryError(
            f"invalid model name '{name}'",
            fix="use 1-128 letters, digits, '_', '-' or '.', starting with a letter or digit (no '/', no '..')",
            where="--name",
        )
    return name


def default_model_name(source: str) -> str:
    """A model name from a hub id or folder: 'BAAI/bge-small-en-v1.5' -> 'bge-small-en-v1.5'; a folder whose name
    says nothing ('model', 'snapshot', a hash) is named as the model calls itself (see :mod:`.naming`)."""
    from .naming import name_from_folder

    folder = Path(source.rstrip("/\\"))
    base = (name_from_folder(folder) if folder.is_dir() else None) or folder.name or "model"
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", base).strip("-.") or "model"
    return name[:128]


def versions(model_dir: Path) -> list[int]:
    """Numeric version folders of a model, as Triton counts them (no leading zeros)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and re.fullmatch(r"[1-9][0-9]*", p.name))


def models(repo: Path) -> list[Path]:
    """Model folders (those with a config.pbtxt) in a repository, by name."""
    if not repo.is_dir():
        return []
    return sorted(p for p in repo.iterdir() if p.is_dir() and (p / "config.pbtxt").is_file())


def latest_version_dir(model_dir: Path) -> Path:
    found = versions(model_dir)
    if not found:
        raise RepositoryError("the model has no version folder", fix="export it with tei-export trace",
                              where=str(model_dir))
    return model_dir / str(found[-1])


@dataclass(frozen=True)
class VersionTarget:
    repo: Path
    name: str
    version: int

    @property
    def model_dir(self) -> Path:
        return self.repo / self.name

    @property
    def version_dir(self) -> Path:
        return self.model_dir / str(self.version)


def plan_version(repo: Path, name: str, version: int, force: bool) -> VersionTarget:
    """Check, before any slow work, that ``version`` of ``name`` may be written into ``repo``."""
    validate_model_name(name)
    if version < 1:
        raise RepositoryError(f"version {version} is not a positive integer", fix="use --version 1 or higher",
                              where="--version")
    target = VersionTarget(Path(repo), name, version)
    if target.version_dir.exists() and not force:
        existing = versions(target.model_dir)
        raise RepositoryError(
            f"version {version} of model '{name}' already exists",
            fix=f"pass --force to replace it, or --version {max(existing + [version]) + 1} to add a new version (with "
                "the same inputs, outputs and batching: a model's versions share its config.pbtxt)",
            where=str(target.version_dir),
        )
    _check_writable(target.repo)
    return target


def _check_writable(repo: Path) -> None:
    existing = repo
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RepositoryError("the output folder is not writable", fix="choose another --out or fix its permissions",
                              where=str(existing))


@contextmanager
def staged_version(target: VersionTarget, force: bool) -> Iterator[Path]:
    """Yield an empty staging model folder; on success its contents replace ``target`` in one rename each.

    The caller writes ``<staging>/config.pbtxt`` and ``<staging>/<version>/...``.
    """
    try:
        target.repo.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX + target.name + "-", dir=target.repo))
    except OSError as err:
        raise RepositoryError(f"cannot create the model repository: {err.strerror}",
                              fix="choose another --out or fix its permissions", where=str(target.repo)) from None
    try:
        (staging / str(target.version)).mkdir()
        yield staging
        _commit(staging, target, force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


COMMIT_LOCK_TIMEOUT_S = 60.0  # a commit is a few renames; waiting longer means a writer is stuck


@contextmanager
def repository_lock(repo: Path, timeout_s: float = COMMIT_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the exclusive lock on ``repo`` (flock on the folder itself: nothing is written, and the lock goes with
    the process, also when it is killed)."""
    fd = os.open(repo, os.O_RDONLY | os.O_DIRECTORY)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RepositoryError(
                        f"another process has held the repository's lock for more than {timeout_s:.0f} s",
                        fix="wait for the other tei-export trace to finish, or stop it", where=str(repo)) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _check_fit(new_config: Path, target: VersionTarget) -> None:
    """Refuse a version whose config differs from the model's in what its other versions are served with."""
    from ..errors import ConfigError
    from .version_fit import shared_differences

    others = [v for v in versions(target.model_dir) if v != target.version]
    existing = target.model_dir / "config.pbtxt"
    if not others or not existing.is_file() or not new_config.is_file():
        return
    try:
        differences = shared_differences(existing.read_text(encoding="utf-8"), new_config.read_text(encoding="utf-8"),
                                         where=str(existing))
    except ConfigError:  # a config Triton cannot read either: nothing is served by it to keep
        return
    if differences:
        shown = "; ".join(d if len(d) <= 240 else d[:237] + "..." for d in differences)
        raise RepositoryError(
            f"version {target.version} of model '{target.name}' does not fit its version(s) "
            f"{', '.join(map(str, others))}: Triton serves every version with the one config.pbtxt, and this export's "
            f"differs in {shown}",
            fix=f"export it as a model of its own (--name {target.name}_v{target.version}), or export it with the "
                "options of the existing versions, or remove those versions first",
            where=str(existing))


def _commit(staging: Path, target: VersionTarget, force: bool) -> None:
    model_dir, version_dir = target.model_dir, target.version_dir
    with repository_lock(target.repo):
        # checked again under the lock: another export of the same model may have committed while this one ran
        if version_dir.exists() and not force:
            existing = versions(model_dir)
            raise RepositoryError(
                f"version {target.version} of model '{target.name}' was written by another export while this one "
                "ran; this export did not write it",
                fix=f"pass --force to replace it, or --version {max(existing + [target.version]) + 1} to add a new "
                    "version",
                where=str(version_dir))
        _check_fit(staging / "config.pbtxt", target)
        staged, retired, moved = staging / str(target.version), None, False
        try:
            model_dir.mkdir(exist_ok=True)
            if version_dir.exists():
                retired = staging / "replaced"
                os.rename(version_dir, retired)
            os.rename(staged, version_dir)
            moved = True
            os.replace(staging / "config.pbtxt", model_dir / "config.pbtxt")
        except OSError as err:  # e.g. a folder put there by something that does not take the lock
            # back out, so the model stays as it was: its old version folder with its old config
            if moved:
                os.rename(version_dir, staged)
            if retired is not None:
                os.rename(retired, version_dir)
            raise RepositoryError(f"cannot move the export into place: {err.strerror}",
                                  fix="check that nothing else writes into the repository, then export again",
                                  where=str(err.filename or version_dir)) from None
