"""How every ``tsf`` command's ``--help`` reads: each option with its default, the command's
whole first paragraph as its description. Imports nothing heavy (``tsf X --help`` stays fast)."""

from __future__ import annotations

import argparse
import copy
from typing import Any


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option that takes a value, unless its help already
    says what the default is (a sentence with "default"); flags need none. An option without
    a default reads ``(default: not set)``, with its help saying what that means."""

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and self._shows_default(action):  # argparse skips help=None
            action = copy.copy(action)
            action.help = self._get_help_string(action)
        return super()._format_action(action)

    @staticmethod
    def _shows_default(action: argparse.Action) -> bool:
        """An option that takes a value, is not required and has a default to show."""
        return (bool(action.option_strings) and action.nargs != 0 and not action.required
                and action.default is not argparse.SUPPRESS)  # fmt: skip

    def _get_help_string(self, action: argparse.Action) -> str:
        text = (action.help or "").strip()
        if not self._shows_default(action) or "default" in text.lower():
            return text
        shown = "not set" if action.default is None else "%(default)s"
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def description(doc: str | None) -> str:
    """A module's or function's docstring up to its first blank line, on one line (the
    ``--help`` description; a first line alone may stop mid-sentence)."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def command_parser(prog: str, doc: str | None, **kwargs: Any) -> argparse.ArgumentParser:
    """``argparse.ArgumentParser`` of ``tsf <prog>``: :class:`HelpFormatter`, the first
    paragraph of ``doc`` as description."""
    return argparse.ArgumentParser(prog=f"tsf {prog}", description=description(doc),
                                   formatter_class=HelpFormatter, **kwargs)  # fmt: skip
