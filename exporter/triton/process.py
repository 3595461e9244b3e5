"""Servers as processes: free local ports, stopping a server's whole process group (never by name), a server that
ends with the process that started it, the Python backend's stub processes a server started, and stop signals for a
command that runs a server until told to stop."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def signal_group(pgid: int | None, sig: int) -> None:
    if pgid is None:
        return
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent():
    """A ``preexec_fn`` that asks the kernel to send the child SIGTERM when this process ends, however it ends: a
    ``tei-export verify`` stopped by ``timeout`` (SIGTERM) or SIGKILLed runs no clean-up, and its server, which
    runs in a session of its own, would go on serving with nobody to stop it. The server stops its stubs on SIGTERM.

    None (no request) when called outside the main thread: the kernel signals the child when the *thread* that
    started it ends, and only the main thread lives as long as the process. None where prctl is not available."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def request() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request was made: nobody would stop us
            os._exit(1)

    return request


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def stop_group(proc: subprocess.Popen, pgid: int | None, timeout: float, linger: float = 5.0) -> None:
    """SIGTERM to the group ``proc`` leads, wait ``timeout`` s, then SIGKILL; then wait (bounded by ``linger``) for
    the rest of the group (the Python backend stubs, anything the server started) and SIGKILL what remains.

    When ``proc`` is already dead (killed, crashed), what is left of its group is SIGKILLed at once: the stubs of a
    dead tritonserver do not exit on their own (measured: still there 15 s later), and nothing is left to shut them
    down in order."""
    if proc.poll() is not None:
        signal_group(pgid, signal.SIGKILL)
    else:
        signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            signal_group(pgid, signal.SIGKILL)
            proc.wait(timeout=30)
    if pgid is None:
        return
    deadline = time.monotonic() + linger
    while group_alive(pgid):
        if time.monotonic() > deadline:
            signal_group(pgid, signal.SIGKILL)
            end = time.monotonic() + linger
            while group_alive(pgid) and time.monotonic() < end:
                time.sleep(0.05)
            return
        time.sleep(0.05)


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
    """Process ``pid`` as a stub of the server ``parent``, or None. A stub's arguments, as tritonserver 2.51 starts
    it: the model file, its shm region, two sizes, the parent's pid, the backend folder, an IPC handle, the instance
    name. It is the server's child, or, once the server is dead, an orphan still in the server's process group."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    state, ppid, pgrp = fields[0], int(fields[1]), int(fields[2])
    if state == "Z" or parent not in (ppid, pgrp) or len(argv) < 9 or argv[5] != str(parent).encode():
        return None
    model_file = argv[1].decode(errors="replace")
    return StubProcess(pid, argv[8].decode(errors="replace"), Path(model_file).parent.parent.name, model_file,
                       argv[2].decode(errors="replace"))


def stub_processes(parent: int) -> list[StubProcess]:
    """The Python backend stubs of the tritonserver ``parent`` (from /proc), also those a dead server left behind
    (TritonServer starts the server as the leader of its own process group)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stub = _read_stub(int(entry.name), parent)
            if stub is not None:
                found.append(stub)
    return sorted(found, key=lambda s: s.instance)


def remove_shm_regions(names: list[str]) -> None:
    """Unlink the named shared-memory regions that are left over: a stub that was killed, or the stubs of a killed
    server, leave theirs in /dev/shm (1 MiB or more each) and nothing else removes them."""
    for name in names:
        if name and "/" not in name:
            try:
                os.unlink(f"/dev/shm/{name}")
            except OSError:
                pass


@contextmanager
def stop_signals(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[list[int]]:
    """Turn the first SIGINT or SIGTERM into KeyboardInterrupt while the block runs; the list yielded holds the
    signal received.

    The handlers are installed even where the signal was inherited as ignored: bash starts a script's background
    jobs with SIGINT ignored, and Python then installs no KeyboardInterrupt handler, so `kill -INT` would do
    nothing. Later signals are ignored, so they cannot cut short the clean stop the first one asked for (that stop
    is bounded: SIGTERM, a wait, then SIGKILL)."""
    received: list[int] = []

    def handler(signum, _frame):
        if received:
            return
        received.append(signum)
        raise KeyboardInterrupt(signal_name(signum))

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
