"""Every log record of a run (all loggers, DEBUG and up), searched for the password.

The records are kept in memory for the run and written to a file with the password masked; the run
reports how many records and error messages contained the password, with the first few (masked).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from pathlib import Path

MASK = "<PASSWORD>"


class Capture(logging.Handler):
    """A handler on the root logger that keeps every record's text while installed."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self._saved: tuple[int, int] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        """Keep ``time level logger: message`` plus the traceback, if any."""
        try:
            text = f"{record.created:.3f} {record.levelname} {record.name}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            self.lines.append(text)
        except Exception:  # a record that cannot be formatted must not stop the run
            self.lines.append(f"{record.levelname} {record.name}: <unformattable record>")

    def install(self) -> None:
        """Attach to the root logger at DEBUG (and ``hasql_core`` at DEBUG explicitly)."""
        root = logging.getLogger()
        self._saved = (root.level, logging.getLogger("hasql_core").level)
        root.addHandler(self)
        root.setLevel(logging.DEBUG)
        logging.getLogger("hasql_core").setLevel(logging.DEBUG)

    def remove(self) -> None:
        """Detach and restore the previous levels."""
        root = logging.getLogger()
        root.removeHandler(self)
        if self._saved is not None:
            root.setLevel(self._saved[0])
            logging.getLogger("hasql_core").setLevel(self._saved[1])


def find_secret(texts: Iterable[str], secret: str, keep: int = 3) -> tuple[int, list[str]]:
    """How many ``texts`` contain ``secret``, and the first ``keep`` of them, masked."""
    count = 0
    found: list[str] = []
    for text in texts:
        if secret in text:
            count += 1
            if len(found) < keep:
                found.append(mask(text, secret)[:300])
    return count, found


def mask(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``<PASSWORD>``."""
    return text.replace(secret, MASK)


def write_masked(path: Path, lines: Iterable[str], secret: str) -> None:
    """Write ``lines`` to ``path`` with the secret masked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for line in lines:
            out.write(mask(line, secret) + "\n")
