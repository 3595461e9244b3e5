"""int8 and bf16 exports of all-MiniLM-L6-v2 (real weights) through a real tritonserver: they pass their default
gates in trace, load READY on NVIDIA's LibTorch backend (aten::_int_mm in C++) and on the compatibility backend,
answer concurrent requests that the dynamic batcher merges with the very rows the in-process module gives each text
alone, stay within the recorded gate of fp32 sentence-transformers, and verify holds them to that gate."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from exporter.checks.verify import verify_repository
from exporter.export.pipeline import ExportOptions, export_model
from exporter.tokens import encode_batch, load_tokenizer
from exporter.triton.server import TritonServer
from exporter.triton_client import TritonClient

BACKENDS = ("nvidia", "compat")
PRECISIONS = ("int8", "bf16")
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.fixture(scope="module")
def lowp_repo(minilm, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo_precision_served")
    for precision in PRECISIONS:
        export_model(minilm, ExportOptions(out=repo, name=f"m_{precision}", precision=precision, max_batch_size=16,
                                           max_queue_delay_us=20000))
    return repo


@pytest.fixture(scope="module")
def texts(st_model):
    from exporter.checks.corpus import build_corpus

    return [i.text for i in build_corpus(24, seed=5, tokenizer=st_model.tokenizer,
                                         max_seq_len=st_model.max_seq_length)]


def _needs(backend: str, request) -> None:
    if backend == "nvidia":
        request.getfixturevalue("nvidia_backend")


def test_exports_pass_their_default_gates(lowp_repo):
    for precision, floor in (("int8", 0.99), ("bf16", 0.999)):
        meta = json.loads((lowp_repo / f"m_{precision}" / "1" / "tei_export.json").read_text())
        quality = meta["parity"]["quality"]
        assert quality["passed"] and quality["min_cosine"] >= floor and quality["texts"] >= 1000
        assert quality["row_independence_max_abs_diff"] <= 1e-6
        print(f"\nMiniLM {precision}: min cos {quality['min_cosine']:.5f}, mean {quality['mean_cosine']:.6f}, "
              f"top-10 overlap {quality['mean_top10_overlap']:.4f}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_served_rows_equal_the_module_alone_and_stay_in_the_gate(backend, request, binary, lowp_repo, texts,
                                                                 st_model, tmp_path):
    _needs(backend, request)
    want_fp32 = st_model.encode(texts, convert_to_numpy=True)
    with TritonServer(lowp_repo, binary=binary, backend=backend, log_path=tmp_path / "triton.log") as server:
        for precision in PRECISIONS:
            name = f"m_{precision}"
            assert server.served_by(name) == ("compatibility backend (model.py)" if backend == "compat"
                                              else server.backends.nvidia_label)
            tokenizer = load_tokenizer(lowp_repo / name / "1")
            # one text per request, all padded to one length so the dynamic batcher merges them
            requests = [encode_batch(tokenizer, [t], 256, INPUTS, np.int64, (64, 256)) for t in texts]
            module = torch.jit.load(str(lowp_repo / name / "1" / "model.pt"))
            with torch.inference_mode():
                alone = np.concatenate([module(*(torch.from_numpy(r[k]) for k in INPUTS)).numpy()
                                        for r in requests])

            def one(request_arrays):
                with TritonClient(server.grpc_url, "grpc") as client:
                    return client.infer(name, request_arrays, ["embedding"])["embedding"]

            with TritonClient(server.http_url, "http") as admin:
                before = admin.statistics(name)
                with ThreadPoolExecutor(8) as pool:
                    got = np.concatenate(list(pool.map(one, requests)))
                after = admin.statistics(name, at_least=before[0] + len(texts))
            assert after[1] - before[1] < len(texts), "the dynamic batcher should merge concurrent requests"
            assert np.abs(got - alone).max() <= 1e-6, f"{precision}: a row changed inside a merged batch"
            meta = json.loads((lowp_repo / name / "1" / "tei_export.json").read_text())
            cos = (got * want_fp32).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want_fp32, axis=1)
            assert cos.min() >= meta["parity"]["quality"]["bounds"]["min_cosine"]


def test_verify_holds_them_to_their_gate(lowp_repo, nvidia_backend):
    report = verify_repository(lowp_repo, corpus_size=16, server_options={"backend": "nvidia"})
    assert report.passed, report.table()
    assert {c.model for c in report.checks} == {"m_int8", "m_bf16"}
    assert all(r.get("ok") for r in report.libtorch), report.libtorch  # the C++ LibTorch loader runs them too
