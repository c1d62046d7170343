"""What nrt's command lines share: the argument parser, its help layout, logging and exit codes.

Exit codes: 0 done, 2 bad input or usage (one line on stderr), 1 anything else, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from .errors import BundleError, InputError, ModelNotFoundError, NrtError

NOISY_LOGGERS = ("httpx", "urllib3", "filelock", "huggingface_hub", "diffusers", "transformers")


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{self.prog}: {message}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, except ``None`` (there the help says what applies)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def setup_logging(quiet: bool) -> None:
    """Log lines as plain messages (warnings only when ``quiet``); the libraries' chatter off."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.ERROR)


def run_command(prog: str, body: Callable[[], int], interrupted: str = "interrupted") -> int:
    """Run a command's body with nrt's exit codes: 2 and one line for bad input, 1 for the rest."""
    try:
        return body()
    except (InputError, ModelNotFoundError, BundleError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else is nrt's fault, not the user's
        if os.environ.get("NRT_DEBUG"):
            raise
        kind = "" if isinstance(exc, NrtError) else f"{type(exc).__name__}: "
        print(f"{prog}: error: {kind}{exc} (set NRT_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1
