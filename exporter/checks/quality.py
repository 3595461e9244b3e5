"""The quality gate of a lossy export: its embeddings against the fp32 model's on many varied texts.

Per-row cosine (min and mean) says how far each embedding moved; the top-10 nearest-neighbour overlap says whether
retrieval still finds the same documents, which is what users of an embedding model notice. A shape-grid parity
check of random tokens cannot say either: these figures come from real text (the verify corpus, or the user's own).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UnsupportedModelError
from .corpus import CorpusItem, build_corpus

MIN_TEXTS = 1000  # the gate's corpus size: fewer texts make min cosine and neighbour overlap too easy to pass
NEIGHBOURS = 10
ROW_INDEPENDENCE_BOUND = 1e-6
# Defaults per precision: int8 moves embeddings visibly but keeps retrieval; bf16 barely moves them.
DEFAULT_BOUNDS = {"int8": (0.99, 0.9), "bf16": (0.999, None)}


@dataclass(frozen=True)
class GateBounds:
    min_cosine: float
    min_overlap: float | None = None  # mean top-10 overlap; None: measured and recorded, not bounded

    def describe(self) -> str:
        overlap = "" if self.min_overlap is None else f", mean top-{NEIGHBOURS} overlap >= {self.min_overlap:g}"
        return f"min cosine >= {self.min_cosine:g}{overlap}"


def default_bounds(precision: str, min_cosine: float | None = None, min_overlap: float | None = None) -> GateBounds:
    """The gate of ``precision`` with the user's overrides (``--min-cosine``, ``--min-overlap``)."""
    cos, overlap = DEFAULT_BOUNDS[precision]
    return GateBounds(cos if min_cosine is None else min_cosine, overlap if min_overlap is None else min_overlap)


@dataclass
class QualityReport:
    precision: str
    bounds: GateBounds
    texts: int
    min_cosine: float
    mean_cosine: float
    mean_overlap: float
    row_independence: float  # max |diff| of a text alone vs inside a batch of others (same padded length)
    padding_sensitivity: float  # max |diff| of a text alone, unpadded, vs inside a padded batch (reported)
    corpus: str  # "verify corpus (N docstrings + edge cases)" or the calibration file's name
    worst: list[dict] = field(default_factory=list)  # the lowest-cosine texts: kind, cosine, text (shortened)
    layers: list[dict] = field(default_factory=list)  # int8: per-layer relative error, worst first (on failure)
    extra: dict = field(default_factory=dict)  # how the model was made (quantized layers, smoothing)

    @property
    def failures(self) -> list[str]:
        failed = []
        if not self.min_cosine >= self.bounds.min_cosine:
            failed.append(f"min cosine {self.min_cosine:.5f} < {self.bounds.min_cosine:g}")
        if self.bounds.min_overlap is not None and not self.mean_overlap >= self.bounds.min_overlap:
            failed.append(f"mean top-{NEIGHBOURS} overlap {self.mean_overlap:.4f} < {self.bounds.min_overlap:g}")
        if not self.row_independence <= ROW_INDEPENDENCE_BOUND:
            failed.append(f"a row alone and inside a batch differ by {self.row_independence:.2e} "
                          f"> {ROW_INDEPENDENCE_BOUND:g}")
        return failed

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {"precision": self.precision, "passed": self.passed, "bounds": asdict(self.bounds),
                "texts": self.texts, "corpus": self.corpus, "min_cosine": self.min_cosine,
                "mean_cosine": self.mean_cosine, f"mean_top{NEIGHBOURS}_overlap": self.mean_overlap,
                "row_independence_max_abs_diff": self.row_independence,
                "padding_max_abs_diff": self.padding_sensitivity, "worst_texts": self.worst[:5], **self.extra}

    def summary(self) -> str:
        return (f"{self.precision} vs fp32 on {self.texts} texts: min cosine {self.min_cosine:.5f}, mean "
                f"{self.mean_cosine:.6f}, mean top-{NEIGHBOURS} overlap {self.mean_overlap:.4f}; gate "
                f"{self.bounds.describe()}")

    def table(self) -> str:
        lines = [self.summary()]
        lines += [f"failed: {f}" for f in self.failures]
        if self.worst:
            lines.append("texts furthest from fp32:")
            lines += [f"  {w['cosine']:.5f}  {w['kind']:<10} {w['text']!r}" for w in self.worst]
        if self.layers:
            lines.append("layers by relative error of their int8 output (keep the worst in fp32 with "
                         "--fp32-layers NAME):")
            lines += [f"  {entry['error']:.4f}  {entry['layer']}" for entry in self.layers]
        return "\n".join(lines)


def gate_corpus(tokenizer, max_seq_len: int, calibration: Path | None = None) -> tuple[list[CorpusItem], str]:
    """The texts the gate measures on: a calibration file (one text per line), else the verify corpus with
    ``MIN_TEXTS`` docstring sentences and every edge case."""
    if calibration is None:
        items = build_corpus(MIN_TEXTS, tokenizer=tokenizer, max_seq_len=max_seq_len)
        return items, f"verify corpus ({MIN_TEXTS} docstring sentences + {len(items) - MIN_TEXTS} edge cases)"
    try:
        lines = Path(calibration).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UnsupportedModelError(f"cannot read the calibration texts: {err}", where=str(calibration),
                                    fix="give a UTF-8 text file with one text per line") from None
    texts = list(dict.fromkeys(line for line in lines if line.strip()))
    if len(texts) < MIN_TEXTS:
        raise UnsupportedModelError(f"the calibration file has {len(texts)} distinct texts; the gate needs at least "
                                    f"{MIN_TEXTS}", where=str(calibration),
                                    fix=f"add texts (one per line) up to {MIN_TEXTS}, or drop --calibration to use "
                                        "the verify corpus")
    return [CorpusItem(t, "docstring") for t in texts], f"{Path(calibration).name} ({len(texts)} texts)"


def token_batches(tokenizer, texts: list[str], input_names, max_seq_len: int, batch: int = 32
                  ) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    """Padded batches of ``texts`` sorted by length (less padding), and the order that puts rows back."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches = []
    for start in range(0, len(order), batch):
        chunk = [texts[i] for i in order[start:start + batch]]
        features = tokenizer(chunk, padding=True, truncation=True, max_length=max_seq_len, return_tensors="pt")
        batches.append({n: features[n] if n in features else torch.zeros_like(features["input_ids"])
                        for n in input_names})
    return batches, order


def embed(module, batches: list[dict[str, torch.Tensor]], order: list[int], input_names) -> torch.Tensor:
    """Rows of ``module`` (called with the model's inputs in order) for the batches, back in text order."""
    with torch.inference_mode():
        rows = torch.cat([_first(module(*(b[n] for n in input_names))).float() for b in batches])
    out = torch.empty_like(rows)
    out[torch.tensor(order)] = rows
    return out


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def cosines(expected: torch.Tensor, actual: torch.Tensor) -> np.ndarray:
    a = torch.nn.functional.normalize(expected.double(), dim=1)
    b = torch.nn.functional.normalize(actual.double(), dim=1)
    return (a * b).sum(dim=1).numpy()


def neighbour_overlap(expected: torch.Tensor, actual: torch.Tensor, k: int = NEIGHBOURS) -> np.ndarray:
    """Per text, the share of its ``k`` nearest neighbours (cosine, itself excluded) that both models agree on."""
    def top(x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.normalize(x.double(), dim=1)
        sims = x @ x.T
        sims.fill_diagonal_(-float("inf"))
        return sims.topk(min(k, len(x) - 1), dim=1).indices

    a, b = top(expected), top(actual)
    return np.array([len(set(x.tolist()) & set(y.tolist())) / max(a.shape[1], 1) for x, y in zip(a, b)])


def row_independence(module, tokenizer, texts: list[str], input_names, max_seq_len: int) -> tuple[float, float]:
    """(batch, padding): max |diff| of each text's row inside one padded batch of all ``texts`` against the same
    row sent alone at the same padded length (what Triton's dynamic batcher merges: equal lengths), and against
    the text sent alone without padding.

    The first must be ~0: a row's scales come from its own values. The second is not bounded here: a different
    padded length changes the fp32 attention's summation order in the last bits, and an int8 or bf16 rounding
    step can turn that into a change at the level of the quantisation noise; it is reported.
    """
    batch, order = token_batches(tokenizer, texts, input_names, max_seq_len, batch=len(texts))
    together = embed(module, batch, order, input_names)
    same, padding = 0.0, 0.0
    for position, i in enumerate(order):
        row = {n: t[position:position + 1] for n, t in batch[0].items()}
        alone = embed(module, [row], [0], input_names)
        same = max(same, float((alone[0] - together[i]).abs().max()))
        unpadded, _ = token_batches(tokenizer, [texts[i]], input_names, max_seq_len, batch=1)
        alone = embed(module, unpadded, [0], input_names)
        padding = max(padding, float((alone[0] - together[i]).abs().max()))
    return same, padding


def measure(precision: str, bounds: GateBounds, items: list[CorpusItem], expected: torch.Tensor,
            actual: torch.Tensor, independence: tuple[float, float], corpus: str, worst: int = 8) -> QualityReport:
    """The gate's figures for ``actual`` (low precision) against ``expected`` (fp32) rows of ``items``."""
    cos = cosines(expected, actual)
    if not np.all(np.isfinite(actual.numpy())):
        cos = np.where(np.isfinite(actual.numpy()).all(axis=1), cos, -1.0)
    overlap = neighbour_overlap(expected, actual)
    lowest = np.argsort(cos)[:worst]
    return QualityReport(
        precision=precision, bounds=bounds, texts=len(items), min_cosine=float(cos.min()),
        mean_cosine=float(cos.mean()), mean_overlap=float(overlap.mean()), row_independence=independence[0],
        padding_sensitivity=independence[1],
        corpus=corpus,
        worst=[{"cosine": float(cos[i]), "kind": items[i].kind, "text": items[i].text[:70]} for i in lowest])
