"""The exceptions hasql-core raises.

Every exception the library raises on purpose derives from :class:`HasqlError`. Messages name what was
wrong and what to do about it, and never contain a password or other secret.
"""

from __future__ import annotations

import asyncio


class HasqlError(Exception):
    """Base class of every error raised by hasql-core and its plugins."""


class DsnError(HasqlError, ValueError):
    """A connection string could not be parsed, or describes something libpq would refuse."""


class PluginError(HasqlError):
    """A driver, balancer policy or observer plugin could not be found, loaded or registered."""


class UnknownPluginError(PluginError, LookupError):
    """No installed plugin provides the driver or balancer policy asked for by name."""


class PluginLoadError(PluginError, ImportError):
    """An entry point of the ``hasql`` group failed to import; the cause is chained."""


class PluginConflictError(PluginError):
    """Two plugins claim the same driver or policy name."""


class ConfigurationError(HasqlError, ValueError):
    """An argument, or a combination of arguments, is not valid."""


class PoolSetupError(ConfigurationError):
    """A host's pool cannot be made, for a reason waiting will not fix (e.g. an option the driver's
    library does not know in ``pool_factory_kwargs``). ``ready()`` and acquires fail at once with
    it; the library's own exception is chained as ``__cause__``."""


class PoolManagerClosedError(HasqlError, RuntimeError):
    """The pool manager was used after ``close()`` or ``terminate()`` began."""


#: hasql's name for use during shutdown; the same error here.
PoolManagerClosingError = PoolManagerClosedError


class UnexpectedDatabaseResponseError(HasqlError):
    """A server answered a query of the library with something it cannot read (hasql's name)."""


class NoAvailablePoolError(HasqlError):
    """No host's pool can serve an acquire: the base of :class:`AcquireTimeoutError`, and what a
    balancer policy written for hasql causes by returning no pool (hasql's name)."""


class AcquireTimeoutError(NoAvailablePoolError, asyncio.TimeoutError):
    """No suitable connection could be handed out before the acquire's deadline.

    The message says what was asked for and what each host looked like when the deadline passed.
    ``host`` (``"host:port"``) names the host whose pool had no free connection in time; it is
    None when no host could serve the acquire at all.
    """

    def __init__(self, message: str, host: str | None = None) -> None:
        super().__init__(message)
        self.host = host


class ReadyTimeoutError(HasqlError, asyncio.TimeoutError):
    """``ready()`` or one of the ``wait_*`` methods gave up; the message shows every host's state."""


class SplitBrainError(HasqlError):
    """Writes are refused: two or more hosts claim to be primary on the same timeline."""


class ClusterError(HasqlError):
    """The local test cluster (``hasql_core.testing``) could not carry out an operation."""
