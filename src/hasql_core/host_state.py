"""What the monitor knows about one host: an immutable :class:`HostState` per probe."""

from __future__ import annotations

import enum

import attrs


class Role(str, enum.Enum):
    """A host's role as the last probe saw it (a ``str`` enum: ``Role.PRIMARY == "primary"``)."""

    #: Not in recovery: accepts writes (unless flagged read-only).
    PRIMARY = "primary"
    #: In recovery: a streaming (or archive-replaying) standby that serves reads.
    STANDBY = "standby"
    #: The last connect or probe failed or timed out.
    UNAVAILABLE = "unavailable"
    #: Not probed yet.
    UNKNOWN = "unknown"


def format_host(host: str, port: int) -> str:
    """``host:port``, with IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@attrs.frozen
class HostState:
    """One host as of its latest probe. Never contains a secret.

    ``lag_bytes`` and ``lag_seconds`` are measured against the newest WAL position known for the
    writable primary (or the standby's own received position, if further ahead), so a standby whose
    replay has stalled shows growing lag even though its own view looks idle. They are ``None`` for a
    primary and for a host that is not a standby. ``stale`` is True for a standby beyond the manager's
    lag limit. ``split_brain`` is True for a primary excluded from writes because another primary is on a
    higher timeline. ``rtt`` is the probe's round-trip time in seconds; ``checked_at`` the wall-clock time
    (``time.time()``) the probe finished; ``last_error`` a redacted description of the latest failure.
    """

    host: str
    port: int
    role: Role = Role.UNKNOWN
    read_only: bool = False
    wal_lsn: int | None = None
    receive_lsn: int | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    timeline: int | None = None
    rtt: float | None = None
    checked_at: float | None = None
    last_error: str | None = None
    stale: bool = False
    split_brain: bool = False

    @property
    def name(self) -> str:
        """``host:port`` of this host."""
        return format_host(self.host, self.port)

    @property
    def available(self) -> bool:
        """True when the latest probe succeeded."""
        return self.role in (Role.PRIMARY, Role.STANDBY)

    @property
    def writable(self) -> bool:
        """True for a primary that is not a split-brain loser (it may still be flagged read-only)."""
        return self.role is Role.PRIMARY and not self.split_brain

    def routing_key(self) -> tuple[Role, bool, bool, bool]:
        """The facts whose change is an event: role, read-only flag, staleness, split-brain flag."""
        return (self.role, self.read_only, self.stale, self.split_brain)

    def describe(self) -> str:
        """A one-line human description, for error messages and logs."""
        parts = [self.name, self.role.value]
        if self.read_only:
            parts.append("read-only")
        if self.split_brain:
            parts.append("split-brain loser")
        if self.timeline is not None:
            parts.append(f"timeline {self.timeline}")
        if self.role is Role.STANDBY:
            seconds = "?" if self.lag_seconds is None else f"{self.lag_seconds:.3f}s"
            parts.append(f"lag {self.lag_bytes if self.lag_bytes is not None else '?'}B/{seconds}")
            if self.stale:
                parts.append("beyond lag limit")
        if self.last_error:  # a probe that failed, or a pool that could not be opened
            parts.append(f"last error: {self.last_error}")
        return " ".join(parts)
