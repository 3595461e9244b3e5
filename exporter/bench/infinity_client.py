"""The client of infinity-emb's OpenAI-style ``POST /embeddings``, which the load generator (:mod:`.load`) drives as
it drives Triton's clients; the server itself is started in :mod:`.infinity`."""
from __future__ import annotations

import json

import numpy as np

OPENAI = "openai"  # the "protocol" of infinity-emb's cells: POST /embeddings, OpenAI-style


class InfinityClient:
    """One keep-alive HTTP connection to infinity-emb's ``POST /embeddings``; texts in, float32 vectors out
    (``encoding_format: base64``, the raw float32 bytes, as OpenAI's own client asks for them)."""

    def __init__(self, url: str, timeout: float = 120.0):
        import http.client

        host, port = url.rsplit(":", 1)
        self._conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def get(self, path: str) -> dict:
        return self._call("GET", path, None)

    def infer(self, model: str, text: str, outputs) -> dict[str, np.ndarray]:
        import base64

        body = {"model": model, "input": [text], "encoding_format": "base64"}
        item = self._call("POST", "/embeddings", body)["data"][0]["embedding"]
        return {outputs[0]: np.frombuffer(base64.b64decode(item), dtype=np.float32)}

    def statistics(self, model: str, at_least: int = 0) -> None:
        return None  # no per-execution batch counts on infinity-emb's side

    def _call(self, method: str, path: str, body: dict | None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        self._conn.request(method, path, data, {"Content-Type": "application/json"} if data else {})
        response = self._conn.getresponse()
        text = response.read()
        if response.status != 200:
            raise RuntimeError(f"infinity-emb {method} {path}: HTTP {response.status}: {text[:200]!r}")
        return json.loads(text)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "InfinityClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
