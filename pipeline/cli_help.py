"""What both command lines' help shares: every option's default shown beside its help text, as
``argparse.ArgumentDefaultsHelpFormatter`` does, except where there is nothing to show."""
from __future__ import annotations

import argparse
import functools


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help, unless its default is empty (None, a flag's False, an
    empty list) or the help text already says what the default is."""

    def _get_help_string(self, action):
        text = action.help or ""
        if empty_default(action.default) or "default" in text:
            return text
        return super()._get_help_string(action)


def empty_default(value) -> bool:
    """Whether a default says nothing worth showing (``0`` is shown: it is not ``False``)."""
    return value is None or value is False or value is argparse.SUPPRESS or (isinstance(value, list) and not value)


# ``add_subparsers(parser_class=subcommand_parser)``: the subcommands' help shows the defaults too
subcommand_parser = functools.partial(argparse.ArgumentParser, formatter_class=DefaultsFormatter)
