"""A graph text model (``<name>_text``, its tokenizer inside ``model.pt``) run in LibTorch alone: forward() called with
one ``List[str]`` of raw bytes, as NVIDIA's backend calls it with the strings of every merged request, each row
compared with ``SentenceTransformer.encode``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import TeiExportError
from ..tensor_types import BY_CONFIG
from .libtorch_report import LibtorchCheckReport, attach_checker, compare_rows, default_check_texts
from .libtorch_runner import LibtorchRunError, run_libtorch_cases
from .parity import tolerance_for

# Beside the corpus texts: what one merged batch may hold that a tokenizer must not throw on.
TEXT_EDGE_CASES = ("", "   ", "[CLS] literal [SEP] tokens [MASK]", "naïve café 中文字 Ελληνικά", "👍🏽 👩‍👩‍👧‍👦",
                   b"caf\xe9 \xff\xfe not UTF-8 \xe2\x82", "word " * 300)


def has_string_input(model_dir: Path) -> bool:
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
    if not attach_checker(report, cache_dir):
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
        diff, cos = compare_rows(got, expected[rows])
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
