"""The README's example runs as written, against a real cluster (only its DSN is replaced)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from hasql_core.testing.cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)

README = Path(__file__).parent.parent / "README.md"


def test_readme_example_runs(cluster: LocalCluster) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    example = next(block for block in blocks if "asyncio.run(main())" in block)
    assert 'driver="psycopg3"' in example
    code, count = re.subn(r'^DSN = ".*"$', f"DSN = {cluster.dsn!r}", example, flags=re.MULTILINE)
    assert count == 1
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    assert out.getvalue() == "(True,)\n"
    assert cluster.execute(cluster.primary, "SELECT count(*) FROM item") == [("1",)]
    cluster.execute(cluster.primary, "DROP TABLE item")
