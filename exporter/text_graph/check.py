"""The graph tokenizer against the ``tokenizers`` library, text by text over the hostile corpus (``corpus``).

The reference is the model's own tokenizer with truncation at ``max_seq_len`` and no padding, as the text model
uses it; a byte string is given to it as ``bytes.decode("utf-8", "replace")``. The graph tokenizer is the scripted
module itself, called the way the backend calls it (raw bytes in a ``List[str]``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from . import corpus as hostile
from .families import build, derive
from .tables import AddedTables


@dataclass
class Mismatch:
    group: str
    text: str  # repr of the text, cut
    expected: list[int]
    got: list[int]


@dataclass
class TokenizerReport:
    texts: dict[str, int] = field(default_factory=dict)  # texts checked per group
    mismatches: list[Mismatch] = field(default_factory=list)
    derive_s: float = 0.0
    graph_s: float = 0.0
    library_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.texts.values())

    @property
    def passed(self) -> bool:
        return not self.mismatches

    def to_dict(self) -> dict:
        return {"texts": dict(self.texts), "total": self.total, "mismatches": len(self.mismatches),
                "first_mismatches": [m.__dict__ for m in self.mismatches[:10]], "derive_s": round(self.derive_s, 2),
                "graph_s": round(self.graph_s, 2), "library_s": round(self.library_s, 2)}

    def table(self) -> str:
        lines = [f"{name:18} {count:7d} texts" for name, count in self.texts.items()]
        lines.append(f"{'total':18} {self.total:7d} texts, {len(self.mismatches)} mismatches "
                     f"(graph {self.graph_s:.1f} s, library {self.library_s:.1f} s, tables {self.derive_s:.1f} s)")
        for m in self.mismatches[:10]:
            lines.append(f"  {m.group}: {m.text}\n    library {m.expected[:24]}\n    graph   {m.got[:24]}")
        return "\n".join(lines)


def reference_tokenizer(backend, max_seq_len: int):
    """A copy of ``backend`` truncating at ``max_seq_len`` and not padding, as the text model tokenizes."""
    from tokenizers import Tokenizer

    ref = Tokenizer.from_str(backend.to_str())
    ref.no_padding()
    ref.enable_truncation(max_length=max_seq_len)
    return ref


def compare(backend, max_seq_len: int, groups: dict, tables: AddedTables | None = None,
            report: TokenizerReport | None = None) -> TokenizerReport:
    """Every text of ``groups`` through the graph tokenizer and the library; mismatches recorded, none raised."""
    report = report or TokenizerReport()
    if tables is None:
        started = time.perf_counter()
        tables = derive(backend, max_seq_len)
        report.derive_s += time.perf_counter() - started
    graph = build(tables)
    ref = reference_tokenizer(backend, max_seq_len)
    for group, texts in groups.items():
        decoded = [t.decode("utf-8", "replace") if isinstance(t, bytes) else t for t in texts]
        started = time.perf_counter()
        expected = [e.ids for e in ref.encode_batch(decoded)]
        report.library_s += time.perf_counter() - started
        started = time.perf_counter()
        got = graph(list(texts))
        report.graph_s += time.perf_counter() - started
        report.texts[group] = report.texts.get(group, 0) + len(texts)
        report.mismatches += [Mismatch(group, repr(t)[:120], e, g) for t, e, g in zip(texts, expected, got) if e != g]
    return report


def check_tokenizer(backend, max_seq_len: int, fraction: float = 1.0, count: int = 2000, seed: int = 0
                    ) -> TokenizerReport:
    """The whole hostile corpus (or a seeded ``fraction`` of each group) for ``backend``, a ``tokenizers.Tokenizer``;
    raises UnsupportedModelError when the graph cannot reproduce it."""
    started = time.perf_counter()
    tables = derive(backend, max_seq_len)
    report = TokenizerReport(derive_s=time.perf_counter() - started)
    groups = hostile.corpus(tables.added, getattr(tables, "max_chars", 100), max_seq_len, count=count, seed=seed)
    if fraction < 1.0:
        groups = hostile.sample(groups, fraction, seed)
    return compare(backend, max_seq_len, groups, tables, report)


def check_model_tokenizer(source: str, fraction: float = 1.0, count: int = 2000, max_seq_len: int | None = None,
                          revision: str | None = None) -> TokenizerReport:
    """``tei-export check-tokenizer``: the tokenizer of model ``source`` (hub id or folder), truncating at the model's
    max_seq_len unless given."""
    from transformers import AutoTokenizer

    from ..export.spec import SpecOverrides, read_spec

    spec = read_spec(source, SpecOverrides(max_seq_len=max_seq_len), revision=revision)
    tokenizer = AutoTokenizer.from_pretrained(str(Path(spec.path)))
    return check_tokenizer(tokenizer.backend_tokenizer, spec.max_seq_len, fraction, count)
