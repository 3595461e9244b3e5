"""Repository settings that crash some releases of NVIDIA's LibTorch backend, found before a server starts.

``INTER_OP_THREAD_COUNT``: pytorch_backend releases before 25.11 call torch's ``set_num_interop_threads`` for every
model that sets it, and torch allows that call once per process. A second call throws, uncaught, and the whole server
aborts ("cannot set number of interop threads after parallel work has started or set_num_interop_threads called").
Checked on r24.10 here: two models that set it abort the server at start-up; one model that sets it loads, and aborts
the server when it is loaded again (a reload after its config changed, in poll or explicit model-control mode).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..export.repository import models
from ..export.triton_config import read_config

INTEROP = "INTER_OP_THREAD_COUNT"
_ABORT = "cannot set number of interop threads"


def _interop_setting(config_path: Path) -> int:
    """The model's INTER_OP_THREAD_COUNT when the LibTorch backend would apply it (> 0), else 0."""
    try:
        config = read_config(config_path)
    except ConfigError:  # Triton reports unparseable configs itself
        return 0
    if config.platform != "pytorch_libtorch" and not (config.backend == "pytorch" and not config.platform):
        return 0
    value = config.parameters[INTEROP].string_value if INTEROP in config.parameters else ""
    try:
        return max(int(value), 0)
    except ValueError:
        return 0


def interop_hazards(repo: Path, names: list[str] | None = None) -> list[str]:
    """Warnings for the models of ``repo`` (or ``names`` of them) that set INTER_OP_THREAD_COUNT."""
    found = [m for m in models(Path(repo)) if (names is None or m.name in names)]
    setters = [m.name for m in found if _interop_setting(m / "config.pbtxt")]
    fix = (f"remove the {INTEROP} parameter from every config.pbtxt (tei-export trace writes it only when asked with "
           "--inter-op-threads), or keep it in one model and never reload that model on those releases")
    if len(setters) >= 2:
        return [f"models {', '.join(setters)} all set {INTEROP}: NVIDIA's LibTorch backend before release 25.11 "
                f"aborts the whole server when the second of them loads (\"{_ABORT} after parallel work has "
                f"started\"); fix: {fix}"]
    if setters:
        return [f"model {setters[0]} sets {INTEROP}: NVIDIA's LibTorch backend before release 25.11 aborts the "
                f"whole server when that model is loaded a second time (a reload in poll or explicit model-control "
                f"mode), and when another model that sets it is added; fix: {fix}"]
    return []


def explains_abort(log: str) -> str | None:
    """A fix for a server log that ends in the interop-thread abort, else None."""
    if _ABORT not in log:
        return None
    return (f"the server aborted because more than one model (or a reload) set {INTEROP}, which NVIDIA's LibTorch "
            f"backend before release 25.11 allows once per process: remove {INTEROP} from every config.pbtxt but "
            "one (tei-export trace no longer writes it unless asked)")
