"""The in-graph WordPiece tokenizer (exporter.text_graph) against the real ``tokenizers`` library, id for id.

MiniLM's own tokenizer, plus variants of it made through the library (cased without clean_text, added tokens that
strip the spaces beside them or overlap, a small per-word limit, another pre-tokenizer and post-processor), each on
a seeded sample of every group of the hostile corpus: every code point in context, scripts, controls, emoji,
added-token strings, long words, truncation, empty and whitespace-only texts, invalid UTF-8. 0 mismatches.
``tei-export check-tokenizer`` runs the whole corpus.
"""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from tokenizers import AddedToken, Tokenizer

from exporter.errors import UnsupportedModelError
from exporter.text_graph import corpus as hostile
from exporter.text_graph.check import check_tokenizer, compare, reference_tokenizer
from exporter.text_graph.tables import derive_tables
from exporter.text_graph.wordpiece import build_tokenizer

MAX_SEQ_LEN = 128


@pytest.fixture(scope="module")
def minilm_json(minilm) -> str:
    return Tokenizer.from_file(f"{minilm}/tokenizer.json").to_str()


def _variant(base: str, edit) -> Tokenizer:
    data = json.loads(base)
    edit(data)
    return Tokenizer.from_str(json.dumps(data))


def _cased(data):  # no lowercasing, accents kept, Chinese characters not split, controls and U+FFFD kept
    data["normalizer"].update(lowercase=False, strip_accents=False, handle_chinese_chars=False, clean_text=False)


def _stripping(data):  # MPNet's <mask> strips the spaces on its left; a token that strips on its right
    for token in data["added_tokens"]:
        if token["content"] == "[MASK]":
            token["lstrip"] = True
        if token["content"] == "[SEP]":
            token["rstrip"] = True


def _small_words(data):
    data["model"]["max_input_chars_per_word"] = 5


def _whitespace_split_bert_processing(data):
    data["pre_tokenizer"] = {"type": "WhitespaceSplit"}
    data["post_processor"] = {"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]}


VARIANTS = {"cased": _cased, "stripping": _stripping, "small_words": _small_words,
            "whitespace_split": _whitespace_split_bert_processing}


def _assert_exact(report):
    assert report.total > 1000 and set(report.texts) == {
        "every_code_point", "mixed_scripts", "controls", "emoji", "added_tokens", "long_words", "truncating",
        "whitespace", "invalid_utf8", "fuzz"}
    assert report.passed, report.table()


def test_minilm_sample_is_exact(minilm_json):
    report = check_tokenizer(Tokenizer.from_str(minilm_json), 256, fraction=0.05, count=1000)
    _assert_exact(report)
    assert report.texts["every_code_point"] > 2000


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_are_exact(minilm_json, variant):
    tokenizer = _variant(minilm_json, VARIANTS[variant])
    _assert_exact(check_tokenizer(tokenizer, MAX_SEQ_LEN, fraction=0.02, count=500, seed=1))


def test_added_tokens_leftmost_longest(minilm_json):
    """Added tokens that overlap (one the prefix of another) and hold a space: matched as the library matches."""
    tokenizer = Tokenizer.from_str(minilm_json)
    tokenizer.add_tokens([AddedToken("[MASK]x", normalized=False), AddedToken("new york", normalized=False),
                          AddedToken("yo", normalized=False, lstrip=True, rstrip=True)])
    tables = derive_tables(tokenizer, MAX_SEQ_LEN)
    texts = ["[MASK]x", "[MASK]xx [MASK] x", "in new york, new yorker", "a  yo  b", "yoyo", "[MASK]xnew york",
             "new  york", "NEW YORK", "x[MASK]", "  yo", "yo  "]
    rng_texts = hostile.added_tokens(__import__("random").Random(3), 300, tables.added)
    report = compare(tokenizer, MAX_SEQ_LEN, {"fixed": texts, "generated": rng_texts}, tables)
    assert report.passed, report.table()


def test_invalid_utf8_reads_as_python_replace(minilm_json):
    """Cased without clean_text and with U+FFFD in the vocabulary, each replacement character is a token, so one
    replacement per ill-formed subsequence (Python's rule), not one per byte or none, shows in the ids."""
    def cased_with_replacement(data):  # U+FFFD in the vocabulary: each replacement character is a token
        _cased(data)
        size = len(data["model"]["vocab"])
        data["model"]["vocab"].update({"\ufffd": size, "##\ufffd": size + 1})

    tokenizer = reference_tokenizer(_variant(minilm_json, cased_with_replacement), MAX_SEQ_LEN)
    graph = build_tokenizer(derive_tables(tokenizer, MAX_SEQ_LEN))
    raw = [b"a\xffb", b"a\xe2\x82b", b"a\xe2\x82\xffb", b"\xf0\x9f\x98 x", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90"]
    for data in raw:
        assert graph.encode(data) == tokenizer.encode(data.decode("utf-8", "replace")).ids, data
    assert len(graph.encode(b"a\xe2\x82\xffb")) == len(graph.encode(b"a\xe2\x82b")) + 1 == 6
    assert graph([b"\xff", "x"]) == [tokenizer.encode("\ufffd").ids, tokenizer.encode("x").ids]


def test_empty_whitespace_and_truncation(minilm_json):
    ref = Tokenizer.from_str(minilm_json)
    ref.no_padding()
    ref.enable_truncation(max_length=16)
    graph = build_tokenizer(derive_tables(ref, 16))
    for text in ["", " ", "\t\n\u3000", "word " * 40, "[SEP] " * 40, "x" * 14 + " y" * 14]:
        assert graph.encode(text) == ref.encode(text).ids, text
        assert len(graph.encode(text)) <= 16
    assert graph.encode("") == [101, 102]


def _unigram() -> Tokenizer:
    from tokenizers import models

    return Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -2.0)], 0))


def test_unsupported_parts_are_named(minilm_json):
    from transformers import PreTrainedTokenizerFast

    from exporter.export.text_models import tokenizer_mode

    with pytest.raises(UnsupportedModelError, match="not WordPiece.*model.type.*--tokenizer python"):
        derive_tables(_unigram(), 64)
    with pytest.raises(UnsupportedModelError, match="normalizer.type"):
        derive_tables(_variant(minilm_json, lambda d: d.update(normalizer={"type": "NFKC"})), 64)
    with pytest.raises(UnsupportedModelError, match="single_word"):
        derive_tables(_variant(minilm_json, lambda d: d["added_tokens"][1].update(single_word=True)), 64)
    hf_unigram = PreTrainedTokenizerFast(tokenizer_object=_unigram())
    with pytest.raises(UnsupportedModelError, match="not Metaspace.*pre_tokenizer"):
        tokenizer_mode("graph", hf_unigram)
    assert tokenizer_mode(None, hf_unigram) == "python"
    assert tokenizer_mode(None, PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(minilm_json))) == "graph"


def test_check_tokenizer_cli(minilm):
    from exporter.cli import main

    result = CliRunner().invoke(main, ["check-tokenizer", minilm, "--fraction", "0.005", "--count", "200", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["mismatches"] == 0 and report["total"] > 200
