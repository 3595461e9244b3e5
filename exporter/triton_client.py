"""One face for tritonclient's HTTP and gRPC clients: the calls verify, bench and tune make."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .tensor_types import numpy_dtype, wire_type

PROTOCOLS = ("http", "grpc")


@dataclass(frozen=True)
class Endpoint:
    """A server address as tritonclient takes it (``host:port``) and the protocol its scheme named, if any."""

    address: str
    protocol: str | None  # "http" for http://, "grpc" for grpc://, None without a scheme


_SCHEMES = {"http": "http", "grpc": "grpc"}


def parse_url(url: str) -> Endpoint:
    """``host:port``, ``http://host:port[/]`` or ``grpc://host:port`` (what ``serve`` prints) -> :class:`Endpoint`;
    anything else is a :class:`~exporter.errors.ConfigError` that says what a URL looks like."""
    from urllib.parse import urlsplit

    from .errors import ConfigError

    text = url.strip()
    example = "e.g. --url http://127.0.0.1:8000 (HTTP) or --url 127.0.0.1:8001 (gRPC), as `tei-export serve` prints"
    scheme, has_scheme, rest = text.partition("://")
    if not has_scheme:
        scheme, rest = "", text
    elif scheme.lower() not in _SCHEMES:
        raise ConfigError(f"--url {url!r}: the scheme {scheme}:// is not served here (http:// or grpc://, or none)",
                          fix=example)
    try:
        parts = urlsplit(f"//{rest}")
        port = parts.port
    except ValueError as err:
        raise ConfigError(f"--url {url!r} is not host:port ({err})", fix=example) from None
    if not parts.hostname or not port or parts.path.strip("/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"--url {url!r} is not host:port with nothing after it", fix=example)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return Endpoint(f"{host}:{port}", _SCHEMES.get(scheme.lower()))


def _module(protocol: str):
    if protocol == "http":
        import tritonclient.http as module
    elif protocol == "grpc":
        import tritonclient.grpc as module
    else:
        raise ValueError(f"unknown protocol {protocol!r}; expected http or grpc")
    return module


@dataclass(frozen=True)
class ServedTensor:
    name: str
    data_type: str  # TYPE_*
    dims: tuple[int, ...]

    @property
    def numpy_dtype(self):
        return numpy_dtype(self.data_type)


@dataclass(frozen=True)
class ServedModel:
    """A model's config as the server reports it (not as the file on disk says)."""

    name: str
    max_batch_size: int
    inputs: tuple[ServedTensor, ...]
    outputs: tuple[ServedTensor, ...]
    platform: str
    backend: str
    runtime: str = ""  # "model.py" for a Python-based backend; "" for a backend's shared library


class TritonClient:
    def __init__(self, url: str, protocol: str, timeout_s: float = 60.0):
        self.url, self.protocol = url, protocol
        self._m = _module(protocol)
        if protocol == "http":
            self._client = self._m.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
        else:
            self._client = self._m.InferenceServerClient(url)
        self._timeout = timeout_s

    def close(self) -> None:
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _json(self, result) -> dict:
        return result if isinstance(result, dict) else {}

    def model(self, name: str) -> ServedModel:
        if self.protocol == "http":
            cfg = self._client.get_model_config(name)
        else:
            cfg = self._client.get_model_config(name, as_json=True)["config"]

        def tensors(key):
            return tuple(ServedTensor(t["name"], t.get("data_type", "TYPE_FP32"), tuple(int(d) for d in t["dims"]))
                         for t in cfg.get(key, []))

        return ServedModel(name=cfg["name"], max_batch_size=int(cfg.get("max_batch_size", 0)),
                           inputs=tensors("input"), outputs=tensors("output"), platform=cfg.get("platform", ""),
                           backend=cfg.get("backend", ""), runtime=cfg.get("runtime", ""))

    def ready_models(self) -> list[str]:
        if self.protocol == "http":
            index = self._client.get_model_repository_index()
        else:
            index = self._client.get_model_repository_index(as_json=True).get("models", [])
        return sorted(m["name"] for m in index if m.get("state") == "READY")

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        wire = []
        for name, array in inputs.items():
            datatype = wire_type(array.dtype)
            tensor = self._m.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            wire.append(tensor)
        requested = [self._m.InferRequestedOutput(n) for n in outputs]
        kwargs = {"client_timeout": self._timeout} if self.protocol == "grpc" else {}
        result = self._client.infer(model, wire, outputs=requested, **kwargs)
        return {n: result.as_numpy(n) for n in outputs}

    def statistics(self, model: str, at_least: int = 0, wait_s: float = 5.0) -> tuple[int, int]:
        """(inference_count, execution_count) summed over versions: fewer executions than inferences = batching.

        Triton counts an execution a moment after its responses leave, so a client that has its answers may read
        counts that miss the last execution: a caller that knows the count it expects passes ``at_least`` and the
        read is repeated until ``inference_count`` reaches it or ``wait_s`` has passed (then the counts as they are).
        """
        deadline = time.monotonic() + wait_s
        while True:
            if self.protocol == "http":
                stats = self._client.get_inference_statistics(model)
            else:
                stats = self._client.get_inference_statistics(model, as_json=True)
            rows = stats.get("model_stats", [])
            counts = (sum(int(r.get("inference_count", 0)) for r in rows),
                      sum(int(r.get("execution_count", 0)) for r in rows))
            if counts[0] >= at_least or time.monotonic() >= deadline:
                return counts
            time.sleep(0.05)

    def server_version(self) -> str:
        if self.protocol == "http":
            return self._client.get_server_metadata().get("version", "")
        return self._client.get_server_metadata(as_json=True).get("version", "")


def send_requests(make_client, model: str, requests: list, output: str, concurrency: int) -> list:
    """Each of ``requests`` (input arrays by name) once to ``model``, ``concurrency`` in flight, one client per
    thread (``make_client()``: a TritonClient, or anything with ``infer`` and ``close``); the ``output`` of each, in
    request order. The first failure cancels the requests not yet sent (a dead server or stub would otherwise fail
    each of them in turn) and is raised. verify, tune and bench all send through this one loop."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    local, clients, lock = threading.local(), [], threading.Lock()

    def one(request):
        if not hasattr(local, "client"):
            local.client = make_client()
            with lock:
                clients.append(local.client)
        return local.client.infer(model, request, [output])[output]

    pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
    try:
        return list(pool.map(one, requests))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for client in clients:
            client.close()
