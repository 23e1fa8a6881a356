"""The command line of ``hasql``."""

from __future__ import annotations

import argparse


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _replicas(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= 8:
        raise argparse.ArgumentTypeError(f"must be between 1 and 8, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``hasql`` and its ``status``, ``watch`` and ``demo`` commands."""
    parser = argparse.ArgumentParser(
        prog="hasql",
        description="Look at a highly available PostgreSQL cluster the way hasql-core sees it.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    status = commands.add_parser(
        "status",
        help="probe every host once and print a table",
        description="Probe every host of a multi-host DSN once, the way the monitor does. Exit "
        "status 0 when exactly one writable primary was found, 1 otherwise (reason on stderr).",
    )
    status.add_argument("dsn", metavar="DSN", help="multi-host DSN (URL or key=value)")
    status.add_argument("--driver", default="asyncpg", help="driver plugin (default: asyncpg)")
    status.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    status.add_argument(
        "--timeout", type=_positive, default=2.0, help="seconds per host (default: 2)"
    )

    watch = commands.add_parser(
        "watch",
        help="live table through a running PoolManager",
        description="Show every host's state live through a PoolManager and log each change of "
        "role or availability, until Ctrl-C (or --duration).",
    )
    watch.add_argument("dsn", metavar="DSN", help="multi-host DSN (URL or key=value)")
    watch.add_argument("--driver", default="asyncpg", help="driver plugin (default: asyncpg)")
    watch.add_argument(
        "--interval", type=_positive, default=1.0, help="seconds between probes (default: 1)"
    )
    watch.add_argument(
        "--duration", type=_positive, default=None, help="stop after this many seconds"
    )

    demo = commands.add_parser(
        "demo",
        help="fail over a local cluster under load and check nothing was lost",
        description="Start a local PostgreSQL cluster, run writers and readers through a "
        "PoolManager, play failure scenes and check every acknowledged write survived.",
    )
    demo.add_argument("--driver", default="asyncpg", help="driver plugin (default: asyncpg)")
    demo.add_argument(
        "--replicas", type=_replicas, default=2, help="number of replicas (default: 2)"
    )
    demo.add_argument("--short", action="store_true", help="short scenes (about 20 s in all)")
    demo.add_argument(
        "--metrics",
        action="store_true",
        help="report through the hasql-opentelemetry plugin and print its metrics as Prometheus "
        "text at the end (needs hasql-opentelemetry, opentelemetry-sdk and "
        "opentelemetry-exporter-prometheus)",
    )
    return parser
