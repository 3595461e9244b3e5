"""The command line a new user meets first: --help that is fast, complete and not cut off, and output free of
library noise unless --verbose asks for it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from model_factory import random_model

from exporter.cli import main
from exporter.export.pooling import POOLING_MODES
from exporter.quiet import QUIET_ENVIRONMENT

ROOT = Path(__file__).resolve().parent.parent


def _run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter, stderr a pipe as in a log file. The quieting variables are left out: an
    in-process CLI call of another test has set them here, and a user's own settings would win over the CLI's."""
    base = {k: v for k, v in os.environ.items() if k not in QUIET_ENVIRONMENT}
    return subprocess.run([sys.executable, "-m", "exporter.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**base, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=300)


def test_help_does_not_load_torch():
    code = ("import sys\nfrom exporter.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert "Commands:" in out and out.strip().endswith("[]"), out


def test_command_summaries_are_not_cut():
    res = CliRunner().invoke(main, ["--help"], terminal_width=80)
    assert res.exit_code == 0, res.output
    commands = res.output.split("Commands:", 1)[1].strip().splitlines()
    assert {line.split()[0] for line in commands} == set(main.commands)
    for line in commands:
        summary = line.split(None, 1)[1]
        assert summary.endswith(".") and not summary.endswith("..."), line


def test_every_option_says_what_it_does():
    missing = [f"{name} {param.opts[0]}" for name, command in main.commands.items() for param in command.params
               if isinstance(param, click.Option) and not param.help]
    assert missing == []


def test_pooling_help_lists_each_mode_once_and_accepts_aliases():
    res = CliRunner().invoke(main, ["trace", "--help"], terminal_width=200)
    listed = res.output.split("--pooling [", 1)[1].split("]", 1)[0].split("|")
    assert listed == list(POOLING_MODES)
    pooling = next(p for p in main.commands["trace"].params if p.name == "pooling")
    for alias, mode in (("last-token", "lasttoken"), ("weighted-mean", "weightedmean"),
                        ("mean-sqrt-len", "mean_sqrt_len_tokens"), ("cls_token", "cls"), ("MEAN", "mean")):
        assert pooling.type.convert(alias, pooling, None) == mode
    with pytest.raises(click.BadParameter, match="median"):
        pooling.type.convert("median", pooling, None)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return random_model(tmp_path_factory.mktemp("tiny") / "bert", "bert", max_seq_length=32)


def test_library_noise_only_with_verbose(tmp_path, tiny):
    quiet = _run_cli("trace", tiny, "--out", str(tmp_path / "quiet"), "--max-batch-size", "4")
    assert quiet.returncode == 0, quiet.stderr
    assert "parity against sentence-transformers" in quiet.stdout
    # transformers' weight-loading bar and its training-only loss_type warning are not for this user.
    assert "Loading weights" not in quiet.stderr and "loss_type" not in quiet.stderr, quiet.stderr
    verbose = _run_cli("--verbose", "trace", tiny, "--out", str(tmp_path / "verbose"), "--max-batch-size", "4")
    assert verbose.returncode == 0, verbose.stderr
    assert "Loading weights" in verbose.stderr and "loss_type" in verbose.stderr, verbose.stderr
    assert quiet.stdout.replace("quiet", "verbose") == verbose.stdout


def test_quiet_libraries_after_transformers_is_imported(monkeypatch):
    """A library user (or a test) that imported transformers first: the switches are flipped directly, since the
    environment is read only at import."""
    import logging

    from transformers.utils import logging as transformers_logging

    from exporter.quiet import quiet_libraries

    for name in QUIET_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)  # restored after the test
    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_warning()
    transformers_logging.enable_progress_bar()
    try:
        quiet_libraries()
        assert transformers_logging.get_verbosity() == logging.ERROR
        assert not transformers_logging.is_progress_bar_enabled()
        assert all(os.environ[name] == value for name, value in QUIET_ENVIRONMENT.items())
    finally:
        transformers_logging.set_verbosity(verbosity)
        (transformers_logging.enable_progress_bar if bars else transformers_logging.disable_progress_bar)()
