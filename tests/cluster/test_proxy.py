"""The fault proxy: each mode's effect as a client sees it, through real sockets and psql.

Probes use PostgreSQL's SSLRequest: 8 bytes to which a server without TLS answers ``N`` at once,
so one probe is exactly one round trip through the proxy.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

from hasql_core.errors import ClusterError
from hasql_core.testing.cluster import LocalCluster

from .conftest import ClusterFactory
from .helpers import psql_tcp

pytestmark = pytest.mark.cluster

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _probe(sock: socket.socket, timeout: float) -> bytes:
    """One SSLRequest round trip; raises TimeoutError (socket.timeout) when nothing comes back."""
    sock.settimeout(timeout)
    sock.sendall(SSL_REQUEST)
    return sock.recv(1)


def _round_trip(port: int) -> float:
    with _connect(port) as sock:
        start = time.monotonic()
        assert _probe(sock, 10) == b"N"
        return time.monotonic() - start


@pytest.fixture
def proxied(make_cluster: ClusterFactory) -> LocalCluster:
    return make_cluster(1, proxied=True)


def test_pass_and_proxied_dsn(proxied: LocalCluster) -> None:
    cluster = proxied
    ports = [node.proxy.port for node in cluster.nodes if node.proxy is not None]
    assert len(ports) == 2
    assert set(ports).isdisjoint(node.port for node in cluster.nodes)
    assert cluster.proxy(0).target == ("127.0.0.1", cluster.nodes[0].port)
    assert cluster.proxied_dsn.count("127.0.0.1:") == 2
    for node in cluster.nodes:
        result = psql_tcp(cluster, node.proxied_dsn, "SELECT inet_server_port()")
        assert result.stdout.strip() == str(node.port), result.stderr
    result = psql_tcp(cluster, cluster.proxied_dsn, "SELECT inet_server_port()")
    assert result.stdout.strip() == str(cluster.primary.port), result.stderr


def test_latency_delays_each_direction(proxied: LocalCluster) -> None:
    proxy = proxied.proxy(0)
    # Lower bounds are exact by design (data is held until due); a busy machine only adds time,
    # so the undelayed figure is the best of a few.
    assert min(_round_trip(proxy.port) for _ in range(3)) < 0.3
    proxy.set_mode("latency", delay=0.2)
    assert proxy.mode == "latency"
    delayed = _round_trip(proxy.port)
    assert delayed >= 0.4  # 0.2 s on the way in plus 0.2 s on the way out
    assert delayed < 5.0
    proxy.set_mode("pass")
    assert min(_round_trip(proxy.port) for _ in range(3)) < 0.3


def test_blackhole_accepts_but_never_answers(proxied: LocalCluster) -> None:
    proxy = proxied.proxy(0)
    existing = _connect(proxy.port)  # opened while passing, stalls once blackholed
    proxy.set_mode("blackhole")
    try:
        # The connect itself succeeds; nothing comes back.
        with _connect(proxy.port) as fresh, pytest.raises(TimeoutError):
            _probe(fresh, 0.5)
        with pytest.raises(TimeoutError):
            _probe(existing, 0.5)
        proxy.set_mode("pass")
        # Held data goes through once the fault is lifted.
        existing.settimeout(5)
        assert existing.recv(1) == b"N"
    finally:
        existing.close()
    result = psql_tcp(proxied, proxied.nodes[0].proxied_dsn, "SELECT 1")
    assert result.stdout.strip() == "1", result.stderr


def test_reset_aborts_existing_and_new_connections(proxied: LocalCluster) -> None:
    proxy = proxied.proxy(0)
    existing = _connect(proxy.port)
    assert _probe(existing, 5) == b"N"
    proxy.set_mode("reset")
    try:
        existing.settimeout(5)
        with pytest.raises(ConnectionResetError):
            existing.recv(1)
    finally:
        existing.close()
    # Reset as soon as accepted: the connect itself or the first exchange fails.
    with pytest.raises((ConnectionResetError, BrokenPipeError)), _connect(proxy.port) as fresh:
        _probe(fresh, 5)
    failed = psql_tcp(proxied, proxied.nodes[0].proxied_dsn, "SELECT 1")
    assert failed.returncode != 0
    proxy.set_mode("pass")
    assert _round_trip(proxy.port) < 5.0


def test_refuse_closes_the_port_and_reopens_it(proxied: LocalCluster) -> None:
    proxy = proxied.proxy(1)
    port = proxy.port
    proxy.set_mode("refuse")
    with pytest.raises(ConnectionRefusedError):
        _connect(port)
    proxy.set_mode("pass")
    assert proxy.port == port
    result = psql_tcp(proxied, proxied.nodes[1].proxied_dsn, "SELECT pg_is_in_recovery()")
    assert result.stdout.strip() == "t", result.stderr


def test_proxy_errors(proxied: LocalCluster, make_cluster: ClusterFactory) -> None:
    proxy = proxied.proxy(0)
    with pytest.raises(ClusterError, match="unknown proxy mode"):
        proxy.set_mode("drop")  # type: ignore[arg-type]
    with pytest.raises(ClusterError, match="positive delay"):
        proxy.set_mode("latency")
    plain = make_cluster(0)
    with pytest.raises(ClusterError, match="proxied=True"):
        plain.proxy(0)
    with pytest.raises(ClusterError, match="proxied=True"):
        _ = plain.proxied_dsn
