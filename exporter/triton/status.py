"""`tei-export backend status`: which backend would serve what, and why, without starting or assembling anything."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BackendBuildError, ConfigError
from ..export.repository import models
from ..export.triton_config import read_config
from ..libtorch import installed_libtorch
from .built_backends import BuiltBackend, cached_builds
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
                 f"sources:  {self.source}", "builds:   " + ("\n          ".join(self.builds) or "none in the cache"),
                 f"pytorch_libtorch models: {self.chosen.describe()}"]
        lines += [f"  {name}: {what}" for name, what in self.models]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# Where scripts/backend.sh (the set-up) finds the release sources on this project's offline machines, relative to the
# checkout; `tei-export backend build` itself looks only at --source and $TEI_EXPORT_BACKEND_SOURCE, then git.
_CHECKOUT = Path(__file__).resolve().parents[2]


def set_up_vendor(branch: str, checkout: Path = _CHECKOUT) -> Path | None:
    folder = checkout.parent / "shared" / "vendor" / f"triton-{branch}"
    return folder if folder.is_dir() else None


def sources_line(branch: str, checkout: Path = _CHECKOUT) -> str:
    """Where a new build of ``branch`` would come from, for `backend build` and for the set-up, which differ when the
    set-up finds the vendored sources beside the checkout."""
    chosen = os.environ.get(SOURCE_ENV)
    if chosen:
        return f"{chosen} (${SOURCE_ENV}), for tei-export backend build and the set-up alike"
    vendor = set_up_vendor(branch, checkout)
    if vendor is None:
        return f"${SOURCE_ENV} not set: tei-export backend build clones from GitHub (--source FOLDER for offline)"
    return (f"{vendor} for the set-up (scripts/backend.sh exports it as ${SOURCE_ENV}); in this shell, where it is "
            f"not set, tei-export backend build clones from GitHub unless given --source {vendor}")


def build_line(build: BuiltBackend, binary: TritonBinary) -> str:
    """A cached build, where it came from, and whether this server and torch can use it (and why not)."""
    torch = installed_libtorch()
    misfits = [f"built for tritonserver {build.server_version}, this is {binary.version}"
               if build.server_version != binary.version else "",
               f"built against torch {build.torch_version} at {build.torch_lib}, this is {torch.version} at {torch.lib}"
               if (build.torch_version, build.torch_lib) != (torch.version, str(torch.lib)) else ""]
    misfit = "; ".join(m for m in misfits if m)
    return (f"{build.branch} for tritonserver {build.server_version}, torch {build.torch_version}, from {build.source} "
            f"({build.folder}): " + (f"not usable here ({misfit})" if misfit else "usable here"))


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
                           builds=[build_line(b, server) for b in cached_builds()],
                           source=sources_line(branch))
    if repository is not None:
        status.models = [(m.name, _model_line(m / "config.pbtxt", chosen)) for m in models(Path(repository))]
        status.warnings = interop_hazards(Path(repository))
    return status
