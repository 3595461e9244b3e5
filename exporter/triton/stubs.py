"""The Python backend's stub processes of a tritonserver: which run, which are gone, and the shared memory they leave.

Every instance of a Python-based model (the text pipeline's tokenizer, every model the compatibility backend serves)
runs in a stub process. Triton 2.51 does not restart a stub that dies: the model stays READY and every request to it
fails; and a killed stub, or the stubs of a killed server, leave their shared-memory region in /dev/shm.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .process import processes
from .server_log import lost_stub_message


@dataclass(frozen=True)
class StubProcess:
    """A Python backend stub: one per instance of a Python-based model (the tokenizer model, and every model the
    compatibility backend serves)."""

    pid: int
    instance: str  # Triton's instance name, e.g. "mini_tokenizer_0_0"
    model: str  # the model's folder name
    model_file: str  # model.py or the model file the stub loads, as the server sees it
    shm_region: str  # its shared-memory region, /dev/shm/<name>


def _read_stub(pid: int, parent: int) -> StubProcess | None:
    """Process ``pid`` (the server's child, or, once the server is dead, an orphan still in the server's process
    group) as a stub of the server ``parent``, or None. A stub's arguments, as tritonserver 2.51 starts it: the model
    file, its shm region, two sizes, the parent's pid, the backend folder, an IPC handle, the instance name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if len(argv) < 9 or argv[5] != str(parent).encode():
        return None
    model_file = argv[1].decode(errors="replace")
    return StubProcess(pid, argv[8].decode(errors="replace"), Path(model_file).parent.parent.name, model_file,
                       argv[2].decode(errors="replace"))


def stub_processes(parent: int) -> list[StubProcess]:
    """The Python backend stubs of the tritonserver ``parent`` (from /proc), also those a dead server left behind
    (TritonServer starts the server as the leader of its own process group)."""
    found = [_read_stub(p.pid, parent) for p in processes() if parent in (p.ppid, p.pgrp)]
    return sorted((s for s in found if s is not None), key=lambda s: s.instance)


def remove_shm_regions(names: list[str]) -> None:
    """Unlink the named shared-memory regions that are left over: a stub that was killed, or the stubs of a killed
    server, leave theirs in /dev/shm (1 MiB or more each) and nothing else removes them."""
    for name in names:
        if name and "/" not in name:
            try:
                os.unlink(f"/dev/shm/{name}")
            except OSError:
                pass


@dataclass
class StubWatch:
    """The stubs of one server as last seen, so that a stub that is gone can be named, and every shm region seen
    can be removed when the server stops."""

    server_pid: int
    stubs: dict[str, StubProcess] = field(default_factory=dict)  # by instance name
    shm_regions: set[str] = field(default_factory=set)

    def refresh(self, server_alive: bool) -> list[StubProcess]:
        """Record the stubs running now (a reload starts new ones) and their regions; return the recorded ones that
        are gone while the server runs (a dead server's orphans count for their regions only)."""
        current = {stub.instance: stub for stub in stub_processes(self.server_pid)}
        self.shm_regions.update(stub.shm_region for stub in current.values())
        if not server_alive:
            return []
        lost = [stub for name, stub in self.stubs.items() if name not in current]
        self.stubs.update(current)
        return lost

    def remove_leftovers(self) -> None:
        remove_shm_regions(sorted(self.shm_regions))
        self.shm_regions.clear()


def describe_lost_stub(stub: StubProcess, ensemble: str | None = None) -> str:
    return lost_stub_message(stub.model, stub.instance, stub.pid, ensemble)
