"""A hasql-core application whose pool and failover metrics Prometheus scrapes.

OpenTelemetry's Prometheus exporter serves every metric of the global meter provider on
``/metrics``; ``observers=["opentelemetry"]`` is the only hasql-specific line::

    pip install hasql-core hasql-asyncpg hasql-opentelemetry \\
        opentelemetry-sdk opentelemetry-exporter-prometheus
    HASQL_DSN="postgresql://app:secret@db1,db2,db3/shop" python prometheus_app.py --port 9464

Then point Prometheus at ``http://HOST:9464/metrics`` and import the plugin's Grafana dashboard
(``hasql_opentelemetry.dashboard_json()``). The application here writes to the primary and reads
from a replica every 20 ms, and rides through failovers (failed operations are counted, not fatal).
It prints ``metrics on http://ADDR:PORT/metrics`` once serving (``--port 0`` picks a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server

from hasql_core import PoolManager


def serve_metrics(addr: str, port: int) -> int:
    """Serve the global meter provider's metrics on ``http://addr:port/metrics``; return the port."""
    server, _ = start_http_server(port, addr=addr)
    resource = Resource.create({"service.name": "hasql-example"})
    provider = MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()])
    metrics.set_meter_provider(provider)
    return int(server.server_port)


async def run(dsn: str, driver: str, seconds: float) -> None:
    """Write and read every 20 ms for ``seconds``, through failovers."""
    failures = 0
    async with PoolManager(dsn, driver=driver, observers=["opentelemetry"]) as pm:
        await pm.ready(masters_count=1, replicas_count=1, timeout=30)
        async with pm.acquire_master() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS hasql_example (at timestamptz)")
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            try:
                async with pm.acquire_master(timeout=2) as conn:
                    await conn.execute("INSERT INTO hasql_example VALUES (now())")
                async with pm.acquire_replica(fallback_master=True, timeout=2) as conn:
                    await conn.fetchval("SELECT count(*) FROM hasql_example")
            except Exception as error:  # a failover in progress: count it, keep going
                failures += 1
                print(f"operation failed ({type(error).__name__}); {failures} so far", flush=True)
            await asyncio.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, serve metrics, run the workload."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("HASQL_DSN"), help="default: $HASQL_DSN")
    parser.add_argument("--driver", default="asyncpg")
    parser.add_argument("--addr", default="127.0.0.1", help="address to serve metrics on")
    parser.add_argument("--port", type=int, default=9464, help="0 picks a free port")
    parser.add_argument("--seconds", type=float, default=3600.0, help="how long to run")
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("give --dsn or set HASQL_DSN")
    port = serve_metrics(args.addr, args.port)
    print(f"metrics on http://{args.addr}:{port}/metrics", flush=True)
    asyncio.run(run(args.dsn, args.driver, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
