"""The command line a new user meets first: --help that is fast, complete and not cut off."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from exporter.cli import main
from exporter.pooling import POOLING_MODES

ROOT = Path(__file__).resolve().parent.parent


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
