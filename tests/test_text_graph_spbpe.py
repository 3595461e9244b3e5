"""The in-graph SentencePiece-style BPE tokenizer (Gemma, EmbeddingGemma) against the real ``tokenizers`` library, on
tokenizers built here: a BPE model trained by SentencePiece itself with byte fallback, laid out by transformers' own
``GemmaTokenizer`` (``Replace(" " -> "▁")``, ``Split(" ", merged_with_previous)``, ``fuse_unk``, ``<bos>`` template)
from the merges transformers' converter derives: 0 mismatches on a sample of every hostile-corpus group, for Gemma's
layout and variants (Llama 2's ``Prepend``, missing byte tokens, no byte fallback, unknowns not fused,
``ignore_merges``); what it cannot reproduce is refused by name; and a random gemma3_text (EmbeddingGemma's shape)
with that tokenizer, exported with ``--with-tokenizer``, gets the graph text model by default, equal to ``encode()``."""
from __future__ import annotations

import io
import json
from functools import lru_cache

import pytest
from tokenizers import Tokenizer

import _triton_fixtures as fx
from exporter.errors import UnsupportedModelError
from exporter.text_graph.check import check_tokenizer, compare
from exporter.text_graph.families import derive, family_of


@lru_cache(maxsize=1)
def gemma_tokenizer_json() -> str:
    return gemma_tokenizer().backend_tokenizer.to_str()


def gemma_tokenizer():
    """Gemma's tokenizer (transformers' GemmaTokenizer) around a SentencePiece BPE model (byte fallback) trained here
    on local text."""
    import sentencepiece
    from transformers import GemmaTokenizer
    from transformers.convert_slow_tokenizer import import_protobuf
    from transformers.tokenization_utils_base import generate_merges

    from exporter.checks.corpus import stdlib_sentences

    text = list(stdlib_sentences()) + ["中文 naïve café Ελληνικά русский 😀 it's 1,234 \t tab  two   spaces"] * 5
    out = io.BytesIO()
    # Gemma's ids: <pad> 0, <eos> 1, <bos> 2, <unk> 3, then the 256 byte pieces and the learned ones.
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=out, vocab_size=1500, model_type="bpe", byte_fallback=True,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        add_dummy_prefix=False, allow_whitespace_only_pieces=True, split_digits=True, hard_vocab_limit=False,
        minloglevel=2, num_threads=1)
    proto = import_protobuf().ModelProto()
    proto.ParseFromString(out.getvalue())
    scores = [(p.piece, p.score) for p in proto.pieces]
    vocab = {piece: i for i, (piece, _) in enumerate(scores)}
    merges = generate_merges(vocab, scores)
    return GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True,
                          additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])


def _gemma(edit=None) -> Tokenizer:
    data = json.loads(gemma_tokenizer_json())
    if edit is not None:
        edit(data)
    return Tokenizer.from_str(json.dumps(data))


def _llama_prepend(data):  # Llama 2's layout: Prepend("▁") then Replace, no pre-tokenizer
    data["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                              data["normalizer"]]}
    data["pre_tokenizer"] = None


def _missing_bytes(data):  # some byte tokens renamed away: those characters fall back to fused <unk>
    vocab = data["model"]["vocab"]
    for b in (0xE4, 0xF0, 0x80):
        vocab[f"<0x{b:02X}>x"] = vocab.pop(f"<0x{b:02X}>")


def _no_byte_fallback(data):
    data["model"]["byte_fallback"] = False


def _unk_not_fused(data):
    data["model"]["byte_fallback"] = False
    data["model"]["fuse_unk"] = False


def _ignore_merges(data):
    data["model"]["ignore_merges"] = True


def _new_pieces(data, merges: list[list[str]], front: bool):
    """Merges (and their pieces, with ids after every existing one) added before or after the trained ones."""
    vocab = data["model"]["vocab"]
    top = max([*vocab.values(), *(t["id"] for t in data["added_tokens"])])
    for left, right in merges:
        if left + right not in vocab:
            top += 1
            vocab[left + right] = top
    data["model"]["merges"] = merges + data["model"]["merges"] if front else data["model"]["merges"] + merges


def _space_runs(data):  # Gemma's whitespace-only pieces: runs of spaces merge, words stay apart
    _new_pieces(data, [["\u2581", "\u2581"], ["\u2581\u2581", "\u2581"], ["\u2581\u2581", "\u2581\u2581"]],
                front=False)


def _crossing(data):  # merges joining a word to the space after it: those words are merged with what follows
    _new_pieces(data, [["e", "\u2581"], ["s", "\u2581"], ["e\u2581", "t"]], front=True)


def _crossing_no_unk(data):  # and characters outside the vocabulary dropped (no unknown token, no byte fallback)
    _crossing(data)
    data["model"].update(unk_token=None, byte_fallback=False)


VARIANTS = {"gemma": None, "llama_prepend": _llama_prepend, "missing_bytes": _missing_bytes,
            "no_byte_fallback": _no_byte_fallback, "unk_not_fused": _unk_not_fused, "ignore_merges": _ignore_merges,
            "space_runs": _space_runs, "crossing": _crossing, "crossing_no_unk": _crossing_no_unk}


def test_layout_is_gemmas():
    data = json.loads(gemma_tokenizer_json())
    assert data["model"]["type"] == "BPE" and data["model"]["byte_fallback"] and data["model"]["fuse_unk"]
    assert data["normalizer"]["type"] == "Replace" and data["pre_tokenizer"]["type"] == "Split"
    ref = _gemma()
    assert ref.encode("hi").tokens[0] == "<bos>"
    assert "<0xE1>" in ref.encode("ᚠ").tokens  # a character outside the vocabulary: byte fallback


@pytest.mark.parametrize("name", VARIANTS)
def test_sentencepiece_bpe_is_exact(name):
    tokenizer = _gemma(VARIANTS[name])
    assert family_of(tokenizer) == "sentencepiece_bpe"
    tables = derive(tokenizer, 64)
    assert tables.chunked and sorted(tables.joins_space) == (["e", "s"] if "crossing" in name else [])
    report = check_tokenizer(tokenizer, 64, fraction=0.1 if name == "gemma" else 0.05, count=1000, seed=5)
    assert report.total > 2000 and report.texts["invalid_utf8"] >= 20
    assert report.passed, report.table()


def test_fallback_unknowns_and_specials():
    """Byte fallback, fused and unfused unknowns beside byte tokens (the library writes a pending unknown after
    them), special-token strings, spaces and tabs, truncation and the empty text."""
    texts = ["ᚠᚢᚦ ᚨᚱ", "x ᚠ y ᚢᚦ", "中ᚠ中 😀ᚠ", "a<start_of_turn>b  <end_of_turn><bos>", "  \t\u3000 ", "",
             "word " * 80, "\u2581 \u2581\u2581 a\u2581", b"bad \xff \xe4\xb8 bytes", "\x00\x01 \x7f"]
    for name in VARIANTS:
        report = compare(_gemma(VARIANTS[name]), 48, {"fixed": texts})
        assert report.passed, (name, report.table())
    assert "<unk>" in _gemma(_missing_bytes).encode("ᚠ中").tokens  # the unknown path was exercised


def test_unsupported_parts_are_named():
    def dropout(data):
        data["model"]["dropout"] = 0.1

    def nfkc(data):
        data["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFKC"}, data["normalizer"]]}

    def metaspace(data):
        data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                                 "split": True}

    def split_without_replace(data):
        data["normalizer"] = None

    def prepend_space(data):  # Prepend(" ") after the Replace: Split(" ") would split on it
        data["normalizer"] = {"type": "Sequence", "normalizers": [data["normalizer"],
                                                                  {"type": "Prepend", "prepend": " "}]}

    def unk_outside(data):
        data["model"]["unk_token"] = "<nope>"

    def normalized_token(data):
        data["added_tokens"][-1]["normalized"] = True

    for edit, part in ((dropout, "model.dropout"), (nfkc, "normalizer"), (metaspace, "pre_tokenizer"),
                       (split_without_replace, "pre_tokenizer"), (unk_outside, "model.unk_token"), (prepend_space, "normalizer"),
                       (normalized_token, "added_tokens")):
        with pytest.raises(UnsupportedModelError, match=part):
            derive(_gemma(edit), 64)


GEMMA_TEXTS = ["it's a test", "", "a <start_of_turn> in text " * 6, "中文 naïve 😀 ᚠᚢᚦ", b"bad \xff bytes", "  two  spaces"]



@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    """A random gemma3_text (mean pooling, two Dense layers, Normalize) with the Gemma tokenizer built here, exported
    with --with-tokenizer (default mode), and its encode() rows for GEMMA_TEXTS (invalid bytes read as
    decode("utf-8", "replace"))."""
    from family_models import family_model

    tmp = tmp_path_factory.mktemp("gemma3_spbpe")
    src = family_model(tmp / "src", "gemma3_text", max_seq_len=48, tokenizer=gemma_tokenizer())
    return fx.export_with_graph_text(src, tmp / "repo", "g", GEMMA_TEXTS)


def test_gemma3_export_gets_the_graph_text_model(gemma3):
    """The default --with-tokenizer writes only the token model and the graph text model, whose rows equal
    encode()."""
    fx.check_graph_text_export(*gemma3[:1], "g", "sentencepiece_bpe", GEMMA_TEXTS, gemma3[1])


def test_gemma3_text_model_served_on_nvidia(binary, nvidia_backend, gemma3, tmp_path):
    """The same model through NVIDIA's backend: texts merged from concurrent requests, invalid bytes included."""
    import numpy as np

    repo, want = gemma3
    got = fx.served_text_rows(repo, "g_text", GEMMA_TEXTS, binary, tmp_path / "triton.log")
    assert np.abs(got - np.concatenate([want] * 3, axis=0)).max() <= 1e-5
