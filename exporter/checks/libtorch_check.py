"""Run an exported token model (``model.pt`` or ``model.pt2``) in LibTorch alone (no Python in the loop) and compare it
with eager sentence-transformers: the C++ program of :mod:`.libtorch_runner` makes the calls Triton's LibTorch
backend makes, with the inputs typed and ordered as the model's config.pbtxt declares them. A graph text model (a
``TYPE_STRING`` input) goes to :func:`.libtorch_text_check.check_text_libtorch`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, TeiExportError
from ..tensor_types import BY_CONFIG, numpy_dtype
from .libtorch_report import LibtorchCheckReport, attach_checker, compare_rows, default_check_texts
from .libtorch_runner import LibtorchRunError, run_libtorch_cases
from .libtorch_text_check import check_text_libtorch, has_string_input
from .parity import tolerance_for

_TOKEN_TYPES = ("TYPE_INT64", "TYPE_INT32")


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
    if has_string_input(model_dir):
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
    if not attach_checker(report, cache_dir):
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
        tok = compare_rows(got, eager_cache[tuple(rows)])
        ref = compare_rows(got, reference[rows])
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
