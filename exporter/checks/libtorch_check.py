"""Run an exported model.pt or model.pt2 through LibTorch alone (no Python in the loop) and compare it with eager.

A small C++ program (``cpp/libtorch_check.cpp``) makes the calls Triton's pytorch backend makes, under
``c10::InferenceMode``. For TorchScript (``model.pt``): ``torch::jit::load``, ``forward()`` with inputs matched to its
arguments by the backend's rules, refusing outputs the backend refuses (a dict, a list, a scalar). For an
AOTInductor package (``model.pt2``, ``platform: "torch_aoti"``): ``torch::inductor::AOTIModelPackageLoader`` and
``run()`` with the inputs ordered by their ``INPUT__<n>`` ordinal. A graph text model (``<name>_text``, a
``TYPE_STRING`` input) gets its texts as one ``torch::List<std::string>`` of raw bytes, as NVIDIA's backend passes the
strings of every merged request (:func:`check_text_libtorch`). It is compiled once against the
LibTorch that ships inside the installed ``torch`` wheel and cached in tei-export's cache folder
(:func:`exporter.cache.cache_root`), keyed by a hash of the source, the torch version and the torch library folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelSourceError, TeiExportError, VerificationError
from ..libtorch import find_compiler, installed_libtorch
from ..tensor_types import BY_CONFIG, numpy_dtype
from .parity import tolerance_for

SOURCE = Path(__file__).with_name("cpp") / "libtorch_check.cpp"
BINARY_PREFIX = "libtorch_check-"

# fp32 tolerance: the C++ runtime must reproduce eager PyTorch to within rounding. Other precisions use the
# exporter's own bound for the export's dtype and device (parity.tolerance_for).
DEFAULT_ATOL = tolerance_for("float32").max_abs
DEFAULT_MIN_COSINE = tolerance_for("float32").min_cosine

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
_TOKEN_TYPES = ("TYPE_INT64", "TYPE_INT32")


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


# ----------------------------------------------------------------------------------------------------------- check


@dataclass
class LibtorchCheckReport:
    """The result of :func:`check_libtorch`. ``ok`` is False when skipped: a skipped check never counts as passed."""

    model_name: str
    ok: bool
    skipped: bool = False
    skip_reason: str | None = None
    max_abs_diff: float | None = None  # vs SentenceTransformer.encode on the same texts
    min_cosine: float | None = None
    same_tokens_max_abs_diff: float | None = None  # vs the eager model on the very same token tensors
    same_tokens_min_cosine: float | None = None  # (None for a text model: its tokens are made inside the graph)
    cases: int = 0  # forward() (or, for a pt2 package, run()) calls made in LibTorch
    rows: int = 0  # embeddings compared
    binary: Path | None = None
    version: int | None = None
    input_matching: str | None = None  # "name", "index" or "order"
    error: str | None = None  # why the check failed, when it did
    atol: float | None = DEFAULT_ATOL  # None: max|diff| reported, not bounded (half precision)
    min_cosine_required: float = DEFAULT_MIN_COSINE
    details: list[str] = field(default_factory=list)
    format: str = "torchscript"  # "torchscript" (model.pt) or "pt2" (an AOTInductor model.pt2 package)
    kind: str = "tokens"  # "tokens", or "text": a graph text model called with a List[str]

    def summary(self) -> str:
        if self.skipped:
            return f"{self.model_name}: SKIPPED ({self.skip_reason})"
        if self.error and self.max_abs_diff is None:
            return f"{self.model_name}: FAILED: {self.error}"
        verdict = "ok" if self.ok else "FAILED"
        where, call = ("LibTorch (AOTInductor package)", "run()") if self.format == "pt2" else ("LibTorch", "forward()")
        if self.kind == "text":
            return (f"{self.model_name} v{self.version}: {verdict} in {where}: {self.cases} {call} calls with a "
                    f"List[str], {self.rows} rows, max|diff| {self.max_abs_diff:.3g}, min cosine "
                    f"{self.min_cosine:.7f} against encode()" + (f": {self.error}" if self.error else ""))
        text = (
            f"{self.model_name} v{self.version}: {verdict} in {where}: {self.cases} {call} calls, "
            f"{self.rows} rows, "
            f"max|diff| {self.max_abs_diff:.3g} (same tokens {self.same_tokens_max_abs_diff:.3g}), "
            f"min cosine {self.min_cosine:.7f} (same tokens {self.same_tokens_min_cosine:.7f}); "
            f"inputs matched by {self.input_matching}"
        )
        return text if not self.error else f"{text}: {self.error}"


@dataclass(frozen=True)
class _Repository:
    name: str
    config: object  # tritonclient.grpc.model_config_pb2.ModelConfig
    version: int
    model_pt: Path
    metadata: dict
    tokenizer_dir: Path

    @property
    def format(self) -> str:
        """The version's format: tei_export.json ``format``, except that a ``.pt2`` file is always "pt2"."""
        return "pt2" if self.model_pt.suffix == ".pt2" else str(self.metadata.get("format") or "torchscript")


def _load_repository(model_dir: Path) -> _Repository:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config_path = model_dir / "config.pbtxt"
    if not config_path.is_file():
        raise TeiExportError("no config.pbtxt", where=str(model_dir), fix="point at a model folder of a repository")
    try:
        config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    except text_format.ParseError as err:
        raise ConfigError(f"config.pbtxt does not parse as a Triton ModelConfig: {err}", where=str(config_path),
                          fix="export the model again, or correct the file") from None  # fmt: skip
    filename = config.default_model_filename or "model.pt"
    versions = sorted(
        (int(p.name), p)
        for p in model_dir.iterdir()
        if p.is_dir() and re.fullmatch(r"[1-9][0-9]*", p.name) and (p / filename).is_file()
    )
    if not versions:
        raise TeiExportError(f"no numeric version folder holds {filename}", where=str(model_dir),
                             fix="export the model again, or add <version>/model.pt")  # fmt: skip
    version, folder = versions[-1]
    meta_path = folder / "tei_export.json"
    try:
        metadata = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise TeiExportError("no tei_export.json next to the model", where=str(folder),
                             fix="export the model with tei-export, which writes it") from None  # fmt: skip
    except json.JSONDecodeError as err:
        raise TeiExportError(f"tei_export.json is not valid JSON: {err}", where=str(meta_path)) from None
    missing = [key for key in ("source", "normalize", "max_seq_len") if key not in metadata]
    if missing:
        raise TeiExportError(f"tei_export.json lacks {', '.join(missing)}", where=str(meta_path),
                             fix="export the model again with this version of tei-export")  # fmt: skip
    tokenizer_dir = folder / str(metadata.get("tokenizer_dir") or "tokenizer")
    if not tokenizer_dir.is_dir():
        raise TeiExportError("no tokenizer folder next to the model", where=str(folder))
    name = config.name or model_dir.name
    return _Repository(name, config, version, folder / filename, metadata, tokenizer_dir)


def _tokenizer_name(repo: _Repository, config_name: str) -> str:
    """The tokenizer output a config input carries: ``INPUT__<n>`` is tei_export.json's n-th ``input_names`` entry
    (how pt2 exports name their inputs); any other name is itself, less a ``__<index>`` suffix."""
    from ..export.pt2 import ordinal
    from ..tokens import feature_names

    names = repo.metadata.get("input_names")
    if ordinal(config_name) is not None and names:
        try:
            return feature_names([config_name], names)[0]
        except ValueError as err:
            raise TeiExportError(str(err), where=f"{repo.name}/config.pbtxt",
                                 fix="export the model again so config.pbtxt and tei_export.json agree") from None
    return re.sub(r"__[0-9]+$", "", config_name)


def _input_arrays(repo: _Repository, encoding: dict) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays Triton would receive for each config input (typed as the config says), and the config order."""
    from tritonclient.grpc import model_config_pb2

    arrays, order = {}, []
    declared = repo.metadata.get("input_dtype")
    for inp in repo.config.input:
        type_name = model_config_pb2.DataType.Name(inp.data_type)
        if type_name not in _TOKEN_TYPES:
            raise TeiExportError(f"input '{inp.name}' has data_type {type_name}; token inputs are TYPE_INT64 or "
                                 "TYPE_INT32", where=f"{repo.name}/config.pbtxt")  # fmt: skip
        dtype = numpy_dtype(type_name)
        if declared and np.dtype(dtype).name != declared:
            raise TeiExportError(
                f"input '{inp.name}' is {type_name} in config.pbtxt but tei_export.json says input_dtype {declared}",
                where=f"{repo.name}/config.pbtxt", fix="export the model again so both agree",
            )
        base = _tokenizer_name(repo, inp.name)
        if base in encoding:
            value = encoding[base]
        elif base == "token_type_ids":
            value = np.zeros_like(encoding["input_ids"])
        else:
            raise TeiExportError(f"config input '{inp.name}' is not something the tokenizer produces "
                                 f"({', '.join(sorted(encoding))})", where=f"{repo.name}/config.pbtxt")  # fmt: skip
        arrays[inp.name] = np.ascontiguousarray(np.asarray(value).astype(dtype))
        order.append(inp.name)
    return arrays, order


def _output_index(repo: _Repository) -> int:
    wanted = repo.metadata.get("output_name") or (repo.metadata.get("output_names") or [None])[0]
    names = [out.name for out in repo.config.output]
    return names.index(wanted) if wanted in names else 0


def _attach_checker(report: "LibtorchCheckReport", cache_dir: Path | None) -> bool:
    """Build (or find) the C++ checker into ``report.binary``; False, with the report skipped, where this machine
    has no C++ compiler to build it (any other build failure is raised)."""
    try:
        report.binary = build_checker(cache_dir)
    except TeiExportError as err:
        if find_compiler() is None:
            report.skipped, report.skip_reason = True, str(err)
            return False
        raise
    return True


def default_check_texts(tokenizer, max_seq_len: int) -> list[str]:
    """A handful of corpus texts of mixed lengths: sentences, edge cases, one at and one far over the max length."""
    from .corpus import build_corpus

    return [item.text for item in build_corpus(6, seed=0, tokenizer=tokenizer, max_seq_len=max_seq_len)]


def _compare(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """Max absolute difference and the lowest row cosine (1 when both rows are zero, 0 when only one is)."""
    got, want = got.astype(np.float64), want.astype(np.float64)
    if got.size == 0:
        return 0.0, 1.0
    max_abs = float(np.abs(got - want).max())
    n_got, n_want = np.linalg.norm(got, axis=1), np.linalg.norm(want, axis=1)
    both = (n_got > 0) & (n_want > 0)
    cos = np.where(both, (got * want).sum(axis=1) / np.where(both, n_got * n_want, 1.0), 0.0)
    cos = np.where((n_got == 0) & (n_want == 0), 1.0, cos)
    return max_abs, float(cos.min())


def check_libtorch(
    model_dir: Path,
    texts: list[str] | None = None,
    *,
    cache_dir: Path | None = None,
    atol: float | None = ...,  # type: ignore[assignment]  # ...: the bound for the export's precision
    min_cosine: float | None = None,
) -> LibtorchCheckReport:
    """Run ``<model_dir>/<latest version>/model.pt`` (or ``model.pt2``) in LibTorch (C++) and compare it with eager
    sentence-transformers.

    A TorchScript ``model.pt`` is loaded with ``torch::jit::load`` and called through forward(); an AOTInductor
    ``model.pt2`` (tei_export.json ``format: "pt2"``) with ``AOTIModelPackageLoader`` and called through run(), its
    ``INPUT__<n>`` inputs carrying tei_export.json's n-th ``input_names`` entry, as Triton's ``torch_aoti`` does.
    LibTorch runs several calls in one loaded module, as a server would: all texts in one padded batch,
    the shorter texts in a batch of their own, every text alone (no padding), then that shorter batch again
    (after the profiling executor has specialised and optimised the graph). Every row is compared with the eager
    model on the same token tensors and with ``SentenceTransformer.encode(texts)``, sentence-transformers built with the
    export's own module chain and max length (:func:`exporter.export.reader.spec_from_metadata`).

    Bounds default to the export's precision (tei_export.json ``dtype``): fp32 max|diff| <= 1e-5 and cosine
    >= 0.99999 per row; pass ``atol``/``min_cosine`` to override (``atol=None``: report max|diff|, do not bound it).
    Texts are encoded without any prompt: prompts are the client's business, the model sees what it is sent.

    A graph text model (a ``TYPE_STRING`` input) is checked by :func:`check_text_libtorch`.

    Returns a report; ``skipped=True`` (and ``ok=False``) when no C++ compiler is available, when the version's
    format is neither TorchScript nor pt2, or when it takes ragged batches (not checked in C++ yet). A repository
    that cannot be read raises TeiExportError; a model LibTorch cannot run or whose outputs Triton would refuse gives
    ``ok=False`` with ``error`` saying why.
    """
    model_dir = Path(model_dir)
    if _string_inputs(model_dir):
        return check_text_libtorch(model_dir, texts, cache_dir=cache_dir, atol=atol, min_cosine=min_cosine)
    repo = _load_repository(model_dir)
    bound = tolerance_for(str(repo.metadata.get("dtype") or "float32"), str(repo.metadata.get("device") or "cpu"))
    atol = bound.max_abs if atol is ... else atol
    min_cosine = bound.min_cosine if min_cosine is None else min_cosine
    report = LibtorchCheckReport(model_name=repo.name, ok=False, version=repo.version, atol=atol,
                                 min_cosine_required=min_cosine, format=repo.format)  # fmt: skip
    pt2 = repo.format == "pt2"
    if repo.format not in ("torchscript", "pt2"):
        report.skipped = True
        report.skip_reason = (f"version {repo.version} is {repo.format} ({repo.model_pt.name}); the LibTorch check "
                              "runs TorchScript (model.pt) and AOTInductor (model.pt2) only")  # fmt: skip
        return report
    if repo.metadata.get("batching") == "ragged":
        report.skipped = True
        report.skip_reason = (f"version {repo.version} takes ragged batches (input_ids + offsets, tei_export.json "
                              "batching: ragged); the LibTorch check feeds padded ones only")
        return report
    if not _attach_checker(report, cache_dir):
        return report

    from transformers import AutoTokenizer

    max_seq_len = int(repo.metadata["max_seq_len"])
    tokenizer = AutoTokenizer.from_pretrained(str(repo.tokenizer_dir))
    texts = list(texts) if texts is not None else default_check_texts(tokenizer, max_seq_len)
    if not texts:
        raise ValueError("texts is empty")

    def encode(batch: list[str]) -> dict[str, np.ndarray]:
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_seq_len, return_tensors="np")
        return {key: np.asarray(value) for key, value in enc.items()}

    # The cases: (row -> text index, encoding).
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_seq_len)["input_ids"]]
    everything = list(range(len(texts)))
    short = [i for i in everything if lengths[i] < max(lengths)]
    # A batch is run again last: by then the profiling executor has specialised and optimised the graph.
    again = short if len(short) > 1 else everything
    plan = [everything] + ([short] if len(short) > 1 else []) + [[i] for i in everything] + [again]
    encodings = [encode([texts[i] for i in rows]) for rows in plan]
    cases, input_order = [], []
    for enc in encodings:
        arrays, input_order = _input_arrays(repo, enc)
        cases.append(arrays)

    try:
        run = run_libtorch_cases(repo.model_pt, cases, input_order, checker=report.binary, pt2=pt2)
    except LibtorchRunError as err:
        report.error = str(err)
        return report
    report.cases, report.input_matching = len(cases), run.matching

    index = _output_index(repo)
    config_out = repo.config.output[index] if repo.config.output else None
    problems: list[str] = []
    if config_out is not None:
        from tritonclient.grpc import model_config_pb2

        want_type = model_config_pb2.DataType.Name(config_out.data_type)
        got_type = run.dtypes[0][index] if len(run.dtypes[0]) > index else None
        if got_type is not None and BY_CONFIG[want_type].c10 != got_type:
            problems.append(f"output '{config_out.name}' is {got_type} in LibTorch but config.pbtxt says "
                            f"{want_type}; the backend needs them to match exactly")  # fmt: skip
    if len(run.outputs[0]) != max(len(repo.config.output), 1):
        problems.append(f"{'the package' if pt2 else 'forward()'} returned {len(run.outputs[0])} tensors but "
                        f"config.pbtxt declares {len(repo.config.output)} outputs")  # fmt: skip

    # Eager references, sentence-transformers built with the export's own overrides (pooling, normalize, dims, max
    # length): the same token tensors through its modules, and encode() on the texts.
    import torch

    from ..export.reader import spec_from_metadata
    from ..export.reference import load_reference

    st = load_reference(spec_from_metadata(repo.metadata))
    reference = np.asarray(st.encode(texts), dtype=np.float32)

    worst_enc, worst_tok = (0.0, 1.0), (0.0, 1.0)
    eager_cache: dict[tuple[int, ...], np.ndarray] = {}
    for case_no, (rows, enc, outputs) in enumerate(zip(plan, encodings, run.outputs)):
        got = outputs[index] if len(outputs) > index else np.empty((0,))
        if got.ndim != 2 or got.shape[0] != len(rows) or got.shape[1] != reference.shape[1]:
            problems.append(f"case {case_no}: LibTorch output has shape {tuple(got.shape)}, expected "
                            f"({len(rows)}, {reference.shape[1]})")  # fmt: skip
            continue
        if tuple(rows) not in eager_cache:
            features = {key: torch.from_numpy(value.astype(np.int64)) for key, value in enc.items()}
            eager_cache[tuple(rows)] = st.embed(features).numpy()
        tok = _compare(got, eager_cache[tuple(rows)])
        ref = _compare(got, reference[rows])
        worst_tok = (max(worst_tok[0], tok[0]), min(worst_tok[1], tok[1]))
        worst_enc = (max(worst_enc[0], ref[0]), min(worst_enc[1], ref[1]))
        report.rows += len(rows)
        report.details.append(f"case {case_no}: batch {len(rows)} x {enc['input_ids'].shape[1]} tokens: "
                              f"max|diff| {ref[0]:.3g}, min cos {ref[1]:.8f}")  # fmt: skip

    report.max_abs_diff, report.min_cosine = worst_enc
    report.same_tokens_max_abs_diff, report.same_tokens_min_cosine = worst_tok
    for label, (diff, cos) in (("encode()", worst_enc), ("the same token tensors", worst_tok)):
        if (atol is not None and diff > atol) or cos < min_cosine:
            allowed = "not bounded" if atol is None else f"allowed {atol:g}"
            problems.append(f"LibTorch differs from eager on {label}: max|diff| {diff:.3g} ({allowed}), "
                            f"min cosine {cos:.7f} (required {min_cosine})")  # fmt: skip
    report.error = "; ".join(problems) or None
    report.ok = not problems
    return report


# ------------------------------------------------------------------------------------------------------ text model
# Beside the corpus texts: what one merged batch may hold that a tokenizer must not throw on.
TEXT_EDGE_CASES = ("", "   ", "[CLS] literal [SEP] tokens [MASK]", "naïve café 中文字 Ελληνικά", "👍🏽 👩‍👩‍👧‍👦",
                   b"caf\xe9 \xff\xfe not UTF-8 \xe2\x82", "word " * 300)


def _string_inputs(model_dir: Path) -> bool:
    """Whether the model's config.pbtxt declares a TYPE_STRING input (a text model); False when it cannot be read
    (the token check then says why)."""
    from ..export.triton_config import read_config

    try:
        config = read_config(Path(model_dir) / "config.pbtxt")
    except TeiExportError:
        return False
    from tritonclient.grpc import model_config_pb2

    return any(t.data_type == model_config_pb2.TYPE_STRING for t in config.input)


def check_text_libtorch(
    model_dir: Path,
    texts: list | None = None,
    *,
    cache_dir: Path | None = None,
    atol: float | None = ...,  # type: ignore[assignment]  # ...: the bound for the export's precision
    min_cosine: float | None = None,
) -> LibtorchCheckReport:
    """Run a graph text model (``<name>_text``, its tokenizer inside ``model.pt``) in LibTorch (C++), calling forward()
    with one ``List[str]`` of raw bytes as NVIDIA's backend does with the strings of every merged request, and compare
    each row with ``SentenceTransformer.encode`` told the text model's prompt (:meth:`ExportedModel.text_rows`).

    ``texts`` (``str`` or ``bytes``; default: corpus sentences and :data:`TEXT_EDGE_CASES`, invalid UTF-8 included,
    which is expected as ``bytes.decode("utf-8", "replace")``) are sent all in one call, a shorter list, each alone,
    then all again (after the profiling executor has optimised the graph). A Python text model (ensemble or Python
    backend) is skipped: LibTorch does not run it."""
    from ..export.reader import resolve_name
    from ..export.triton_config import read_config

    model_dir = Path(model_dir)
    target, is_text = resolve_name(model_dir.parent, model_dir.name)
    config = read_config(model_dir / "config.pbtxt")
    meta = target.metadata
    bound = tolerance_for(meta.dtype, meta.device)
    atol = bound.max_abs if atol is ... else atol
    min_cosine = bound.min_cosine if min_cosine is None else min_cosine
    report = LibtorchCheckReport(model_name=config.name or model_dir.name, ok=False, atol=atol,
                                 min_cosine_required=min_cosine, kind="text")
    if not is_text or config.platform != "pytorch_libtorch":
        report.skipped = True
        report.skip_reason = (f"{model_dir.name} is not a graph text model (platform "
                              f"{config.platform or config.backend!r}); LibTorch runs the TorchScript text model of "
                              "--tokenizer graph only")
        return report
    from ..export.repository import latest_version_dir

    version_dir = latest_version_dir(model_dir)
    report.version = int(version_dir.name)
    if not _attach_checker(report, cache_dir):
        return report
    texts = list(texts) if texts is not None else \
        default_check_texts(target.tokenizer(), meta.max_seq_len) + list(TEXT_EDGE_CASES)
    if not texts:
        raise ValueError("texts is empty")
    everything = list(range(len(texts)))
    short = everything[: max(2, len(texts) // 2)]
    plan = [everything, short] + [[i] for i in everything] + [everything]
    name = config.input[0].name
    try:
        run = run_libtorch_cases(version_dir / (config.default_model_filename or "model.pt"),
                                 [{name: [texts[i] for i in rows]} for rows in plan], [name],
                                 checker=report.binary, pt2=False)
    except LibtorchRunError as err:
        report.error = str(err)
        return report
    report.cases, report.input_matching = len(plan), run.matching
    decoded = [t.decode("utf-8", "replace") if isinstance(t, bytes) else t for t in texts]
    expected = np.asarray(target.text_rows(target.reference(), decoded), dtype=np.float32)
    problems: list[str] = []
    if config.output and run.dtypes[0]:
        from tritonclient.grpc import model_config_pb2

        want_type = model_config_pb2.DataType.Name(config.output[0].data_type)
        if BY_CONFIG[want_type].c10 != run.dtypes[0][0]:
            problems.append(f"output '{config.output[0].name}' is {run.dtypes[0][0]} in LibTorch but config.pbtxt "
                            f"says {want_type}; the backend needs them to match exactly")
    worst = (0.0, 1.0)
    for case_no, (rows, outputs) in enumerate(zip(plan, run.outputs)):
        got = outputs[0] if outputs else np.empty((0,))
        if len(outputs) != 1 or got.ndim != 2 or got.shape != (len(rows), expected.shape[1]):
            problems.append(f"case {case_no}: forward() returned {len(outputs)} tensor(s), the first of shape "
                            f"{tuple(got.shape)}; expected one ({len(rows)}, {expected.shape[1]})")
            continue
        diff, cos = _compare(got, expected[rows])
        worst = (max(worst[0], diff), min(worst[1], cos))
        report.rows += len(rows)
        report.details.append(f"case {case_no}: {len(rows)} texts in one List[str]: max|diff| {diff:.3g}, "
                              f"min cos {cos:.8f}")
    report.max_abs_diff, report.min_cosine = worst
    if (atol is not None and worst[0] > atol) or worst[1] < min_cosine:
        allowed = "not bounded" if atol is None else f"allowed {atol:g}"
        problems.append(f"LibTorch differs from encode(): max|diff| {worst[0]:.3g} ({allowed}), min cosine "
                        f"{worst[1]:.7f} (required {min_cosine})")
    report.error = "; ".join(problems) or None
    report.ok = not problems
    return report
