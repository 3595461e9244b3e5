"""The in-graph byte-level BPE tokenizer (RoBERTa / ModernBERT style) against the real ``tokenizers`` library, on
tokenizers trained here with the library (no download): 0 mismatches on a sample of every hostile-corpus group, with
and without a prefix space, a ``<mask>`` that strips the spaces on its left (RoBERTa's), and ``ignore_merges``;
what it cannot reproduce is refused by name; and a random RoBERTa exported with ``--with-tokenizer`` gets the graph
text model by default, equal to ``encode()``."""
from __future__ import annotations

import json

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

import _triton_fixtures as fx
from exporter.errors import UnsupportedModelError
from exporter.text_graph.check import check_tokenizer
from exporter.text_graph.families import derive, family_of

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]  # <pad> first: id 0, the random models' pad_token_id


def trained_bpe(add_prefix_space: bool = False) -> Tokenizer:
    from exporter.checks.corpus import stdlib_sentences

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(stdlib_sentences()) + ["中文 naïve café Ελληνικά русский 😀 it's 1,234"] * 5,
                            trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 1))
    return tok


@pytest.fixture(scope="module")
def bpe_json() -> str:
    return trained_bpe().to_str()


def _edited(base: str, edit) -> Tokenizer:
    data = json.loads(base)
    edit(data)
    return Tokenizer.from_str(json.dumps(data))


def _prefix_space(data):
    data["pre_tokenizer"]["add_prefix_space"] = True


def _mask_lstrip(data):  # RoBERTa's <mask>
    for token in data["added_tokens"]:
        if token["content"] == "<mask>":
            token["lstrip"] = True


def _ignore_merges(data):  # Llama-3 style: a piece in the vocabulary is one token
    data["model"]["ignore_merges"] = True


@pytest.mark.parametrize("edit", [None, _prefix_space, _mask_lstrip, _ignore_merges],
                         ids=["plain", "prefix_space", "mask_lstrip", "ignore_merges"])
def test_bytelevel_bpe_is_exact(bpe_json, edit):
    tokenizer = _edited(bpe_json, edit) if edit else Tokenizer.from_str(bpe_json)
    assert family_of(tokenizer) == "bytelevel_bpe"
    report = check_tokenizer(tokenizer, 64, fraction=0.02, count=400, seed=2)
    assert report.total > 1000 and report.texts["invalid_utf8"] >= 20
    assert report.passed, report.table()


def test_contractions_and_spaces(bpe_json):
    from exporter.text_graph.check import compare

    tokenizer = _edited(bpe_json, _mask_lstrip)
    tokenizer.add_tokens([AddedToken("new york", normalized=False)])
    texts = ["it's", "IT'S we're they've I'm we'll he'd 'x ''s", "a  b   c    ", "\t\t x", "x \u3000 y", "  ",
             "a<mask>b  <mask> c", "new york  new  york", "!!'s ..'ll", "1,234.5 ٣٤ ⅷ", "é\u0301 ǅ"]
    assert compare(tokenizer, 64, {"fixed": texts}).passed


def test_unsupported_bpe_parts_are_named(bpe_json):
    with pytest.raises(UnsupportedModelError, match="normalizer"):
        derive(_edited(bpe_json, lambda d: d.update(normalizer={"type": "NFC"})), 64)
    qwen_like = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    with pytest.raises(UnsupportedModelError, match="pre_tokenizer"):
        derive(_edited(bpe_json, lambda d: d.update(pre_tokenizer=qwen_like)), 64)
    with pytest.raises(UnsupportedModelError, match="model.dropout"):
        derive(_edited(bpe_json, lambda d: d["model"].update(dropout=0.1)), 64)
    unigram = Tokenizer(models.Unigram([("a", -1.0), ("<unk>", -2.0)], 1))
    with pytest.raises(UnsupportedModelError, match="Metaspace.*pre_tokenizer"):
        derive(unigram, 64)


ROBERTA_TEXTS = ["it's a test", "", "a <mask> in text " * 6, "中文 naïve 😀", b"bad \xff bytes"]


@pytest.fixture(scope="module")
def roberta(tmp_path_factory):
    """A random RoBERTa with a byte-level BPE tokenizer trained here, exported with --with-tokenizer (default mode),
    and its encode() rows for ROBERTA_TEXTS (invalid bytes read as decode("utf-8", "replace"))."""
    from model_factory import random_model
    from transformers import PreTrainedTokenizerFast

    tmp = tmp_path_factory.mktemp("roberta_bpe")
    src = random_model(tmp / "src", "roberta", max_seq_length=48)
    PreTrainedTokenizerFast(tokenizer_object=_edited(trained_bpe().to_str(), _mask_lstrip), bos_token="<s>",
                            eos_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                            cls_token="<s>", sep_token="</s>").save_pretrained(src)
    return fx.export_with_graph_text(src, tmp / "repo", "rb", ROBERTA_TEXTS)


def test_roberta_export_gets_the_graph_text_model(roberta):
    fx.check_graph_text_export(*roberta[:1], "rb", "bytelevel_bpe", ROBERTA_TEXTS, roberta[1])


def test_roberta_text_model_served_on_nvidia(binary, nvidia_backend, roberta, tmp_path):
    """The same model through NVIDIA's backend: texts merged from concurrent requests, invalid bytes included."""
    import numpy as np

    repo, want = roberta
    got = fx.served_text_rows(repo, "rb_text", ROBERTA_TEXTS, binary, tmp_path / "triton.log")
    assert np.abs(got - np.concatenate([want] * 3, axis=0)).max() <= 1e-5


def test_graph_refused_before_any_work_and_default_falls_back(tmp_path):
    """A Unigram tokenizer without Metaspace: --tokenizer graph is refused naming the part, before anything is
    written; the default keeps the Python tokenizer model and the ensemble."""
    from model_factory import random_model
    from transformers import PreTrainedTokenizerFast

    from exporter.export.pipeline import ExportOptions, export_model

    src = random_model(tmp_path / "src", "bert", max_seq_length=32)
    unigram = Tokenizer(models.Unigram([("<unk>", 0.0), ("[PAD]", -1.0)] + [(c, -2.0) for c in "abcdefgh "], 0))
    PreTrainedTokenizerFast(tokenizer_object=unigram, unk_token="<unk>", pad_token="[PAD]",
                            model_input_names=["input_ids", "token_type_ids", "attention_mask"]).save_pretrained(src)
    repo = tmp_path / "repo"
    with pytest.raises(UnsupportedModelError, match="Metaspace.*pre_tokenizer"):
        export_model(src, ExportOptions(out=repo, name="u", with_tokenizer=True, tokenizer="graph"))
    assert not repo.exists() or not any(repo.iterdir())
    export_model(src, ExportOptions(out=repo, name="u", max_batch_size=4, with_tokenizer=True))
    assert sorted(p.name for p in repo.iterdir()) == ["u", "u_text", "u_tokenizer"]
