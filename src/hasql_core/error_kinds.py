"""One classification of failures for every driver: facts in, :class:`ErrorKind` out.

A driver only reads facts from its library's exceptions (:class:`ErrorFacts`: the SQLSTATE the server
sent, whether the library says the connection is gone). What those facts mean for routing is decided
here, once, so two drivers can never disagree about the same server answer.
"""

from __future__ import annotations

import enum

import attrs

__all__ = ["ErrorFacts", "ErrorKind", "classify"]


class ErrorKind(enum.Enum):
    """How the core should react to an exception raised while using a connection."""

    #: The connection or the session went away: network error, server shutdown or crash,
    #: ``pg_terminate_backend()`` (SQLSTATE class 08, 57P01, 57P02).
    CONNECTION_LOST = "connection_lost"
    #: A write was refused because the server or the transaction is read-only (SQLSTATE 25006).
    READ_ONLY = "read_only"
    #: The server refuses new sessions for now: starting up, shutting down, or in recovery
    #: without hot standby (SQLSTATE 57P03).
    UNAVAILABLE = "unavailable"
    #: Anything else (a user's SQL error, a constraint violation, a query's own timeout, ...):
    #: not the host's fault.
    OTHER = "other"


#: The kinds that blame the host: the core re-probes it at once and discards the connection.
HOST_FAILURES = frozenset({ErrorKind.CONNECTION_LOST, ErrorKind.READ_ONLY, ErrorKind.UNAVAILABLE})


@attrs.frozen
class ErrorFacts:
    """What a driver can tell about one exception of its library, without interpreting it.

    ``sqlstate``: the five-character SQLSTATE the server sent, or ``None`` when the error did not
    come from the server. ``connection_lost``: the library reports that the connection (or its
    socket) is closed or broken, or the error is an ``OSError`` of the network under it. A
    timeout raised by the library for a query's own time limit is *not* a lost connection.
    """

    sqlstate: str | None = None
    connection_lost: bool = False


#: An established session that the server ended: admin shutdown or ``pg_terminate_backend()``
#: (57P01), or a crash of another backend that makes the postmaster end every session (57P02).
#: The connection is gone, whatever the host does next, so these are lost connections.
_SESSION_ENDED = frozenset({"57P01", "57P02"})
#: The server answered but takes no session now (startup, shutdown, recovery without hot standby).
_REFUSING_SESSIONS = frozenset({"57P03"})
_READ_ONLY = "25006"
_CONNECTION_EXCEPTION_CLASS = "08"


def classify(facts: ErrorFacts) -> ErrorKind:
    """The :class:`ErrorKind` of an error described by ``facts``. Pure; the only classification.

    - SQLSTATE 25006 (read-only transaction): :attr:`ErrorKind.READ_ONLY`;
    - SQLSTATE 57P03 (cannot connect now): :attr:`ErrorKind.UNAVAILABLE`;
    - SQLSTATE 57P01, 57P02 or class 08, or a connection the library reports lost:
      :attr:`ErrorKind.CONNECTION_LOST`;
    - anything else: :attr:`ErrorKind.OTHER`.
    """
    sqlstate = facts.sqlstate
    if sqlstate:
        if sqlstate == _READ_ONLY:
            return ErrorKind.READ_ONLY
        if sqlstate in _REFUSING_SESSIONS:
            return ErrorKind.UNAVAILABLE
        if sqlstate in _SESSION_ENDED or sqlstate.startswith(_CONNECTION_EXCEPTION_CLASS):
            return ErrorKind.CONNECTION_LOST
    if facts.connection_lost:
        return ErrorKind.CONNECTION_LOST
    return ErrorKind.OTHER
