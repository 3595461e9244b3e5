"""jina-embeddings-v3's task adapters: one chosen at export (--task) and merged into the weights.

The checkpoint is written here in the format of jinaai/jina-embeddings-v3 (its own modelling code, remote names
under ``roberta.``, every Linear and Embedding weight stored as ``M.parametrizations.weight.original`` beside
``M.parametrizations.weight.0.lora_A`` / ``lora_B`` with one adapter per task; config.json says
``model_type: xlm-roberta``, names ``XLMRobertaLoRA`` in auto_map and lists ``lora_adaptations``), from a small
random native model and random adapters. The oracle is sentence-transformers on the native model whose weights this
file merges itself, module by module in native names (W + alpha/rank * B[t] @ A[t]; A[t] @ B[t] for embeddings).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from family_models import family_model

from exporter.errors import UnsupportedModelError
from exporter.export.pipeline import ExportOptions, export_model
from exporter.export.spec import SpecOverrides, read_spec

TASKS = ["retrieval.query", "retrieval.passage", "separation", "classification", "text-matching"]
INSTRUCTIONS = {"retrieval.query": "Represent the query for retrieving evidence documents: ",
                "retrieval.passage": "Represent the document for retrieval: ", "separation": "",
                "classification": "", "text-matching": ""}
RANK, ALPHA = 4, 2.0
TEXTS = ["a short query", "what the weather is in Berlin today, and tomorrow as well", "x"]
_AUTO_MAP = {"AutoConfig": "jinaai/xlm-roberta-flash-implementation--configuration_xlm_roberta.XLMRobertaFlashConfig",
             "AutoModel": "jinaai/xlm-roberta-flash-implementation--modeling_lora.XLMRobertaLoRA"}


def _remote_name(native: str) -> str:
    """The native class's key as the remote checkpoint names it (the inverse of transformers' conversion map)."""
    name = native.replace("embeddings.LayerNorm", "emb_ln").replace("self_attn.o_proj", "mixer.out_proj")
    name = name.replace("post_attention_layernorm", "norm1").replace("post_mlp_layernorm", "norm2")
    if name.startswith("layers."):
        name = "encoder." + name
    return "roberta." + name


def _adapters(state: dict, seed: int = 7) -> dict:
    """Random adapters, in the checkpoint's shapes, for every Linear and Embedding weight (remote module names)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, weight in state.items():
        if not key.endswith(".weight") or weight.dim() != 2 or "LayerNorm" in key or "layernorm" in key:
            continue
        if ".self_attn.k_proj" in key or ".self_attn.v_proj" in key:
            continue  # one adapter on the fused Wqkv
        module = key[: -len(".weight")]
        rows, cols = weight.shape
        if ".self_attn.q_proj" in key:
            module, rows = module.replace("self_attn.q_proj", "mixer.Wqkv"), 3 * rows
        embedding = "embeddings." in key
        a_shape = (len(TASKS), rows, RANK) if embedding else (len(TASKS), RANK, cols)
        b_shape = (len(TASKS), RANK, cols) if embedding else (len(TASKS), rows, RANK)
        out[module] = (embedding, torch.randn(a_shape, generator=gen) * 0.3, torch.randn(b_shape, generator=gen) * 0.3)
    return out


def _remote_checkpoint(native: dict, adapters: dict) -> dict:
    tensors = {}
    for key, value in native.items():
        if ".self_attn.k_proj" in key or ".self_attn.v_proj" in key:
            continue
        if ".self_attn.q_proj" in key:
            fused = torch.cat([value, native[key.replace("q_proj", "k_proj")], native[key.replace("q_proj", "v_proj")]])
            key, value = key.replace("self_attn.q_proj", "mixer.Wqkv"), fused
        module = key[: -len(".weight")]
        if key.endswith(".weight") and module in adapters:
            base = _remote_name(module)
            _, lora_a, lora_b = adapters[module]
            tensors[f"{base}.parametrizations.weight.original"] = value
            tensors[f"{base}.parametrizations.weight.0.lora_A"] = lora_a
            tensors[f"{base}.parametrizations.weight.0.lora_B"] = lora_b
        else:
            tensors[_remote_name(key)] = value
    return {k: v.contiguous() for k, v in tensors.items()}


def _oracle_state(native: dict, adapters: dict, task: str) -> dict:
    """The native weights with ``task``'s adapter merged, computed here in native names."""
    t, scale = TASKS.index(task), ALPHA / RANK
    merged = {k: v.clone() for k, v in native.items()}
    for module, (embedding, lora_a, lora_b) in adapters.items():
        delta = scale * (lora_a[t] @ lora_b[t] if embedding else lora_b[t] @ lora_a[t])
        if "mixer.Wqkv" in module:
            for i, part in enumerate(("q_proj", "k_proj", "v_proj")):
                key = module.replace("mixer.Wqkv", f"self_attn.{part}") + ".weight"
                merged[key] += delta[i * delta.shape[0] // 3:(i + 1) * delta.shape[0] // 3]
        else:
            merged[module + ".weight"] += delta
    return merged


@pytest.fixture(scope="module")
def jina(tmp_path_factory):
    """(the checkpoint with adapters, its adapters, the native weights, the plain native folder)."""
    from safetensors.torch import save_file
    from transformers import AutoModel

    root = tmp_path_factory.mktemp("jina")
    plain = Path(family_model(root / "plain", "jina_embeddings_v3"))
    native = AutoModel.from_pretrained(str(plain)).state_dict()  # native names (the file has transformers' own)
    config = json.loads((plain / "config.json").read_text())
    adapters = _adapters(native)
    remote = root / "remote"
    shutil.copytree(plain, remote)
    (remote / "model.safetensors").unlink()
    save_file(_remote_checkpoint(native, adapters), str(remote / "model.safetensors"))
    config.pop("rope_parameters", None)  # the remote code's config gives rotary_emb_base instead
    remote_config = {**config, "model_type": "xlm-roberta", "architectures": ["XLMRobertaLoRA"], "auto_map": _AUTO_MAP,
                     "lora_adaptations": TASKS, "task_instructions": INSTRUCTIONS, "lora_rank": RANK,
                     "lora_alpha": ALPHA, "lora_dropout_p": 0.0, "load_trained_adapters": True,
                     "position_embedding_type": "rotary", "rotary_emb_base": 20000.0}
    (remote / "config.json").write_text(json.dumps(remote_config, indent=2))
    modules = json.loads((remote / "modules.json").read_text())
    modules[0]["type"] = "custom_st.Transformer"  # as the real checkpoint's modules.json names its module
    (remote / "modules.json").write_text(json.dumps(modules))
    return remote, adapters, native, plain


def _oracle(jina, task: str, folder: Path, texts: list[str] = TEXTS, prompt: str | None = None) -> np.ndarray:
    """sentence-transformers on the native model with ``task``'s adapter merged by this file (prompt: the task's
    instruction unless given)."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    _, adapters, native, plain = jina
    if not folder.exists():
        shutil.copytree(plain, folder)
        model = AutoModel.from_pretrained(str(plain))
        model.load_state_dict(_oracle_state(native, adapters, task), strict=True)
        model.save_pretrained(str(folder))
    st = SentenceTransformer(str(folder), device="cpu")
    return st.encode(texts, prompt=INSTRUCTIONS[task] if prompt is None else prompt)


def _exported_rows(result, texts: list[str]) -> np.ndarray:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(result.target.version_dir / "tokenizer"))
    enc = tokenizer(texts, padding=True, truncation=True, max_length=result.spec.max_seq_len, return_tensors="pt")
    module = torch.jit.load(str(result.target.version_dir / "model.pt"))
    with torch.inference_mode():
        return module(*(enc[n] for n in result.spec.input_names)).numpy()


@pytest.fixture(scope="module")
def query_export(jina, tmp_path_factory):
    remote = jina[0]
    return export_model(str(remote), ExportOptions(out=tmp_path_factory.mktemp("repo_tasks"), name="jina_query",
                                                   task="retrieval.query", max_batch_size=4, with_tokenizer=True,
                                                   tokenizer="python"))


def test_task_adapter_merged_matches_an_independent_merge(jina, query_export, tmp_path):
    result = query_export
    assert result.parity.passed, result.parity.table()
    assert result.spec.model_type == "jina_embeddings_v3" and result.metadata.task == "retrieval.query"
    # the task's instruction is the prompt a text model prepends
    assert result.metadata.default_prompt_name == "retrieval.query"
    assert result.metadata.prompts["retrieval.query"] == INSTRUCTIONS["retrieval.query"]
    prompted = [INSTRUCTIONS["retrieval.query"] + t for t in TEXTS]
    got = _exported_rows(result, prompted)
    expected = _oracle(jina, "retrieval.query", tmp_path / "oracle_query")
    diff = float(np.abs(got - expected).max())
    cosine = float(np.min(np.sum(got * expected, axis=1) / (np.linalg.norm(got, axis=1)
                                                               * np.linalg.norm(expected, axis=1))))
    print(f"retrieval.query: max |diff| {diff:.2e}, min cosine {cosine:.8f} against the independent merge")
    assert diff <= 1e-5 and cosine >= 0.99999
    # the adapter matters: the base weights, and another task's adapter, give other rows
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(str(jina[3]), device="cpu").encode(prompted)
    assert np.abs(got - base).max() > 1e-3
    query_plain = _oracle(jina, "retrieval.query", tmp_path / "oracle_query", prompt="")
    assert np.abs(query_plain - _oracle(jina, "text-matching", tmp_path / "oracle_other", prompt="")).max() > 1e-3


def test_another_task_merges_its_own_adapter(jina, tmp_path):
    remote = jina[0]
    result = export_model(str(remote), ExportOptions(out=tmp_path / "repo", name="jina_match", task="text-matching",
                                                     max_batch_size=4))
    assert result.parity.passed, result.parity.table()
    # an empty instruction: the prompt is the empty string, as the model's own encode(task=...) prepends
    assert result.metadata.prompts.get("text-matching") == ""
    got = _exported_rows(result, TEXTS)
    expected = _oracle(jina, "text-matching", tmp_path / "oracle")
    assert np.abs(got - expected).max() <= 1e-5


def test_adapters_need_a_task_and_the_error_lists_them(jina, tmp_path):
    from exporter.export.reference import load_reference

    remote = jina[0]
    # its files read without a task (what check-tokenizer reads), its weights only with one
    spec = read_spec(str(remote))
    assert spec.tasks == tuple(TASKS) and spec.task is None
    for load in (lambda: export_model(str(remote), ExportOptions(out=tmp_path)), lambda: load_reference(spec)):
        with pytest.raises(UnsupportedModelError) as err:
            load()
        assert all(t in str(err.value) for t in TASKS) and "no --task given" in str(err.value)
    with pytest.raises(UnsupportedModelError) as err:
        read_spec(str(remote), SpecOverrides(task="retrieval"))
    assert "--task retrieval is not one of its tasks" in str(err.value) and all(t in str(err.value) for t in TASKS)
    with pytest.raises(UnsupportedModelError, match="--trust-remote-code"):
        read_spec(str(remote), SpecOverrides(task="retrieval.query"), trust_remote_code=True)


def test_task_for_a_model_without_adapters_is_an_error(jina):
    with pytest.raises(UnsupportedModelError, match="no task adapters"):
        read_spec(str(jina[3]), SpecOverrides(task="retrieval.query"))


def test_unmerged_adapter_keys_are_refused_by_the_native_class(jina, tmp_path):
    """Without the merge the native class would not load the checkpoint: its adapter keys would be left over (the
    rule of native.py), so the merge, not a lenient load, is what makes it exportable."""
    from transformers import AutoModel

    remote = jina[0]
    folder = tmp_path / "as_is"
    shutil.copytree(remote, folder)
    config = json.loads((folder / "config.json").read_text())
    config = {k: v for k, v in config.items() if k not in ("auto_map", "architectures")}
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "jina_embeddings_v3"}))
    _, info = AutoModel.from_pretrained(str(folder), output_loading_info=True)
    assert any("lora_A" in k for k in info["unexpected_keys"]), info


def test_served_on_nvidias_backend(nvidia_backend, query_export):
    """The merged export served by NVIDIA's libtriton_pytorch.so, verified over HTTP and gRPC against
    sentence-transformers on the merged weights: token requests as sent, text requests with the task's instruction
    prepended by the text model, as encode(prompt=...) prepends it."""
    from exporter.checks.verify import verify_repository

    repo = query_export.target.version_dir.parent.parent
    report = verify_repository(repo, corpus_size=12, server_options={"backend": "nvidia"})
    assert report.passed, report.table()
    assert {c.kind for c in report.checks} == {"tokens", "text"}
    for check in report.checks:
        assert "libtriton_pytorch.so" in check.served_by
        assert check.max_abs_diff <= 1e-5 and check.min_cosine >= 0.99999


def test_cli_passes_the_task(jina, tmp_path):
    from click.testing import CliRunner

    from exporter.cli import main

    remote = str(jina[0])
    missing = CliRunner().invoke(main, ["trace", remote, "--out", str(tmp_path)])
    assert missing.exit_code != 0 and "retrieval.passage" in missing.output, missing.output
    wrong = CliRunner().invoke(main, ["trace", remote, "--out", str(tmp_path), "--task", "query"])
    assert wrong.exit_code != 0 and "--task query is not one of its tasks" in wrong.output, wrong.output


def test_remote_rotary_base_reaches_the_native_class(jina, tmp_path):
    """The remote config's rotary_emb_base, not the native class's default theta, is what the export computes with."""
    from transformers import AutoConfig

    folder = tmp_path / "base5000"
    shutil.copytree(jina[0], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "rotary_emb_base": 5000.0}))
    spec = read_spec(str(folder), SpecOverrides(task="separation"))
    assert AutoConfig.from_pretrained(str(spec.native_path)).rope_parameters["rope_theta"] == 5000.0
