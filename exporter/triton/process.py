"""Servers as processes: free local ports, stopping a server's whole process group (never by name), and stop
signals for a command that runs a server until told to stop."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
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


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def stop_group(proc: subprocess.Popen, pgid: int | None, timeout: float, linger: float = 5.0) -> None:
    """SIGTERM to the group ``proc`` leads, wait ``timeout`` s, then SIGKILL; then wait (bounded by ``linger``) for
    the rest of the group (the Python backend stubs, anything the server started) and SIGKILL what remains."""
    if proc.poll() is None:
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
