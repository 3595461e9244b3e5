"""Small random-initialised models of every registered architecture, saved as sentence-transformers saves them.

Each is built from its registry entry's tiny configuration (``Architecture.tiny``), with a tokenizer of its family's
kind trained here by the `tokenizers` library on local text (WordPiece, byte-level BPE, Unigram, SentencePiece-style
BPE with byte fallback), and the sentence-transformers modules its real checkpoints carry (Pooling, Dense, Normalize,
prompts), built with sentence-transformers' own classes and written by ``SentenceTransformer.save()``: the reference
is sentence-transformers itself. No hub.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from exporter.export.architectures import Architecture, architecture_for

# Long enough that the tests' lengths cross a trace length, a local-attention window and a sliding window.
POSITIONS = 256
MAX_SEQ_LEN = 128


@dataclass(frozen=True)
class Recipe:
    """What a family's real checkpoints carry around the Transformer."""

    pooling: str = "mean"
    normalize: bool = True
    dense: tuple[tuple[int, int], ...] = ()  # (in, out) per Dense module, Identity activation
    prompts: dict = field(default_factory=dict)
    padding_side: str = "right"


RECIPES = {
    "qwen3": Recipe("lasttoken", True, prompts={"query": "Instruct: Given a web search query, retrieve relevant "
                                                         "passages\nQuery: ", "document": ""}, padding_side="left"),
    # EmbeddingGemma: mean pooling, two Dense layers, Normalize
    "gemma3_text": Recipe("mean", True, dense=((32, 48), (48, 24)),
                          prompts={"query": "task: search result | query: ", "document": "title: none | text: "}),
    "modernbert": Recipe("mean", True),
    "gte": Recipe("cls", True),
    "nomic_bert": Recipe("mean", True, prompts={"query": "search_query: ", "document": "search_document: "}),
    "bert": Recipe("cls", True),
}


def _corpus() -> list[str]:
    from exporter.checks.corpus import build_corpus

    texts = [item.text for item in build_corpus(400, seed=3)]
    # every printable ASCII character, so no test text meets an unknown character at the byte level
    return texts + ["".join(chr(c) for c in range(32, 127))] * 3


def train_tokenizer(kind: str, vocab_size: int = 600, padding_side: str = "right"):
    """A PreTrainedTokenizerFast of ``kind`` trained on local text: wordpiece, bpe (byte-level), unigram, sp-bpe."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "wordpiece":
        specials = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                    "mask_token": "[MASK]"}
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(specials.values()))
        first, last = "[CLS]", "[SEP]"
        tok.decoder = decoders.WordPiece()
    elif kind == "bpe":
        specials = {"pad_token": "<pad>", "unk_token": "<unk>", "cls_token": "<s>", "sep_token": "</s>",
                    "mask_token": "<mask>", "bos_token": "<s>", "eos_token": "</s>"}
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(dict.fromkeys(specials.values())),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        first, last = "<s>", "</s>"
    elif kind in ("unigram", "sp-bpe"):
        specials = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>",
                    "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}
        if kind == "unigram":
            tok = Tokenizer(models.Unigram())
            trainer = trainers.UnigramTrainer(vocab_size=vocab_size, unk_token="<unk>",
                                              special_tokens=list(dict.fromkeys(specials.values())))
        else:
            tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
            trainer = trainers.BpeTrainer(vocab_size=vocab_size,
                                          special_tokens=list(dict.fromkeys(specials.values())) +
                                          [f"<0x{b:02X}>" for b in range(256)])
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        first, last = "<s>", "</s>"
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    tok.train_from_iterator(_corpus(), trainer)
    ids = {t: tok.token_to_id(t) for t in (first, last)}
    tok.post_processor = processors.TemplateProcessing(single=f"{first} $A {last}",
                                                       special_tokens=[(first, ids[first]), (last, ids[last])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, padding_side=padding_side, **specials)
    return fast


def family_model(folder: Path, model_type: str, recipe: Recipe | None = None, seed: int = 0,
                 positions: int = POSITIONS, max_seq_len: int = MAX_SEQ_LEN, shape: dict | None = None,
                 tokenizer=None) -> str:
    """A sentence-transformers folder of a random ``model_type`` model from its registry entry's tiny config (or
    ``shape``: other sizes, e.g. a real checkpoint's for a benchmark), with ``tokenizer`` (a transformers tokenizer)
    instead of one of its family's kind trained here when given."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling
    from transformers import AutoConfig, AutoModel

    arch: Architecture = architecture_for(model_type)
    recipe = recipe or RECIPES.get(model_type, Recipe())
    folder.mkdir(parents=True, exist_ok=True)
    hf_dir = folder / "hf"
    tokenizer = tokenizer or train_tokenizer(arch.tokenizer_kind, padding_side=recipe.padding_side)
    ids = {k: getattr(tokenizer, f"{k}_token_id") for k in ("pad", "bos", "eos", "cls", "sep", "mask")}
    special = {f"{k}_token_id": v for k, v in ids.items() if v is not None}
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), max_position_embeddings=positions,
                                  **special, **(shape if shape is not None else arch.tiny))
    torch.manual_seed(seed)
    model = AutoModel.from_config(config).eval()
    model.save_pretrained(str(hf_dir))
    tokenizer.model_max_length = max_seq_len
    tokenizer.save_pretrained(str(hf_dir))

    transformer = Transformer(str(hf_dir), max_seq_length=max_seq_len,
                              model_kwargs={"attn_implementation": arch.attention} if arch.attention else None)
    hidden = transformer.get_embedding_dimension()
    modules = [transformer, Pooling(hidden, pooling_mode=recipe.pooling)]
    torch.manual_seed(seed + 1)
    for n_in, n_out in recipe.dense:
        modules.append(Dense(n_in, n_out, activation_function=torch.nn.Identity()))
    if recipe.normalize:
        modules.append(Normalize())
    st = SentenceTransformer(modules=modules, prompts=recipe.prompts or None, device="cpu")
    out = folder / "st"
    st.save(str(out))
    _check_saved(out)
    return str(out)


def _check_saved(folder: Path) -> None:
    """The saved folder has what sentence-transformers loads (a guard on the factory itself)."""
    modules = json.loads((folder / "modules.json").read_text())
    assert modules and str(modules[0]["type"]).endswith("Transformer"), modules
