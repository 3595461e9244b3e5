"""Model repositories for the tritonserver tests.

all-MiniLM-L6-v2 comes from the exporter (the ``minilm_export`` fixture); the tiny scripted modules here exercise the
rest of the LibTorch contract (index naming, tuple outputs, wrong output dtype, dict output, ragged batches, bad
configs) without the exporter.
"""
from __future__ import annotations

import os
from pathlib import Path
import shutil
from typing import Dict, List, Tuple

import torch

SENTENCES = [
    "Triton serves TorchScript models.",
    "A much longer sentence, so that the batch needs padding for the shorter ones in it.",
    "Embeddings!",
]


def load_sentence_transformer(path: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    # float32 as the exporter's reference, also for a checkpoint stored in half precision
    return SentenceTransformer(str(path), device="cpu", model_kwargs={"dtype": torch.float32})


def tokenize(st_model, sentences):
    enc = st_model.tokenizer(list(sentences), padding=True, truncation=True, return_tensors="np")
    return {k: enc[k].astype("int64") for k in ("input_ids", "attention_mask", "token_type_ids")}


def copy_model(model_dir: Path, repo: Path, name: str, queue_delay_us: int | None = None) -> Path:
    """Copy an exported model folder into ``repo`` as ``name``; optionally set the dynamic batcher's queue delay
    (a longer one makes "concurrent requests share an execution" deterministic on a small machine)."""
    dest = repo / name
    shutil.copytree(model_dir, dest)
    config = dest / "config.pbtxt"
    lines = []
    for line in config.read_text().splitlines():
        if line.startswith("name:"):
            line = f'name: "{name}"'
        elif queue_delay_us is not None and line.strip().startswith("max_queue_delay_microseconds:"):
            line = line.split(":", 1)[0] + f": {queue_delay_us}"
        lines.append(line)
    config.write_text("\n".join(lines) + "\n")
    return dest


def config_int(config_text: str, key: str) -> int:
    for line in config_text.splitlines():
        if line.strip().startswith(f"{key}:"):
            return int(line.split(":", 1)[1])
    raise KeyError(key)


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


class RaggedSum(torch.nn.Module):
    """Ragged batching as Triton's backends do it: ``x`` holds every merged request's elements end to end, and
    ``offsets`` (a batch input) each request's end offset; one sum per request, in request order."""

    def forward(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        ends = torch.cumsum(x, 0)[offsets.long() - 1]
        return (ends - torch.cat([torch.zeros(1, dtype=ends.dtype), ends[:-1]])).unsqueeze(1)


class ScalarOut(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum()


class ListOut(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [x, x]


class Sub(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a - b


class Lengths(torch.nn.Module):
    def forward(self, texts: List[str]) -> torch.Tensor:
        return torch.tensor([len(t) for t in texts], dtype=torch.int64)


class IntArg(torch.nn.Module):
    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return x * k


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
    _write_scripted(repo, "ragged", RaggedSum(), """max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] allow_ragged_batch: true } ]
batch_input [ { kind: BATCH_ACCUMULATED_ELEMENT_COUNT target_name: "offsets" data_type: TYPE_INT32
                source_input: "x" } ]
output [ { name: "s" data_type: TYPE_FP32 dims: [ 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 200000 }
instance_group [ { kind: KIND_CPU count: 1 } ]
""")


_X2 = 'input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]\n'
_Y2 = 'output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]\n'


def write_contract_models(repo: Path) -> None:
    """More corners of the LibTorch contract, for the differential tests (tests/test_differential.py)."""
    _write_scripted(repo, "scalar_out", ScalarOut(), "max_batch_size: 4\n" + _X2 +
                    'output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n')
    _write_scripted(repo, "list_out", ListOut(), "max_batch_size: 4\n" + _X2 + _Y2)
    # "p__x__1": the C++ code reads the text after the FIRST "__" ("x__1"), not a number: config order applies
    _write_scripted(repo, "dunder", Sub(), """max_batch_size: 4
input [ { name: "p__x__1" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "q__y__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
""" + _Y2)
    # two config inputs name index 0: it loads, and forward() misses argument 'b'
    _write_scripted(repo, "dup_index", Sub(), """max_batch_size: 4
input [ { name: "a__0" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "b__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
""" + _Y2)
    _write_scripted(repo, "out_index", Double(), "max_batch_size: 4\n" + _X2 +
                    'output [ { name: "y__3" data_type: TYPE_FP32 dims: [ 2 ] } ]\n')
    _write_scripted(repo, "strings", Lengths(), """max_batch_size: 0
input [ { name: "texts" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "n" data_type: TYPE_INT64 dims: [ -1 ] } ]
""")
    # std::stoi reads "1 thread" as 1; backend_common's booleans take any case
    _write_scripted(repo, "lenient_params", Double(), "max_batch_size: 4\n" + _X2 + _Y2 + """parameters [
  { key: "INTRA_OP_THREAD_COUNT" value: { string_value: "1 thread" } },
  { key: "DISABLE_OPTIMIZED_EXECUTION" value: { string_value: "TRUE" } },
  { key: "ENABLE_TENSOR_FUSER" value: { string_value: "off" } }
]
""")


def write_interop_models(repo: Path, count: int = 2) -> None:
    """``count`` models that each set INTER_OP_THREAD_COUNT (NVIDIA's backend before 25.11 aborts on the second)."""
    for k in range(count):
        _write_scripted(repo, f"interop_{k}", Double(), "max_batch_size: 4\n" + _X2 + _Y2 +
                        'parameters { key: "INTER_OP_THREAD_COUNT" value: { string_value: "1" } }\n')


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
    # Not here: a model whose warm-up request fails (e.g. FP16 declared, FP32 produced, with model_warmup). Triton
    # 2.51 then reports the load failure, but about one start in six it crashes (SIGSEGV) while tearing the
    # instance down, so such a test would be flaky. The FP16 mismatch is checked as a request error instead.
    # a boolean parameter that is not one of true/false/on/off/1/0
    _write_scripted(repo, "bad_param", Double(), """max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
parameters { key: "INFERENCE_MODE" value: { string_value: "maybe" } }
""")
    # forward(x, k: int): an argument that is neither a Tensor nor a List
    _write_scripted(repo, "int_arg", IntArg(), """max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "k" data_type: TYPE_INT64 dims: [ 1 ] } ]
""" + _Y2)
    # the model file is not where the config says
    _write_scripted(repo, "no_file", Double(), 'default_model_filename: "other.pt"\nmax_batch_size: 4\n' + _X2 + _Y2)


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


def start_must_fail(repo: Path, binary, **kwargs):
    """Start a TritonServer on ``repo`` whose models must fail to load: (the server, its ServerError text), the
    server already stopped by ``start()``."""
    import pytest

    from exporter.errors import ServerError
    from exporter.triton.server import TritonServer

    srv = TritonServer(repo, binary=binary, **kwargs)
    with pytest.raises(ServerError) as err:
        srv.start()
    assert not srv.running
    return srv, str(err.value)


def group_members(pgid: int) -> list[int]:
    """PIDs whose process group is ``pgid`` (from /proc; zombies excluded)."""
    from exporter.triton.process import processes

    return [p.pid for p in processes() if p.pgrp == pgid]


def children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc; zombies excluded)."""
    from exporter.triton.process import processes

    return [p.pid for p in processes() if p.ppid == pid]


def server_child(pid: int) -> int | None:
    """The serving tritonserver that process ``pid`` started: its child that leads a process group of its own
    (TritonServer starts the server in a new session) and listens on HTTP (``--http-port``: the version probe that
    finding the binary runs for 30 ms is also a child in a session of its own), found by parentage, not by name."""
    for child in children(pid):
        try:
            if os.getpgid(child) == child and option_of(child, "--http-port") is not None:
                return child
        except (ProcessLookupError, FileNotFoundError):
            continue
    return None


def command_line(pid: int) -> list[str]:
    return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def option_of(pid: int, option: str) -> str | None:
    """The value of ``--option=value`` on process ``pid``'s command line."""
    for arg in command_line(pid):
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def commit_when_released(repo: str, name: str, label: str, force: bool, barrier, results) -> None:
    """Stage version 1 of ``name`` marked ``label`` (in its config and its version folder), wait for ``barrier``,
    then commit: run in several processes at once, the commits race. Puts (label, "ok" or the error) on
    ``results``."""
    from exporter.export.repository import VersionTarget, staged_version

    try:
        with staged_version(VersionTarget(Path(repo), name, 1), force) as staging:
            (staging / "1" / "label.txt").write_text(label)
            (staging / "config.pbtxt").write_text(f"# {label}\n")
            barrier.wait(timeout=60)
        results.put((label, "ok"))
    except Exception as err:
        results.put((label, f"{type(err).__name__}: {err}"))


def served_text_rows(repo: Path, model: str, texts: list, binary, log_path: Path, copies: int = 3):
    """Each of ``texts`` (str or bytes) ``copies`` times as its own gRPC request to text model ``model``, all at once
    (so NVIDIA's batcher merges them), on a server of ``repo``: the rows in order."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from exporter.triton.server import TritonServer
    from exporter.triton_client import TritonClient

    def one(text):
        data = np.array([[text if isinstance(text, bytes) else text.encode("utf-8")]], dtype=np.object_)
        with TritonClient(server.grpc_url, "grpc") as client:
            return client.infer(model, {"text": data}, ["embedding"])["embedding"]

    with TritonServer(repo, binary=binary, backend="nvidia", log_path=log_path) as server:
        with ThreadPoolExecutor(len(texts)) as pool:
            return np.concatenate(list(pool.map(one, list(texts) * copies)), axis=0)


def export_with_graph_text(src, out: Path, name: str, texts: list):
    """``src`` exported with --with-tokenizer (the default, graph text model) into ``out`` as ``name``, and its
    sentence-transformers rows for ``texts`` (invalid bytes read as ``decode("utf-8", "replace")``)."""
    from sentence_transformers import SentenceTransformer

    from exporter.export.pipeline import ExportOptions, export_model

    export_model(str(src), ExportOptions(out=out, name=name, max_batch_size=8, max_queue_delay_us=20000,
                                         with_tokenizer=True))
    want = SentenceTransformer(str(src), device="cpu").encode(
        [t.decode("utf-8", "replace") if isinstance(t, bytes) else t for t in texts], convert_to_numpy=True)
    return out, want


def check_graph_text_export(repo: Path, name: str, family: str, texts: list, want) -> None:
    """The export holds only ``name`` and its graph text model, whose tokenizer is ``family`` with no mismatch on its
    export sample, and whose rows for ``texts`` equal ``want`` in process."""
    import json

    assert sorted(p.name for p in repo.iterdir()) == [name, f"{name}_text"]
    provenance = json.loads((repo / f"{name}_text" / "1" / "text_graph.json").read_text())
    assert provenance["tokenizer"] == family and provenance["exactness_sample"]["mismatches"] == 0
    module = torch.jit.load(str(repo / f"{name}_text" / "1" / "model.pt"))
    with torch.inference_mode():
        got = module(texts).numpy()
    assert abs(got - want).max() <= 1e-5
