"""Both command lines as users of PyTorch and dask tools expect them: every option of every subcommand has help
text and shows its default, where there is one to show."""
from __future__ import annotations

import argparse

import pytest

from fas_train.cli import build_parser as train_parser
from pipeline.cli import build_parser as pipeline_parser


def subcommands(parser: argparse.ArgumentParser) -> dict:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("make", [pipeline_parser, train_parser], ids=["fas-pipeline", "fas-train"])
def test_every_option_has_help_and_shows_its_default(make):
    for name, command in subcommands(make()).items():
        text = " ".join(command.format_help().split())
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
            shown = not (action.default is None or action.default is False or action.default == [])
            if shown and "default" not in action.help:
                assert f"(default: {action.default})" in text, (name, action.option_strings)
        assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text


def test_the_train_commands_defaults_are_the_run_settings():
    from fas_train.settings import RunConfig
    train = subcommands(train_parser())["train"]
    text = " ".join(train.format_help().split()).split(" options: ", 1)[1]  # past the usage line
    for option, field in (("--steps", "steps"), ("--eval-every", "eval_every"), ("--seed", "seed"),
                          ("--network", "network"), ("--precision", "precision")):
        default = RunConfig.__dataclass_fields__[field].default
        assert train.get_default(field) == default
        assert f"(default: {default})" in text.split(f" {option} ", 1)[1].split(" --", 1)[0]
