"""What a LibTorch check found (:class:`LibtorchCheckReport`), and what the token check (:mod:`.libtorch_check`) and
the text model's check (:mod:`.libtorch_text_check`) share: the checker attached or the check skipped, the texts, the
row comparison."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TeiExportError
from ..libtorch import find_compiler
from .libtorch_runner import build_checker
from .parity import tolerance_for

# fp32 tolerance: the C++ runtime must reproduce eager PyTorch to within rounding. Other precisions use the
# exporter's own bound for the export's dtype and device (parity.tolerance_for).
DEFAULT_ATOL = tolerance_for("float32").max_abs
DEFAULT_MIN_COSINE = tolerance_for("float32").min_cosine


@dataclass
class LibtorchCheckReport:
    """The result of :func:`.libtorch_check.check_libtorch` (and of the text check it hands a text model to).
    ``ok`` is False when skipped: a skipped check never counts as passed."""

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


def attach_checker(report: "LibtorchCheckReport", cache_dir: Path | None) -> bool:
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


def compare_rows(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
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
