"""One PostgreSQL server of a :class:`~hasql_core.testing.cluster.LocalCluster` and its process.

:class:`Node` is what tests see (name, port, dsn, state, role...). The underscore methods are the
process mechanics the cluster drives: launching the postmaster, waiting for it, signalling it.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

from hasql_core.errors import ClusterError
from hasql_core.host_state import Role
from hasql_core.testing import _postmaster, _procs
from hasql_core.testing._psql import clean_env, run_psql
from hasql_core.testing._server_user import ServerUser

if TYPE_CHECKING:
    from hasql_core.testing.proxy import Proxy

State = Literal["running", "stopped", "frozen"]
StopMode = Literal["fast", "immediate"]

_PORT_RETRIES = 5
_STOP_SIGNALS = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Node:
    """One server of a local cluster, as the cluster sees it.

    ``name`` (``node<index>``), ``index``, ``port`` (TCP on 127.0.0.1), ``data_dir``, ``socket_dir``
    and ``log_path`` describe where it lives; ``state`` is ``"running"``, ``"stopped"`` or
    ``"frozen"``; ``role`` is ``Role.PRIMARY`` or ``Role.STANDBY`` as the cluster believes (after the
    cluster's own promote / rejoin operations); ``pid`` is the postmaster's pid while not stopped.
    Nodes are created and changed only by their cluster; use the cluster's methods to operate them.
    """

    def __init__(
        self,
        *,
        owner: object,
        index: int,
        node_dir: Path,
        socket_dir: Path,
        port: int,
        role: Role,
        credentials: tuple[str, str, str],
        bindir: Path,
        server_user: ServerUser,
    ) -> None:
        self._owner = owner
        self.index = index
        self.name = f"node{index}"
        self.node_dir = node_dir
        self.data_dir = node_dir / "data"
        self.socket_dir = socket_dir
        self.log_path = node_dir / "postgres.log"
        self._port = port
        self._role: Role = role
        self._upstream: Node | None = None
        self._credentials = credentials
        self._bindir = bindir
        self._server_user = server_user
        self._proc: subprocess.Popen[bytes] | None = None
        self._frozen = False
        self._orphans: list[int] = []
        self._shm: tuple[int | None, int | None] = (None, None)
        self._log_offset = 0
        self.proxy: Proxy | None = None

    # ----------------------------------------------------------------- public, read-only view
    @property
    def port(self) -> int:
        """The TCP port the server listens on (127.0.0.1) and its Unix socket number."""
        return self._port

    @property
    def role(self) -> Role:
        """``Role.PRIMARY`` or ``Role.STANDBY`` (hasql-core's one role type), as the cluster
        believes."""
        return self._role

    @property
    def upstream(self) -> Node | None:
        """For a replica, the node it was told to stream from; None for a primary."""
        return self._upstream

    @property
    def state(self) -> State:
        """``"running"``, ``"stopped"`` (also after an unexpected exit) or ``"frozen"``."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return "stopped"
        return "frozen" if self._frozen else "running"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, or None while stopped."""
        return None if self.state == "stopped" or self._proc is None else self._proc.pid

    @property
    def dsn(self) -> str:
        """``postgresql://user:password@127.0.0.1:port/database`` straight to this node."""
        return self._url(self._port)

    @property
    def proxied_dsn(self) -> str:
        """The same as :attr:`dsn` but through this node's fault proxy (proxied clusters only)."""
        if self.proxy is None:
            raise ClusterError(f"{self.name} has no proxy: build the cluster with proxied=True")
        return self._url(self.proxy.port)

    def _url(self, port: int) -> str:
        user, password, database = self._credentials
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{port}"
            f"/{quote(database, safe='')}"
        )

    def __repr__(self) -> str:
        return f"<Node {self.name} port={self._port} role={self._role} state={self.state}>"

    # ----------------------------------------------------------------- mechanics
    def _describe(self) -> str:
        return f"{self.name} (port {self._port}, {self._role}, {self.state})"

    def _log_tail(self, lines: int = 15) -> str:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self._log_offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _launch(self) -> None:
        """Start the postmaster (as the server user, in its own session) without waiting."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [
            str(self._bindir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self._port),
            "-k",
            str(self.socket_dir),
            "-c",
            f"cluster_name={self.name}",
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.node_dir,
                env=clean_env(),
                start_new_session=True,
                **self._server_user.popen_kwargs(),
            )
        self._frozen = False

    def _await_up(self, timeout: float) -> None:
        """Wait until the launched postmaster accepts connections; relaunch on a port clash.

        Raises ClusterError with the end of the server log when it exits or times out.
        """
        deadline = time.monotonic() + timeout
        attempts = 1
        delay = 0.001
        while True:
            proc = self._proc
            if proc is None:
                raise ClusterError(f"{self.name} was not launched")
            code = proc.poll()
            if code is not None:
                tail = self._log_tail()
                if "already in use" in tail and attempts < _PORT_RETRIES:
                    attempts += 1
                    self._port = free_port()
                    self._launch()
                    continue
                raise ClusterError(
                    f"{self.name} exited with code {code} while starting; "
                    f"log {self.log_path}:\n{tail}"
                )
            info = _postmaster.read_pidfile(self.data_dir)
            if (
                info is not None
                and info.pid == proc.pid
                and info.status in (_postmaster.READY, _postmaster.STANDBY)
            ):
                self._shm = (info.shm_key, info.shm_id)
                return
            if time.monotonic() >= deadline:
                status = info.status if info is not None else "no postmaster.pid"
                raise ClusterError(
                    f"{self.name} did not accept connections within {timeout:g} s (status: "
                    f"{status}); log {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.01)

    def _await_orphans(self, timeout: float) -> None:
        """Wait for the children of a killed postmaster to exit (SIGKILL them after ``timeout``)."""
        if not self._orphans:
            return
        left = _procs.wait_gone(self._orphans, timeout)
        for pid in left:
            if _postmaster.owns_data_dir(pid, self.data_dir):
                _procs.send_signal(pid, signal.SIGCONT)
                _procs.send_signal(pid, signal.SIGKILL)
        _procs.wait_gone(left, 5.0)
        self._orphans = []

    def _signal_stop(self, mode: StopMode) -> None:
        """Thaw if frozen, then ask the postmaster for a ``mode`` shutdown (does not wait)."""
        proc = self._proc
        if proc is None:
            return
        if self._frozen:
            self._thaw()
        info = _postmaster.read_pidfile(self.data_dir)
        if info is not None and info.pid == proc.pid:
            self._shm = (info.shm_key, info.shm_id)
        _procs.send_signal(proc.pid, _STOP_SIGNALS[mode])

    def _await_down(self, timeout: float, *, force: bool) -> None:
        """Wait for the postmaster to exit; with ``force``, kill it and its children on timeout."""
        proc = self._proc
        if proc is None:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if not force:
                raise ClusterError(
                    f"{self.name} did not shut down within {timeout:g} s; log:\n{self._log_tail()}"
                ) from None
            self._kill()
            self._await_orphans(5.0)

    def _kill(self) -> None:
        """SIGKILL the postmaster; its children are left to notice and exit on their own."""
        proc = self._proc
        if proc is None:
            return
        info = _postmaster.read_pidfile(self.data_dir)
        if info is not None and info.pid == proc.pid:
            self._shm = (info.shm_key, info.shm_id)
        children = _procs.descendants(proc.pid)
        _procs.send_signal(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if self._frozen:
            # Stopped children would never notice the postmaster's death.
            for child in children:
                _procs.send_signal(child, signal.SIGCONT)
            self._frozen = False
        self._orphans.extend(children)

    def _freeze(self) -> None:
        """SIGSTOP the postmaster, then every descendant."""
        proc = self._proc
        if proc is None:
            return
        _procs.send_signal(proc.pid, signal.SIGSTOP)
        self._frozen = True
        _procs.wait_until_stopped(proc.pid, 5.0)
        children = _procs.descendants(proc.pid)
        for child in children:
            _procs.send_signal(child, signal.SIGSTOP)
        for child in children:
            _procs.wait_until_stopped(child, 1.0)

    def _thaw(self) -> None:
        """SIGCONT every descendant, then the postmaster last."""
        if self._proc is not None:
            _postmaster.thaw_tree(self._proc.pid)
        self._frozen = False

    def _remove_shm(self) -> None:
        """Free the server's System V segment if it outlived the server (after a kill)."""
        info = _postmaster.read_pidfile(self.data_dir)
        if info is not None and info.shm_id is not None:
            self._shm = (info.shm_key, info.shm_id)
        _postmaster.remove_shm(*self._shm)

    def _sql(self, sql: str, *, timeout: float, dbname: str = "postgres") -> list[tuple[str, ...]]:
        """Run ``sql`` as ``postgres`` over the Unix socket; the node must be running."""
        if self.state != "running":
            raise ClusterError(f"cannot run SQL on {self._describe()}: it is not running")
        return run_psql(
            self._bindir / "psql",
            socket_dir=self.socket_dir,
            port=self._port,
            sql=sql,
            label=self.name,
            dbname=dbname,
            timeout=timeout,
        )

    def _write_trigger(self, name: str) -> None:
        """Create an empty file ``name`` in the data directory, owned by the server user."""
        path = self.data_dir / name
        path.touch()
        self._server_user.give(path)
