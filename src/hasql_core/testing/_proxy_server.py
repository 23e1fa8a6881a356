"""Child process running the TCP fault proxies of one cluster (standard library only).

Run as ``python -I -S _proxy_server.py``. It reads one command per line on stdin and answers each
with one line on stdout, ``ok [value]`` or ``err <message>``, after the command has taken effect:

* ``ping``
* ``add NAME TARGET_HOST TARGET_PORT`` -> ``ok LISTEN_PORT`` (listens on a free port of 127.0.0.1)
* ``target NAME TARGET_HOST TARGET_PORT``
* ``mode NAME MODE [DELAY_SECONDS]`` with MODE one of pass, latency, blackhole, reset, refuse
* ``quit``

It exits on ``quit`` and when stdin reaches end of file, i.e. when the controlling process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import time

MODES = ("pass", "latency", "blackhole", "reset", "refuse")
_CHUNK = 65536


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s socket with an RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Proxy:
    """One listening port forwarding to one target, with a switchable fault mode."""

    def __init__(self, name: str, target_host: str, target_port: int) -> None:
        self.name = name
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.delay = 0.0
        self.port = 0
        self.server: asyncio.AbstractServer | None = None
        self.links: set[Link] = set()
        self._changed = asyncio.Event()

    async def listen(self) -> None:
        """Listen on ``self.port`` (0 picks a free port)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))
            sock.listen(512)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.server = await asyncio.start_server(self._handle, sock=sock)

    async def set_mode(self, mode: str, delay: float) -> None:
        """Apply ``mode``; returns once listening / resets reflect it."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if mode == "refuse" and self.server is not None:
            self.server.close()
            self.server = None
        elif mode != "refuse" and self.server is None:
            await self.listen()
        self.mode = mode
        self.delay = delay if mode == "latency" else 0.0
        if mode == "reset":
            for link in list(self.links):
                link.reset()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_change(self, timeout: float | None = None) -> None:
        """Wait until the mode changes (or ``timeout`` seconds pass)."""
        event = self._changed
        if timeout is None:
            await event.wait()
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(self, reader, writer)
        self.links.add(link)
        try:
            await link.run()
        finally:
            self.links.discard(link)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for link in list(self.links):
            link.reset()


class Link:
    """One client connection and its upstream connection."""

    def __init__(
        self, proxy: Proxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.proxy = proxy
        self.client = (reader, writer)
        self.upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.dead = False

    def is_dead(self) -> bool:
        """True once the link has been reset."""
        return self.dead

    def reset(self) -> None:
        """Abort both sides with an RST."""
        if self.dead:
            return
        self.dead = True
        _rst(self.client[1])
        if self.upstream is not None:
            _rst(self.upstream[1])
        for task in self.tasks:
            task.cancel()

    async def run(self) -> None:
        proxy = self.proxy
        _nodelay(self.client[1])
        while proxy.mode == "blackhole" and not self.dead:
            await proxy.wait_change()
        if self.dead or proxy.mode == "reset":
            self.reset()
            return
        try:
            self.upstream = await asyncio.open_connection(*proxy.target)
        except OSError:
            self.reset()
            return
        if self.is_dead():  # reset while connecting
            _rst(self.upstream[1])
            return
        _nodelay(self.upstream[1])
        self.tasks = [
            asyncio.ensure_future(self._pump(self.client[0], self.upstream[1])),
            asyncio.ensure_future(self._pump(self.upstream[0], self.client[1])),
        ]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self.tasks)
        for _, writer in (self.client, self.upstream):
            writer.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Forward ``src`` to ``dst``, delaying or holding data as the mode says."""
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

        async def read() -> None:
            try:
                while True:
                    data = await src.read(_CHUNK)
                    queue.put_nowait((time.monotonic(), data))
                    if not data:
                        return
            except OSError:
                queue.put_nowait((time.monotonic(), None))

        reader = asyncio.ensure_future(read())
        try:
            while True:
                received, data = await queue.get()
                await self._gate(received)
                if data is None:
                    self.reset()
                    return
                if not data:
                    if dst.can_write_eof():
                        with contextlib.suppress(OSError):
                            dst.write_eof()
                    return
                dst.write(data)
                await dst.drain()
        except OSError:
            self.reset()
        finally:
            reader.cancel()

    async def _gate(self, received: float) -> None:
        """Return when data received at ``received`` may be delivered under the current mode."""
        proxy = self.proxy
        while True:
            if proxy.mode == "blackhole":
                await proxy.wait_change()
            elif proxy.mode == "latency" and received + proxy.delay > time.monotonic():
                await proxy.wait_change(received + proxy.delay - time.monotonic())
            else:
                return


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    proxies: dict[str, Proxy] = {}

    def reply(text: str) -> None:
        sys.stdout.write(text.replace("\n", " ") + "\n")
        sys.stdout.flush()

    try:
        while True:
            line = await stdin.readline()
            if not line:
                return
            words = line.decode().split()
            if not words:
                continue
            try:
                command = words[0]
                if command == "ping":
                    reply("ok")
                elif command == "quit":
                    reply("ok")
                    return
                elif command == "add":
                    name, host, port = words[1], words[2], int(words[3])
                    if name in proxies:
                        raise ValueError(f"proxy {name} exists")
                    proxy = Proxy(name, host, port)
                    await proxy.listen()
                    proxies[name] = proxy
                    reply(f"ok {proxy.port}")
                elif command == "target":
                    proxies[words[1]].target = (words[2], int(words[3]))
                    reply("ok")
                elif command == "mode":
                    delay = float(words[3]) if len(words) > 3 else 0.0
                    await proxies[words[1]].set_mode(words[2], delay)
                    reply("ok")
                else:
                    raise ValueError(f"unknown command {command!r}")
            except (KeyError, IndexError, ValueError, OSError) as exc:
                reply(f"err {type(exc).__name__}: {exc}")
    finally:
        for proxy in proxies.values():
            proxy.close()


def main() -> None:
    """Serve until stdin closes."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve())


if __name__ == "__main__":
    main()
