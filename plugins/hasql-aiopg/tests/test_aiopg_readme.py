"""The README's examples run as written against a real cluster (only their DSN is replaced), and
hasql's own README example works with just the import changed and the driver named."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
from aiopg_helpers import DRIVER_NAME, IS_SA, AiopgSql

from hasql_core.testing.cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def _run(code: str) -> tuple[dict[str, Any], str]:
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), namespace)
    return namespace, out.getvalue()


def test_readme_example_runs(cluster: LocalCluster) -> None:
    wanted = 'driver="aiopg_sa"' if IS_SA else 'driver="aiopg"'
    example = next(b for b in BLOCKS if "asyncio.run(main())" in b and wanted in b)
    code, count = re.subn(r'^DSN = ".*"$', f"DSN = {cluster.dsn!r}", example, flags=re.MULTILINE)
    assert count == 1
    _, printed = _run(code)
    table = "item_sa" if IS_SA else "item"
    assert printed == ("True\n" if IS_SA else "(True,)\n")
    assert cluster.execute(cluster.primary, f"SELECT count(*) FROM {table}") == [("1",)]
    cluster.execute(cluster.primary, f"DROP TABLE {table}")


async def test_hasqls_example_with_only_the_import_changed(cluster: LocalCluster) -> None:
    """hasql's README example for aiopg (aiopg.sa), as this README gives it, with the driver
    under test: writes go to the primary, reads to the replica."""
    example = next(b for b in BLOCKS if "multihost_dsn" in b)
    assert example.startswith("from hasql_core import PoolManager\n")
    code = example.replace('driver="aiopg"', f"driver={DRIVER_NAME!r}")
    code, count = re.subn(
        r"^multihost_dsn = .*$", f"multihost_dsn = {cluster.dsn!r}", code, flags=re.MULTILINE
    )
    assert count == 1
    namespace, _ = _run(code)
    pool = await namespace["create_pool"](None)
    sql = AiopgSql()
    try:
        async with pool.acquire_master() as connection:
            await sql.execute(connection, "CREATE TABLE IF NOT EXISTS hasql_example (x int)")
            await sql.execute(connection, "INSERT INTO hasql_example VALUES (1)")
            assert await sql.fetchval(connection, "SELECT inet_server_port()") == (
                cluster.primary.port
            )
        async with pool.acquire_replica() as connection:
            assert await sql.fetchval(connection, "SELECT pg_is_in_recovery()") is True
            assert await sql.fetchval(connection, "SELECT inet_server_port()") == (
                cluster.replicas[0].port
            )
    finally:
        await pool.close()
        cluster.execute(cluster.primary, "DROP TABLE IF EXISTS hasql_example")
