"""The probe: the one query the monitor runs on every host, and how its row is read.

The query is owned by the core so every driver reports the same facts. It is a single SELECT, one round
trip, that works on a primary and on a standby (functions that fail during recovery are only called in
the branch that runs on a primary).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import attrs

from .host_state import HostState, Role

#: Columns, in order: in_recovery, read_only, wal_lsn, receive_lsn, replay_age_s, timeline.
#: LSNs are byte positions (bigint). On a primary ``wal_lsn`` is the current write position and the
#: timeline comes from the name of the current WAL file; on a standby ``wal_lsn`` is the replay position,
#: ``receive_lsn`` what the WAL receiver has flushed, ``replay_age_s`` the age of the last replayed
#: transaction and the timeline the one the WAL receiver streams.
PROBE_QUERY = """\
SELECT r.in_recovery,
       current_setting('transaction_read_only') = 'on',
       CASE WHEN r.in_recovery
            THEN (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint
            ELSE (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint END,
       CASE WHEN r.in_recovery
            THEN (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint END,
       CASE WHEN r.in_recovery
            THEN extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8 END,
       CASE WHEN r.in_recovery
            THEN (SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1)::bigint
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END
FROM (SELECT pg_is_in_recovery() AS in_recovery) AS r"""


@attrs.frozen
class ProbeResult:
    """What one probe of one host said, before it is compared with the rest of the cluster."""

    in_recovery: bool
    read_only: bool
    wal_lsn: int | None
    receive_lsn: int | None
    replay_age: float | None
    timeline: int | None


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def parse_probe_row(row: Sequence[Any]) -> ProbeResult:
    """Turn the row returned by :data:`PROBE_QUERY` into a :class:`ProbeResult`.

    Raises ``ValueError`` when the row does not have the expected shape (a driver bug).
    """
    if len(row) != 6:
        raise ValueError(f"probe row has {len(row)} columns, expected 6")
    in_recovery, read_only, wal_lsn, receive_lsn, replay_age, timeline = row
    return ProbeResult(
        in_recovery=bool(in_recovery),
        read_only=bool(read_only),
        wal_lsn=_opt_int(wal_lsn),
        receive_lsn=_opt_int(receive_lsn),
        replay_age=None if replay_age is None else float(replay_age),
        timeline=_opt_int(timeline),
    )


def state_from_probe(host: str, port: int, result: ProbeResult, rtt: float) -> HostState:
    """The :class:`HostState` one successful probe describes, before lag is measured against the
    primary (``lag_seconds`` holds the raw replay age until then)."""
    return HostState(
        host=host,
        port=port,
        role=Role.STANDBY if result.in_recovery else Role.PRIMARY,
        read_only=result.read_only,
        wal_lsn=result.wal_lsn,
        receive_lsn=result.receive_lsn,
        lag_seconds=result.replay_age,
        timeline=result.timeline,
        rtt=rtt,
        checked_at=time.time(),
    )
