"""hasql-core: connections to the right member of a highly available PostgreSQL cluster.

Give :class:`PoolManager` one multi-host DSN and a driver name; it keeps a pool per host, knows which
host is the primary and how far each replica lags, and hands out connections by role::

    async with PoolManager("postgresql://app:secret@db1,db2,db3/shop", driver="asyncpg") as pm:
        await pm.ready(masters_count=1, replicas_count=1)
        async with pm.acquire_master() as conn:
            ...
"""

from .balancer import BalancerPolicy, Candidate
from .driver import Driver, ErrorFacts, ErrorKind, PoolStats
from .dsn import Dsn, HostPort, parse_dsn, split_dsn
from .errors import (
    AcquireTimeoutError,
    ConfigurationError,
    DsnError,
    HasqlError,
    PluginConflictError,
    PluginError,
    PluginLoadError,
    PoolManagerClosedError,
    PoolSetupError,
    ReadyTimeoutError,
    SplitBrainError,
    UnknownPluginError,
)
from .hookspecs import hookimpl
from .host_state import HostState, Role
from .manager import PoolManager
from .metrics import Metrics
from .policies import GreedyPolicy, RandomWeightedPolicy, RoundRobinPolicy

__all__ = [
    "AcquireTimeoutError",
    "BalancerPolicy",
    "Candidate",
    "ConfigurationError",
    "Driver",
    "Dsn",
    "DsnError",
    "ErrorFacts",
    "ErrorKind",
    "GreedyPolicy",
    "HasqlError",
    "HostPort",
    "HostState",
    "Metrics",
    "PluginConflictError",
    "PluginError",
    "PluginLoadError",
    "PoolManager",
    "PoolManagerClosedError",
    "PoolSetupError",
    "PoolStats",
    "RandomWeightedPolicy",
    "ReadyTimeoutError",
    "Role",
    "RoundRobinPolicy",
    "SplitBrainError",
    "UnknownPluginError",
    "hookimpl",
    "parse_dsn",
    "split_dsn",
]
