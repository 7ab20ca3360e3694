"""How every ``tsf`` command's ``--help`` reads: each option with its default, the command's
whole first paragraph as its description. Imports nothing heavy (``tsf X --help`` stays fast)."""

from __future__ import annotations

import argparse
from typing import Any


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option that takes a value, unless its help already
    says what the default is (a sentence with "default"); flags need none. An option without
    a default reads ``(default: not set)``, with its help saying what that means."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or action.nargs == 0 or "default" in text.lower()
                or action.default is argparse.SUPPRESS):  # fmt: skip
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
