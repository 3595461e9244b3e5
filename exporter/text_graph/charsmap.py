"""SentencePiece's ``precompiled_charsmap`` (the ``Precompiled`` normalizer of XLM-R style tokenizers), read at export
time, and the grapheme-cluster classes its use in the ``tokenizers`` library depends on.

The charsmap is ``[u32 trie size in bytes][trie: u32 units of a darts-clone double array][normalized strings, each
ending in NUL]``. The library normalizes a text grapheme by grapheme: a grapheme of fewer than 6 bytes is replaced
by the value of the SHORTEST key that is a prefix of it (the rest of the grapheme is dropped), otherwise (or when no
key matches) each character by its own key's value or itself. So the graph needs the keys (walked out of the trie
here, the single characters checked against the library's own normalizer) and where graphemes end.

Grapheme boundaries are the library's (unicode-segmentation): each code point's class is read from the library by
normalizing probe texts with tiny charsmaps built here, in which a key's value is "" so that a grapheme that held
the key vanishes whole. The rules between classes are UAX #29's (CR LF; controls; Hangul; extend, ZWJ and spacing
marks; prepend; Indic conjuncts; emoji ZWJ sequences). Regional-indicator pairs (GB12/13) are not reproduced: an
indicator is 4 bytes, so a grapheme holding two is never under 6 bytes and is normalized character by character
however it is cut.
"""
from __future__ import annotations

import struct
from functools import lru_cache

# Class bits of a code point (0: none of them).
JOINS = 1  # joins the grapheme before it (Extend, ZWJ, SpacingMark)
CONTROL = 2  # nothing joins before or after it (Control, CR, LF)
PREPEND = 4  # what follows joins it
PICTOGRAPHIC = 8  # Extended_Pictographic (emoji ZWJ sequences)
HANGUL_L, HANGUL_V, HANGUL_T, HANGUL_LV, HANGUL_LVT = 16, 32, 64, 128, 256
# Indic conjuncts (GB9c): consonant [extend linker]* linker × consonant
CONSONANT, LINKER, INCB_EXTEND = 512, 1024, 2048
ZWJ = 0x200D
_MARK = "\u0483"  # a 2-byte combining mark whose lead byte (0xD2) no probe key starts with
_SURROGATES = range(0xD800, 0xE000)


def parse_charsmap(blob: bytes) -> dict[bytes, str]:
    """Every key of the trie with the normalized string it maps to."""
    (size,) = struct.unpack_from("<I", blob, 0)
    units = struct.unpack_from(f"<{size // 4}I", blob, 4)
    normalized = blob[4 + size:]

    def offset(unit: int) -> int:
        return (unit >> 10) << ((unit & (1 << 9)) >> 6)

    def value(index: int) -> str:
        end = normalized.find(b"\0", index)
        return normalized[index:end if end >= 0 else len(normalized)].decode("utf-8")

    keys: dict[bytes, str] = {}
    stack = [(b"", offset(units[0]))]
    while stack:
        prefix, node = stack.pop()
        for label in range(1, 256):
            pos = node ^ label
            if pos >= len(units) or units[pos] & ((1 << 31) | 0xFF) != label:
                continue
            child = pos ^ offset(units[pos])
            if (units[pos] >> 8) & 1:
                keys[prefix + bytes([label])] = value(units[child] & ((1 << 31) - 1))
            stack.append((prefix + bytes([label]), child))
    return keys


def build_charsmap(keys: dict[bytes, str]) -> bytes:
    """A charsmap holding ``keys`` (for the probes: a trie with a 256-unit block per node, read as darts reads it)."""
    blob = b""
    values = {}
    for key, text in keys.items():
        values[key] = len(blob)
        blob += text.encode("utf-8") + b"\0"
    trie: dict = {}
    for key in keys:
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
    units = [0] * 256
    queue = [(0, trie, b"")]  # (unit position, children, key so far)
    while queue:
        pos, children, prefix = queue.pop()
        base = len(units)
        units += [0] * 256
        units[pos] |= (pos ^ base) << 10
        if prefix in keys:
            units[base] = values[prefix]
        for label, grand in children.items():
            units[base + label] = label | ((prefix + bytes([label]) in keys) << 8)
            queue.append((base + label, grand, prefix + bytes([label])))
    return struct.pack(f"<I{len(units)}I", 4 * len(units), *units) + blob


def _normalizer(keys: dict[bytes, str]):
    """The library's own Precompiled normalizer over a charsmap of ``keys``."""
    from tokenizers.normalizers import Precompiled

    return Precompiled(build_charsmap(keys))


def _code_points(low: int = 0, high: int = 0x110000) -> list[str]:
    return [chr(c) for c in range(low, high) if c not in _SURROGATES]


def _hits(keys: dict[bytes, str], texts, expected) -> list[bool]:
    """Whether each probe text normalizes to its expected string through a charsmap of ``keys``."""
    norm = _normalizer(keys)
    return [norm.normalize_str(t) == e for t, e in zip(texts, expected)]


@lru_cache(maxsize=1)
def grapheme_classes() -> dict[int, int]:
    """Each code point's class bits (code points with none left out), read from the library (cached: the same for
    every tokenizer of this library version)."""
    chars = _code_points()
    classes: dict[int, int] = {}

    def mark(bit: int, hits, among) -> None:
        for c, hit in zip(among, hits):
            if hit:
                classes[ord(c)] = classes.get(ord(c), 0) | bit

    # After a letter: x+c is one grapheme (under 6 bytes) exactly when c joins, and the key x takes it away whole.
    others = [c for c in chars if c != "x"]
    mark(JOINS, _hits({b"x": ""}, ["x" + c for c in others], [""] * len(others)), others)
    # Before a letter: c+x+mark; [x mark] alone is under 6 bytes and vanishes (key x), in c's grapheme it does not.
    mark(PREPEND, _hits({b"x": ""}, [c + "x" + _MARK for c in others], [c + _MARK for c in others]), others)
    # Controls: c+U+0300+mark; after a control the two marks are a grapheme of their own, which the key 0xCC
    # (U+0300's lead byte) takes away whole; in c's grapheme they go character by character and the mark stays.
    # U+0300..U+033F (lead byte 0xCC themselves) are marks, not controls.
    rest = [c for c in chars if not 0x300 <= ord(c) < 0x340]
    mark(CONTROL, _hits({b"\xcc": ""}, [c + "\u0300" + _MARK for c in rest], rest), rest)
    # Emoji ZWJ sequences: (c) ZWJ c is one grapheme (of 6 bytes or more, so character by character) for a
    # pictographic c; otherwise [(c) ZWJ] (5 bytes) vanishes whole. Marks join by GB9 and are not pictographic.
    mark(PICTOGRAPHIC, _hits({"\u00a9".encode(): ""}, ["\u00a9\u200d" + c for c in chars],
                             ["\u200d" + ("" if c == "\u00a9" else c) for c in chars]), chars)
    for cp, bits in classes.items():
        if bits & JOINS:
            classes[cp] = bits & ~PICTOGRAPHIC
    _hangul(classes)
    _conjuncts(classes)
    return classes


def _conjuncts(classes: dict[int, int]) -> None:
    """Indic conjunct classes around KA (U+0915) and VIRAMA (U+094D), every 3-byte lead byte a key: a grapheme that
    goes on past KA+VIRAMA (6 bytes or more) keeps the final mark, a cut leaves [x mark] (under 6 bytes) to vanish
    whole. Consonants and linkers are 3-byte characters; a consonant never joins by GB9 and is no control
    (those are left out)."""
    ka, virama = "\u0915", "\u094d"
    leads = {bytes([b]): "" for b in range(0xE0, 0xF0)}
    joins = [chr(c) for c, bits in classes.items() if bits & JOINS]
    three = [c for c in _code_points(0x800, 0x10000) if not classes.get(ord(c), 0) & (JOINS | CONTROL)]
    # ka virama c: c is a consonant when it stays in the conjunct.
    for c, hit in zip(three, _hits(leads, [ka + virama + c + _MARK for c in three], [_MARK] * len(three))):
        if hit:
            classes[ord(c)] = classes.get(ord(c), 0) | CONSONANT
    # ka l ka: l is a linker when the second ka joins.
    for c, hit in zip(joins, _hits(leads, [ka + c + ka + _MARK for c in joins], [_MARK] * len(joins))):
        if hit and len(c.encode()) == 3:
            classes[ord(c)] |= LINKER
    # ka virama x ka: x is an InCB extend (or linker) when the second ka still joins.
    expected = [("" if len(c.encode()) == 3 else c) + _MARK for c in joins]
    for c, hit in zip(joins, _hits(leads, [ka + virama + c + ka + _MARK for c in joins], expected)):
        if hit:
            classes[ord(c)] |= INCB_EXTEND


def _hangul(classes: dict[int, int]) -> None:
    """L, V, T, LV, LVT among the 3-byte code points, from how each joins three conjoining jamo (U+1100 L, U+1161 V,
    U+11A8 T) on either side."""
    chars = _code_points(0x800, 0x10000)
    reps = ("\u1100", "\u1161", "\u11a8")
    # c before r: c+r+mark; [r mark] alone (5 bytes) vanishes (key r), in c's grapheme (8 bytes) r alone does.
    before = [_hits({r.encode(): ""}, [c + r + _MARK for c in chars],
                    [("" if c == r else c) + _MARK for c in chars]) for r in reps]
    # c after r: every 3-byte lead byte a key; [c mark] alone (5 bytes) vanishes whole, in r's grapheme (8 bytes)
    # the mark stays.
    leads = {bytes([b]): "" for b in range(0xE0, 0xF0)}
    after = [_hits(leads, [r + c + _MARK for c in chars], [_MARK] * len(chars)) for r in reps]
    kinds = {((1, 1, 0), (1, 0, 0)): HANGUL_L, ((0, 1, 1), (1, 1, 0)): HANGUL_V, ((0, 0, 1), (0, 1, 1)): HANGUL_T,
             ((0, 1, 1), (1, 0, 0)): HANGUL_LV, ((0, 0, 1), (1, 0, 0)): HANGUL_LVT}
    for k, c in enumerate(chars):
        kind = kinds.get((tuple(int(b[k]) for b in before), tuple(int(a[k]) for a in after)))
        if kind:
            classes[ord(c)] = classes.get(ord(c), 0) | kind
