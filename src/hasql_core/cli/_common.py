"""Shared pieces of the ``hasql`` command: exit codes, errors, consoles and input checks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

from rich.console import Console

from ..driver import Driver
from ..dsn import Dsn, parse_dsn
from ..errors import DsnError, PluginError

#: Everything went as expected.
EXIT_OK = 0
#: A check failed (no single writable primary, a lost write, ...).
EXIT_FAILED = 1
#: Bad usage: an unparsable DSN, an unknown driver, missing PostgreSQL binaries.
EXIT_USAGE = 2
#: Interrupted by Ctrl-C (SIGINT) or SIGTERM, after cleaning up.
EXIT_INTERRUPTED = 130

T = TypeVar("T")


class CliError(Exception):
    """An error to report on stderr as one line, then exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class Interrupted(Exception):
    """The user pressed Ctrl-C (or the process got SIGTERM); cleanup has run."""


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def parse_cli_dsn(text: str) -> Dsn:
    """Parse the DSN given on the command line; :class:`CliError` (exit 2) when it is not valid."""
    try:
        return parse_dsn(text)
    except DsnError as error:
        raise CliError(f"invalid DSN: {error}") from None


def load_driver(name: str) -> Driver[Any, Any, Any]:
    """The driver plugin called ``name``; :class:`CliError` (exit 2) saying what to install."""
    from .._plugins import make_driver

    try:
        return make_driver(name)
    except PluginError as error:
        raise CliError(f"driver {name!r}: {error}") from None


def stdout_console() -> Console:
    """A console for stdout: full colour on a terminal, plain and wide when redirected."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=200, no_color=True, highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    """A console for messages on stderr."""
    return Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` in a new event loop; SIGINT/SIGTERM cancel it and raise :class:`Interrupted`.

    Cancellation lets ``main`` clean up in its ``finally`` blocks (close managers, stop tasks) before
    the loop ends, on every supported Python version.
    """

    async def runner() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        interrupted = False

        def on_signal() -> None:
            nonlocal interrupted
            interrupted = True
            task.cancel()

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - platform
                pass
        try:
            return await main()
        except asyncio.CancelledError:
            if interrupted:
                raise Interrupted from None
            raise
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(runner())
    except KeyboardInterrupt:  # a SIGINT that arrived before the handlers were in place
        raise Interrupted from None


class _SinkHandler(logging.Handler):
    """Sends each log record's message (no traceback) to a callable, skipping repeats."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self._sink = sink
        self._last = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.levelname.lower()}: {record.getMessage()}"
        except Exception:  # pragma: no cover - a broken log call must not break the command
            return
        if text != self._last:
            self._last = text
            self._sink(text)


@contextlib.contextmanager
def captured_logs(sink: Callable[[str], None]) -> Iterator[None]:
    """Route warnings of every library (one line each, no traceback) to ``sink`` meanwhile."""
    root = logging.getLogger()
    handler = _SinkHandler(sink)
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
