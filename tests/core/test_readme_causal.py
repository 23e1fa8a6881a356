"""The README's ASGI middleware example, run as written over simulated hosts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"


def _middleware_source() -> str:
    text = README.read_text()
    section = text[text.index("## Read-your-writes") :]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return str(next(b for b in blocks if "class CausalTokenMiddleware" in b))


async def test_middleware_carries_the_token_between_requests(cluster, make_manager):
    namespace: dict[str, Any] = {}
    exec(compile(_middleware_source(), "README.md", "exec"), namespace)
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)

    async def app(scope, receive, send):
        async with pm.acquire_master() as conn:  # a plain acquire, inside the causal scope
            await conn.execute("INSERT 1")
            cluster.write(100)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = namespace["CausalTokenMiddleware"](app, pm)
    sent: list[dict[str, Any]] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    await middleware({"type": "http", "headers": []}, receive, send)
    headers = dict(sent[0]["headers"])
    token = headers[b"x-causal-token"].decode()
    assert token.startswith("hasql-causal-1:")

    # The next request carries the token: its reads see the first request's write.
    seen: list[str] = []

    async def reader(scope, receive, send):
        async with pm.acquire_replica() as conn:
            seen.append(await conn.execute("SELECT 1"))
        await send({"type": "http.response.start", "status": 200, "headers": []})

    middleware = namespace["CausalTokenMiddleware"](reader, pm)
    await middleware(
        {"type": "http", "headers": [(b"x-causal-token", token.encode())]}, receive, send
    )
    assert seen == ["db0:5432"]  # no standby replayed the write: the primary served it
