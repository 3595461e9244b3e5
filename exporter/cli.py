"""The `tei-export` command line: a thin layer that parses options and calls the library."""
from __future__ import annotations

import json
import sys
import time
from functools import wraps
from pathlib import Path

import click

from . import __version__
# Only light modules at the top: `tei-export --help` must not load torch (seconds); commands import the library.
from .errors import ParityError, TeiExportError
from .export.batching import BATCHING_MODES, DEFAULT_TOKEN_BUDGET
from .export.pooling import POOLING_MODES, canonical_pooling


def _progress_printer(enabled: bool):
    """Progress lines on stderr when it is a terminal, with elapsed seconds; silent otherwise."""
    if not enabled:
        return None
    start = time.monotonic()

    def say(message: str) -> None:
        click.echo(f"[{time.monotonic() - start:6.1f}s] {message}", err=True)

    return say


def _friendly_errors(func):
    """TeiExportError -> one clear message on stderr and a non-zero exit, no traceback."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except TeiExportError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)

    return wrapper


BACKEND_HELP = ("LibTorch backend for pytorch_libtorch models: auto (the server's own libtriton_pytorch.so, else "
                "NVIDIA's built by `tei-export backend build`, else the compatibility backend), nvidia, "
                "nvidia:BRANCH (a branch built with `backend build --branch BRANCH`, e.g. nvidia:main), or compat "
                "(default: $TEI_EXPORT_BACKEND, else auto).")


def _backend_choice(ctx, param, value):
    if value is None:
        return None
    from .triton.backends import parse_choice

    try:
        parse_choice(value)
    except TeiExportError as err:
        raise click.BadParameter(f"{err.problem}; {err.fix}") from None
    return value


def _backend_option(func):
    return click.option("--backend", "backend", metavar="auto|nvidia|nvidia:BRANCH|compat", default=None,
                        callback=_backend_choice, help=BACKEND_HELP)(func)


def _endpoint(url: str | None, protocol: str | None) -> tuple[str | None, tuple[str, ...]]:
    """--url and --protocol -> (host:port or None, protocols). A scheme chooses the protocol (http:// is the HTTP
    port, grpc:// the gRPC one); without one, --url means gRPC, and without --url both are checked."""
    from .triton_client import parse_url

    if url is None:
        protocol = protocol or "both"
        return None, ("http", "grpc") if protocol == "both" else (protocol,)
    endpoint = parse_url(url)
    if protocol and endpoint.protocol and protocol != endpoint.protocol:
        raise TeiExportError(f"--url {url} names a {endpoint.protocol} port but --protocol says {protocol}",
                             fix=f"drop --protocol, or give the {protocol} port")
    protocol = protocol or endpoint.protocol or "grpc"
    return endpoint.address, ("http", "grpc") if protocol == "both" else (protocol,)


def _allocator_option(func):
    from .triton.allocator import ALLOCATOR_ENV, ALLOCATORS

    return click.option("--allocator", type=click.Choice(ALLOCATORS), default=None,
                        help="Memory allocator of the server: jemalloc (preloaded; glibc's malloc lets the server's "
                             f"memory creep under ragged load) or system (default: ${ALLOCATOR_ENV}, else "
                             "jemalloc).")(func)


class _PoolingChoice(click.Choice):
    """One spelling per pooling mode in --help; sentence-transformers' other spellings are accepted too."""

    def convert(self, value, param, ctx):
        return super().convert(canonical_pooling(value) or value, param, ctx)


@click.group()
@click.version_option(__version__, prog_name="tei-export")
@click.option("--verbose", is_flag=True, envvar="TEI_EXPORT_VERBOSE",
              help="Also show what the libraries print (transformers warnings, progress bars).")
def main(verbose: bool) -> None:
    """Export Hugging Face embedding models to Triton's LibTorch backend, serve them, and prove parity."""
    if not verbose:
        from .quiet import quiet_libraries

        quiet_libraries()


@main.command()
@click.argument("model")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("model_repository"),
              show_default=True, help="Triton model repository to write into.")
@click.option("--name", help="Model name in the repository (default: derived from MODEL).")
@click.option("--version", "version", type=int, default=1, show_default=True, help="Model version folder to write.")
@click.option("--force", is_flag=True, help="Replace an existing version.")
@click.option("--pooling", type=_PoolingChoice(POOLING_MODES),
              help="Pooling mode (default: from the model's 1_Pooling/config.json).")
@click.option("--normalize/--no-normalize", default=None, help="L2-normalise (default: as modules.json says).")
@click.option("--max-seq-len", type=int, help="Max tokens (default: sentence_bert_config.json max_seq_length).")
@click.option("--dims", type=int, help="Matryoshka: keep the first N values of each embedding, normalised again when "
                                       "the model normalises (default: the model's own truncate_dim, else all).")
@click.option("--revision", help="Hub revision (branch, tag or commit).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code shipped with the model.")
@click.option("--task", help="A model with one LoRA adapter per task (jina-embeddings-v3): the task whose adapter is "
                             "merged into the exported weights, e.g. retrieval.query; its instruction becomes the "
                             "text model's prompt. Required for such a model, refused for others.")
@click.option("--int32", is_flag=True, help="Declare token inputs TYPE_INT32 instead of TYPE_INT64.")
@click.option("--token-embeddings", is_flag=True, help="Also output per-token embeddings (a second output).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="Compute precision inside the graph (inputs stay INT64, output FP32; float16 outputs FP16). "
                   "float16 needs --device cuda. bfloat16 is written only if it passes the parity bound "
                   "(all-MiniLM-L6-v2 on CPU does not).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "int8"]), default="fp32", show_default=True,
              help="CPU precision. bf16 (as --dtype bfloat16) and int8 (per-channel int8 weights, per-token "
                   "activation scales) are written only if they pass a quality gate against fp32 on >= 1,000 texts "
                   "(int8: min cosine >= 0.99, mean top-10 overlap >= 0.9; bf16: min cosine >= 0.999).")
@click.option("--min-cosine", type=float, help="Quality gate: lowest per-text cosine to fp32 (--precision bf16/int8).")
@click.option("--min-overlap", type=float,
              help="Quality gate: lowest mean top-10 nearest-neighbour overlap with fp32 (--precision bf16/int8).")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Texts (one per line, >= 1,000) for the quality gate and int8 smoothing (default: the verify "
                   "corpus).")
@click.option("--smooth", type=float, default=0.7, show_default=True,
              help="int8: SmoothQuant migration strength (0 turns smoothing off).")
@click.option("--fp32-layers", multiple=True,
              help="int8: Linear layers left in fp32, by name or shell pattern (repeatable), e.g. "
                   "'encoder.layer.5.output.dense'; the gate's failure table names the worst.")
@click.option("--device", default="cpu", show_default=True, help="Trace on this device (cpu or cuda).")
@click.option("--format", "fmt", type=click.Choice(["torchscript", "pt2"]), default="torchscript", show_default=True,
              help="torchscript: model.pt, platform pytorch_libtorch. pt2: torch.export + AOTInductor model.pt2, "
                   "platform torch_aoti (Triton 26.03+; served with max_batch_size 0).")
@click.option("--batching", type=click.Choice(BATCHING_MODES), default="padded", show_default=True,
              help="padded: requests [batch, length] (with attention_mask), merged only at equal lengths. ragged: one "
                   "text per request [1, length], input_ids only; Triton merges any lengths (allow_ragged_batch).")
@click.option("--ragged-token-budget", type=int, default=None,
              help="With --batching ragged: tokens (rows x padded length) per encoder call; merged texts are sorted "
                   f"by length and encoded in chunks of this size (default: {DEFAULT_TOKEN_BUDGET}).")
@click.option("--max-batch-size", type=int, default=64, show_default=True,
              help="config.pbtxt max_batch_size: the most texts Triton batches into one execution; also the "
                   "largest batch the parity check covers (pt2: only that).")
@click.option("--instances", type=int, default=1, show_default=True, help="instance_group count.")
@click.option("--kind", type=click.Choice(["cpu", "gpu"]), default=None,
              help="instance_group kind (default: gpu with --device cuda, else cpu).")
@click.option("--max-queue-delay-us", type=int, default=100, show_default=True,
              help="dynamic_batching max_queue_delay_microseconds.")
@click.option("--preferred-batch-size", "preferred", type=int, multiple=True,
              help="dynamic_batching preferred_batch_size (repeatable).")
@click.option("--intra-op-threads", type=int, help="INTRA_OP_THREAD_COUNT (default: cores / instances).")
@click.option("--inter-op-threads", type=int,
              help="INTER_OP_THREAD_COUNT (default: not written; NVIDIA's backend before 25.11 aborts when two "
                   "models set it).")
@click.option("--disable-optimized-execution", is_flag=True, help="DISABLE_OPTIMIZED_EXECUTION=true.")
@click.option("--no-warmup", is_flag=True, help="Leave model_warmup out of config.pbtxt.")
@click.option("--with-tokenizer/--no-with-tokenizer", default=False, show_default=True,
              help="Also write <name>_tokenizer (Python backend, needs 'tokenizers' in the server) and the "
                   "<name>_text ensemble: text in, embeddings out. Not with --format pt2.")
@click.option("--tokenizer", "tokenizer_mode", type=click.Choice(["graph", "python"]), default=None,
              help="With --with-tokenizer: graph writes <name>_text as one TorchScript model with the tokenizer inside "
                   "(no Python in the server); python writes the Python tokenizer model and ensemble (or BLS model). "
                   "Default: graph where the model's tokenizer is reproduced exactly (WordPiece), else python.")
@click.option("--prompt-name", metavar="NAME",
              help="With --with-tokenizer: put this prompt of config_sentence_transformers.json before every text the "
                   "text model gets (default: the model's default_prompt_name, if any); a query and a document model "
                   "are two exports (--name).")
@click.option("--buckets", default="", help="Padding length buckets of the tokenizer model, e.g. 16,32,64,128,256,512 "
                                             "(default; capped at max_seq_len).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@_friendly_errors
def trace(model, out, name, version, force, pooling, normalize, max_seq_len, dims, revision, trust_remote_code, task,
          int32,
          token_embeddings, dtype, precision, min_cosine, min_overlap, calibration, smooth, fp32_layers, device, fmt,
          batching, ragged_token_budget, max_batch_size, instances, kind,
          max_queue_delay_us, preferred, intra_op_threads, inter_op_threads, disable_optimized_execution, no_warmup,
          with_tokenizer, tokenizer_mode, prompt_name, buckets, as_json):
    """Export MODEL to TorchScript (or pt2) and config.pbtxt.

    MODEL is a hub id or a local folder. Writes model.pt (or with --format pt2: model.pt2) and config.pbtxt after
    checking the export against sentence-transformers; nothing is written when the check fails."""
    from .export.pipeline import ExportOptions, export_model
    from .export.precision import PrecisionOptions

    options = ExportOptions(
        out=out, name=name, version=version, force=force, pooling=pooling, normalize=normalize,
        max_seq_len=max_seq_len, dims=dims, revision=revision, trust_remote_code=trust_remote_code, task=task,
        int32=int32, token_embeddings=token_embeddings, dtype=dtype, precision=precision,
        precision_options=PrecisionOptions(min_cosine, min_overlap, calibration, smooth or None, tuple(fp32_layers)),
        device=device, format=fmt, batching=batching,
        ragged_token_budget=ragged_token_budget, max_batch_size=max_batch_size,
        instances=instances, kind=kind, max_queue_delay_us=max_queue_delay_us, preferred_batch_sizes=preferred,
        intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads,
        disable_optimized_execution=disable_optimized_execution, warmup=not no_warmup,
        with_tokenizer=with_tokenizer, buckets=tuple(int(b) for b in buckets.split(",") if b.strip()),
        tokenizer=tokenizer_mode, prompt_name=prompt_name,
    )
    try:
        result = export_model(model, options, progress=_progress_printer(sys.stderr.isatty() and not as_json))
    except ParityError as err:
        if as_json:
            click.echo(json.dumps({"ok": False, "error": err.problem, "parity": err.report.to_dict()}, indent=2))
        raise
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps({"ok": True, **result.to_dict()}, indent=2))
        return
    click.echo(f"exported {result.target.name} version {result.target.version} -> {result.target.version_dir}")
    click.echo(f"pooling {result.spec.pooling}, normalize {result.spec.normalize}, "
               f"max_seq_len {result.spec.max_seq_len}, inputs {', '.join(t.name for t in result.config.inputs)}, "
               f"variant {result.metadata.variant}" + (f", dims {result.spec.dims}" if result.spec.dims else ""))
    prompt = result.metadata.text_prompt_name
    if prompt:
        click.echo(f"text model prompt: {prompt} ({result.metadata.prompts.get(prompt, '')!r} before every text)")
    quality = result.metadata.parity.get("quality")
    click.echo("parity against sentence-transformers:" if quality is None else
               f"parity against the eager {quality['precision']} module:")
    click.echo(result.parity.table())
    if quality is not None:
        click.echo(f"quality against fp32 on {quality['texts']} texts: min cosine {quality['min_cosine']:.5f}, mean "
                   f"{quality['mean_cosine']:.6f}, mean top-10 overlap {quality['mean_top10_overlap']:.4f} (passed)")


@main.command()
@click.argument("repository", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--tritonserver", "binary", help="tritonserver binary (default: PATH, /opt/tritonserver, nvidia-pytriton).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind HTTP and gRPC to.")
@click.option("--http-port", type=int, help="HTTP port (default: Triton's 8000 when free, else a free one).")
@click.option("--grpc-port", type=int, help="gRPC port (default: Triton's 8001 when free, else a free one).")
@click.option("--metrics-port", type=int, help="Prometheus /metrics port (default: Triton's 8002 when free, else a "
                                               "free one).")
@click.option("--metrics/--no-metrics", default=True, show_default=True,
              help="Serve Triton's Prometheus metrics (nv_inference_*) at http://HOST:METRICS_PORT/metrics.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), help="Server log file.")
@_allocator_option
@click.option("--omp-spin/--no-omp-spin", default=None,
              help="Start the server with OMP_WAIT_POLICY=ACTIVE GOMP_SPINCOUNT=300000, so LibTorch's thread teams "
                   "keep spinning when several models' teams outnumber the cores (default: $TEI_EXPORT_OMP_SPIN, "
                   "else on; values you set for either variable are kept).")
@_backend_option
@_friendly_errors
def serve(repository, binary, host, http_port, grpc_port, metrics_port, metrics, log_path, allocator, omp_spin,
          backend):
    """Serve REPOSITORY with tritonserver until Ctrl-C.

    Starts tritonserver on REPOSITORY on Triton's usual ports (8000 HTTP, 8001 gRPC, 8002 metrics; a free port, and
    a warning, for each one that is taken), waits until every model is READY, and serves until Ctrl-C."""
    from .triton.ports import TRITON_PORTS
    from .triton.process import stop_signals
    from .triton.server import TritonServer

    server = TritonServer(repository, binary=binary, host=host, http_port=http_port, grpc_port=grpc_port,
                          metrics_port=metrics_port, metrics=metrics, preferred_ports=TRITON_PORTS,
                          log_path=log_path, backend=backend, allocator=allocator, omp_spin=omp_spin)
    click.echo(f"starting tritonserver on {repository} ...", err=True)
    # SIGTERM (a supervisor) and SIGINT (Ctrl-C, or `kill -INT` of a background job that inherited it ignored) stop
    # the server like Ctrl-C does.
    with stop_signals():
        _serve(server)


def _serve(server) -> None:
    try:
        server.start()
        for warning in server.warnings:
            click.echo(f"warning: {warning}", err=True)
        if server.port_note:  # loud: the addresses differ from every example a user has read
            click.echo(f"WARNING: {server.port_note}", err=True)
        click.echo(f"server:  {server.binary.describe()}")
        click.echo(f"backend: {server.backends.describe()}")
        click.echo(f"memory:  {server.memory.describe()}")
        click.echo(f"openmp:  {server.openmp.describe()}")
        if server.view.presented:
            click.echo(f"note:    {server.view.describe()}")
        click.echo(f"models:  {', '.join(server.models)} (all READY)")
        click.echo(f"HTTP:    http://{server.http_url}")
        click.echo(f"gRPC:    {server.grpc_url}")
        click.echo(f"metrics: {server.metrics_url or 'off (--metrics turns them on)'}")
        click.echo(f"log:     {server.log_path}")
        click.echo("Ctrl-C stops the server.")
        while server.running:
            time.sleep(0.5)
        raise TeiExportError(f"tritonserver exited on its own (see {server.log_path})",
                             fix="read the end of the log for the reason")
    except KeyboardInterrupt as err:  # stop_signals names the signal (SIGINT, SIGTERM)
        click.echo(f"stopping tritonserver{f' on {err}' if str(err) else ''} ...", err=True)
    finally:
        server.stop()


@main.command()
@click.argument("repository", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--url", help="A running Triton: http://HOST:PORT (its HTTP port), HOST:PORT or grpc://HOST:PORT (its "
                            "gRPC port), as serve prints them; without it a server is started and stopped here.")
@click.option("--protocol", type=click.Choice(["http", "grpc", "both"]), default=None,
              help="Protocol(s) to verify over (default: both; with --url: its scheme's, else grpc).")
@click.option("--model", "names", multiple=True,
              help="Verify only this model (repeatable): NAME (token ids) or NAME_text (text), as the report names "
                   "them.")
@click.option("--corpus-size", type=int, default=48, show_default=True, help="Docstring sentences (+ edge cases).")
@click.option("--tritonserver", "binary", help="tritonserver binary for the server started here.")
@click.option("--no-libtorch-check", is_flag=True, help="Skip the C++ LibTorch load-and-run check.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@_allocator_option
@_backend_option
@_friendly_errors
def verify(repository, url, protocol, names, corpus_size, binary, no_libtorch_check, as_json, allocator, backend):
    """Check Triton's embeddings against sentence-transformers.

    Compares what Triton returns for every exported model in REPOSITORY with eager sentence-transformers."""
    from .checks.verify import verify_repository
    from .errors import VerificationError

    url, protocols = _endpoint(url, protocol)
    report = verify_repository(repository, url=url, protocols=protocols, names=list(names) or None,
                               corpus_size=corpus_size, libtorch=not no_libtorch_check,
                               server_options={k: v for k, v in (("binary", binary), ("backend", backend),
                                                                 ("allocator", allocator)) if v},
                               progress=_progress_printer(sys.stderr.isatty() and not as_json))
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
    if not report.passed:
        failed = [c for c in report.checks if c.error]
        if failed:  # no answers to compare: a dead stub, a request Triton refused
            raise VerificationError(f"{len(failed)} check(s) got no answers from Triton ({failed[0].model} over "
                                    f"{failed[0].protocol}: {failed[0].error})",
                                    fix="see each check's error above; then run verify again")
        raise VerificationError("Triton's embeddings differ from eager sentence-transformers (see the table)",
                                fix="re-export the model, and check the server's backend and the model's config")


@main.command()
@click.argument("repository", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "model", required=True, help="Name of a float32 export in REPOSITORY.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmarks/out"),
              show_default=True, help="Folder for results.json and bench.png.")
@click.option("--threads", type=int, help="Threads for every in-process mode (default: all cores).")
@click.option("--quick", is_flag=True, help="Tiny counts (CI): same sweep and results shape, a few calls per cell.")
@click.option("--workload", "workloads", multiple=True, type=click.Choice(["short", "mixed", "long"]),
              help="Workload(s) to run (repeatable; default: all).")
@click.option("--max-seconds", type=float,
              help="Timed seconds per cell, at most: the pass over the workload under way then is finished.")
@click.option("--max-calls", type=int,
              help="Timed calls or requests per cell, at most, in whole passes over the workload (one at least).")
@click.option("--bucket", "buckets", type=int, multiple=True,
              help="Served requests' padded lengths at concurrency > 1 (repeatable; default 16 32 64 128 256 512). "
                   "Triton's dynamic batcher merges only equal lengths.")
@click.option("--no-bf16", is_flag=True, help="Leave TorchScript bf16 out.")
@click.option("--no-pt2", is_flag=True, help="Leave the AOTInductor model.pt2 out (compiling one takes ~30 s).")
@click.option("--no-onnx", is_flag=True, help="Leave ONNX Runtime out.")
@click.option("--no-server", is_flag=True, help="Leave the Triton modes out.")
@click.option("--infinity", "infinity", type=click.Path(dir_okay=False),
              help="The infinity_emb executable (its own venv) for the peer-server mode (default: "
                   "$TEI_EXPORT_INFINITY, else infinity_emb on PATH; not measured when none is found).")
@click.option("--no-infinity", is_flag=True, help="Leave infinity-emb out even when it is found.")
@click.option("--backend", "backends", multiple=True, type=click.Choice(["nvidia", "compat"]),
              help="LibTorch backend(s) to serve with, side by side (repeatable; default: NVIDIA's and the "
                   "compatibility backend when NVIDIA's is built, else the compatibility backend).")
@_friendly_errors
def bench(repository, model, out, threads, quick, workloads, max_seconds, max_calls, buckets, no_bf16, no_pt2,
          no_onnx, no_server, infinity, no_infinity, backends):
    """Measure a model's speed in every mode side by side.

    Measures MODEL of REPOSITORY in every mode side by side (eager, TorchScript, pt2, ONNX Runtime, Triton)."""
    import os

    from .bench import BenchOptions, run_bench
    from .errors import VerificationError

    overrides = {k: v for k, v in dict(threads=threads, workloads=tuple(workloads) or None, max_seconds=max_seconds,
                                       max_calls=max_calls, buckets=tuple(buckets) or None,
                                       backends=tuple(backends) or None).items()
                 if v is not None}
    overrides.update(bf16=not no_bf16, pt2=not no_pt2, onnx=not no_onnx, server=not no_server,
                     infinity="" if no_infinity else infinity, command="tei-export " + " ".join(sys.argv[1:]))
    options = (BenchOptions.quick_options(repository, model, **overrides) if quick
               else BenchOptions(repository, model, **{"threads": os.cpu_count() or 1, **overrides}))
    report = run_bench(options, progress=_progress_printer(True))
    files = report.write(out)
    click.echo(report.table())
    click.echo("wrote " + ", ".join(str(f) for f in files))
    if not report.parity_passed:
        raise VerificationError("some mode's embeddings differ from sentence-transformers (parity column)",
                                fix="see the mode's parity figures in results.json")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


@main.command()
@click.argument("repository", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "model", required=True,
              help="Name of an exported model in REPOSITORY, or of its graph text model (<name>_text).")
@click.option("--intra", default="", help="INTRA_OP_THREAD_COUNT values (comma-separated; default: every split of "
                                         "the cores into threads x instances).")
@click.option("--inter", default="0", show_default=True,
              help="INTER_OP_THREAD_COUNT values; 0 leaves the parameter out (see README: interop threads).")
@click.option("--instances", default="", help="instance_group count values (default: as --intra; with --intra "
                                             "alone, cores // threads).")
@click.option("--queue-delay-us", default="0,100,2000", show_default=True,
              help="dynamic_batching max_queue_delay_microseconds values.")
@click.option("--concurrency", type=int, default=16, show_default=True, help="Requests in flight per trial.")
@click.option("--max-trials", type=int, default=12, show_default=True, help="Trials at most (grid order).")
@click.option("--max-seconds", type=float, default=3.0, show_default=True, help="Timed seconds per trial.")
@click.option("--max-calls", type=int, default=300, show_default=True,
              help="Timed requests per trial, in whole passes over its texts (one at least).")
@click.option("--objective", type=click.Choice(["throughput", "p95"]), default="throughput", show_default=True,
              help="Best = max seq/s, or min p95.")
@click.option("--p95-budget-ms", type=float, help="Only trials with p95 under this qualify as best.")
@click.option("--write", is_flag=True, help="Write the best settings into the model's config.pbtxt (backup kept).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@_backend_option
@_friendly_errors
def tune(repository, model, intra, inter, instances, queue_delay_us, concurrency, max_trials, max_seconds,
         max_calls, objective, p95_budget_ms, write, as_json, backend):
    """Find the best thread, instance and queue settings.

    Sweeps thread counts, instances and queue delay for MODEL against a real server and prints the best."""
    from .tune import TuneOptions, run_tune

    options = TuneOptions(repository, model, _ints(intra), _ints(inter), _ints(instances), _ints(queue_delay_us),
                          concurrency=concurrency, max_calls=max_calls, max_seconds=max_seconds,
                          max_trials=max_trials, objective=objective, p95_budget_ms=p95_budget_ms, write=write,
                          backend=backend)
    report = run_tune(options, progress=_progress_printer(sys.stderr.isatty() and not as_json))
    click.echo(json.dumps(report.to_dict(), indent=2, default=str) if as_json else report.table())


@main.command("check-libtorch")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@_friendly_errors
def check_libtorch_cmd(model_dir, as_json):
    """Run a model in C++ LibTorch, without Python.

    Loads MODEL_DIR's model.pt in a small C++ LibTorch program (no Python) and compares with eager."""
    from dataclasses import asdict

    from .checks.libtorch_check import check_libtorch
    from .errors import VerificationError

    report = check_libtorch(model_dir)
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2, default=str))  # the report holds Paths
    elif report.skipped:
        click.echo(f"skipped: {report.skip_reason}")
    else:
        click.echo(f"{report.model_name}: {'ok' if report.ok else 'FAIL'} in LibTorch C++ ({report.cases} calls, "
                   f"{report.rows} rows): max|diff| {report.max_abs_diff:.2e}, min cosine {report.min_cosine:.7f}")
    if not report.ok and not report.skipped:
        raise VerificationError("the model's output in LibTorch C++ differs from eager sentence-transformers",
                                fix="re-export the model", where=str(model_dir))


@main.command("check-tokenizer")
@click.argument("model")
@click.option("--max-seq-len", type=int, help="Truncation length (default: the model's max_seq_length).")
@click.option("--revision", help="Hub revision (commit, branch or tag).")
@click.option("--fraction", type=float, default=1.0, show_default=True,
              help="The share of each hostile-corpus group to check (every code point is 1.0).")
@click.option("--count", type=int, default=2000, show_default=True, help="Generated texts per group.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@_friendly_errors
def check_tokenizer_cmd(model, max_seq_len, revision, fraction, count, as_json):
    """Compare the graph tokenizer with the tokenizers library.

    Builds MODEL's graph tokenizer (what --tokenizer graph puts in <name>_text) and compares its ids with the
    tokenizers library's on the whole hostile corpus: every code point, scripts, controls, emoji, added tokens, long
    words, truncation, whitespace, invalid UTF-8. Fails on any mismatch."""
    from .errors import VerificationError
    from .text_graph.check import check_model_tokenizer

    report = check_model_tokenizer(model, fraction, count, max_seq_len, revision)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
    if not report.passed:
        raise VerificationError(f"the graph tokenizer differs from the tokenizers library on "
                                f"{len(report.mismatches)} of {report.total} texts",
                                fix="export with --tokenizer python, and report the texts", where=model)


@main.command()
@click.argument("repository", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--storage-uri", required=True,
              help="Where the pods read the repository: s3://bucket/path, gs://bucket/path, "
                   "as://account/container/path or pvc://claim/path.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Manifest file to write.")
@click.option("--kind", type=click.Choice(["deployment", "kserve"]), default=None,
              help="Deployment + Service (default), or a KServe InferenceService.")
@click.option("--replicas", type=int, help="Triton pods (default: 2).")
@click.option("--gpus-per-pod", type=int, help="nvidia.com/gpu per pod; 0 = CPU only (default: 0).")
@click.option("--cpus-per-pod", type=int, help="CPU request and limit per pod (default: 4).")
@click.option("--memory", "memory_per_pod", help="Memory request and limit per pod (default: 8Gi).")
@click.option("--image", help="Triton image (default: nvcr.io/nvidia/tritonserver:26.03-py3).")
@click.option("--name", help="Name of the Kubernetes resources (default: triton-embeddings).")
@click.option("--secret", "credentials_secret",
              help="Deployment: Secret holding the storage credentials (default: triton-storage-credentials; "
                   "'' for none, e.g. with IRSA or workload identity).")
@click.option("--service-account", help="The pods' service account (KServe, IRSA, workload identity: it carries "
                                        "the bucket credentials).")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@_friendly_errors
def manifest(repository, storage_uri, out, force, **chosen):
    """Write a Kubernetes manifest for several Triton replicas.

    REPOSITORY (optional) is a local copy of what --storage-uri holds; its config.pbtxt files are checked against
    the pod size and any mismatch is printed as a warning.
    """
    from .manifest import DeploymentOptions, write_manifest

    # Options left out keep DeploymentOptions' defaults, so they are stated in one place.
    options = DeploymentOptions(storage_uri=storage_uri, **{k: v for k, v in chosen.items() if v is not None})
    path, warnings = write_manifest(options, out, force=force, repository=repository)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    what = "InferenceService" if options.kind == "kserve" else "Deployment + Service"
    click.echo(f"wrote {path}: {what} '{options.name}', {options.replicas} x {options.image} "
               f"({options.cpus_per_pod} CPU, {options.memory_per_pod}, {options.gpus_per_pod} GPU per pod) "
               f"reading {options.storage_uri}")
    click.echo(f"apply it with: kubectl apply -f {path}")


@main.group()
def backend() -> None:
    """Build NVIDIA's LibTorch backend; say what serves what.

    NVIDIA's libtriton_pytorch.so is built from source for the server (the nvidia-pytriton wheel has none) and
    cached; serve, verify, bench and tune then use it (--backend auto)."""


@backend.command("build")
@click.option("--tritonserver", "binary", help="tritonserver binary to build for (default: as `serve` finds it).")
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder with the four <repo>-<branch>.tar.gz archives or source trees (default: "
                   "$TEI_EXPORT_BACKEND_SOURCE, else git clone from GitHub).")
@click.option("--branch", help="pytorch_backend branch (default: the server's release, e.g. 2.51.0 -> r24.10).")
@click.option("--jobs", type=int, help="Parallel compile jobs (default: all cores).")
@click.option("--force", is_flag=True, help="Build again even when the cache has this build.")
@_friendly_errors
def backend_build(binary, source, branch, jobs, force):
    """Build NVIDIA's libtriton_pytorch.so for the server.

    Builds the pytorch_backend release branch of the server from source against this environment's torch, checks
    that the server loads it and that it serves a model, and caches it."""
    from .triton.backend_build import build_backend
    from .triton.binary import find_tritonserver

    server = find_tritonserver(binary)
    say = _progress_printer(True)
    reused: list[str] = []

    def progress(message: str) -> None:  # a cached build is one line; a real one shows its steps
        if message.startswith("already built"):
            reused.append(message)
        else:
            say(message)

    built = build_backend(server, source=source, branch=branch, jobs=jobs, force=force, progress=progress)
    if reused:
        click.echo(f"cached: {built.describe()}")
        return
    click.echo(f"built:  {built.describe()}")
    click.echo(f"from:   {built.source}")
    click.echo(f"log:    {built.log} ({built.seconds:.0f} s)")


@backend.command("status")
@click.argument("repository", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--tritonserver", "binary", help="tritonserver binary (default: as `serve` finds it).")
@_backend_option
@_friendly_errors
def backend_status(repository, binary, backend):
    """Say which backend would serve what, and why.

    Names the backend for pytorch_libtorch models (and for each model of REPOSITORY, when given) without starting
    a server, and warns about settings that crash some backend releases."""
    from .triton.status import backend_status as status

    click.echo(status(binary, backend, repository).text())


@main.command()
@click.argument("repository", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "model", required=True,
              help="Name of an exported token model in REPOSITORY, or of its text model (<name>_text: texts are sent "
                   "as UTF-8 strings).")
@click.option("--requests", "requests", type=int, default=10_000, show_default=True,
              help="Requests in all, one text each, split evenly over the protocols (sent interleaved).")
@click.option("--concurrency", type=int, default=64, show_default=True, help="Requests in flight.")
@click.option("--protocol", type=click.Choice(["http", "grpc", "both"]), default=None,
              help="Protocol(s) to send over (default: both; with --url: grpc).")
@click.option("--max-seconds", type=float, default=1800.0, show_default=True,
              help="Time bound: no new request after this many seconds (the soak then fails as incomplete).")
@click.option("--url", help="A running Triton instead of one started here (http://HOST:PORT, or HOST:PORT for gRPC); "
                            "its memory is not sampled.")
@click.option("--tritonserver", "binary", help="tritonserver binary for the server started here.")
@click.option("--corpus-size", type=int, default=48, show_default=True,
              help="Docstring sentences of the verify corpus (+ its edge cases), cycled to --requests.")
@click.option("--request-timeout", type=float, default=60.0, show_default=True,
              help="Seconds one request may take before it counts as a timeout.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the report to OUT/<nvidia|compat|url>.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@_backend_option
@_friendly_errors
def soak(repository, model, requests, concurrency, protocol, max_seconds, url, binary, corpus_size, request_timeout,
         out, as_json, backend):
    """Load-soak a model; check every answer and the memory.

    Sends --requests real texts at --concurrency over HTTP and gRPC, compares every answer with sentence-transformers,
    samples the server's RSS and fails on any failed request or answer, or on memory growth of 5 % or more after
    warm-up."""
    from .checks.soak import SoakOptions, run_soak
    from .errors import VerificationError

    url, protocols = _endpoint(url, protocol)
    options = SoakOptions(repository, model, requests=requests, concurrency=concurrency, protocols=protocols,
                          backend=backend, max_seconds=max_seconds, url=url, binary=binary, corpus_size=corpus_size,
                          request_timeout_s=request_timeout)
    report = run_soak(options, progress=_progress_printer(sys.stderr.isatty() and not as_json))
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
    if out is not None:
        path = report.write(out, report.backend or "url")
        click.echo(f"wrote {path}", err=True)
    if not report.passed:
        raise VerificationError("the soak failed: " + "; ".join(report.failures()),
                                fix="see the report above (the server log names errors; parity failures name the text)")


if __name__ == "__main__":
    main()
