"""Which ports a server listens on: Triton's usual 8000 (HTTP), 8001 (gRPC) and 8002 (metrics) when they are free, so
the addresses a user copies from Triton's documentation (and this project's README) work; a free port in place of
each one that is taken, and a sentence that says which were taken."""
from __future__ import annotations

import socket
from dataclasses import dataclass

from .process import free_port

# Triton's defaults (tritonserver --http-port, --grpc-port, --metrics-port), in that order.
TRITON_PORTS = (8000, 8001, 8002)
_ROLES = ("HTTP", "gRPC", "metrics")


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now. SO_REUSEADDR as servers bind: a port whose last
    connections linger in TIME_WAIT is free to them, one with a listener is not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class PortChoice:
    """The ports chosen for HTTP, gRPC and metrics (None: metrics off), and the usual ones that were taken."""

    http: int
    grpc: int
    metrics: int | None
    taken: tuple[str, ...] = ()  # "HTTP 8000", ...

    def note(self, host: str) -> str | None:
        """One sentence for the user when a usual port was taken; None when every port is the usual one."""
        if not self.taken:
            return None
        chosen = dict(zip(_ROLES, (self.http, self.grpc, self.metrics)))
        instead = ", ".join(f"{item.split()[0]} {chosen[item.split()[0]]}" for item in self.taken)
        return (f"Triton's usual port{'s' if len(self.taken) > 1 else ''} {', '.join(self.taken)} "
                f"{'are' if len(self.taken) > 1 else 'is'} taken on {host}: using {instead} instead (the addresses "
                f"below, not the documentation's; --http-port/--grpc-port/--metrics-port choose)")


def choose_ports(host: str, given: tuple[int | None, int | None, int | None], *, metrics: bool,
                 preferred: tuple[int, int, int] | None = TRITON_PORTS) -> PortChoice:
    """HTTP, gRPC and metrics ports: each ``given`` one as is; else the ``preferred`` one when it is free (None:
    no preference, a free one); else a free one, named in :attr:`PortChoice.taken`."""
    chosen: list[int | None] = []
    taken: list[str] = []
    for i, (role, usual) in enumerate(zip(_ROLES, preferred or (None, None, None))):
        port = given[i]
        if role == "metrics" and not metrics:
            chosen.append(None)
            continue
        if port is None and usual is not None:
            if usual not in chosen and usual not in given and port_free(host, usual):
                port = usual
            else:
                taken.append(f"{role} {usual}")
        while port is None or port in chosen or (port != given[i] and port in given):
            port = free_port(host)
        chosen.append(port)
    http, grpc, metrics_port = chosen
    assert http is not None and grpc is not None
    return PortChoice(http, grpc, metrics_port, tuple(taken))
