"""The ``hasql`` command: ``status``, ``watch`` and ``demo``.

Needs the ``cli`` extra (``pip install 'hasql-core[cli]'``) for its terminal output. Exit codes: 0 all
good, 1 a check failed, 2 bad usage (DSN, driver, missing PostgreSQL binaries), 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"hasql: error: {message}\n")
    sys.stderr.flush()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hasql`` command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    from ._args import build_parser

    args = build_parser().parse_args(argv)
    try:
        import rich  # noqa: F401
    except ImportError:
        return _fail("the hasql command needs rich: pip install 'hasql-core[cli]'", 2)
    from ._common import EXIT_INTERRUPTED, CliError, Interrupted

    try:
        if args.command == "status":
            from .status import run as run_status

            return run_status(args.dsn, args.driver, args.json, args.timeout)
        if args.command == "watch":
            from .watch import run as run_watch

            return run_watch(args.dsn, args.driver, args.interval, args.duration)
        from .demo import run as run_demo

        return run_demo(args.driver, args.replicas, args.short, args.metrics)
    except CliError as error:
        return _fail(str(error), error.code)
    except BrokenPipeError:  # stdout closed early (e.g. piped into head)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (Interrupted, KeyboardInterrupt):
        sys.stderr.write("hasql: interrupted\n")
        return EXIT_INTERRUPTED if args.command != "watch" else 0
