"""Build and run the C++ program that calls an exported model as Triton's LibTorch backend does (no Python in the
loop): ``cpp/libtorch_check.cpp``, compiled once against the LibTorch inside the installed ``torch`` wheel and cached
in tei-export's cache folder (:func:`exporter.cache.cache_root`), keyed by a hash of the source, the torch version and
the torch library folder.

For TorchScript (``model.pt``) it makes the backend's calls under ``c10::InferenceMode``: ``torch::jit::load``,
``forward()`` with inputs matched to its arguments by the backend's rules, refusing outputs the backend refuses (a
dict, a list, a scalar). For an AOTInductor package (``model.pt2``, ``platform: "torch_aoti"``):
``torch::inductor::AOTIModelPackageLoader`` and ``run()`` with the inputs ordered by their ``INPUT__<n>`` ordinal.
Strings reach forward() as one ``torch::List<std::string>`` of raw bytes, as NVIDIA's backend passes a
``TYPE_STRING`` input. What the outputs are compared with is :mod:`.libtorch_check`'s and
:mod:`.libtorch_text_check`'s business.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelSourceError, TeiExportError, VerificationError
from ..libtorch import find_compiler, installed_libtorch

SOURCE = Path(__file__).with_name("cpp") / "libtorch_check.cpp"
BINARY_PREFIX = "libtorch_check-"


# Exit codes of the C++ program (see the header of libtorch_check.cpp).
_EXIT_MEANING = {
    2: "bad arguments or files",
    3: "the module cannot be loaded",
    4: "the inputs do not fit forward()",
    5: "forward() failed",
    6: "forward() returned a type the Triton LibTorch backend refuses",
}
# The same codes for an AOTInductor package (no exit 6: run() returns a flat list of tensors).
_EXIT_MEANING_PT2 = {
    **_EXIT_MEANING,
    3: "the AOTInductor package cannot be loaded",
    4: "the inputs do not fit the package",
    5: "the package's run() failed",
}
EXIT_REFUSED_OUTPUT = 6

_NUMPY_TO_WIRE = {np.dtype(np.int64): "int64", np.dtype(np.int32): "int32", np.dtype(np.float32): "float32"}


class LibtorchRunError(VerificationError):
    """The C++ checker ran but LibTorch could not load or run the model, or refused its outputs."""

    def __init__(self, problem: str, exit_code: int, stderr: str, fix: str | None = None, where: str | None = None):
        super().__init__(problem, fix=fix, where=where)
        self.returncode = exit_code
        self.stderr = stderr

    @property
    def refused_output(self) -> bool:
        return self.returncode == EXIT_REFUSED_OUTPUT


# ----------------------------------------------------------------------------------------------------------- build


def cache_dir_default() -> Path:
    from ..cache import cache_root

    return cache_root()


def checker_key() -> str:
    """Hash of what the binary depends on: the C++ source, the torch version and the torch library folder."""
    torch_ = installed_libtorch()
    digest = hashlib.sha256()
    digest.update(SOURCE.read_bytes())
    digest.update(f"\0{torch_.version}\0{torch_.lib}\0{torch_.cxx11_abi}".encode())
    return digest.hexdigest()[:16]


def cached_checker(cache_dir: Path | None = None) -> Path | None:
    """The cached binary for this source and torch, or None when it has not been built yet."""
    path = (cache_dir or cache_dir_default()) / f"{BINARY_PREFIX}{checker_key()}"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def compile_command(compiler: str, output: Path) -> list[str]:
    torch_ = installed_libtorch()
    return [
        compiler, "-std=c++17", "-O1", f"-D_GLIBCXX_USE_CXX11_ABI={torch_.cxx11_abi}",
        str(SOURCE), "-o", str(output),
        *(f"-I{d}" for d in torch_.include_dirs),
        f"-L{torch_.lib}", f"-Wl,-rpath,{torch_.lib}", "-ltorch", "-ltorch_cpu", "-lc10",
    ]  # fmt: skip


def build_checker(cache_dir: Path | None = None) -> Path:
    """Compile ``libtorch_check.cpp`` once and return the cached binary (reused while source and torch are unchanged).

    Raises TeiExportError when there is no C++ compiler or the compile fails.
    """
    cache = Path(cache_dir) if cache_dir is not None else cache_dir_default()
    found = cached_checker(cache)
    if found:
        return found
    compiler = find_compiler()
    if compiler is None:
        cxx = os.environ.get("CXX")
        raise TeiExportError(
            f"no C++ compiler found to build the LibTorch checker ($CXX={cxx!r} is not an executable)"
            if cxx
            else "no C++ compiler found to build the LibTorch checker (neither g++ nor c++ is on PATH)",
            fix="install g++ (C++17 or newer), or point $CXX at a C++ compiler",
        )
    torch_ = installed_libtorch()
    if not (torch_.include / "torch" / "script.h").is_file() or not (torch_.lib / "libtorch.so").exists():
        raise TeiExportError(
            "the installed torch has no LibTorch headers or libraries",
            where=str(torch_.root),
            fix="install a torch wheel from PyPI or download.pytorch.org (they ship torch/include and torch/lib)",
        )
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{BINARY_PREFIX}{checker_key()}"
    # Compile to a private name, then rename: concurrent builders never see a half-written binary.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=cache)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        proc = subprocess.run(compile_command(compiler, tmp), capture_output=True, text=True)
        if proc.returncode != 0:
            errors = [line for line in proc.stderr.splitlines() if "error" in line]
            raise TeiExportError(
                f"compiling the LibTorch checker with {compiler} failed (exit {proc.returncode}): "
                + ("\n".join(errors[:10]) or proc.stderr[-2000:]),
                where=str(SOURCE),
                fix="use g++ 9 or newer (C++17), or set $CXX to such a compiler",
            )
        tmp.chmod(0o755)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# ------------------------------------------------------------------------------------------------------------- run


@dataclass
class LibtorchRun:
    """What one run of the C++ checker gave: per case, the outputs as float32, and their dtypes before the cast."""

    outputs: list[list[np.ndarray]]
    dtypes: list[list[str]]
    matching: str  # how inputs met the model's arguments: "name", "index" or "order" (as the backend would)


def _write_inputs(path: Path, cases: list[dict[str, np.ndarray]], input_order: list[str]) -> None:
    with open(path, "wb") as f:
        f.write(f"teicheck-in 1 {len(cases)}\n".encode())
        for case in cases:
            missing = [name for name in input_order if name not in case]
            if missing:
                raise ValueError(f"inputs {missing} are in input_order but not given (given: {sorted(case)})")
            f.write(f"case {len(input_order)}\n".encode())
            for name in input_order:
                if not name or re.search(r"\s", name):
                    raise ValueError(f"input name {name!r} is empty or has whitespace")
                if isinstance(case[name], list):  # strings: a TYPE_STRING input, one List[str] in forward()
                    f.write(f"{name} bytes 1 {len(case[name])}\n".encode())
                    for value in case[name]:
                        raw = value if isinstance(value, bytes) else value.encode("utf-8")
                        f.write(f"{len(raw)}\n".encode() + raw)
                    continue
                array = np.asarray(case[name])
                wire = _NUMPY_TO_WIRE.get(array.dtype)
                if wire is None:
                    raise ValueError(f"input {name!r} has dtype {array.dtype}; expected int64, int32 or float32")
                array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
                f.write(f"{name} {wire} {array.ndim} {' '.join(map(str, array.shape))}".rstrip().encode() + b"\n")
                f.write(array.tobytes(order="C"))


def _read_outputs(path: Path) -> LibtorchRun:
    data = path.read_bytes()
    pos = 0

    def line() -> list[str]:
        nonlocal pos
        end = data.index(b"\n", pos)
        words = data[pos:end].decode().split()
        pos = end + 1
        return words

    magic, version, n_cases, matching = line()
    if magic != "teicheck-out" or version != "1":
        raise VerificationError("the LibTorch checker wrote an output file in an unknown format", where=str(path))
    outputs, dtypes = [], []
    for _ in range(int(n_cases)):
        word, n_outputs = line()
        case_outputs, case_dtypes = [], []
        for _ in range(int(n_outputs)):
            _, dtype, ndim, *dims = line()
            shape = tuple(int(d) for d in dims[: int(ndim)])
            count = int(np.prod(shape, dtype=np.int64))
            array = np.frombuffer(data, dtype="<f4", count=count, offset=pos).reshape(shape)
            pos += count * 4
            case_outputs.append(array.astype(np.float32))
            case_dtypes.append(dtype)
        outputs.append(case_outputs)
        dtypes.append(case_dtypes)
    return LibtorchRun(outputs, dtypes, matching)


def run_libtorch_cases(
    model_pt: Path,
    cases: list[dict[str, np.ndarray | list]],
    input_order: list[str],
    *,
    checker: Path | None = None,
    timeout: float = 600.0,
    pt2: bool | None = None,
) -> LibtorchRun:
    """Load ``model_pt`` once in LibTorch and run every case in turn through it (shapes may differ per case).

    ``input_order`` is the order Triton lists the inputs in (the config.pbtxt order). For TorchScript the C++ side
    matches them to forward()'s arguments by name, by ``__<index>`` suffix, or by that order, as the LibTorch
    backend does. For an AOTInductor package (``pt2``; by default when the file ends in ``.pt2``) every input must
    be named ``INPUT__<n>`` and is the package's n-th input, as on Triton's ``torch_aoti`` platform. An input given
    as a list of ``str``/``bytes`` (not an array) reaches forward() as one ``List[str]`` of those bytes.
    Raises LibtorchRunError when LibTorch fails or refuses the outputs.
    """
    model_pt = Path(model_pt)
    pt2 = model_pt.suffix == ".pt2" if pt2 is None else pt2
    if not model_pt.is_file():
        raise ModelSourceError(f"{'AOTInductor package' if pt2 else 'TorchScript file'} not found",
                               where=str(model_pt))  # fmt: skip
    binary = checker or build_checker()
    with tempfile.TemporaryDirectory(prefix="tei-libtorch-") as tmp:
        inputs, outputs = Path(tmp) / "inputs.bin", Path(tmp) / "outputs.bin"
        _write_inputs(inputs, cases, list(input_order))
        command = [str(binary), *(["--pt2"] if pt2 else []), str(model_pt), str(inputs), str(outputs)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            message = proc.stderr.strip().removeprefix("libtorch_check: ") or "(no message)"
            if proc.returncode < 0:
                meaning = f"killed by signal {-proc.returncode}"
            else:
                meanings = _EXIT_MEANING_PT2 if pt2 else _EXIT_MEANING
                meaning = meanings.get(proc.returncode, f"exit status {proc.returncode}")
            raise LibtorchRunError(f"LibTorch run failed ({meaning}): {message}", proc.returncode, proc.stderr,
                                   where=str(model_pt))  # fmt: skip
        return _read_outputs(outputs)


def run_libtorch_model(
    model_pt: Path,
    inputs: dict[str, np.ndarray],
    input_order: list[str],
    *,
    checker: Path | None = None,
    pt2: bool | None = None,
) -> list[np.ndarray]:
    """Run ``model_pt`` once in LibTorch on ``inputs`` and return its output tensor(s) as float32 arrays."""
    return run_libtorch_cases(model_pt, [inputs], input_order, checker=checker, pt2=pt2).outputs[0]
