"""A loopback TCP proxy that cuts connections when a test says so (test code only).

It sits between a client and the API server and passes bytes through untouched (TLS goes
end to end), counting connections. A test can cut every open connection at once, or arm
it to cut the connection that next carries bytes back from the server: the request has
reached the server, which acted on it, and its answer is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

READ_SIZE = 64 * 1024


@dataclass
class CutProxy:
    target: tuple[str, int]
    port: int = 0
    connections: int = 0
    cut_next_answer: bool = False
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    def cut_all(self) -> None:
        """Close every connection now, both ways."""
        for writer in list(self._open):
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        pair = {writer, upstream_writer}
        self._open |= pair
        try:
            await asyncio.gather(
                self._pump(reader, upstream_writer, pair, answers=False),
                self._pump(upstream_reader, writer, pair, answers=True),
            )
        finally:
            self._open -= pair
            for each in pair:
                each.transport.abort()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: set[asyncio.StreamWriter],
        *,
        answers: bool,
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(READ_SIZE):
                if answers and self.cut_next_answer:
                    self.cut_next_answer = False
                    break
                sink.write(data)
                await sink.drain()
        for each in pair:  # one side ended or was cut: the connection is over
            each.transport.abort()


@contextlib.asynccontextmanager
async def cut_proxy(host: str, port: int) -> AsyncIterator[CutProxy]:
    """A :class:`CutProxy` to ``host:port`` listening on a free loopback port."""
    proxy = CutProxy((host, port))
    server = await asyncio.start_server(proxy._accept, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    async with server:
        try:
            yield proxy
        finally:
            proxy.cut_all()
