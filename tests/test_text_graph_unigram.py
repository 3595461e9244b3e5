"""The in-graph Unigram tokenizer (XLM-R, multilingual-e5, bge-m3 style) against the real ``tokenizers`` library, on
tokenizers built here: a Unigram model trained by SentencePiece itself with its ``nmt_nfkc`` rule, whose
``precompiled_charsmap`` is a real ``Precompiled`` normalizer, laid out as XLM-R's ``tokenizer.json`` lays it out
(fairseq's special ids, ``Replace(" {2,}")``, ``Metaspace``, ``<mask>`` stripping on its left): 0 mismatches on a
sample of every hostile-corpus group, for each prepend scheme, transformers' ``WhitespaceSplit`` + ``Metaspace``
layout, no normalizer and byte fallback; what it cannot reproduce is refused by name; and a random XLM-R exported
with ``--with-tokenizer`` gets the graph text model by default, equal to ``encode()``, also through NVIDIA's
backend."""
from __future__ import annotations

import io
import json
from functools import lru_cache

import pytest
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

import _triton_fixtures as fx
from exporter.errors import UnsupportedModelError
from exporter.text_graph.check import check_tokenizer, compare
from exporter.text_graph.families import derive, family_of

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # fairseq's order, as XLM-R's vocabulary starts


@lru_cache(maxsize=1)
def sentencepiece_unigram() -> tuple[list[tuple[str, float]], bytes]:
    """(pieces with scores, precompiled_charsmap) of a Unigram model SentencePiece trains here on local text."""
    import sentencepiece
    from transformers.convert_slow_tokenizer import import_protobuf

    from exporter.checks.corpus import stdlib_sentences

    text = list(stdlib_sentences()) + ["中文 naïve café Ελληνικά русский 😀 it's 1,234 ｆｕｌｌ ﬁ Ⅻ ① ㈱ ﾊﾝｶｸ"] * 5
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=out, vocab_size=2000,
                                             model_type="unigram", normalization_rule_name="nmt_nfkc",
                                             hard_vocab_limit=False, minloglevel=2, num_threads=1)
    proto = import_protobuf().ModelProto()
    proto.ParseFromString(out.getvalue())
    assert proto.normalizer_spec.precompiled_charsmap, "SentencePiece wrote no charsmap"
    return [(p.piece, p.score) for p in proto.pieces if p.type == 1], proto.normalizer_spec.precompiled_charsmap


def xlmr_tokenizer(byte_fallback: bool = False) -> Tokenizer:
    """XLM-R's tokenizer.json layout around the SentencePiece model trained here."""
    pieces, charsmap = sentencepiece_unigram()
    vocab = [(t, 0.0) for t in SPECIALS] + pieces + [("<mask>", 0.0)]
    if byte_fallback:
        vocab += [(f"<0x{b:02X}>", 0.0) for b in range(256)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=byte_fallback))
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(charsmap),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.add_special_tokens(SPECIALS + [AddedToken("<mask>", lstrip=True, normalized=False, special=True)])
    return tok


def _edited(edit) -> Tokenizer:
    data = json.loads(xlmr_tokenizer().to_str())
    edit(data)
    return Tokenizer.from_str(json.dumps(data))


def _scheme(name):
    def edit(data):
        data["pre_tokenizer"]["prepend_scheme"] = name
    return edit


def _no_split(data):
    data["pre_tokenizer"]["split"] = False


def _transformers_layout(data):  # XLMRobertaTokenizer(vocab=..., _spm_precompiled_charsmap=...) in transformers 5
    data["normalizer"] = data["normalizer"]["normalizers"][0]
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"},
                                                                   data["pre_tokenizer"]]}


def _no_normalizer(data):
    data["normalizer"] = None


VARIANTS = {"xlmr": None, "first": _scheme("first"), "never": _scheme("never"), "no_split": _no_split,
            "transformers_layout": _transformers_layout, "no_normalizer": _no_normalizer}


@pytest.mark.parametrize("name", VARIANTS)
def test_unigram_is_exact(name):
    tokenizer = _edited(VARIANTS[name]) if VARIANTS[name] else xlmr_tokenizer()
    assert family_of(tokenizer) == "unigram"
    report = check_tokenizer(tokenizer, 64, fraction=0.02, count=400, seed=3)
    assert report.total > 1000 and report.texts["invalid_utf8"] >= 20
    assert report.passed, report.table()


def test_byte_fallback_unknown_fusing_and_graphemes():
    """Characters outside the vocabulary (fused into one unknown piece, or written as <0xXX> bytes), the library's
    Precompiled quirks (a grapheme under 6 bytes reduced to its first key's value, CR LF, Hangul, emoji ZWJ), and
    texts around <mask>."""
    texts = ["ᚠᚢᚦ ᚨᚱ", "x ᚠ y ᚢᚦ", "ｅ\u0301 Ａ\u0308\u0323 \r\n ﬁ\u0301", "\u1100\u1161\u11a8\u0301 \u1161\u0301",
             "\u00a9\u200d\u00a9 \u00ae\u200d😀", "a<mask>b   <mask>  c", "  \t\u3000 ", "①②③ ㈱ Ⅻ ﾊﾝｶｸ",
             "\u0600x \u0915\u094d\u0958\u0301", "e\u0301\u0301\u0301", "x\u0340"]
    for tokenizer in (xlmr_tokenizer(), xlmr_tokenizer(byte_fallback=True)):
        report = compare(tokenizer, 64, {"fixed": texts})
        assert report.passed, report.table()
    ref = xlmr_tokenizer(byte_fallback=True)
    assert any(t.startswith("<0x") for t in ref.encode("ᚠᚢᚦ").tokens)  # byte fallback was exercised


def test_unsupported_unigram_parts_are_named():
    def nfkc(data):
        data["normalizer"] = {"type": "NFKC"}

    def replace_other(data):
        data["normalizer"]["normalizers"][1]["pattern"] = {"String": "  "}

    def bert_pre(data):
        data["pre_tokenizer"] = {"type": "BertPreTokenizer"}

    def whitespace_first(data):
        _transformers_layout(data)
        data["pre_tokenizer"]["pretokenizers"][1]["prepend_scheme"] = "first"

    def no_unk(data):
        data["model"]["unk_id"] = None

    def normalized_token(data):
        data["added_tokens"][-1]["normalized"] = True

    for edit, part in ((nfkc, "normalizer"), (replace_other, "normalizer"), (bert_pre, "pre_tokenizer"),
                       (whitespace_first, "prepend_scheme"), (no_unk, "model.unk_id"),
                       (normalized_token, "added_tokens")):
        with pytest.raises(UnsupportedModelError, match=part):
            derive(_edited(edit), 64)


XLMR_TEXTS = ["it's a test", "", "a <mask> in text " * 6, "中文 naïve 😀 ｆｕｌｌ ①", b"bad \xff bytes", "ᚠᚢᚦ"]


@pytest.fixture(scope="module")
def xlmr(tmp_path_factory):
    """A random XLM-R with the SentencePiece-trained Unigram tokenizer, exported with --with-tokenizer (default
    mode), and its encode() rows for XLMR_TEXTS (invalid bytes read as decode("utf-8", "replace"))."""
    from model_factory import random_model
    from transformers import PreTrainedTokenizerFast

    tmp = tmp_path_factory.mktemp("xlmr_unigram")
    src = tmp / "src"
    random_model(src, "xlm-roberta", max_seq_length=48)
    config = json.loads((src / "config.json").read_text())
    config.update(pad_token_id=1, bos_token_id=0, eos_token_id=2)  # fairseq's ids, as XLM-R's config has them
    (src / "config.json").write_text(json.dumps(config))
    PreTrainedTokenizerFast(tokenizer_object=xlmr_tokenizer(), bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>", mask_token="<mask>", cls_token="<s>",
                            sep_token="</s>").save_pretrained(src)
    return fx.export_with_graph_text(src, tmp / "repo", "xr", XLMR_TEXTS)


def test_xlmr_export_gets_the_graph_text_model(xlmr):
    fx.check_graph_text_export(*xlmr[:1], "xr", "unigram", XLMR_TEXTS, xlmr[1])


def test_xlmr_text_model_served_on_nvidia(binary, nvidia_backend, xlmr, tmp_path):
    """The same model through NVIDIA's backend: texts merged from concurrent requests, invalid bytes included."""
    import numpy as np

    repo, want = xlmr
    got = fx.served_text_rows(repo, "xr_text", XLMR_TEXTS, binary, tmp_path / "triton.log")
    assert np.abs(got - np.concatenate([want] * 3, axis=0)).max() <= 1e-5

