"""Which pytorch_backend release branch goes with a tritonserver version, and what differs between releases.

Triton numbers its server 2.N.0 and its containers and branches YY.MM: 2.30.0 is release 23.01 (branch ``r23.01``)
and each minor version after it is the next month, up to 2.59.0 = 25.06 (the line the nvidia-pytriton 0.7.0 wheel's
server 2.51.0 = r24.10 sits on). Release 25.07 was skipped, so the rule is not carried past 25.06: a newer server
has no known branch here and the branch must be named (``--branch``).
"""
from __future__ import annotations

import re

from ..errors import BackendBuildError

FIRST_KNOWN = (30, (23, 1))  # server minor version 30 = release 23.01
LAST_KNOWN_MINOR = 59  # 25.06; 25.07 was skipped, so later minors do not follow the monthly rule
# pytorch_backend #159 (release 25.11): INTER_OP_THREAD_COUNT is applied once per process, not once per model
INTEROP_ONCE_FIXED = (25, 11)
_SERVER = re.compile(r"^2\.(\d+)\.\d+")
_BRANCH = re.compile(r"^r(\d{2})\.(\d{2})$")


def release_for(server_version: str) -> tuple[int, int] | None:
    """(year, month) of the release a server version belongs to, or None when it is not known here."""
    match = _SERVER.match(server_version or "")
    if not match:
        return None
    minor = int(match.group(1))
    first_minor, (year, month) = FIRST_KNOWN
    if not first_minor <= minor <= LAST_KNOWN_MINOR:
        return None
    months = year * 12 + (month - 1) + (minor - first_minor)
    return months // 12, months % 12 + 1


def branch_for(server_version: str) -> str:
    """The pytorch_backend branch built for ``server_version`` (``2.51.0`` -> ``r24.10``)."""
    release = release_for(server_version)
    if release is None:
        raise BackendBuildError(
            f"no known pytorch_backend release branch for tritonserver {server_version} (known: 2.{FIRST_KNOWN[0]}.0 "
            f"to 2.{LAST_KNOWN_MINOR}.0, releases 23.01 to 25.06)",
            fix="name the branch that matches your server with --branch rYY.MM (the NGC container's release number; "
                "the server's release notes give it), or use a server that ships libtriton_pytorch.so",
        )
    return "r%02d.%02d" % release


def branch_release(branch: str) -> tuple[int, int] | None:
    """(year, month) of a release branch ``rYY.MM``; None for ``main`` or other names."""
    match = _BRANCH.match(branch)
    return (int(match.group(1)), int(match.group(2))) if match else None


def sets_interop_per_model(branch: str) -> bool:
    """Whether this pytorch_backend branch calls ``set_num_interop_threads`` for every model that has
    INTER_OP_THREAD_COUNT (which torch allows once per process: the second call aborts the server)."""
    release = branch_release(branch)
    return release is not None and release < INTEROP_ONCE_FIXED
