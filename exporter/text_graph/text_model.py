"""``<name>_text`` as one TorchScript module: ``forward(text: List[str])`` -> ``[texts, hidden]``.

NVIDIA's LibTorch backend passes a ``TYPE_STRING`` input as one flat ``List[str]`` of every merged request's raw
bytes, one string per request (``dims: [1]`` reshaped to ``[]``). The module tokenizes each text with the scripted
tokenizer (``wordpiece``), packs the ids as Triton packs a ragged batch (flat ids and end offsets) and hands them to
the ragged export's module (:class:`exporter.export.ragged.RaggedEmbedding`), which sorts the texts by length,
encodes chunks bounded by a token budget and returns the rows in request order. Ids are built on the CPU (strings
always arrive there) and moved to the model's device.
"""
# No ``from __future__ import annotations``: TorchScript reads the signatures below as types.
from typing import List, Sequence

import torch
from torch import Tensor

from ..export.ragged import build_ragged


class TextEmbedding(torch.nn.Module):
    def __init__(self, tokenizer: torch.jit.ScriptModule, ragged: torch.jit.ScriptModule, prompt: str, device: str):
        super().__init__()
        self.tokenizer = tokenizer
        self.ragged = ragged
        self.prompt = prompt  # the prompt of config_sentence_transformers.json it was built with, "" when none
        self.device = device

    def forward(self, text: List[str]) -> Tensor:
        ids: List[int] = []
        ends: List[int] = []
        for one in text:
            ids.extend(self.tokenizer.encode(self.prompt + one))
            ends.append(len(ids))
        device = torch.device(self.device)
        return self.ragged(torch.tensor(ids, dtype=torch.long).to(device),
                           torch.tensor(ends, dtype=torch.int32).to(device))


class _PaddedChunk(torch.nn.Module):
    """A padded export's traced module as the ragged module calls its encoder: ``(input_ids, attention_mask)`` in,
    the embedding out (token type ids zero, as the tokenizer gives them for one text; token embeddings dropped)."""

    def __init__(self, traced: torch.nn.Module, input_names: Sequence[str], dtype: torch.dtype):
        super().__init__()
        self.traced = traced
        self.input_names = list(input_names)
        self.dtype = dtype

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        features = {"input_ids": input_ids, "attention_mask": attention_mask,
                    "token_type_ids": torch.zeros_like(input_ids)}
        out = self.traced(*(features[n].to(self.dtype) for n in self.input_names))
        return out[0] if isinstance(out, (tuple, list)) else out


def ragged_encoder(exported: torch.nn.Module, input_names: Sequence[str], input_dtype: torch.dtype, pad_id: int,
                   max_tokens: int, token_budget: int, hidden_size: int, output_dtype: torch.dtype,
                   device: str) -> torch.jit.ScriptModule:
    """The ragged module over a token export: a ragged export's module itself, or one built around a padded
    export's traced module (re-traced through ``_PaddedChunk``, which inlines it with two inputs)."""
    if isinstance(exported, torch.jit.ScriptModule) and hasattr(exported, "chunks"):
        return exported
    example = (torch.ones(2, 5, dtype=torch.long, device=device), torch.ones(2, 5, dtype=torch.long, device=device))
    with torch.inference_mode(False), torch.no_grad():
        chunk = torch.jit.trace(_PaddedChunk(exported, input_names, input_dtype).eval(), example, check_trace=False)
    return build_ragged(chunk, pad_id, max_tokens, token_budget, hidden_size, output_dtype)


def build_text_model(tokenizer: torch.jit.ScriptModule, ragged: torch.jit.ScriptModule, prompt: str = "",
                     device: str = "cpu") -> torch.jit.ScriptModule:
    return torch.jit.script(TextEmbedding(tokenizer, ragged, prompt, device))


def _probe_texts(tokenizer, max_seq_len: int) -> list:
    """Real sentences and the edge cases (empty, spaces, added tokens, scripts, emoji, a truncated text)."""
    from ..checks.corpus import build_corpus

    texts = [i.text for i in build_corpus(16, tokenizer=tokenizer, max_seq_len=max_seq_len)]
    return texts + ["", "   ", "[CLS] cls [SEP] sep [MASK]", "naïve café 中文字 Ελληνικά", "👍🏽 👩‍👩‍👧‍👦", "x" * 300]


def build_checked_text_model(tokenizer, exported, reference, spec, meta, token_budget: int):
    """(the scripted text module, its provenance) for a transformers ``tokenizer`` and a token export's module;
    raises when its tokenizer differs from the library on a sample of the hostile corpus or its rows from
    ``reference.encode`` (SentenceTransformer) beyond the export's tolerance, or when an invalid text throws."""
    import tokenizers

    from ..checks.parity import ParityReport
    from ..errors import ParityError, UnsupportedModelError
    from ..export.precision import served_tolerance
    from . import corpus as hostile
    from .check import compare
    from .families import build, derive, family_of
    from .tables import FIX

    backend = tokenizer.backend_tokenizer
    tables = derive(backend, meta.max_seq_len)
    groups = hostile.sample(hostile.corpus(tables.added, getattr(tables, "max_chars", 100), meta.max_seq_len,
                                           count=400), 0.02)
    exact = compare(backend, meta.max_seq_len, groups, tables)
    if not exact.passed:
        raise UnsupportedModelError(f"the graph tokenizer differs from the tokenizers library on "
                                    f"{len(exact.mismatches)} of {exact.total} texts; nothing was written\n"
                                    f"{exact.table()}", fix=FIX, where="--tokenizer graph")
    device = meta.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ragged = ragged_encoder(exported, spec.input_names, torch.int32 if meta.input_dtype == "int32" else torch.int64,
                            pad_id, spec.max_positions or meta.max_seq_len, token_budget, meta.hidden_size,
                            torch.float16 if meta.dtype == "float16" else torch.float32, device)
    # --prompt-name, else the default prompt (meta.text_prompt_name holds whichever), checked against encode()
    # told the same prompt by name
    prompt_name = meta.text_prompt_name
    prompt = meta.prompts[prompt_name] if prompt_name else ""
    module = build_text_model(build(tables), ragged, prompt, device)

    texts = _probe_texts(tokenizer, meta.max_seq_len)
    # The bound verify holds the served text model to: a bf16/int8 export's recorded gate (its rows are fp32's only
    # within it), else the dtype's parity bound.
    report = ParityReport(served_tolerance(meta))
    expected = torch.from_numpy(reference.encode(texts, prompt_name=prompt_name) if prompt_name else
                                reference.encode(texts)).float()
    with torch.inference_mode():
        report.add("text model vs encode()", expected, module(texts).float().cpu())
        rows = module([b"\xff\xfe invalid", "valid"]).shape[0]
    if not report.passed or rows != 2:
        raise ParityError(f"the graph text model differs from sentence-transformers; nothing was written\n"
                          f"{report.table()}", report, fix=FIX)
    provenance = {"tokenizer": family_of(backend), "tokenizers_version": tokenizers.__version__,
                  "max_seq_len": meta.max_seq_len, "prompt_name": prompt_name, "prompt": prompt,
                  "token_budget": token_budget,
                  "tables": {"vocab": len(tables.vocab),
                             "added_tokens": tables.added},
                  "exactness_sample": exact.to_dict(), "parity": report.to_dict()}
    return module, provenance
