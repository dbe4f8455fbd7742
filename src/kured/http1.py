"""HTTP/1.1 for httpx2, on asyncio's own streams.

httpx2's default transport is httpcore2 on anyio, and with h11 they are 3 MiB of every
daemon's resident memory (bench/README.md, ``rss_mib``) for the plainest HTTP there is:
kured sends one request at a time per connection, with bodies of known length, and reads
responses that are sized, chunked (watches) or end with the connection. That much fits in
this module, and lightkube takes it through httpx2's public ``transport=``; httpx2 still
does everything above the wire (URLs, auth, redirects, content decoding, cookies).

Connections are kept alive per origin and reused for up to a minute of idling, less than
the 90 s after which kube-apiserver closes them, so that a request rarely meets a connection
the server is closing; one the server closed is noticed before reuse. If a reused connection
fails anyway, the request goes out once more on a new one when the server cannot have acted
on it: it was not sent, or it is a GET (Go's rule, which client-go and so Go kured follow).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx2

IDLE_PER_ORIGIN = 8  # connections kept for reuse per scheme://host:port; more are closed
KEEP_IDLE_SECONDS = 60.0
REPLAYABLE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # safe to send twice
READ_SIZE = 64 * 1024
HEADER_LIMIT = 256 * 1024  # the longest response head accepted
NO_BODY_STATUS = frozenset({204, 304})

Origin = tuple[str, str, int]
T = TypeVar("T")


class StaleConnection(Exception):
    """A reused connection failed in a way that makes sending the request again safe."""


class ProtocolViolation(ValueError):
    """The server's bytes are not HTTP/1.1 as kured reads it."""


class Connection:
    """One TCP connection, read through a buffer, with TLS done here on memory buffers
    (``ssl.MemoryBIO``): asyncio's own TLS keeps a 256 KiB read buffer per connection, 0.75
    MiB of a daemon's RSS for its three (two watches, one for the other requests)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        context: ssl.SSLContext | None,
        host: str,
    ) -> None:
        self._reader, self._writer = reader, writer
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = (
            context.wrap_bio(self._incoming, self._outgoing, server_hostname=host)
            if context
            else None
        )
        self._buffer = bytearray()
        self.reused = False
        self.idle_since = 0.0  # loop time when it went back to the pool

    @classmethod
    async def open(cls, host: str, port: int, context: ssl.SSLContext | None) -> Connection:
        """Connect, and make the TLS handshake when there is a context."""
        reader, writer = await asyncio.open_connection(host, port)
        conn = cls(reader, writer, context, host)
        if conn._tls:
            try:
                await conn._tls_step(conn._tls.do_handshake)
            except BaseException:
                conn.close()
                raise
        return conn

    def idle_and_open(self) -> bool:
        """No bytes wait unasked for, and the server has not closed its end (as far as
        this side knows: a close still in flight shows up as a stale connection)."""
        return not (self._buffer or self._reader.at_eof() or self._writer.is_closing())

    def close(self) -> None:
        self._writer.close()

    async def write(self, data: bytes) -> None:
        if self._tls:
            tls = self._tls
            await self._tls_step(lambda: tls.write(data))
        else:
            self._writer.write(data)
            await self._writer.drain()

    async def read_until(self, separator: bytes) -> bytes:
        """Up to and including separator; IncompleteReadError if the stream ends first."""
        start = 0
        while (found := self._buffer.find(separator, start)) < 0:
            if len(self._buffer) > HEADER_LIMIT:
                raise ProtocolViolation(f"no {separator!r} in {HEADER_LIMIT} bytes")
            start = max(0, len(self._buffer) - len(separator) + 1)
            if not await self._fill():
                raise asyncio.IncompleteReadError(bytes(self._buffer), None)
        return self._take(found + len(separator))

    async def read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not await self._fill():
                raise asyncio.IncompleteReadError(bytes(self._buffer), size)
        return self._take(size)

    async def read_some(self, most: int) -> bytes:
        """Whatever is there, up to most bytes; b"" once the stream has ended."""
        if not self._buffer and not await self._fill():
            return b""
        return self._take(min(most, len(self._buffer)))

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def _fill(self) -> bool:
        """More of the peer's bytes into the buffer; False at the end of the stream."""
        if self._tls is None:
            data = await self._reader.read(READ_SIZE)
        else:
            tls = self._tls
            try:
                data = await self._tls_step(lambda: tls.read(READ_SIZE))
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""  # the server's close_notify, or its end of the connection
        self._buffer += data
        return bool(data)

    async def _tls_step(self, step: Callable[[], T]) -> T:
        """One TLS operation run to its end: what it has to send goes out, and whenever it
        wants more of the peer's bytes, they are read from the socket and fed in."""
        while True:
            try:
                result = step()
            except ssl.SSLWantReadError:
                await self._send_pending()
                if data := await self._reader.read(READ_SIZE):
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
                continue
            await self._send_pending()
            return result

    async def _send_pending(self) -> None:
        if data := self._outgoing.read():
            self._writer.write(data)
            await self._writer.drain()


class Transport(httpx2.AsyncBaseTransport):
    """An ``httpx2.AsyncBaseTransport`` speaking HTTP/1.1 over ``asyncio.open_connection``;
    ``ssl_context`` is used for ``https`` URLs (None: a default context, made when needed)."""

    def __init__(
        self, ssl_context: ssl.SSLContext | None = None, keep_idle: float = KEEP_IDLE_SECONDS
    ) -> None:
        self._ssl_context = ssl_context
        self._keep_idle = keep_idle
        self._idle: dict[Origin, list[Connection]] = {}

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        head = _request_head(request, body)
        origin = _origin(request.url)
        while True:
            conn = self._reusable(origin) or await self._connect(request, origin)
            try:
                return await self._exchange(request, origin, conn, head + body)
            except StaleConnection:
                conn.close()  # and once more on a fresh one
            except BaseException:
                conn.close()
                raise

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    def release(self, origin: Origin, conn: Connection) -> None:
        """Keep a connection whose last response was read to its end, for the next request."""
        idle = self._idle.setdefault(origin, [])
        if len(idle) < IDLE_PER_ORIGIN and conn.idle_and_open():
            conn.reused = True
            conn.idle_since = asyncio.get_running_loop().time()
            idle.append(conn)
        else:
            conn.close()

    def _reusable(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin, [])
        oldest = asyncio.get_running_loop().time() - self._keep_idle
        while idle:
            conn = idle.pop()
            if conn.idle_since > oldest and conn.idle_and_open():
                return conn
            conn.close()
        return None

    async def _connect(self, request: httpx2.Request, origin: Origin) -> Connection:
        scheme, host, port = origin
        context = None
        if scheme == "https":
            context = self._ssl_context = self._ssl_context or ssl.create_default_context()
        try:
            async with asyncio.timeout(_timeout(request, "connect")):
                return await Connection.open(host, port, context)
        except TimeoutError as err:
            raise httpx2.ConnectTimeout(f"connecting to {host}:{port}", request=request) from err
        except OSError as err:  # ssl.SSLError among them
            raise httpx2.ConnectError(f"{host}:{port}: {err}", request=request) from err

    async def _exchange(
        self, request: httpx2.Request, origin: Origin, conn: Connection, message: bytes
    ) -> httpx2.Response:
        where = f"{origin[1]}:{origin[2]}"
        try:
            async with asyncio.timeout(_timeout(request, "write")):
                await conn.write(message)
        except TimeoutError as err:
            raise httpx2.WriteTimeout(
                f"{where}: request not sent in time", request=request
            ) from err
        except OSError as err:
            if conn.reused:
                raise StaleConnection from err  # the server cannot act on what it did not get
            raise httpx2.WriteError(f"{where}: {err!r}", request=request) from err
        try:
            status, reason, headers = await _read_head(conn, request)
        except TimeoutError as err:
            raise httpx2.ReadTimeout(f"{where}: no answer in time", request=request) from err
        except (OSError, asyncio.IncompleteReadError) as err:
            unanswered = not getattr(err, "partial", b"")
            if conn.reused and unanswered and request.method in REPLAYABLE:
                raise StaleConnection from err
            raise httpx2.ReadError(f"{where}: {err!r}", request=request) from err
        except ValueError as err:
            raise httpx2.RemoteProtocolError(str(err), request=request) from err
        stream = Body(self, origin, conn, request, _framing(request, status, headers))
        return httpx2.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )


@dataclass(frozen=True)
class Framing:
    """How a response body ends: at a length, at a zero chunk, at the connection's end."""

    length: int | None = None  # Content-Length
    chunked: bool = False
    keep_alive: bool = True  # whether the connection may serve another request after


class Body(httpx2.AsyncByteStream):
    """A response body read from its connection as the caller iterates; the connection goes
    back to the pool once the body has been read to its end, and is closed otherwise."""

    def __init__(
        self,
        transport: Transport,
        origin: Origin,
        conn: Connection,
        request: httpx2.Request,
        framing: Framing,
    ) -> None:
        self._transport, self._origin, self._conn = transport, origin, conn
        self._request, self._framing = request, framing
        self._read_timeout = _timeout(request, "read")
        self._finished = False
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks():
                yield chunk
        except TimeoutError as err:
            raise httpx2.ReadTimeout("body stalled", request=self._request) from err
        except (OSError, asyncio.IncompleteReadError) as err:
            raise httpx2.ReadError(f"body cut short: {err!r}", request=self._request) from err
        except ValueError as err:
            raise httpx2.RemoteProtocolError(str(err), request=self._request) from err
        self._finished = True

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._finished and self._framing.keep_alive:
            self._transport.release(self._origin, self._conn)
        else:
            self._conn.close()

    async def _chunks(self) -> AsyncIterator[bytes]:
        framing = self._framing
        if framing.chunked:
            while (size := await self._chunk_size()) > 0:
                yield await self._read(self._conn.read_exactly(size))
                await self._read(self._conn.read_exactly(2))  # the chunk's CRLF
            while await self._read(self._conn.read_until(b"\r\n")) != b"\r\n":
                pass  # trailers, unused
        elif framing.length is not None:
            left = framing.length
            while left:
                data = await self._read(self._conn.read_some(min(left, READ_SIZE)))
                if not data:
                    raise asyncio.IncompleteReadError(b"", left)
                left -= len(data)
                yield data
        elif not framing.keep_alive:
            while data := await self._read(self._conn.read_some(READ_SIZE)):
                yield data

    async def _chunk_size(self) -> int:
        line = await self._read(self._conn.read_until(b"\r\n"))
        return int(line.split(b";", 1)[0].strip(), 16)

    async def _read(self, step: Awaitable[bytes]) -> bytes:
        async with asyncio.timeout(self._read_timeout):
            return await step


def _timeout(request: httpx2.Request, kind: str) -> float | None:
    """The request's connect, write or read timeout in seconds (None: wait as long as it takes)."""
    timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
    return timeouts.get(kind)


def _origin(url: httpx2.URL) -> Origin:
    scheme = url.scheme
    return scheme, url.raw_host.decode("ascii"), url.port or (443 if scheme == "https" else 80)


def _request_head(request: httpx2.Request, body: bytes) -> bytes:
    """Request line and headers; the body's length is always given (no chunked uploads)."""
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    for name, value in request.headers.raw:
        if name.lower() not in (b"content-length", b"transfer-encoding"):
            lines.append(name + b": " + value)
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _read_head(
    conn: Connection, request: httpx2.Request
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, reason and headers of the response (past any 1xx interim one)."""
    while True:
        async with asyncio.timeout(_timeout(request, "read")):
            head = await conn.read_until(b"\r\n\r\n")
        status, reason, headers = _parse_head(head)
        if not 100 <= status < 200:
            return status, reason, headers


def _parse_head(head: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    status_line, *header_lines = head[:-4].split(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(code) != 3:
        raise ProtocolViolation(f"bad status line {status_line!r}")
    headers = []
    for line in header_lines:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ProtocolViolation(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return int(code), reason, headers


def _framing(request: httpx2.Request, status: int, headers: list[tuple[bytes, bytes]]) -> Framing:
    """RFC 9112 section 6.3, for the answers an HTTP/1.1 server gives."""
    fields = {name.lower(): value.lower() for name, value in headers}
    keep_alive = b"close" not in fields.get(b"connection", b"")
    if request.method == "HEAD" or status in NO_BODY_STATUS:
        return Framing(length=0, keep_alive=keep_alive)
    if b"chunked" in fields.get(b"transfer-encoding", b""):
        return Framing(chunked=True, keep_alive=keep_alive)
    if (length := fields.get(b"content-length")) is not None:
        with contextlib.suppress(ValueError):
            return Framing(length=int(length), keep_alive=keep_alive)
    return Framing(keep_alive=False)  # the body ends with the connection
