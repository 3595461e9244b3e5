"""Servers as processes: free local ports, the process table, stopping a server's whole process group (never by
name), a server that ends with the process that started it, and stop signals for a command that runs a server until
told to stop."""
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


def spawn_server(command: list[str], env: dict[str, str], log) -> subprocess.Popen:
    """Start a server process as the leader of a process group of its own (stopped with its children by that group,
    never by name), output into ``log``, ended by the kernel when this process ends (:func:`die_with_parent`)."""
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=die_with_parent())


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
class ProcStat:
    pid: int
    state: str  # "R", "S", ... ("Z": a zombie)
    ppid: int
    pgrp: int


def processes(proc: Path = Path("/proc")) -> Iterator[ProcStat]:
    """Every process but zombies, from ``/proc/<pid>/stat``. The command name in parentheses may hold spaces: the
    fields after the last ')' are state, ppid, pgrp."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            stat = ProcStat(int(entry.name), fields[0], int(fields[1]), int(fields[2]))
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
            continue
        if stat.state != "Z":
            yield stat


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
