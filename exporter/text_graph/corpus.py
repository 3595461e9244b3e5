"""Hostile texts for checking an in-graph tokenizer against the ``tokenizers`` library, by group.

Every group is generated (seeded), none hand-picked to pass: every Unicode code point in context, mixed scripts,
control characters, emoji sequences, the tokenizer's own added-token strings inside texts, words around the
WordPiece per-word limit, texts that truncate, empty and whitespace-only texts, and invalid UTF-8 byte strings
(``bytes``; the reference is ``bytes.decode("utf-8", "replace")``). ``sample`` keeps a fraction of each group, so a
CI run covers every group in about a minute and ``tei-export check-tokenizer`` runs it whole.
"""
from __future__ import annotations

import random
from typing import Union

Text = Union[str, bytes]

# Whole-range groups are cut into texts of this many code points.
BLOCK = 24
SCRIPTS = ("Hello world", "Grüße aus Köln", "Ελληνικά κείμενα", "Русский текст", "中文字符测试", "日本語のテキスト",
           "한국어 텍스트", "العربية نص", "עברית טקסט", "हिन्दी पाठ", "ไทยข้อความ", "Tiếng Việt có dấu",
           "ǅungla İstanbul ß ﬁ ŉ", "e\u0301 a\u0308 o\u0302\u0323", "ｆｕｌｌｗｉｄｔｈ １２３")
CONTROLS = tuple(chr(c) for c in [*range(0, 32), 127, *range(0x80, 0xA0), 0xAD, 0x200B, 0x200C, 0x200D, 0x2028,
                                  0x2029, 0x202E, 0xFEFF, 0xFFFD, 0xE000, 0xF8FF, 0x1D173, 0xE0001])
EMOJI = ("👍", "👍🏽", "👩‍👩‍👧‍👦", "🏳️‍🌈", "🇩🇪🇯🇵", "1️⃣", "❤️", "🧑🏿‍💻", "😀😃😄", "🫠")
SPACES = ("", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2003", "\x0b\x0c", " \t\n\u3000 ")
INVALID = (b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80",
           b"\xf0\x9f\x98", b"\xe2\x82", b"\xc3", b"\x80", b"\xbf\xbf", b"\xf8\x88\x80\x80\x80")


def _code_points() -> list[int]:
    return [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]


def every_code_point() -> list[Text]:
    """Each code point between letters, after a space, beside punctuation, and next to its neighbours."""
    cps = _code_points()
    texts = []
    for i in range(0, len(cps), BLOCK):
        chars = [chr(c) for c in cps[i:i + BLOCK]]
        texts.append(" ".join(f"a{c}b" for c in chars) + " " + "".join(chars) + ", (" + chars[0] + ")")
    return texts


def mixed_scripts(rng: random.Random, count: int) -> list[Text]:
    return [" ".join(rng.choice(SCRIPTS) for _ in range(rng.randint(1, 6))) for _ in range(count)]


def controls(rng: random.Random, count: int) -> list[Text]:
    return ["".join(rng.choice(CONTROLS + ("word", " ", "x", "é"))
                    for _ in range(rng.randint(1, 20))) for _ in range(count)]


def emoji(rng: random.Random, count: int) -> list[Text]:
    return ["".join(rng.choice(EMOJI + (" ", "smile", ",", "é"))
                    for _ in range(rng.randint(1, 12))) for _ in range(count)]


def added_tokens(rng: random.Random, count: int, tokens: list[str]) -> list[Text]:
    """The tokenizer's added tokens inside texts: glued to words, doubled, cut, cased differently, among spaces."""
    parts = [*tokens, *(t.lower() for t in tokens), *(t.upper() for t in tokens), *(t[:-1] for t in tokens if t),
             *(t[1:] for t in tokens if t), "word", " ", "  ", "\t", "x", "é", "中", "[", "]", "<", ">", "##"]
    return ["".join(rng.choice(parts) for _ in range(rng.randint(1, 12))) for _ in range(count)]


def long_words(rng: random.Random, count: int, limit: int) -> list[Text]:
    """Words of the per-word limit, one around it and far beyond it, ASCII and multi-byte."""
    alphabet = "abcdefghijklmnopqrstuvwxyzé中ß"
    texts = []
    for _ in range(count):
        size = rng.choice([limit - 1, limit, limit + 1, rng.randint(1, 3 * limit)])
        word = "".join(rng.choice(alphabet) for _ in range(size))
        texts.append(rng.choice(["", "x "]) + word + rng.choice(["", " y", "!"]))
    return texts


def truncating(rng: random.Random, count: int, max_seq_len: int) -> list[Text]:
    """Texts several times the token limit, ending at different points of words and added tokens."""
    words = ["tokenization", "a", "b", "embeddings", "中文", "naïve", ",", "unbelievable", "[SEP]", "x" * 30]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(max_seq_len // 2, 3 * max_seq_len)))
            for _ in range(count)]


def whitespace(rng: random.Random, count: int) -> list[Text]:
    return list(SPACES) + ["".join(rng.choice(SPACES) for _ in range(rng.randint(1, 6))) for _ in range(count)]


def invalid_utf8(rng: random.Random, count: int) -> list[Text]:
    """Byte strings with ill-formed sequences among valid ones, and random bytes."""
    valid = [s.encode("utf-8") for s in ("a", " ", "é", "中", "👍", "[CLS]", "word", "\x00")]
    texts: list[Text] = []
    for i in range(count):
        if i % 3 == 0:
            texts.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 24))))
        else:
            texts.append(b"".join(rng.choice(INVALID + tuple(valid)) for _ in range(rng.randint(1, 10))))
    return texts


def fuzz(rng: random.Random, count: int) -> list[Text]:
    """Random code points from everywhere, weighted towards the first planes."""
    cps = _code_points()
    return ["".join(chr(rng.choice(cps) if rng.random() < 0.3 else rng.randrange(0x3000))
                    for _ in range(rng.randint(1, 40))) for _ in range(count)]


def corpus(tokens: list[str], max_chars: int, max_seq_len: int, count: int = 2000, seed: int = 0
           ) -> dict[str, list[Text]]:
    """All groups, ``count`` generated texts each (every code point: all of them), by group name."""
    rng = random.Random(seed)
    return {
        "every_code_point": every_code_point(),
        "mixed_scripts": mixed_scripts(rng, count),
        "controls": controls(rng, count),
        "emoji": emoji(rng, count),
        "added_tokens": added_tokens(rng, count, tokens),
        "long_words": long_words(rng, count, max_chars),
        "truncating": truncating(rng, max(1, count // 20), max_seq_len),
        "whitespace": whitespace(rng, count // 10),
        "invalid_utf8": invalid_utf8(rng, count),
        "fuzz": fuzz(rng, count),
    }


def sample(groups: dict[str, list[Text]], fraction: float, seed: int = 0) -> dict[str, list[Text]]:
    """A seeded ``fraction`` of each group (at least 20 texts, or the whole group when smaller)."""
    rng = random.Random(seed)
    return {name: texts if len(texts) <= 20 else rng.sample(texts, max(20, int(len(texts) * fraction)))
            for name, texts in groups.items()}
