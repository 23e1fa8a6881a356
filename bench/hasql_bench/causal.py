"""Scenario 7: read-your-writes. A write-then-read loop (write a row, read it back at once) with
replay paused on one standby, through hasql 0.10, hasql-core without a session, and a hasql-core
causal session: stale reads (the row missing), share of reads a standby served, and the time a
read takes (acquire + query + release)."""

from __future__ import annotations

import statistics
import time
from contextlib import AbstractAsyncContextManager
from typing import Any

from hasql_core.testing.cluster import LocalCluster

from .clients import CoreClient, HasqlClient, Target
from .common import RunConfig

#: Iterations per client per round, and rounds (clients interleaved round by round).
ITERATIONS = {True: 100, False: 400}
ROUNDS = {True: 2, False: 3}


class _Session:
    """A CoreClient whose acquires go through one causal session."""

    def __init__(self, client: CoreClient) -> None:
        assert client.pm is not None
        self.session = client.pm.causal_session()

    def master(self) -> AbstractAsyncContextManager[Any]:
        return self.session.acquire_master()

    def replica(self) -> AbstractAsyncContextManager[Any]:
        return self.session.acquire_replica()


async def _fetch_port_and_row(driver: str, conn: Any, row: int) -> tuple[int, int]:
    sql = "SELECT inet_server_port(), (SELECT count(*) FROM causal_bench WHERE id = %s)"
    if driver == "asyncpg":
        record = await conn.fetchrow(sql.replace("%s", "$1"), row)
        return int(record[0]), int(record[1])
    cursor = await conn.execute(sql, (row,))
    port, found = await cursor.fetchone()
    return int(port), int(found)


async def _write(driver: str, conn: Any, row: int) -> None:
    if driver == "asyncpg":
        await conn.execute("INSERT INTO causal_bench VALUES ($1)", row)
    else:
        await conn.execute("INSERT INTO causal_bench VALUES (%s)", (row,))
        await conn.commit()


async def _loop(driver: str, acquirer: Any, first_row: int, n: int, primary: int) -> dict[str, Any]:
    stale = standby = 0
    read_times: list[float] = []
    for row in range(first_row, first_row + n):
        async with acquirer.master() as conn:
            await _write(driver, conn, row)
        started = time.perf_counter()
        async with acquirer.replica() as conn:
            port, found = await _fetch_port_and_row(driver, conn, row)
        read_times.append(time.perf_counter() - started)
        stale += found == 0
        standby += port != primary
    return {"n": n, "stale": stale, "standby": standby, "read_times": read_times}


async def measure_driver(driver: str, config: RunConfig) -> dict[str, Any]:
    """Run the scenario for one driver on a fresh cluster with replay paused on one standby."""
    n = ITERATIONS[config.quick]
    with LocalCluster(replicas=2) as cluster:
        cluster.execute(cluster.primary, "CREATE TABLE causal_bench (id bigint PRIMARY KEY)")
        cluster.wait_replayed()
        target = Target.of(cluster)
        cluster.pause_replay(cluster.replicas[1])
        clients: dict[str, Any] = {
            "hasql 0.10": HasqlClient(driver),
            "hasql-core": CoreClient(driver),
            "hasql-core causal session": CoreClient(driver),
        }
        for client in clients.values():
            await client.open(target)
        acquirers = {
            label: _Session(client) if label.endswith("session") else client
            for label, client in clients.items()
        }
        totals: dict[str, dict[str, Any]] = {
            label: {"n": 0, "stale": 0, "standby": 0, "read_times": []} for label in clients
        }
        row = 1
        try:
            for _ in range(ROUNDS[config.quick]):
                for label, acquirer in acquirers.items():
                    part = await _loop(driver, acquirer, row, n, target.primary)
                    row += n
                    total = totals[label]
                    for key in ("n", "stale", "standby"):
                        total[key] += part[key]
                    total["read_times"] += part["read_times"]
        finally:
            for client in clients.values():
                await client.close()
            cluster.resume_replay(cluster.replicas[1])
    baseline = statistics.median(totals["hasql-core"]["read_times"])
    rows = []
    for label, total in totals.items():
        median = statistics.median(total["read_times"])
        rows.append(
            {
                "client": label,
                "reads": total["n"],
                "stale_reads": total["stale"],
                "standby_share": total["standby"] / total["n"],
                "read_ms_median": median * 1000,
                "added_ms_vs_core_plain": (median - baseline) * 1000,
            }
        )
    return {"rows": rows, "paused": "replay paused on one of two standbys"}


def markdown(results: dict[str, Any]) -> list[str]:
    """The report's section for this scenario."""
    lines = [
        "",
        "## 7. Read-your-writes: write a row, read it back at once (replay paused on one standby)",
        "",
        "| driver | client | reads | stale reads | served by a standby | read (median) | added "
        "vs plain hasql-core |",
        "|---|---|---|---|---|---|---|",
    ]
    for driver, data in results.items():
        for r in data["rows"]:
            lines.append(
                f"| {driver} | {r['client']} | {r['reads']} | {r['stale_reads']} | "
                f"{r['standby_share']:.0%} | {r['read_ms_median']:.2f} ms | "
                f"{r['added_ms_vs_core_plain']:+.2f} ms |"
            )
    lines.append("")
    lines.append(
        "Target: 0 stale reads through a causal session. hasql 0.10 and plain hasql-core reads "
        "are not meant to see the write (they are the baseline for the share and the time)."
    )
    return lines
