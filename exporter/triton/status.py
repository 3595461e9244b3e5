"""`tei-export backend status`: which backend would serve what, and why, without starting or assembling anything."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BackendBuildError, ConfigError
from ..export.repository import models
from ..export.triton_config import read_config
from .backend_build import cached_builds
from .backend_source import SOURCE_ENV
from .backends import COMPAT_BACKEND_NAME, BackendSetup, resolve
from .binary import TritonBinary, find_tritonserver
from .hazards import interop_hazards
from .releases import branch_for


@dataclass
class BackendStatus:
    server: str
    branch: str
    chosen: BackendSetup
    builds: list[str] = field(default_factory=list)
    source: str = ""
    models: list[tuple[str, str]] = field(default_factory=list)  # (model, what serves it)
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"server:   {self.server}", f"branch:   {self.branch}",
                 f"sources:  {self.source}", "builds:   " + ("; ".join(self.builds) or "none in the cache"),
                 f"pytorch_libtorch models: {self.chosen.describe()}"]
        lines += [f"  {name}: {what}" for name, what in self.models]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _model_line(config_path: Path, chosen: BackendSetup) -> str:
    try:
        config = read_config(config_path)
    except ConfigError as err:
        return f"config does not parse ({err.problem})"
    if config.platform == "ensemble":
        return "ensemble"
    if config.platform == "torch_aoti":
        if chosen.aoti_backend is None:
            return "the server's own pytorch backend, if it has the torch_aoti path (Triton 26.03+)"
        return (f"compatibility backend, presented as backend \"{COMPAT_BACKEND_NAME}\" (tritonserver before 26.03 "
                "refuses platform torch_aoti, and NVIDIA's r24.10 backend has no pt2 path)")
    if config.platform == "pytorch_libtorch" or config.backend == "pytorch":
        return chosen.nvidia_label if not chosen.compat else "compatibility backend (model.py)"
    return f"{config.backend or config.platform} backend"


def backend_status(binary: str | os.PathLike | TritonBinary | None = None, choice: str | None = None,
                   repository: str | os.PathLike | None = None) -> BackendStatus:
    server = binary if isinstance(binary, TritonBinary) else find_tritonserver(binary)
    try:
        branch = branch_for(server.version)
    except BackendBuildError as err:
        branch = err.problem
    chosen = resolve(server, choice)
    status = BackendStatus(server.describe(), branch, chosen,
                           builds=[f"{b.branch} for tritonserver {b.server_version}, torch {b.torch_version} "
                                   f"({b.folder})" for b in cached_builds()],
                           source=os.environ.get(SOURCE_ENV) or f"${SOURCE_ENV} not set (git clone from GitHub)")
    if repository is not None:
        status.models = [(m.name, _model_line(m / "config.pbtxt", chosen)) for m in models(Path(repository))]
        status.warnings = interop_hazards(Path(repository))
    return status
