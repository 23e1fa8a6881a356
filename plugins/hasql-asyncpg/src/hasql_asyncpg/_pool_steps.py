"""Taking and giving back asyncpg pool connections in fewer steps than asyncpg's public methods.

``Pool.acquire()`` returns a context object whose ``__await__`` runs ``Pool._acquire``; and
``Pool.release()`` checks its argument, runs the connection's release housekeeping and then waits
for ``PoolConnectionHolder.release`` through ``asyncio.shield``, which makes a task of it so that
cancelling the caller does not stop the reset. hasql-core bounds both calls itself and discards a
connection whose release was cut off or cancelled (see ``Driver.release``), so the shield buys it
nothing, and its task costs an event-loop iteration and several hundred Python steps on every
operation (the task, the shield's callbacks, the loop's handles): at 100 tasks, about 770 of the
3,900 Python bytecodes an operation ran (``python -m hasql_bench.bytecodes``).

:func:`acquire_steps` and :func:`release_steps` return asyncpg's own inner coroutines instead.
They rely on asyncpg internals that have kept their shape from 0.29 (the oldest version this
plugin supports) to 0.32: ``Pool._acquire(timeout)``, ``PoolConnectionProxy._con`` /
``._holder``, ``Connection._on_release()``, ``PoolConnectionHolder.release(timeout)`` and its
``_timeout`` and ``_pool``, ``Pool._closed`` and ``_reset`` (0.30 on), and the protocol's
``_is_cancelling()``. They are checked once, at import: when any is missing (a future asyncpg),
:data:`INTERNALS_FOUND` is false and the public methods are used. They are used only for pools
of asyncpg's own ``Pool`` class (a subclass may override the public methods) and without extra
arguments, and every case the public ``release`` treats specially (a connection already released,
one of another pool, a closed pool) goes to it, so its errors and no-ops are unchanged.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import asyncpg
import asyncpg.pool

__all__ = ["INTERNALS_FOUND", "acquire_steps", "release_steps"]

_Pool = asyncpg.pool.Pool
_Proxy = asyncpg.pool.PoolConnectionProxy
_connection_reset = asyncpg.Connection.reset


def _internals_found() -> bool:
    holder = getattr(asyncpg.pool, "PoolConnectionHolder", None)
    return (
        callable(getattr(_Pool, "_acquire", None))
        and holder is not None
        and callable(getattr(holder, "release", None))
        and callable(getattr(asyncpg.Connection, "_on_release", None))
        and "_holder" in getattr(_Proxy, "__slots__", ())
        and "_con" in getattr(_Proxy, "__slots__", ())
    )


#: Whether this asyncpg has the internals the short paths use (checked once, at import).
INTERNALS_FOUND = _internals_found()


async def _acquire_public(pool: asyncpg.Pool, kwargs: dict[str, Any]) -> Any:
    return await pool.acquire(**kwargs)


def acquire_steps(pool: asyncpg.Pool, kwargs: dict[str, Any]) -> Coroutine[Any, Any, Any]:
    """A coroutine that takes a connection from ``pool`` with no timeout of asyncpg's, as
    ``await pool.acquire(**kwargs)`` does: ``Pool._acquire(None)`` itself when it can."""
    if kwargs or type(pool) is not _Pool or not INTERNALS_FOUND:
        return _acquire_public(pool, kwargs)
    return pool._acquire(None)  # type: ignore[no-any-return]


def release_steps(
    pool: asyncpg.Pool, connection: Any, kwargs: dict[str, Any]
) -> Coroutine[Any, Any, None]:
    """A coroutine that gives ``connection`` back to ``pool`` (reset included), as
    ``pool.release(connection, **kwargs)`` does but without its shield: cancelling it stops the
    reset, and asyncpg then closes the connection and frees its slot.

    Like the public method's coroutine, it needs no task of its own (the core may step it from
    future callbacks, see ``Driver.release_needs_task``): its only waits are on the protocol's
    futures. That holds for asyncpg's own reset without a deadline, so the public method (whose
    shield makes a task) is used whenever something else would run: a release timeout
    (``asyncio.timeout`` needs the current task), a connection still cancelling a statement
    (asyncpg 0.32 then enters such a timeout after a wait), the pool's ``reset=`` callback, or a
    connection class with a ``reset`` of its own.
    """
    if kwargs or type(pool) is not _Pool or type(connection) is not _Proxy or not INTERNALS_FOUND:
        return pool.release(connection, **kwargs)  # type: ignore[no-any-return]
    con = connection._con
    holder = connection._holder
    if (
        con is None  # already released: the public method does nothing
        or holder._pool is not pool  # the public method's error
        or pool._closed  # the public method's error
        or holder._timeout is not None
        or getattr(pool, "_reset", None) is not None
        or type(con).reset is not _connection_reset
        or con._protocol._is_cancelling()
    ):
        return pool.release(connection)  # type: ignore[no-any-return]
    con._on_release()
    return holder.release(None)  # type: ignore[no-any-return]
