"""Texts to verify exported models with: real sentences nobody here wrote, plus the edge cases that break servers.

The sentences come from the docstrings of the installed Python standard library (a fixed, sorted list of
modules and their public callables), so they are real English prose of varied length, available offline, and
the same for a given seed on a given Python version. The edge cases cover one token, a text right at the
model's max length, one several times longer (which must be truncated), non-ASCII scripts, emoji and
whitespace only. The two that depend on a model's tokenizer take it, with its max length, as arguments.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import random
import re
import warnings
from dataclasses import dataclass

KINDS = ("docstring", "one_token", "max_length", "over_long", "non_ascii", "emoji", "whitespace")

# Modules whose docstrings are read, in this order. Ones missing from an interpreter are skipped.
STDLIB_MODULES = (
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "cmath", "codecs", "collections",
    "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "email", "enum", "filecmp", "fnmatch", "fractions", "functools", "getopt", "gettext", "glob",
    "gzip", "hashlib", "heapq", "hmac", "html", "http.client", "http.cookies", "imaplib", "inspect", "io",
    "ipaddress", "itertools", "json", "locale", "logging", "lzma", "mailbox", "math", "mimetypes", "operator",
    "optparse", "os", "pathlib", "pickle", "pkgutil", "platform", "poplib", "pprint", "queue", "quopri", "random",
    "re", "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket",
    "socketserver", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "time", "timeit", "tokenize", "trace", "traceback", "types", "typing", "unittest",
    "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref", "xml.dom.minidom", "zipfile",
    "zlib",
)  # fmt: skip

MIN_WORDS, MAX_WORDS = 3, 60

# Texts that carry no tokenizer dependence. Each non-ASCII and emoji text really holds non-ASCII characters.
ONE_TOKEN = "hello"
NON_ASCII = (
    "Le café crème était déjà servi à la façade du théâtre, près de l'hôtel Müller.",
    "東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。",
    "Москва — столица России и крупнейший город страны.",
    "Ελληνικά, العربية, עברית und Größenänderung: mixed scripts in one line.",
)
EMOJI = (
    "The deploy went fine 🚀🎉 but the tests were flaky 😅🔥",
    "👍🏽👨‍👩‍👧‍👦🇯🇵❤️",
)
WHITESPACE = ("   ", " \t\n  \n")


@dataclass(frozen=True)
class CorpusItem:
    text: str
    kind: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown corpus kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if not isinstance(self.text, str):
            raise TypeError(f"corpus text must be str, got {type(self.text).__name__}")


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_CODE_LIKE = re.compile(r">>>|::|\.\.\. |[{}\[\]<>=|\\@$]|\b\w+\(|^\W|\s{2,}")


def _paragraphs(doc: str) -> list[str]:
    """Prose paragraphs of a docstring, each joined into one line; indented blocks and doctests are dropped."""
    paragraphs, current = [], []
    for line in doc.splitlines():
        if not line.strip() or line.startswith((" ", "\t")) or line.lstrip().startswith(">>>"):
            if current:
                paragraphs.append(" ".join(current))
            current = []
        else:
            current.append(line.strip())
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs


def _is_sentence(text: str) -> bool:
    words = text.split()
    return (
        MIN_WORDS <= len(words) <= MAX_WORDS
        and text.isprintable()
        and text[0].isupper()
        and text[-1] in ".!?"
        and not _CODE_LIKE.search(text)
        and sum(w.isalpha() for w in words) * 2 >= len(words)
    )


def _documented(module_name: str) -> list[object]:
    """The module and its public callables defined in it, sorted by name (re-exports are skipped)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return []
    objects: list[object] = [module]
    for name in sorted(vars(module)):
        if name.startswith("_"):
            continue
        obj = vars(module)[name]
        if callable(obj) and getattr(obj, "__module__", None) == module.__name__:
            objects.append(obj)
    return objects


@functools.lru_cache(maxsize=1)
def stdlib_sentences() -> tuple[str, ...]:
    """Every distinct prose sentence of 3..60 words in the chosen stdlib docstrings, in a fixed order."""
    seen: dict[str, None] = {}
    with warnings.catch_warnings():  # importing or reading some stdlib names warns (typing.io, typing.re, ...)
        warnings.simplefilter("ignore")
        documented = [obj for module_name in STDLIB_MODULES for obj in _documented(module_name)]
        docs = [inspect.getdoc(obj) if getattr(obj, "__doc__", None) else None for obj in documented]
    for doc in docs:
        if not doc:
            continue
        for paragraph in _paragraphs(doc):
            for sentence in _SENTENCE_END.split(paragraph):
                sentence = sentence.strip()
                if _is_sentence(sentence):
                    seen.setdefault(sentence, None)
    return tuple(seen)


def docstring_items(n: int = 64, seed: int = 0) -> list[CorpusItem]:
    """``n`` distinct stdlib docstring sentences drawn with ``random.Random(seed)``; the same seed, the same list."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pool = stdlib_sentences()
    if n > len(pool):
        raise ValueError(f"only {len(pool)} docstring sentences are available on this Python, {n} were asked for")
    return [CorpusItem(text, "docstring") for text in random.Random(seed).sample(pool, n)]


def fixed_edge_cases() -> list[CorpusItem]:
    """Edge cases that need no tokenizer: one token, non-ASCII scripts, emoji, whitespace only."""
    items = [CorpusItem(ONE_TOKEN, "one_token")]
    items += [CorpusItem(text, "non_ascii") for text in NON_ASCII]
    items += [CorpusItem(text, "emoji") for text in EMOJI]
    items += [CorpusItem(text, "whitespace") for text in WHITESPACE]
    return items


def count_tokens(tokenizer, text: str) -> int:
    """Tokens in ``text`` with special tokens and without truncation (what a model would see before truncating)."""
    return len(tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])


def _words() -> list[str]:
    return " ".join(stdlib_sentences()).split()


def max_length_text(tokenizer, max_seq_len: int) -> str:
    """The longest prefix (in whole words) of the stdlib prose that tokenizes to at most ``max_seq_len`` tokens."""
    if max_seq_len < 1:
        raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
    words = _words()
    lo, hi = 0, min(len(words), max_seq_len)  # a word is at least one token, so no more words than tokens fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(tokenizer, " ".join(words[:mid])) <= max_seq_len:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def over_long_text(tokenizer, max_seq_len: int, factor: int = 4) -> str:
    """A text of at least ``factor`` x ``max_seq_len`` tokens: a model must truncate it, never fail on it."""
    words, text, taken = _words(), "", 0
    target = factor * max_seq_len
    while count_tokens(tokenizer, text) <= target:
        step = max((target - count_tokens(tokenizer, text)) // 2, 16)  # words are >= 1 token each
        chunk = [words[(taken + i) % len(words)] for i in range(step)]
        taken += step
        text = f"{text} {' '.join(chunk)}".strip()
    return text


def edge_cases(tokenizer=None, max_seq_len: int | None = None) -> list[CorpusItem]:
    """Every edge case; the ``max_length`` and ``over_long`` ones only when a tokenizer and max_seq_len are given."""
    items = fixed_edge_cases()
    if tokenizer is not None and max_seq_len is not None:
        items.insert(1, CorpusItem(max_length_text(tokenizer, max_seq_len), "max_length"))
        items.insert(2, CorpusItem(over_long_text(tokenizer, max_seq_len), "over_long"))
    elif (tokenizer is None) != (max_seq_len is None):
        raise ValueError("give both tokenizer and max_seq_len, or neither")
    return items


def build_corpus(
    n: int = 64, seed: int = 0, *, tokenizer=None, max_seq_len: int | None = None
) -> list[CorpusItem]:
    """``n`` docstring sentences (sampled with ``seed``) followed by the edge cases.

    With a model's ``tokenizer`` and ``max_seq_len`` every kind in KINDS is present; without them the
    ``max_length`` and ``over_long`` cases (which depend on the tokenizer) are left out.
    """
    return docstring_items(n, seed) + edge_cases(tokenizer, max_seq_len)
