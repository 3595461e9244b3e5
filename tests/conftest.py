import os

import pytest

# No test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from model_factory import bge_small_like, minilm_path  # noqa: E402


@pytest.fixture(scope="session")
def minilm() -> str:
    return minilm_path()


@pytest.fixture(scope="session")
def minilm_export(tmp_path_factory, minilm):
    """all-MiniLM-L6-v2 (real weights) exported once for the session into its own repository."""
    from exporter.export.pipeline import ExportOptions, export_model

    repo = tmp_path_factory.mktemp("repo_minilm")
    return export_model(minilm, ExportOptions(out=repo, name="minilm", max_batch_size=16))


@pytest.fixture(scope="session")
def bge_like(tmp_path_factory) -> str:
    return bge_small_like(tmp_path_factory.mktemp("bge_small_like"))


@pytest.fixture(scope="session")
def minilm_pt2_export(tmp_path_factory):
    """all-MiniLM-L6-v2 exported once as model.pt2 (torch.export + AOTInductor, platform torch_aoti).
    It takes the path itself, not the ``minilm`` fixture, which some modules redefine."""
    from exporter.export.pipeline import ExportOptions, export_model

    repo = tmp_path_factory.mktemp("repo_minilm_pt2")
    return export_model(minilm_path(), ExportOptions(out=repo, name="minilm_pt2", format="pt2", max_batch_size=16))


@pytest.fixture(scope="session")
def binary():
    """The tritonserver the tests run (nvidia-pytriton's in CI and here)."""
    from exporter.errors import ServerError
    from exporter.triton.binary import find_tritonserver

    try:
        return find_tritonserver()
    except ServerError as err:  # pragma: no cover - the dev/CI environment has nvidia-pytriton
        pytest.skip(f"no tritonserver here: {err}")


@pytest.fixture(scope="session")
def st_model():
    """The eager reference: SentenceTransformer on the real all-MiniLM-L6-v2 weights, on the CPU."""
    import _triton_fixtures as fx

    return fx.load_sentence_transformer(minilm_path())


@pytest.fixture(scope="session")
def nvidia_backend(binary):
    """NVIDIA's libtriton_pytorch.so for the bundled server: the server's own or the one the set-up built
    (``tei-export backend build``). Without it these tests skip, saying why; under CI, when the set-up had the sources
    ($TEI_EXPORT_BACKEND_SOURCE), its absence fails the run instead."""
    from exporter.triton.backends import resolve

    setup = resolve(binary, "auto")
    if not setup.compat:
        return setup
    source = os.environ.get("TEI_EXPORT_BACKEND_SOURCE", "")
    if os.environ.get("CI") == "true" and source and os.path.isdir(source):
        pytest.fail(f"CI: the set-up had NVIDIA's backend sources ({source}) but no build is usable: {setup.reason}")
    pytest.skip(f"NVIDIA's LibTorch backend is not built here: {setup.reason}")


NEWEST_BRANCH = "main"


@pytest.fixture(scope="session")
def newest_backend(binary):
    """NVIDIA's newest pytorch_backend (branch main) built for the bundled server, beside the release one: the test
    set-up builds it when its sources are at hand ($TEI_EXPORT_NEWEST_BACKEND_SOURCE, ../shared/vendor/triton-main-*).
    Without it these tests skip, saying why; under CI with those sources, its absence fails the run."""
    from exporter.errors import ServerError
    from exporter.triton.backends import resolve

    try:
        return resolve(binary, f"nvidia:{NEWEST_BRANCH}")
    except ServerError as err:
        source = os.environ.get("TEI_EXPORT_NEWEST_BACKEND_SOURCE", "")
        if os.environ.get("CI") == "true" and source and os.path.isdir(source):
            pytest.fail(f"CI: the set-up had the newest backend's sources ({source}) but no build is usable: {err}")
        pytest.skip(f"NVIDIA's newest backend ({NEWEST_BRANCH}) is not built here: {err}")
