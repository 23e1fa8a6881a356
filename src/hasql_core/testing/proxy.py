"""TCP fault proxies in front of the cluster's nodes, run in a child process.

:class:`ProxyServer` starts the child (``_proxy_server.py``, standard library only) and talks to it
over pipes with a line protocol; each :class:`Proxy` is one listening port forwarding to one node.
Modes:

* ``pass``: forward everything.
* ``latency``: deliver each direction's data ``delay`` seconds after it arrived.
* ``blackhole``: accept connections but forward nothing and answer nothing; existing connections
  stall. Held data is delivered if the mode changes back.
* ``reset``: abort existing connections with an RST and reset every new one.
* ``refuse``: stop listening, so connects fail with ECONNREFUSED; existing connections go on. The
  same port is listened on again when the mode changes.

Every control call returns only after the child applied it. The child exits when its stdin closes,
so it dies with the process that started it.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Literal

from hasql_core.errors import ClusterError

Mode = Literal["pass", "latency", "blackhole", "reset", "refuse"]
MODES: tuple[Mode, ...] = ("pass", "latency", "blackhole", "reset", "refuse")
_SERVER_SCRIPT = Path(__file__).with_name("_proxy_server.py")


class ProxyServer:
    """The child process hosting the proxies of one cluster.

    Use :meth:`add` to create a proxy; :meth:`close` (idempotent) stops the child and every proxy.
    """

    def __init__(self, *, log_path: Path | None = None, timeout: float = 10.0) -> None:
        """Start the child process and wait until it answers; raise ClusterError if it does not."""
        self.timeout = timeout
        self._lock = threading.Lock()
        self._buffer = b""
        self._proxies: dict[str, Proxy] = {}
        log = log_path.open("ab") if log_path is not None else None
        try:
            self._proc: subprocess.Popen[bytes] = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_SERVER_SCRIPT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log if log is not None else subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()
        try:
            self.request("ping")
        except ClusterError:
            self.close()
            raise

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self._proc.pid

    def request(self, line: str) -> str:
        """Send one command line; return the value after ``ok`` (ClusterError on ``err``)."""
        with self._lock:
            stdin, stdout = self._proc.stdin, self._proc.stdout
            if stdin is None or stdout is None or self._proc.poll() is not None:
                raise ClusterError("the fault proxy process is not running")
            try:
                stdin.write(line.encode() + b"\n")
                stdin.flush()
            except OSError as exc:
                raise ClusterError(f"the fault proxy process is gone: {exc}") from exc
            answer = self._read_line(stdout.fileno())
        if answer.startswith("ok"):
            return answer[2:].strip()
        raise ClusterError(f"fault proxy refused {line!r}: {answer.removeprefix('err ')}")

    def _read_line(self, fd: int) -> str:
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClusterError(f"the fault proxy did not answer within {self.timeout:g} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise ClusterError("the fault proxy process exited unexpectedly")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def add(self, name: str, target_port: int, target_host: str = "127.0.0.1") -> Proxy:
        """Create a proxy called ``name`` on a free 127.0.0.1 port, forwarding to the target."""
        if not name or any(ch.isspace() for ch in name):
            raise ClusterError(f"invalid proxy name {name!r}")
        port = int(self.request(f"add {name} {target_host} {target_port}"))
        proxy = Proxy(self, name, port, (target_host, target_port))
        self._proxies[name] = proxy
        return proxy

    def close(self) -> None:
        """Stop the child process (closing its stdin, then killing it if it lingers)."""
        proc = self._proc
        if proc.poll() is None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(5)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()


class Proxy:
    """One proxy: clients connect to 127.0.0.1:``port`` and reach ``target``.

    Created by :meth:`ProxyServer.add`; ``mode`` and ``delay`` are the last values set.
    """

    def __init__(self, server: ProxyServer, name: str, port: int, target: tuple[str, int]) -> None:
        self._server = server
        self.name = name
        self.port = port
        self.target = target
        self.mode: Mode = "pass"
        self.delay = 0.0

    def set_mode(self, mode: Mode, *, delay: float = 0.0) -> None:
        """Switch to ``mode`` (``delay`` s per direction for ``latency``); returns once applied."""
        if mode not in MODES:
            raise ClusterError(f"unknown proxy mode {mode!r}; expected one of {', '.join(MODES)}")
        if mode == "latency" and not delay > 0:
            raise ClusterError(f"latency mode needs a positive delay, got {delay!r}")
        if delay < 0:
            raise ClusterError(f"delay must not be negative, got {delay!r}")
        self._server.request(f"mode {self.name} {mode} {float(delay)!r}")
        self.mode = mode
        self.delay = delay if mode == "latency" else 0.0

    def retarget(self, port: int, host: str = "127.0.0.1") -> None:
        """Forward new connections to ``host``:``port`` from now on."""
        self._server.request(f"target {self.name} {host} {port}")
        self.target = (host, port)

    def __repr__(self) -> str:
        return f"<Proxy {self.name} port={self.port} -> {self.target[1]} mode={self.mode}>"
