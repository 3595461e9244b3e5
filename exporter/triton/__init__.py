"""Serving on a real tritonserver: find the binary, build or choose the LibTorch backend, assemble the backend folder,
present the repository, run the server.

* :mod:`.binary`: find ``tritonserver`` and read its version.
* :mod:`.releases`: which pytorch_backend release branch goes with a server version.
* :mod:`.backend_source` and :mod:`.backend_build`: NVIDIA's ``libtriton_pytorch.so`` built from source for that
  server, against the running environment's torch, into a cache.
* :mod:`.backends`: the ``--backend-directory`` (NVIDIA's backend, or tei-export's compatibility backend).
* :mod:`.hazards`: repository settings that crash some pytorch_backend releases.
* :mod:`.repository_view`: what ``--model-repository`` points at.
* :mod:`.server`: the ``tritonserver`` process (:class:`~exporter.triton.server.TritonServer`).
"""
