"""Causal sessions of a PoolManager: ``causal_session()`` and ``causal_scope()`` (a mixin of
``PoolManager``; the sessions themselves are :mod:`hasql_core.causal`)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, cast

from ._arguments import positive
from .causal import CausalSession, causal_scope

if TYPE_CHECKING:
    from .manager import PoolManager


class CausalApi:
    """The manager's causal-session methods. The manager keeps the counters the sessions update:
    ``_causal_scopes`` (open scopes; a plain acquire looks for one only when there are any),
    ``_causal_primary_reads`` and ``_causal_tokens_lost``."""

    if TYPE_CHECKING:

        def _check_open(self) -> None: ...

    def causal_session(
        self, token: str | None = None, *, catch_up: float | None = None
    ) -> CausalSession:
        """A :class:`~hasql_core.causal.CausalSession`: acquires whose reads see its own writes.

        ``token`` (a previous session's ``.token``) resumes that session, here or in another
        process. ``catch_up`` bounds how long a read waits for a standby to replay the session's
        writes before the primary serves it (default 0.2 s, always within the acquire's timeout).
        """
        self._check_open()
        manager = cast("PoolManager", self)
        if catch_up is None:
            return CausalSession(manager, token)
        return CausalSession(manager, token, catch_up=positive(catch_up, "catch_up"))

    def causal_scope(
        self, token: str | None = None, *, catch_up: float | None = None
    ) -> contextlib.AbstractContextManager[CausalSession]:
        """``with pm.causal_scope(token) as session:``: inside the block, this task's plain
        ``pm.acquire*()`` and ``pm.release()`` calls go through a causal session (resumed from
        ``token`` when given); read ``session.token`` at the end to hand it to the client."""
        return causal_scope(self.causal_session(token, catch_up=catch_up))
