"""The names this plugin reports: metric names and attribute keys.

Pool metrics follow OpenTelemetry's semantic conventions for database client connection pools
(``db.client.connection.*``); everything about the cluster is under ``hasql.``. Prometheus renders
``.`` as ``_``, drops ``{...}`` units, appends ``_seconds`` / ``_bytes`` for the ``s`` / ``By``
units and ``_total`` for counters (see the plugin's README for the rendered names).
"""

from __future__ import annotations

# -- attributes ----------------------------------------------------------------------------------

#: ``host:port/dbname`` of the host a pool connects to (the convention's suggested form).
POOL_NAME = "db.client.connection.pool.name"
#: ``idle`` or ``used`` (``db.client.connection.count`` only).
CONNECTION_STATE = "db.client.connection.state"
#: The host's role as of the collection: ``primary``, ``standby``, ``unavailable`` or ``unknown``.
HOST_ROLE = "hasql.host.role"
#: The role before a change (``hasql.host.role_changes`` only).
PREVIOUS_ROLE = "hasql.host.previous_role"
#: Every host of a manager and the database: ``host1:port1,host2:port2/dbname``.
CLUSTER = "hasql.cluster"
#: The kind of a failure, as hasql-core counts them (``connection_lost``, ``probe_timeout``, ...).
ERROR_TYPE = "error.type"
#: What an acquire asked for: ``primary`` or ``replica``.
ACQUIRE_ROLE = "hasql.acquire.role"

# -- pool metrics (semantic conventions) ---------------------------------------------------------

CONNECTION_COUNT = "db.client.connection.count"
CONNECTION_IDLE_MAX = "db.client.connection.idle.max"
CONNECTION_IDLE_MIN = "db.client.connection.idle.min"
CONNECTION_MAX = "db.client.connection.max"
CONNECTION_PENDING_REQUESTS = "db.client.connection.pending_requests"
CONNECTION_TIMEOUTS = "db.client.connection.timeouts"
CONNECTION_WAIT_TIME = "db.client.connection.wait_time"
CONNECTION_USE_TIME = "db.client.connection.use_time"

# -- cluster metrics -----------------------------------------------------------------------------

HOST_AVAILABLE = "hasql.host.available"
HOST_ROLE_STATE = "hasql.host.role"
HOST_LAG_TIME = "hasql.host.lag.time"
HOST_LAG_WAL = "hasql.host.lag.wal"
HOST_PROBE_DURATION = "hasql.host.probe.duration"
HOST_STALE = "hasql.host.stale"
HOST_HELD_BACK = "hasql.host.held_back"
HOST_ERRORS = "hasql.host.errors"
HOST_DISCARDED = "hasql.host.discarded"
HOST_ROLE_CHANGES = "hasql.host.role_changes"
FAILOVERS = "hasql.failovers"
SPLIT_BRAIN_EPISODES = "hasql.split_brain.episodes"
ACQUIRE_LAG_REFUSALS = "hasql.acquire.lag_refusals"
ACQUIRE_UNSERVED_TIMEOUTS = "hasql.acquire.unserved_timeouts"
ACQUIRE_WAITING = "hasql.acquire.waiting"

#: Every metric this plugin reports.
ALL_METRICS: tuple[str, ...] = (
    CONNECTION_COUNT,
    CONNECTION_IDLE_MAX,
    CONNECTION_IDLE_MIN,
    CONNECTION_MAX,
    CONNECTION_PENDING_REQUESTS,
    CONNECTION_TIMEOUTS,
    CONNECTION_WAIT_TIME,
    CONNECTION_USE_TIME,
    HOST_AVAILABLE,
    HOST_ROLE_STATE,
    HOST_LAG_TIME,
    HOST_LAG_WAL,
    HOST_PROBE_DURATION,
    HOST_STALE,
    HOST_HELD_BACK,
    HOST_ERRORS,
    HOST_DISCARDED,
    HOST_ROLE_CHANGES,
    FAILOVERS,
    SPLIT_BRAIN_EPISODES,
    ACQUIRE_LAG_REFUSALS,
    ACQUIRE_UNSERVED_TIMEOUTS,
    ACQUIRE_WAITING,
)
