"""Ragged batching: one flat tensor of every merged request's tokens in, one embedding per request out.

With ``allow_ragged_batch`` on ``input_ids`` and a ``BATCH_ACCUMULATED_ELEMENT_COUNT`` batch input, NVIDIA's LibTorch
backend (r24.10) calls ``forward(input_ids, offsets)`` with ``input_ids`` = all merged requests' tokens concatenated
(1-D) and ``offsets`` = each request's END offset into it, INT32, no leading zero: five requests of 2..6 tokens
arrive as ids ``[20]`` and offsets ``[2, 5, 9, 14, 20]``. Each request is one text sent as ``[1, L]``, and the model
returns ``[requests, hidden]``, one row per request in request order.

The module here rebuilds padded batches from that and runs the traced embedding module (``wrapper``) on them:
texts are sorted by length and encoded in chunks, each padded only to its own longest text and bounded by a token
budget (rows x padded length), so a merged batch of short and long texts does not pay for padding every short one
to the longest. Loops with data-dependent sizes cannot be traced, so this outer module is scripted
(``torch.jit.script``) around the traced inner one.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor


class RaggedEmbedding(torch.nn.Module):
    """``forward(input_ids, offsets)`` as the backend calls it -> ``[requests, hidden]`` in request order.

    ``encoder`` is the traced embedding module taking ``(input_ids, attention_mask)`` padded ``[rows, length]``
    and returning pooled (and normalised) embeddings ``[rows, hidden]``. A text longer than ``max_tokens`` (what the
    position embeddings address) is cut to its first ``max_tokens`` tokens rather than failing: in a merged batch
    an error would fail every request merged with it. A request of zero tokens gets a zero row, for the same reason.
    """

    def __init__(self, encoder: torch.nn.Module, pad_id: int, max_tokens: int, token_budget: int, hidden_size: int,
                 output_dtype: torch.dtype = torch.float32):
        super().__init__()
        if token_budget < 1 or max_tokens < 1:
            raise ValueError("token_budget and max_tokens must be positive")
        self.encoder = encoder
        self.pad_id = pad_id
        self.max_tokens = max_tokens
        self.token_budget = token_budget
        self.hidden_size = hidden_size
        self.output_dtype = output_dtype

    def _lengths(self, input_ids: Tensor, offsets: Tensor) -> Tuple[Tensor, Tensor]:
        """(starts, lengths) of each request, on the ids' device."""
        ends = offsets.reshape(-1).to(device=input_ids.device, dtype=torch.long)
        if ends.numel() > 0 and int(ends[-1]) != input_ids.numel():
            raise RuntimeError("offsets must be the end offset of each request in input_ids, the last one equal to "
                               "the number of tokens (" + str(input_ids.numel()) + "), as Triton's "
                               "BATCH_ACCUMULATED_ELEMENT_COUNT batch input gives them; got " + str(int(ends[-1])))
        starts = torch.cat([ends.new_zeros(1), ends[:-1]])
        return starts, (ends - starts).clamp(min=0, max=self.max_tokens)

    @torch.jit.export
    def chunks(self, lengths: Tensor) -> List[List[int]]:
        """The encoder calls for texts of ``lengths``: [first sorted position, rows, padded length] each, over the
        texts sorted longest first (stable). Zero-length texts are left out; they sort last."""
        ordered: List[int] = torch.sort(lengths.reshape(-1).long(), descending=True, stable=True)[0].tolist()
        plan: List[List[int]] = []
        done = 0
        while done < len(ordered) and ordered[done] > 0:
            width = ordered[done]  # the longest remaining text pads this chunk
            rows = min(len(ordered) - done, max(1, self.token_budget // width))
            while ordered[done + rows - 1] == 0:
                rows -= 1
            plan.append([done, rows, width])
            done += rows
        return plan

    def forward(self, input_ids: Tensor, offsets: Tensor) -> Tensor:
        ids = input_ids.reshape(-1).long()  # the config may declare TYPE_INT32; embeddings index with int64
        starts, lengths = self._lengths(ids, offsets)
        order = torch.sort(lengths, descending=True, stable=True)[1]
        out = torch.zeros(lengths.numel(), self.hidden_size, dtype=self.output_dtype, device=ids.device)
        for chunk in self.chunks(lengths):
            first, rows, width = chunk[0], chunk[1], chunk[2]
            texts = order[first:first + rows]
            positions = torch.arange(width, device=ids.device).unsqueeze(0)
            real = positions < lengths[texts].unsqueeze(1)
            # Padding positions read token 0 and are then overwritten with the pad id: the chunk is exactly the batch
            # the tokenizer's own right padding gives.
            where = torch.where(real, starts[texts].unsqueeze(1) + positions, torch.zeros_like(positions))
            chunk_ids = ids[where].masked_fill(~real, self.pad_id)
            out.index_copy_(0, texts, self.encoder(chunk_ids, real.long()).to(self.output_dtype))
        return out


def build_ragged(encoder: torch.nn.Module, pad_id: int, max_tokens: int, token_budget: int, hidden_size: int,
                 output_dtype: torch.dtype = torch.float32) -> torch.jit.ScriptModule:
    """The scripted ragged module around ``encoder`` (already traced)."""
    return torch.jit.script(RaggedEmbedding(encoder, pad_id, max_tokens, token_budget, hidden_size, output_dtype))


def pack(texts: Sequence[Sequence[int]], dtype: torch.dtype = torch.int64) -> tuple[Tensor, Tensor]:
    """Token lists -> (ids, offsets) exactly as the backend passes merged requests: the tokens of all texts in one
    1-D tensor of ``dtype`` and each text's end offset, INT32."""
    lengths = [len(t) for t in texts]
    ids = torch.tensor([token for text in texts for token in text], dtype=dtype)
    ends = torch.tensor(lengths, dtype=torch.int64).cumsum(0) if lengths else torch.zeros(0, dtype=torch.int64)
    return ids, ends.to(torch.int32)


def pad_right(texts: Sequence[Sequence[int]], pad_id: int) -> dict[str, Tensor]:
    """Token lists -> right-padded ``input_ids`` and ``attention_mask`` [texts, longest], as a tokenizer pads them."""
    longest = max(len(t) for t in texts)
    ids = torch.full((len(texts), longest), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(texts), longest), dtype=torch.int64)
    for row, text in enumerate(texts):
        ids[row, :len(text)] = torch.tensor(list(text), dtype=torch.int64)
        mask[row, :len(text)] = 1
    return {"input_ids": ids, "attention_mask": mask}
