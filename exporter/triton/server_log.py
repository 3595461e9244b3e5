"""Reading tritonserver's log: the error lines worth showing a user, per model or overall."""
from __future__ import annotations

import re

# lines every CPU-only start prints, which explain nothing
_NOISE = ("CudaDriverHelper has not been initialized", "Unable to allocate pinned system memory",
          "CUDA driver version is insufficient")


def last_lines(log: str, limit: int = 5) -> str:
    """The last log records, without the option/model tables."""
    lines = [line.strip() for line in log.splitlines() if line.strip() and not line.startswith(("+", "|", "$ "))]
    return " | ".join(lines[-limit:]) or "the log is empty"


def first_paragraph(text: str) -> str:
    """A load error without the Python stub's ``At:`` traceback and without the C++ stack that torch's errors carry
    in NVIDIA's backend ("Exception raised from ... frame #0: ..."): the message stays, the addresses go."""
    text = text.split("\n\nAt:", 1)[0]
    text = re.split(r"\nException raised from ", text, maxsplit=1)[0]
    return text.strip().rstrip(";").strip()


def error_summary(text: str) -> str:
    """A request error in one line: its first line, and when a TorchScript traceback follows (NVIDIA's backend and
    the compatibility backend both pass torch's whole message on), the exception it ends with, e.g. "PyTorch
    execute failure: The following operation failed in the TorchScript interpreter. ... RuntimeError: index out of
    range in self"."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    cause = next((line for line in reversed(lines[1:]) if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line)), None)
    return f"{lines[0]} ... {cause}" if cause else lines[0]


_STUB = re.compile(r"Stub process '([^']+)' is not healthy")
_ENSEMBLE = re.compile(r"in ensemble '([^']+)'")


def unhealthy_stub(text: str) -> tuple[str, str, str | None] | None:
    """(instance, model, ensemble or None) from the Python backend's "Stub process '<instance>' is not healthy"
    request error, or None. The model is the instance name without Triton's "_<group>_<index>" suffix."""
    match = _STUB.search(text)
    if match is None:
        return None
    instance = match.group(1)
    ensemble = _ENSEMBLE.search(text)
    return instance, re.sub(r"_\d+_\d+$", "", instance), ensemble.group(1) if ensemble else None


def model_error_lines(log: str, name: str) -> str:
    """The server's error lines that name model ``name``: quoted, as Triton writes it for a model it loads, else
    bare, as its repository manager writes it when it refuses a model before loading it ("ensemble x_text allows
    maximum batch size 4, but it contains model x which ..."), which leaves the model with no state and no reason."""
    quoted = (f"'{name}'", f"'{name}:", f"'{name}/")
    bare = re.compile(rf"(?<![\w'./-]){re.escape(name)}(?![\w'/-])")
    for matches in (lambda line: any(q in line for q in quoted), bare.search):
        picked: list[str] = []
        for line in log.splitlines():
            if re.match(r"^E\d{4} ", line) and matches(line):
                text = line.split("] ", 1)[-1].strip().strip('"')
                if text not in picked:
                    picked.append(text)
        if picked:
            return " | ".join(picked)
    return ""


def error_lines(log: str, limit: int = 12) -> str:
    """The server's error lines (``E1122 ...`` records, ``error: ...``, exceptions, C++ ``what():``), most recent
    last."""
    picked = [
        line.strip()
        for line in log.splitlines()
        if not any(noise in line for noise in _NOISE)
        and (
            re.match(r"^E\d{4} ", line)
            or line.lower().startswith("error:")
            or "Traceback" in line
            or line.strip().startswith(("what():", "terminate called"))
            or re.search(r"(Error|Exception):", line)
        )
    ]
    return " | ".join(picked[-limit:])


def lost_stub_message(model: str, instance: str, pid: int | None = None, ensemble: str | None = None) -> str:
    """Which model failed and why, when its Python backend stub process is gone (killed, crashed)."""
    step = f" (a step of ensemble '{ensemble}')" if ensemble else ""
    process = f", pid {pid}" if pid else ""
    return (f"model '{model}'{step} failed: its Python backend stub process (instance {instance}{process}) is gone; "
            f"Triton 2.51 does not restart it and still reports the model READY, but fails every request to it "
            f"(\"Stub process '{instance}' is not healthy\")")
