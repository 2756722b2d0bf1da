"""Shared plumbing for the command lines in ``scripts/``: one-line errors, exit status 2.

A user who passes a bad flag, a missing dataset or an invalid value gets one
line on stderr saying what is wrong and what to do, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError)


class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and shows each option's default."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``prog: error: ... (see --help)``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run(main: Callable[[], object], extra_errors: tuple = ()) -> None:
    """Run ``main()``; turn the errors a user can cause into one line and exit status 2."""
    try:
        status = main()
    except USER_ERRORS + tuple(extra_errors) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
