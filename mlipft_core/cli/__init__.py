"""The ``mlipft`` command line: argument parsing and printing over the core functions.

Every subcommand prints JSON with ``--json`` and exits non-zero with a one-line message on bad
input. MODEL is a registry name (``mlipft models``) or the path of a ``.model`` file; a path
given on the command line counts as the user's confirmation that the file is trusted.

Each module of this package adds one group of subcommands and holds their ``cmd_*``
functions, which read the options, call the core and say what to print:

=============  ==============================================
``models``     ``models``, ``inspect``, ``replay``
``data``       ``validate``, ``evaluate``, ``e0``
``runs``       ``train``, ``tune``, ``runs``, ``cancel``, ``settings``
``study``      ``study``
``analysis``   ``compare``, ``dimer``, ``md``
``workshop``   ``workshop``
``demo``       ``demo``
``app``        ``app``
=============  ==============================================
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence

from ..errors import MlipftError, model_write_message, os_error_message, os_error_words
from ..workspace import default_root, strict_json, take_notices
from . import analysis, app, data, demo, models, runs, study, workshop
from ._options import AddFn
from ._output import Output

__all__ = ["build_parser", "main", "unexpected_message"]

#: The subcommands in the order ``mlipft --help`` lists them.
COMMANDS: tuple[Callable[[AddFn], None], ...] = (
    models.add_models, models.add_inspect, models.add_replay, data.add_validate,
    data.add_evaluate, data.add_e0,
    runs.add_train, runs.add_tune, study.add_study, runs.add_runs, runs.add_cancel,
    runs.add_settings, analysis.add_compare, analysis.add_dimer, analysis.add_md,
    workshop.add_workshop, demo.add_demo, app.add_app)

#: options whose value is itself a list of options (``--slurm-extra "--qos=short"``)
_OPTION_VALUED = ("--slurm-extra",)


def build_parser() -> argparse.ArgumentParser:
    """The ``mlipft`` parser with every subcommand (each with ``--json``)."""
    parser = argparse.ArgumentParser(
        prog="mlipft", description="Fine-tuning workbench for MACE foundation models.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--json", action="store_true", help="print JSON")
        return p

    for register in COMMANDS:
        register(add)
    return parser


def _join_option_values(argv: Sequence[str]) -> list[str]:
    """``--slurm-extra "--qos=short"`` as ``--slurm-extra=--qos=short``: argparse would take
    a value that starts with ``--`` for an option of its own."""
    out: list[str] = []
    words = list(argv)
    i = 0
    while i < len(words):
        if words[i] in _OPTION_VALUED and i + 1 < len(words):
            out.append(f"{words[i]}={words[i + 1]}")
            i += 2
        else:
            out.append(words[i])
            i += 1
    return out


def unexpected_message(exc: BaseException) -> str:
    """The one-line message for an error nothing foresaw: in words where the kind of error
    can be said (a file-system fault, a full disk, memory), else its own message."""
    if isinstance(exc, OSError):
        return os_error_message(exc)
    text = str(exc).strip()
    if isinstance(exc, RuntimeError) and ("PytorchStreamWriter" in text
                                          or "inline_container" in text):
        return model_write_message(default_root())
    if isinstance(exc, MemoryError):
        return "this machine ran out of memory: use smaller inputs or a smaller batch size"
    if isinstance(exc, RecursionError):
        return "an input nests lists or objects too deeply to be read"
    if isinstance(exc, UnicodeDecodeError):
        return "a file that should hold text is not UTF-8 text"
    first = text.splitlines()[0][:300] if text else ""
    return (f"an unexpected failure: {first}" if first else
            f"an unexpected failure ({type(exc).__name__})")


def _is_file_system_fault(exc: BaseException) -> bool:
    """A fault of the file system (read-only, full, a file in the way, ...), said in words
    with a remedy by :func:`unexpected_message`."""
    if isinstance(exc, OSError):
        return os_error_words(exc) is not None
    return isinstance(exc, RuntimeError) and ("PytorchStreamWriter" in str(exc)
                                              or "inline_container" in str(exc))


def _print_notices() -> None:
    """The notices of this command (damaged helper files that were ignored), on stderr."""
    for message in take_notices():
        print(f"warning: {message}", file=sys.stderr)


def _print_result(args: argparse.Namespace) -> None:
    """What the command said to print: JSON with ``--json``, else its text."""
    if args.json:
        print(json.dumps(strict_json(args.output.payload), indent=2, default=str,
                         allow_nan=False))
    else:
        print(args.output.text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``mlipft`` command.

    Parameters
    ----------
    argv
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: the command's own (0, or 1 where it found a problem), 2 for an
        error (one ``error:`` line on stderr), 130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(_join_option_values(sys.argv[1:] if argv is None else argv))
    args.output = Output()
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        # libraries print progress to stdout; keep stdout for the result alone
        with contextlib.redirect_stdout(sys.stderr):
            code = int(args.func(args))
        _print_notices()
        _print_result(args)
        return code
    except MlipftError as exc:
        _print_notices()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except Exception as exc:  # anything unforeseen: still one line, details on request
        if os.environ.get("MLIPFT_DEBUG"):
            raise
        _print_notices()
        message = unexpected_message(exc)
        if not _is_file_system_fault(exc):  # those say what to do; the rest may need details
            message += " (set MLIPFT_DEBUG=1 for details)"
        print(f"error: {message}", file=sys.stderr)
        return 2
