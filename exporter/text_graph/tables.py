"""The tables of an in-graph WordPiece tokenizer, derived at export time from the model's own ``tokenizers.Tokenizer``.

Nothing here is hand-copied: every code point goes once through the tokenizer's own normalizer and every character
the normalizer can produce once through its own pre-tokenizer, so the Unicode version and every option (lowercase,
accents, Chinese characters, clean_text) are the library's. The post-processor's ids before and after the text come
from encoding probes with and without special tokens. A part the graph cannot reproduce exactly is refused by name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..errors import UnsupportedModelError

# What one character does to the word being built (the pre-tokenizer's view of it).
KEEP, SPLIT, ISOLATE, MIXED = 0, 1, 2, 3
REPLACEMENT = 0xFFFD
_SURROGATES = range(0xD800, 0xE000)
# Character-wise normalizers (each character's output depends on that character only) and pre-tokenizers that
# split per character; anything else is refused rather than approximated.
CHARWISE_NORMALIZERS = ("BertNormalizer", "Lowercase", "NFD", "StripAccents")
CHARWISE_PRE_TOKENIZERS = ("BertPreTokenizer", "WhitespaceSplit")
FIX = "export with --tokenizer python (the Python tokenizer model runs the tokenizers library itself)"


@dataclass(kw_only=True)
class AddedTables:
    """What every family shares: added tokens matched in the raw text, the post-processor's ids, truncation."""

    added: list[str]  # added tokens matched in the raw text, with their ids and strip flags
    added_ids: list[int]
    added_lstrip: list[bool]
    added_rstrip: list[bool]
    whitespace: dict[int, bool] = field(default_factory=dict)  # char::is_whitespace, for lstrip/rstrip
    prefix_ids: list[int] = field(default_factory=list)
    suffix_ids: list[int] = field(default_factory=list)
    max_seq_len: int = 512

    @property
    def budget(self) -> int:
        """Tokens of the text itself that fit beside the special tokens."""
        return self.max_seq_len - len(self.prefix_ids) - len(self.suffix_ids)


@dataclass(kw_only=True)
class WordPieceTables(AddedTables):
    """Everything the scripted WordPiece tokenizer needs, as plain Python values (TorchScript module attributes)."""

    ascii_kind: list[int]  # 128 entries: KEEP / SPLIT / ISOLATE / MIXED
    ascii_text: list[str]  # 128 normalized outputs
    kind: dict[int, int]  # non-ASCII code points whose kind is not KEEP, or whose output is not themselves
    text: dict[int, str]  # their normalized output (KEEP and ISOLATE)
    mixed_chars: dict[int, list[str]]  # MIXED: output characters and each one's kind
    mixed_kinds: dict[int, list[int]]
    vocab: dict[str, int]
    unk_id: int
    prefix: str  # continuing_subword_prefix
    max_chars: int  # max_input_chars_per_word


def steps_of(node: dict | None, kind: str) -> list[dict]:
    """The steps of a normalizer or pre-tokenizer JSON node (``kind``: "normalizer" or "pretokenizer"), a
    ``Sequence`` unrolled; none for null."""
    if node is None:
        return []
    return node.get(kind + "s", []) if node.get("type") == "Sequence" else [node]


def _unsupported(part: str, detail: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"--tokenizer graph cannot reproduce this tokenizer exactly: {detail}", fix=FIX,
                                 where=f"tokenizer.json {part}")


def unsupported_part(backend) -> UnsupportedModelError | None:
    """Why ``backend`` (a ``tokenizers.Tokenizer``) has no exact graph tokenizer, or None: a cheap look at its
    JSON, before any table is built."""
    data = json.loads(backend.to_str())
    model = data.get("model") or {}
    if model.get("type") != "WordPiece":
        return _unsupported("model.type", f"the tokenizer model is {model.get('type')}, not WordPiece")
    for part, allowed in (("normalizer", CHARWISE_NORMALIZERS), ("pre_tokenizer", CHARWISE_PRE_TOKENIZERS)):
        node = data.get(part)
        steps = [] if node is None else node.get(part + "s", []) if node.get("type") == "Sequence" else [node]
        for step in steps:
            if step.get("type") not in allowed:
                return _unsupported(f"{part}.type", f"the {part} {step.get('type')} is not one the graph "
                                                    f"reproduces ({', '.join(allowed)})")
    for token in data.get("added_tokens", []):
        if token.get("single_word"):
            return _unsupported("added_tokens", f"added token {token['content']!r} has single_word")
        if token.get("normalized"):
            return _unsupported("added_tokens", f"added token {token['content']!r} is matched after normalizing")
        if chr(REPLACEMENT) in token["content"] or token["content"][:1].isspace():
            return _unsupported("added_tokens", f"added token {token['content']!r} starts with a space or holds "
                                                "U+FFFD")
    return None


def _classify(pre_tokenizer, char: str) -> int:
    """KEEP, SPLIT or ISOLATE: ``char`` between two letters through the pre-tokenizer."""
    if pre_tokenizer is None:
        return KEEP
    pieces = [p for p, _ in pre_tokenizer.pre_tokenize_str("x" + char + "x")]
    if pieces == ["x" + char + "x"]:
        return KEEP
    if pieces == ["x", "x"]:
        return SPLIT
    if pieces == ["x", char, "x"]:
        return ISOLATE
    raise _unsupported("pre_tokenizer", f"U+{ord(char):04X} between letters gives {pieces}, which is neither "
                                        "kept, split on nor isolated")


def _alone(kinds: list[int]) -> bool:
    """Whether characters of ``kinds`` make one word of their own: one isolated character among spaces, or one kept
    character with spaces on both sides (a Chinese character padded by handle_chinese_chars)."""
    solid = [i for i, k in enumerate(kinds) if k != SPLIT]
    if len(solid) != 1:
        return False
    i = solid[0]
    return kinds[i] == ISOLATE or (0 < i < len(kinds) - 1)


def _normalized(backend) -> dict[int, str]:
    """Every code point's normalized output, where it differs from the code point itself."""
    normalizer = backend.normalizer
    if normalizer is None:
        return {}
    changed = {}
    for cp in range(0x110000):
        if cp in _SURROGATES:
            continue
        char = chr(cp)
        out = normalizer.normalize_str(char)
        if out != char:
            changed[cp] = out
    return changed


# Per-character tables by the normalizer's and pre-tokenizer's JSON: every code point through them takes seconds, and
# tokenizers that share both (one model's variants, one process exporting several models) share the result.
_CHARACTER_TABLES: dict[str, tuple] = {}


def _character_tables(backend):
    """(ascii_kind, ascii_text, kind, text, mixed_chars, mixed_kinds) for every code point (shared, not to be
    modified)."""
    data = json.loads(backend.to_str())
    key = json.dumps([data.get("normalizer"), data.get("pre_tokenizer")], sort_keys=True)
    if key not in _CHARACTER_TABLES:
        _CHARACTER_TABLES.clear()  # one entry: the tables are large
        _CHARACTER_TABLES[key] = _derive_character_tables(backend)
    return _CHARACTER_TABLES[key]


def _derive_character_tables(backend):
    pre = backend.pre_tokenizer
    changed = _normalized(backend)
    classes: dict[str, int] = {}

    def klass(char: str) -> int:
        if char not in classes:
            classes[char] = _classify(pre, char)
        return classes[char]

    ascii_kind, ascii_text = [KEEP] * 128, [""] * 128
    kind, text, mixed_chars, mixed_kinds = {}, {}, {}, {}
    for cp in range(0x110000):
        if cp in _SURROGATES:
            continue
        char = chr(cp)
        out = changed.get(cp, char)
        kinds = [klass(c) for c in out]
        if all(k == KEEP for k in kinds):
            k, t = KEEP, out
        elif all(k == SPLIT for k in kinds):
            k, t = SPLIT, ""
        elif _alone(kinds):
            k, t = ISOLATE, out[[i for i, k in enumerate(kinds) if k != SPLIT][0]]
        else:
            k, t = MIXED, ""
        if cp < 128:
            ascii_kind[cp], ascii_text[cp] = k, t
            if k == MIXED:
                mixed_chars[cp], mixed_kinds[cp] = list(out), kinds
            continue
        if k == MIXED:
            kind[cp], mixed_chars[cp], mixed_kinds[cp] = k, list(out), kinds
        elif k != KEEP or t != char or cp == REPLACEMENT:
            # U+FFFD always has an entry: invalid bytes decode to it and have no source text of their own.
            kind[cp], text[cp] = k, t
    return ascii_kind, ascii_text, kind, text, mixed_chars, mixed_kinds


def _specials(backend) -> tuple[list[int], list[int]]:
    """The ids the post-processor puts before and after a text, from encoding probes with and without them."""
    from tokenizers import Tokenizer

    probe = Tokenizer.from_str(backend.to_str())
    probe.no_truncation()
    probe.no_padding()
    found = None
    for text in ("hello world", "a", "tokenizer graph probe 12345", ""):
        full = probe.encode(text, add_special_tokens=True).ids
        bare = probe.encode(text, add_special_tokens=False).ids
        starts = [i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare]
        if found is None and bare:
            if not starts:
                raise _unsupported("post_processor", f"the text's ids are not kept in order around {text!r}")
            found = (full[:starts[0]], full[starts[0] + len(bare):])
        if found is not None and full != found[0] + bare + found[1]:
            raise _unsupported("post_processor", f"the special tokens around {text!r} differ from other texts'")
    assert found is not None
    return found


def _whitespace() -> dict[int, bool]:
    """Code points Rust's char::is_whitespace accepts, through the library's WhitespaceSplit."""
    from tokenizers.pre_tokenizers import WhitespaceSplit

    split = WhitespaceSplit()
    return {cp: True for cp in range(0x110000)
            if cp not in _SURROGATES and len(split.pre_tokenize_str("x" + chr(cp) + "x")) == 2}


def byte_fallback_ids(vocab: dict[str, int]) -> list[int]:
    """The ids of the byte tokens ``<0x00>`` .. ``<0xFF>`` byte fallback writes (-1 where the vocabulary lacks one)."""
    return [vocab.get(f"<0x{b:02X}>", -1) for b in range(256)]


def added_tables(backend, max_seq_len: int) -> dict:
    """The AddedTables fields of ``backend``: its added tokens (special ones left out when the tokenizer encodes
    them as text), the post-processor's ids and the whitespace that lstrip/rstrip take."""
    added = sorted(backend.get_added_tokens_decoder().items())
    if backend.encode_special_tokens:  # special tokens are then tokenized as text, not matched
        added = [(i, t) for i, t in added if not t.special]
    prefix_ids, suffix_ids = _specials(backend)
    if max_seq_len <= len(prefix_ids) + len(suffix_ids):
        raise UnsupportedModelError(f"max_seq_len {max_seq_len} leaves no room beside the special tokens",
                                    fix="use a larger --max-seq-len", where="--max-seq-len")
    strips = any(t.lstrip or t.rstrip for _, t in added)
    return dict(added=[t.content for _, t in added], added_ids=[i for i, _ in added],
                added_lstrip=[bool(t.lstrip) for _, t in added], added_rstrip=[bool(t.rstrip) for _, t in added],
                whitespace=_whitespace() if strips else {}, prefix_ids=list(prefix_ids), suffix_ids=list(suffix_ids),
                max_seq_len=max_seq_len)


def derive_tables(backend, max_seq_len: int) -> WordPieceTables:
    """The tables of ``backend`` (a ``tokenizers.Tokenizer`` with a WordPiece model) truncating at ``max_seq_len``
    tokens in all; raises UnsupportedModelError naming the part the graph cannot reproduce."""
    problem = unsupported_part(backend)
    if problem is not None:
        raise problem
    model = json.loads(backend.to_str())["model"]
    vocab = backend.get_vocab(with_added_tokens=False)
    if model["unk_token"] not in vocab:
        raise _unsupported("model.unk_token", f"the unknown token {model['unk_token']!r} is not in the vocabulary")
    common = added_tables(backend, max_seq_len)
    ascii_kind, ascii_text, kind, text, mixed_chars, mixed_kinds = _character_tables(backend)
    return WordPieceTables(
        ascii_kind=ascii_kind, ascii_text=ascii_text, kind=kind, text=text, mixed_chars=mixed_chars,
        mixed_kinds=mixed_kinds, vocab=vocab, unk_id=vocab[model["unk_token"]],
        prefix=model["continuing_subword_prefix"], max_chars=int(model["max_input_chars_per_word"]), **common)
