"""A real local PostgreSQL HA cluster: a primary and N streaming replicas, for tests and demos.

Everything is synchronous (blocking, subprocess based) and safe to call from a worker thread,
e.g. ``await asyncio.to_thread(cluster.kill, 0)``. SQL runs through the ``psql`` binary of the same
install over each node's Unix socket, so no driver is needed. Example::

    with LocalCluster(replicas=2) as cluster:
        cluster.execute(cluster.primary, "CREATE TABLE t (x int)")
        cluster.promote(1)
        cluster.repoint(2, 1)  # rewinds node2 if it had WAL that node1 never got
        cluster.rejoin(0, 1)

Leftovers of clusters whose owning process died (servers, shared memory, directories) are removed
at every :meth:`LocalCluster.start`; see :mod:`hasql_core.testing._cleanup`.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from hasql_core.errors import ClusterError
from hasql_core.host_state import Role
from hasql_core.testing import _cleanup, _pgconf, _template, _timeline
from hasql_core.testing._node import Node, State, StopMode, free_port
from hasql_core.testing._postmaster import terminate_data_dir
from hasql_core.testing._psql import clean_env
from hasql_core.testing._server_user import ServerUser, resolve_server_user
from hasql_core.testing.binaries import find_pg_bindir, shared_bindir
from hasql_core.testing.proxy import Proxy, ProxyServer

__all__ = ["ClusterError", "LocalCluster", "Node", "NodeRef", "Role", "State", "StopMode"]

NodeRef = Node | int
_T = TypeVar("_T")
_BYTES_PER_NODE = 96 * 1024 * 1024
#: How often :meth:`LocalCluster.repoint` re-checks, while waiting, whether the replica diverged.
_DIVERGENCE_RECHECK = 0.25
_LIVE: weakref.WeakSet[LocalCluster] = weakref.WeakSet()


def _close_live_clusters() -> None:
    for cluster in list(_LIVE):
        cluster.close()


atexit.register(_close_live_clusters)


class LocalCluster:
    """A primary (``node0``) and ``replicas`` streaming replicas (``node1``...) on 127.0.0.1.

    Nothing happens until :meth:`start` (or ``with``), which builds every node and returns once each
    replica is streaming. :meth:`close` removes every process, socket, shared memory segment and
    directory, also after a failed start. Arguments:

    * ``bindir``: PostgreSQL bin directory (default: see
      :func:`~hasql_core.testing.binaries.find_pg_bindir`).
    * ``base_dir``: where data directories go (default: /dev/shm when it has room, else the temp
      dir).
    * ``user`` / ``password`` / ``database``: the login role clients use over TCP (a SUPERUSER with
      a SCRAM password, random when None) and its database (created unless ``postgres``).
    * ``synchronous_replica``: index among the replicas (0 = ``node1``) to name in the primary's
      ``synchronous_standby_names``.
    * ``proxied``: start a fault proxy per node (see :meth:`proxy`, :attr:`proxied_dsn`).
    * ``settings``: extra postgresql.conf settings for every node.
    * ``timeout``: default seconds for every wait.

    Wrong input or an operation that does not fit a node's state raises ClusterError.
    """

    def __init__(
        self,
        replicas: int = 2,
        *,
        bindir: str | Path | None = None,
        base_dir: str | Path | None = None,
        user: str = "app",
        password: str | None = None,
        database: str = "postgres",
        synchronous_replica: int | None = None,
        proxied: bool = False,
        settings: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise ClusterError(f"replicas must be an int >= 0, got {replicas!r}")
        if replicas < 0:
            raise ClusterError(f"replicas must be >= 0, got {replicas}")
        if synchronous_replica is not None and not 0 <= synchronous_replica < replicas:
            raise ClusterError(
                f"synchronous_replica must index one of the {replicas} replicas "
                f"(0..{replicas - 1}), got {synchronous_replica!r}"
            )
        if not user or not database:
            raise ClusterError("user and database must not be empty")
        if password == "":
            raise ClusterError("password must not be empty (None picks a random one)")
        self._replica_count = replicas
        self._bindir_arg = bindir
        self._base_dir = Path(base_dir) if base_dir is not None else None
        self._user = user
        self._password = password if password is not None else secrets.token_hex(16)
        self._database = database
        self._synchronous_replica = synchronous_replica
        self._proxied = proxied
        self._settings = _pgconf.check_settings(settings or {})
        self.timeout = timeout
        self._lock = threading.RLock()
        self._nodes: list[Node] = []
        self._primary_index = 0
        self._entry: _cleanup.Entry | None = None
        self._data_home: Path | None = None
        self._proxy_server: ProxyServer | None = None
        self._bindir: Path | None = None
        self._server_user: ServerUser | None = None
        self._started = False
        self._closed = False

    # ================================================================ lifecycle
    def __enter__(self) -> LocalCluster:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> LocalCluster:
        """Build and start every node; return once every replica streams from the primary and
        has replayed the creation of the login role and database.

        Removes leftovers of dead owners first. On failure everything built so far is torn down and
        the error re-raised. A cluster starts once; build a new one to start again.
        """
        with self._lock:
            if self._started:
                raise ClusterError("this LocalCluster was already started; create a new one")
            self._started = True
            _LIVE.add(self)
            try:
                self._build()
            except BaseException:
                self.close()
                raise
        return self

    def _build(self) -> None:
        _cleanup.reap_leftovers()
        bindir = find_pg_bindir(self._bindir_arg)
        server_user = resolve_server_user()
        if not server_user.is_current:
            bindir = shared_bindir(bindir)
        self._bindir, self._server_user = bindir, server_user
        count = self._replica_count + 1
        root = _cleanup.runtime_root(
            count * _BYTES_PER_NODE + 256 * 1024 * 1024 if self._base_dir is None else 0
        )
        entry = self._entry = _cleanup.create_entry(root)
        if self._base_dir is None:
            data_home = entry.path
        else:
            data_home = self._base_dir.resolve() / f"hasql-{entry.path.name}"
            if not server_user.can_reach(data_home):
                raise ClusterError(
                    f"base_dir {self._base_dir} is not reachable by the user {server_user.name!r} "
                    "that runs the servers (a parent directory lacks its search permission); "
                    "pick a directory every user may traverse, or leave base_dir unset"
                )
            data_home.mkdir(parents=True, mode=0o755)
            self._data_home = data_home
        entry.save(
            data_dirs=[str(data_home / f"node{i}" / "data") for i in range(count)],
            data_home=str(data_home) if self._base_dir is not None else None,
        )
        credentials = (self._user, self._password, self._database)
        for index in range(count):
            node = Node(
                owner=self,
                index=index,
                node_dir=data_home / f"node{index}",
                socket_dir=entry.path / f"s{index}",
                port=free_port(),
                role=Role.PRIMARY if index == 0 else Role.STANDBY,
                credentials=credentials,
                bindir=bindir,
                server_user=server_user,
            )
            for directory in (node.node_dir, node.socket_dir):
                directory.mkdir(mode=0o700)
                server_user.give(directory)
            self._nodes.append(node)
        if len(str(self._nodes[-1].socket_dir)) + 20 > 107:
            raise ClusterError(f"socket path under {entry.path} is too long for a Unix socket")
        _template.prune_templates(root)
        template = _template.template_data_dir(bindir, server_user, root)
        # Pipelined: the replicas' copies go on while the primary starts, and the login role is
        # created while the replicas start.
        primary, replicas = self._nodes[0], self._nodes[1:]
        _template.CopyJob(template, primary.data_dir).wait()
        copies = [_template.CopyJob(template, node.data_dir, without_wal=True) for node in replicas]
        try:
            self._configure_node(primary, server_user)
            primary._launch()
            primary._await_up(self.timeout)
        finally:
            for copy in copies:
                copy.wait()
        for node in replicas:
            self._configure_node(node, server_user)
            node._launch()
        self._create_login(primary)
        for node in replicas:
            node._await_up(self.timeout)
        for node in replicas:
            self.wait_streaming(node)
        if replicas:  # a client may log in to a replica at once: it must have the role and database
            self.wait_replayed(self.timeout)
        if self._proxied:
            self._start_proxies(entry)

    def _configure_node(self, node: Node, server_user: ServerUser) -> None:
        """Write cluster settings (and standby.signal + primary_conninfo) into a fresh data copy."""
        if self._settings:
            extra = _pgconf.render_settings(self._settings)
            _pgconf.append_file(node.data_dir / "postgresql.conf", "\n" + extra)
        if node.role is Role.PRIMARY:
            if self._synchronous_replica is not None:
                name = f"node{self._synchronous_replica + 1}"
                _pgconf.update_auto_conf(
                    node.data_dir, {"synchronous_standby_names": name}, server_user
                )
            return
        upstream = self._nodes[self._primary_index]
        node._write_trigger("standby.signal")
        _pgconf.update_auto_conf(
            node.data_dir,
            {"primary_conninfo": _pgconf.primary_conninfo(upstream.port, node.name)},
            server_user,
        )
        node._upstream = upstream

    def _create_login(self, primary: Node) -> None:
        """Create the client login role (SUPERUSER, SCRAM password) and its database."""
        user = _pgconf.quote_ident(self._user)
        password = _pgconf.quote_literal(self._password)
        verb = "ALTER" if self._user == "postgres" else "CREATE"
        primary._sql(
            f"{verb} ROLE {user} LOGIN SUPERUSER PASSWORD {password}", timeout=self.timeout
        )
        if self._database != "postgres":
            primary._sql(
                f"CREATE DATABASE {_pgconf.quote_ident(self._database)} OWNER {user}",
                timeout=self.timeout,
            )

    def _start_proxies(self, entry: _cleanup.Entry) -> None:
        server = self._proxy_server = ProxyServer(log_path=entry.path / "proxy.log")
        entry.save(proxy_pid=server.pid)
        for node in self._nodes:
            node.proxy = server.add(node.name, node.port)

    def close(self) -> None:
        """Stop every server and the proxies; remove sockets, shared memory and directories.

        Idempotent, and safe after a failed or partial :meth:`start`.
        """
        # Bounded: at interpreter exit another thread may have died holding the lock.
        locked = self._lock.acquire(timeout=60)
        try:
            if self._closed:
                return
            self._closed = True
            _LIVE.discard(self)
            if self._proxy_server is not None:
                self._proxy_server.close()
            for node in self._nodes:
                if node.state != "stopped":
                    node._signal_stop("immediate")
            for node in self._nodes:
                node._await_down(15.0, force=True)
                node._await_orphans(5.0)
            for node in self._nodes:
                # Last resort for anything still running in the data dir, then free its memory.
                terminate_data_dir(node.data_dir)
                node._remove_shm()
            if self._data_home is not None:
                shutil.rmtree(self._data_home, ignore_errors=True)
            if self._entry is not None:
                self._entry.release()
        finally:
            if locked:
                self._lock.release()

    # ================================================================ topology, read-only
    @property
    def nodes(self) -> list[Node]:
        """Every node, in index order (a copy of the list)."""
        return list(self._nodes)

    @property
    def primary(self) -> Node:
        """The node the cluster last made primary (node0 until a promotion)."""
        self._require_started()
        return self._nodes[self._primary_index]

    @property
    def replicas(self) -> list[Node]:
        """The nodes whose role is replica, in index order."""
        return [node for node in self._nodes if node.role is Role.STANDBY]

    @property
    def password(self) -> str:
        """The login role's password."""
        return self._password

    @property
    def user(self) -> str:
        """The login role clients use."""
        return self._user

    @property
    def database(self) -> str:
        """The database clients connect to."""
        return self._database

    @property
    def bindir(self) -> Path:
        """The bin directory the servers run from (after any copy for an unprivileged user)."""
        if self._bindir is None:
            raise ClusterError("the cluster is not started")
        return self._bindir

    @property
    def dsn(self) -> str:
        """Multi-host ``postgresql://user:pw@127.0.0.1:p0,127.0.0.1:p1,.../db`` in node order."""
        return self._multi_host([node.port for node in self._require_started()])

    @property
    def proxied_dsn(self) -> str:
        """:attr:`dsn` with every host replaced by its fault proxy (proxied clusters only)."""
        ports = []
        for node in self._require_started():
            if node.proxy is None:
                raise ClusterError("the cluster has no proxies: build it with proxied=True")
            ports.append(node.proxy.port)
        return self._multi_host(ports)

    def _multi_host(self, ports: list[int]) -> str:
        single = self._nodes[0]._url(ports[0])
        head, _, tail = single.partition("@")
        hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
        return f"{head}@{hosts}/{tail.partition('/')[2]}"

    def proxy(self, node: NodeRef) -> Proxy:
        """The fault proxy in front of ``node`` (proxied clusters only)."""
        target = self.node(node)
        if target.proxy is None:
            raise ClusterError(f"{target.name} has no proxy: build the cluster with proxied=True")
        return target.proxy

    def node(self, ref: NodeRef) -> Node:
        """Return the node ``ref`` (a Node of this cluster or an index); ClusterError otherwise."""
        nodes = self._require_started()
        if isinstance(ref, Node):
            if ref._owner is not self or ref not in nodes:
                raise ClusterError(f"{ref.name} (port {ref.port}) belongs to another cluster")
            return ref
        if isinstance(ref, bool) or not isinstance(ref, int):
            raise ClusterError(f"a node is a Node or an index, got {ref!r}")
        if not 0 <= ref < len(nodes):
            raise ClusterError(
                f"no node {ref}: this cluster has nodes 0..{len(nodes) - 1} "
                f"(node0..node{len(nodes) - 1})"
            )
        return nodes[ref]

    def _require_started(self) -> list[Node]:
        if not self._started or not self._nodes:
            raise ClusterError("the cluster is not started: call start() or use `with`")
        if self._closed:
            raise ClusterError("the cluster is closed")
        return self._nodes

    def _expect(self, node: Node, *states: State) -> None:
        if node.state not in states:
            raise ClusterError(
                f"{node._describe()}: expected it to be {' or '.join(states)}, "
                f"but it is {node.state}"
            )

    # ================================================================ process operations
    def stop(self, node: NodeRef, mode: StopMode = "fast") -> None:
        """Shut ``node`` down (``fast`` or ``immediate``) and wait; a frozen node is thawed."""
        if mode not in ("fast", "immediate"):
            raise ClusterError(f"stop mode must be 'fast' or 'immediate', got {mode!r}")
        with self._lock:
            target = self.node(node)
            self._expect(target, "running", "frozen")
            target._signal_stop(mode)
            target._await_down(self.timeout, force=False)

    def start_node(self, node: NodeRef) -> None:
        """Start a stopped (or killed) ``node`` and wait until it accepts connections."""
        with self._lock:
            target = self.node(node)
            self._expect(target, "stopped")
            target._await_orphans(self.timeout)
            port = target.port
            target._launch()
            target._await_up(self.timeout)
            if target.port != port and target.proxy is not None:
                target.proxy.retarget(target.port)

    def kill(self, node: NodeRef) -> None:
        """SIGKILL ``node``'s postmaster (a crash); its children exit on their own."""
        with self._lock:
            target = self.node(node)
            self._expect(target, "running", "frozen")
            target._kill()

    def freeze(self, node: NodeRef) -> None:
        """SIGSTOP every process of ``node`` (postmaster first): it looks like a black hole."""
        with self._lock:
            target = self.node(node)
            self._expect(target, "running")
            target._freeze()

    def thaw(self, node: NodeRef) -> None:
        """SIGCONT every process of a frozen ``node`` (postmaster last)."""
        with self._lock:
            target = self.node(node)
            self._expect(target, "frozen")
            target._thaw()

    # ================================================================ SQL and waiting
    def execute(
        self,
        node: NodeRef,
        sql: str,
        *,
        database: str | None = None,
        timeout: float | None = None,
    ) -> list[tuple[str, ...]]:
        """Run ``sql`` on ``node`` as ``postgres`` over its Unix socket; return the final rows.

        Values are text (NULL is ``""``). Several statements run as one implicit transaction.
        """
        target = self.node(node)
        return target._sql(
            sql,
            timeout=self.timeout if timeout is None else timeout,
            dbname=database or self._database,
        )

    def _poll(self, what: str, check: Callable[[], _T | None], timeout: float | None) -> _T:
        """Call ``check`` until it returns non-None; ClusterError naming ``what`` on timeout."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        delay = 0.002
        last_error: ClusterError | None = None
        while True:
            try:
                result = check()
            except ClusterError as exc:
                result, last_error = None, exc
            if result is not None:
                return result
            if time.monotonic() >= deadline:
                detail = f" (last error: {last_error})" if last_error else ""
                raise ClusterError(f"timed out after {limit:g} s waiting for {what}{detail}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)

    def wait_ready(self, node: NodeRef, timeout: float | None = None) -> None:
        """Wait until ``node`` (running) accepts SQL over its Unix socket."""
        target = self.node(node)
        self._expect(target, "running")
        self._poll(
            f"{target.name} to accept connections",
            lambda: target._sql("SELECT 1", timeout=5) or None,
            timeout,
        )

    def wait_streaming(
        self, replica: NodeRef, upstream: NodeRef | None = None, timeout: float | None = None
    ) -> None:
        """Wait until ``replica`` streams ``upstream``'s current timeline from ``upstream``.

        ``upstream`` defaults to the replica's upstream. Both sides must agree: the upstream lists
        the replica as streaming, and the replica's WAL receiver is connected to the upstream's
        port on the upstream's timeline (right after a promotion, a replica briefly streams the
        old timeline before switching).
        """
        target = self.node(replica)
        source = self.node(upstream) if upstream is not None else target.upstream
        if source is None:
            raise ClusterError(f"{target._describe()} has no upstream to stream from")
        self._poll(
            f"{target.name} to stream from {source.name}",
            self._streaming_check(target, source),
            timeout,
        )

    def _streaming_check(self, target: Node, source: Node) -> Callable[[], bool | None]:
        """A check for :meth:`_poll`: True once ``target`` streams from ``source`` (see
        :meth:`wait_streaming`), else None."""
        on_source = (
            "SELECT CASE WHEN pg_is_in_recovery() "
            "THEN (SELECT received_tli FROM pg_stat_wal_receiver) "
            "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, "
            "EXISTS (SELECT 1 FROM pg_stat_replication WHERE state = 'streaming' "
            f"AND application_name = {_pgconf.quote_literal(target.name)})"
        )
        on_target = "SELECT status, sender_port, received_tli FROM pg_stat_wal_receiver"

        def check() -> bool | None:
            rows = target._sql(on_target, timeout=5)
            if not rows or rows[0][0] != "streaming" or rows[0][1] != str(source.port):
                return None
            (timeline, listed), *_ = source._sql(on_source, timeout=5)
            return True if listed == "t" and rows[0][2] == timeline else None

        return check

    def wait_replayed(self, timeout: float = 10.0) -> None:
        """Wait until every running replica has replayed the primary's current WAL position."""
        primary = self.primary
        lsn = primary._sql("SELECT pg_current_wal_lsn()", timeout=self.timeout)[0][0]
        sql = f"SELECT pg_last_wal_replay_lsn() >= {_pgconf.quote_literal(lsn)}::pg_lsn"
        pending = [node for node in self.replicas if node.state == "running"]

        def check() -> bool | None:
            pending[:] = [node for node in pending if node._sql(sql, timeout=5) != [("t",)]]
            return True if not pending else None

        try:
            self._poll(f"replicas to replay up to {lsn}", check, timeout)
        except ClusterError as exc:
            names = ", ".join(node.name for node in pending)
            raise ClusterError(f"{names} did not replay up to {lsn} within {timeout:g} s") from exc

    # ================================================================ replication operations
    def promote(self, node: NodeRef, wait: bool = True) -> None:
        """Promote replica ``node`` (trigger file + SIGUSR1); with ``wait``, until it is writable.

        The cluster then regards it as the primary (:attr:`primary`); other nodes keep their role.
        """
        with self._lock:
            target = self.node(node)
            if target.role is not Role.STANDBY:
                raise ClusterError(f"cannot promote {target._describe()}: it is already a primary")
            self._expect(target, "running")
            pid = target.pid
            assert pid is not None
            target._write_trigger("promote")
            os.kill(pid, signal.SIGUSR1)
            target._role, target._upstream = Role.PRIMARY, None
            self._primary_index = target.index
            if wait:
                # Recovery removes standby.signal as it ends; watching the file is far cheaper
                # than a psql round trip, so wait for that first.
                signal_file = target.data_dir / "standby.signal"
                self._poll(
                    f"{target.name} to end recovery",
                    lambda: not signal_file.exists() or None,
                    None,
                )
                self._poll(
                    f"{target.name} to leave recovery",
                    lambda: (
                        target._sql("SELECT pg_is_in_recovery()", timeout=5) == [("f",)] or None
                    ),
                    None,
                )

    def _set_conninfo_live(self, replica: Node, upstream: Node) -> None:
        conninfo = _pgconf.primary_conninfo(upstream.port, replica.name)
        replica._sql(
            f"ALTER SYSTEM SET primary_conninfo = {_pgconf.quote_literal(conninfo)}",
            timeout=self.timeout,
        )
        replica._sql("SELECT pg_reload_conf()", timeout=self.timeout)
        replica._upstream = upstream

    def repoint(self, replica: NodeRef, new_primary: NodeRef) -> None:
        """Make running ``replica`` stream from ``new_primary``; wait until it does.

        Normally this is ALTER SYSTEM primary_conninfo + reload: the replica keeps running and
        follows ``new_primary``'s timeline by itself. A replica that has WAL past the point where
        ``new_primary``'s timeline forked off the replica's (it had received more of the old
        primary's WAL than ``new_primary`` when that was promoted) can never follow it. Such a
        replica is stopped, rewound onto ``new_primary`` with pg_rewind (its extra WAL is
        discarded) and started again as a replica of ``new_primary``, like :meth:`rejoin`; its
        postmaster pid changes. Divergence is checked before reconfiguring and again every
        0.25 s while waiting, which also catches WAL a still-running old primary sent in
        between. Every step is bounded by :attr:`timeout` (pg_rewind by at least 60 s).
        """
        with self._lock:
            target, source = self.node(replica), self.node(new_primary)
            if target.role is not Role.STANDBY:
                raise ClusterError(f"cannot repoint {target._describe()}: it is a primary")
            if target is source:
                raise ClusterError(f"cannot repoint {target.name} to itself")
            self._expect(target, "running")
            self._expect(source, "running")
            diverged = self._divergence(target, source)
            if diverged is None:
                self._set_conninfo_live(target, source)
                diverged = self._await_following(target, source)
                if diverged is None:
                    return
            self._resync(target, source, diverged)

    def _divergence(self, replica: Node, source: Node) -> _timeline.Divergence | None:
        """Where running ``replica``'s WAL left ``source``'s history; None if it can follow.

        The replica's end of WAL comes from IDENTIFY_SYSTEM (its replay timeline, and the WAL it
        received or replayed, whichever is further: received WAL gets replayed before the
        replica looks for a new timeline); the source's history from its newest history file.
        """
        rows = replica._sql(
            "IDENTIFY_SYSTEM", timeout=5, dbname="dbname=postgres replication=database"
        )
        try:
            (_, timeline, lsn, _), *_ = rows
            position = _timeline.Position(int(timeline), _timeline.parse_lsn(lsn))
        except ValueError:
            raise ClusterError(
                f"{replica.name}: unexpected IDENTIFY_SYSTEM reply {rows!r}"
            ) from None
        return _timeline.divergence(position, _timeline.newest_history(source.data_dir / "pg_wal"))

    def _await_following(self, target: Node, source: Node) -> _timeline.Divergence | None:
        """Wait until ``target`` streams from ``source`` (None) or turns out to have diverged
        from it (the divergence); ClusterError after :attr:`timeout`."""
        streaming = self._streaming_check(target, source)
        next_check = time.monotonic() + _DIVERGENCE_RECHECK

        def check() -> tuple[_timeline.Divergence | None] | None:
            nonlocal next_check
            if streaming():
                return (None,)
            if time.monotonic() < next_check:
                return None
            next_check = time.monotonic() + _DIVERGENCE_RECHECK
            diverged = self._divergence(target, source)
            return None if diverged is None else (diverged,)

        (diverged,) = self._poll(f"{target.name} to stream from {source.name}", check, None)
        return diverged

    def rejoin(self, old_primary: NodeRef, new_primary: NodeRef) -> None:
        """Make ``old_primary`` a replica of ``new_primary`` with pg_rewind; wait until streaming.

        Stops it first if needed (thawing a frozen one); works after a kill too (pg_rewind runs
        crash recovery). Its writes after the divergence point are discarded. ``old_primary`` may
        be a replica too, but :meth:`repoint` is the call for a replica: it rewinds only when it
        must.
        """
        with self._lock:
            target, source = self.node(old_primary), self.node(new_primary)
            if target is source:
                raise ClusterError(f"cannot rejoin {target.name} to itself")
            if source.role is not Role.PRIMARY:
                raise ClusterError(f"cannot rejoin to {source._describe()}: it is not a primary")
            self._expect(source, "running")
            self._resync(target, source, None)

    def _resync(self, target: Node, source: Node, diverged: _timeline.Divergence | None) -> None:
        """Stop ``target`` (thawing a frozen one), rewind it onto running ``source``, start it as
        a replica of ``source`` and wait until it streams.

        ``diverged``, when known, is where ``target``'s timeline left ``source``'s history; the
        target's WAL of that timeline from there on is removed after the rewind.
        """
        if target.state != "stopped":
            target._signal_stop("fast")
            target._await_down(self.timeout, force=False)
        target._await_orphans(self.timeout)
        server_user = self._server_user
        assert server_user is not None
        source._sql("CHECKPOINT", timeout=self.timeout)
        self._rewind(target, source, server_user)
        if diverged is not None and diverged.lsn is not None:
            # pg_rewind judges a replica by its control file (minimum recovery point), so it
            # reports "no rewind required" for one that received WAL past the switch point but had
            # not replayed it. Left in pg_wal, that WAL would be replayed at start and the replica
            # be stuck as before; without it, the replica streams that segment from the source.
            size = source._sql(
                "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'",
                timeout=self.timeout,
            )[0][0]
            wal_dir = target.data_dir / "pg_wal"
            for path in _timeline.segments_from(
                wal_dir, diverged.timeline, diverged.lsn, int(size)
            ):
                path.unlink(missing_ok=True)
        target._write_trigger("standby.signal")
        _pgconf.update_auto_conf(
            target.data_dir,
            {"primary_conninfo": _pgconf.primary_conninfo(source.port, target.name)},
            server_user,
        )
        target._role, target._upstream = Role.STANDBY, source
        if self._primary_index == target.index:
            self._primary_index = source.index
        port = target.port
        target._launch()
        target._await_up(self.timeout)
        if target.port != port and target.proxy is not None:
            target.proxy.retarget(target.port)
        self.wait_streaming(target, source)

    def _rewind(self, target: Node, source: Node, server_user: ServerUser) -> None:
        source_conn = f"host={source.socket_dir} port={source.port} user=postgres dbname=postgres"
        result = subprocess.run(
            [
                str(self.bindir / "pg_rewind"),
                f"--target-pgdata={target.data_dir}",
                f"--source-server={source_conn}",
            ],
            capture_output=True,
            text=True,
            cwd=target.node_dir,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            timeout=max(self.timeout, 60.0),
            check=False,
            **server_user.popen_kwargs(),
        )
        if result.returncode != 0:
            raise ClusterError(
                f"pg_rewind of {target.name} from {source.name} failed: "
                f"{(result.stderr or result.stdout).strip()}"
            )

    def pause_replay(self, node: NodeRef) -> None:
        """Pause WAL replay on replica ``node`` (it keeps receiving WAL); returns once requested."""
        target = self._running_replica(node, "pause replay on")
        target._sql("SELECT pg_wal_replay_pause()", timeout=self.timeout)
        self._poll(
            f"{target.name} to pause replay",
            lambda: (
                target._sql("SELECT pg_get_wal_replay_pause_state()", timeout=5)
                != [("not paused",)]
                or None
            ),
            None,
        )

    def resume_replay(self, node: NodeRef) -> None:
        """Resume WAL replay on replica ``node``."""
        target = self._running_replica(node, "resume replay on")
        target._sql("SELECT pg_wal_replay_resume()", timeout=self.timeout)

    def _running_replica(self, node: NodeRef, action: str) -> Node:
        target = self.node(node)
        if target.role is not Role.STANDBY:
            raise ClusterError(f"cannot {action} {target._describe()}: it is a primary")
        self._expect(target, "running")
        return target

    def __repr__(self) -> str:
        state = "closed" if self._closed else "started" if self._started else "new"
        return f"<LocalCluster {state} nodes={[node.name for node in self._nodes]}>"
