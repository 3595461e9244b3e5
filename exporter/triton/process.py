"""Servers as processes: free local ports, and stopping a server's whole process group (never by name)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time


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
