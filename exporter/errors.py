"""Errors that tell the user what went wrong, where, and how to fix it."""
from __future__ import annotations


def first_line(err: BaseException, limit: int | None = None) -> str:
    """The first line of ``err``'s message, at most ``limit`` characters; "" when the message is empty (a bare
    ``str(err).splitlines()[0]`` raises IndexError there)."""
    lines = str(err).splitlines()
    return (lines[0] if lines else "")[:limit]


class TeiExportError(Exception):
    """Base error: the CLI prints ``str(err)`` and exits with ``exit_code``.

    Messages are written as "<what is wrong> (<where>). <how to fix it>." so a user never has to read a traceback.
    """

    exit_code = 1

    def __init__(self, problem: str, fix: str | None = None, where: str | None = None):
        self.problem = problem
        self.fix = fix
        self.where = where
        # A problem quoted from a library often ends in its own period: what follows must not double it.
        text = problem.rstrip(". ") if where is not None or fix else problem
        if where is not None:
            text = f"{text} ({where})"
        if fix:
            text = f"{text}. Fix: {fix}"
        super().__init__(text)


class ModelSourceError(TeiExportError):
    """The model id or folder cannot be resolved or lacks what an export needs."""


class UnsupportedModelError(TeiExportError):
    """The architecture or its options cannot be exported."""


class ParityError(TeiExportError):
    """The exported model does not reproduce the eager reference within tolerance."""

    def __init__(self, problem: str, report, fix: str | None = None):
        super().__init__(problem, fix)
        self.report = report


class ConfigError(TeiExportError):
    """A Triton config is invalid (it failed to parse with Triton's protobuf, or a value is out of range)."""


class RepositoryError(TeiExportError):
    """The model repository cannot be written as asked (exists, not writable, bad name)."""


class ServerError(TeiExportError):
    """tritonserver could not be found, started, or did not make the models ready."""


class VerificationError(TeiExportError):
    """Triton's answers differ from eager PyTorch, or the harness could not get answers."""


class BackendBuildError(TeiExportError):
    """NVIDIA's LibTorch backend cannot be built or installed (missing tools or sources, a failed compile)."""


class QualityError(ParityError):
    """A lossy export (int8, bf16) misses its quality gate against the fp32 model; ``report`` says where."""
