"""How long each phase of a cell lasts, and the bounds the invariants are checked against.

Every bound is derived from the manager's own settings, so a reader can recompute it:

- an operation (acquire, one statement, release) lasts at most ``ACQUIRE_TIMEOUT`` +
  ``STATEMENT_BOUND`` + ``RELEASE_BOUND`` + ``SCHEDULING_MARGIN``;
- writes resume on the primary within ``WRITE_RESUME_BOUND`` of a promotion request or of the end of
  a fault that made the primary unreachable;
- reads resume on a replica within ``READ_RESUME_BOUND`` of its recovery: the monitor probes every
  host every ``REFRESH_DELAY`` and each probe is bounded by ``REFRESH_TIMEOUT``;
- no read is served by a replica that was more than ``MAX_LAG`` behind when it was handed out.
"""

from __future__ import annotations

import dataclasses

#: PoolManager(acquire_timeout=...): one acquire, waiting for a host included.
ACQUIRE_TIMEOUT = 1.0
#: PoolManager(refresh_delay=...): seconds between two probes of a host (the default).
REFRESH_DELAY = 1.0
#: PoolManager(refresh_timeout=...): bound of every connect and probe of the monitor, and the
#: default bound of a release (the manager's ``release_timeout``).
REFRESH_TIMEOUT = 1.0
#: How long giving a connection back may take: the manager's release bound.
RELEASE_BOUND = REFRESH_TIMEOUT
#: PoolManager(close_timeout=...): how long close() waits for handed-out connections.
CLOSE_TIMEOUT = 2.0
#: Client-side bound of each statement: ``asyncio.wait_for(statement, STATEMENT_BOUND)``.
STATEMENT_BOUND = 1.0
#: Slack for the event loop and the machine (2 cores, shared).
SCHEDULING_MARGIN = 0.5
#: The longest an operation may last: acquire + statement + release + margin.
OPERATION_BOUND = ACQUIRE_TIMEOUT + STATEMENT_BOUND + RELEASE_BOUND + SCHEDULING_MARGIN
#: PoolManager(max_lag=...) in the paused-replay row.
MAX_LAG = 1.0
#: Writes succeed on the primary again within this many seconds of a promotion request (or of
#: the end of a fault of the primary that needed no promotion).
WRITE_RESUME_BOUND = 1.0
#: Reads are served by a recovered replica within this many seconds of its recovery.
READ_RESUME_BOUND = REFRESH_DELAY + REFRESH_TIMEOUT + SCHEDULING_MARGIN
#: close() must return within this many seconds (close_timeout plus the core's cleanup bounds);
#: beyond it the run reports an unclean close and goes on.
CLOSE_BOUND = CLOSE_TIMEOUT + 8.0
#: How long the server may take to end the backends of connections the manager closed.
BACKEND_EXIT_WAIT = 5.0
#: How long asyncio tasks of the manager may take to end after close() returned.
TASK_EXIT_WAIT = 1.0
#: Connections per host pool (min_size = max_size).
POOL_SIZE = 4
#: The application_name every connection of the application carries (set in the DSN).
APPLICATION_NAME = "hasql-chaos"
#: The client login of the cluster.
USER = "chaos_app"
DATABASE = "chaos"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Durations of one run of a cell (seconds) and the size of its workload."""

    short: bool
    #: Normal load before the fault.
    baseline: float
    #: From the fault to the promotion, where a row promotes a replica.
    promote_after: float
    #: How long a fault that is healed later lasts.
    hold: float
    #: How long every host stays down in the all-down row.
    down: float
    #: How long the old primary stays frozen after the promotion in the split-brain row, and the
    #: pause between a promotion and the rejoin of the old primary.
    after_promotion: float
    #: Load after the last step of the fault (long enough to see reads resume on a replica).
    tail: float
    writers: int = 3
    readers: int = 3
    #: Pause of a worker between two operations (an application does other work too).
    think: float = 0.01
    #: Upper bound on operations per worker per run (the loop is bounded in time as well).
    max_ops_per_worker: int = 20_000

    @classmethod
    def full(cls) -> Settings:
        """The default run: about 25 s of load per cell."""
        return cls(
            short=False,
            baseline=2.0,
            promote_after=0.5,
            hold=5.0,
            down=3.0,
            after_promotion=2.0,
            tail=5.0,
        )

    @classmethod
    def short_run(cls) -> Settings:
        """``--short``: the CI run, about 6 s of load per cell."""
        return cls(
            short=True,
            baseline=1.0,
            promote_after=0.5,
            hold=2.5,
            down=1.5,
            after_promotion=1.0,
            tail=READ_RESUME_BOUND + 0.5,
        )


def bounds() -> dict[str, float]:
    """Every bound, by name, for the report."""
    return {
        "acquire_timeout": ACQUIRE_TIMEOUT,
        "statement_bound": STATEMENT_BOUND,
        "release_bound": RELEASE_BOUND,
        "scheduling_margin": SCHEDULING_MARGIN,
        "operation_bound": OPERATION_BOUND,
        "refresh_delay": REFRESH_DELAY,
        "refresh_timeout": REFRESH_TIMEOUT,
        "close_timeout": CLOSE_TIMEOUT,
        "close_bound": CLOSE_BOUND,
        "max_lag": MAX_LAG,
        "write_resume_bound": WRITE_RESUME_BOUND,
        "read_resume_bound": READ_RESUME_BOUND,
        "backend_exit_wait": BACKEND_EXIT_WAIT,
        "pool_size": POOL_SIZE,
    }
