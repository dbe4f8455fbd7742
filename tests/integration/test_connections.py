"""kured.connections (httpx2's transport with kured's keep-alive and resend rule) against
a raw HTTP/1.1 server on loopback that answers as each test scripts it:
sized, chunked and unframed bodies, kept-alive and closed connections, stalls and cuts, in
the clear and over TLS. (Every e2e test drives it over TLS against the real API server.)"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest

from kured.connections import DROPPED, Replaying

pytestmark = pytest.mark.integration

Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # False: close the connection


@dataclass
class Server:
    port: int
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)  # each request's head and body


@asynccontextmanager
async def serving(answer: Answer, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    """A server that reads each request (head and sized body) and lets answer reply."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.lower().split(b"\r\n")
                length = next((int(x[15:]) for x in lines if x.startswith(b"content-length:")), 0)
                request = head + await reader.readexactly(length)
                server.requests.append(request)
                if not await answer(request, writer):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listening = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    server = Server(listening.sockets[0].getsockname()[1])
    async with listening:
        yield server


def sized(body: bytes, *headers: bytes) -> bytes:
    head = b"".join(h + b"\r\n" for h in (b"HTTP/1.1 200 OK", *headers))
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def test_sized_answers_reuse_one_connection() -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(sized(b"hello " + request.split(b" ")[1]))
        return True

    async with serving(answer) as server, client() as http:
        first = await http.get(f"http://127.0.0.1:{server.port}/a?x=1")
        second = await http.get(f"http://127.0.0.1:{server.port}/b")
    assert (first.status_code, first.text, second.text) == (200, "hello /a?x=1", "hello /b")
    assert server.connections == 1


async def test_a_posted_body_arrives_with_its_length() -> None:
    async def echo(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(sized(request.partition(b"\r\n\r\n")[2]))
        return True

    async with serving(echo) as server, client() as http:
        response = await http.post(f"http://127.0.0.1:{server.port}/e", json={"kind": "Eviction"})
        empty = await http.post(f"http://127.0.0.1:{server.port}/e")
    assert response.json() == {"kind": "Eviction"}
    assert b"Content-Length: 0" in server.requests[1] and empty.content == b""


async def test_chunks_arrive_as_they_are_sent() -> None:
    """A watch: each event is a chunk, and the client sees one before the next is sent."""
    seen_first = asyncio.Event()

    async def watch(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"6;ext=1\r\none\n\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(seen_first.wait(), 10)
        writer.write(b"4\r\ntwo\n\r\n0\r\nX-Trailer: y\r\n\r\n")
        return True

    lines = []
    async with serving(watch) as server, client() as http:
        url = f"http://127.0.0.1:{server.port}/watch"
        async with http.stream("GET", url, timeout=httpx2.Timeout(5, read=None)) as response:
            async for line in response.aiter_lines():
                lines.append(line)
                seen_first.set()
        again = await http.get(url.replace("watch", "again"), timeout=5)
    assert [line for line in lines if line] == ["one", "two"]
    assert again.status_code == 200 and server.connections == 1  # read to its end: reused


async def test_connection_close_and_unframed_bodies_are_not_reused() -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"/close" in request:
            writer.write(sized(b"bye", b"Connection: close"))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        return False

    async with serving(answer) as server, client() as http:
        closing = await http.get(f"http://127.0.0.1:{server.port}/close")
        unframed = await http.get(f"http://127.0.0.1:{server.port}/unframed")
        after = await http.get(f"http://127.0.0.1:{server.port}/close")
    assert (closing.text, unframed.text, after.text) == ("bye", "until the end", "bye")
    assert server.connections == 3


@pytest.mark.parametrize(
    ("noticed", "method"),
    [(True, "POST"), (False, "GET")],
    ids=["closed-while-idle", "dropped-on-reuse"],
)
async def test_a_kept_connection_the_server_dropped_is_replaced(noticed: bool, method: str) -> None:
    """The server drops a kept-alive connection, before the next request or on reading it
    without an answer; the request goes out again on a new connection (a GET may: the
    server cannot have acted on it)."""
    dropped: list[bytes] = []

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"/first" in request:
            writer.write(sized(b"1"))
            return not noticed
        if not (noticed or dropped):
            dropped.append(request)  # read on the kept connection, then hang up unanswered
            return False
        writer.write(sized(b"2"))
        return True

    async with serving(answer) as server, client() as http:
        await http.get(f"http://127.0.0.1:{server.port}/first")
        await asyncio.sleep(0.1)  # the close reaches the client
        later = await http.request(method, f"http://127.0.0.1:{server.port}/later")
    assert later.text == "2"
    assert server.connections == 2
    assert len(server.requests) == (2 if noticed else 3)


async def test_a_post_the_server_read_and_dropped_is_not_sent_again() -> None:
    """It may have acted on it (an eviction, a lock taken): the caller decides, as with Go's
    HTTP client."""

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"/first" in request:
            writer.write(sized(b"1"))
            return True
        return False  # read, maybe acted on, connection dropped before the answer

    async with serving(answer) as server, client() as http:
        await http.get(f"http://127.0.0.1:{server.port}/first")
        with pytest.raises(DROPPED):
            await http.post(f"http://127.0.0.1:{server.port}/evict", content=b"x")
    assert [r.split(b" ")[1] for r in server.requests] == [b"/first", b"/evict"]


async def test_a_connection_idle_too_long_is_not_reused() -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(sized(b"ok"))
        return True

    async with serving(answer) as server:
        transport = Replaying(keep_idle=0.2)
        async with httpx2.AsyncClient(transport=transport, timeout=5) as http:
            await http.get(f"http://127.0.0.1:{server.port}/1")
            await http.get(f"http://127.0.0.1:{server.port}/2")
            await asyncio.sleep(0.3)
            await http.get(f"http://127.0.0.1:{server.port}/3")
    assert server.connections == 2


async def test_a_silent_server_is_a_read_timeout() -> None:
    async def silent(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    async with serving(silent) as server, client() as http:
        with pytest.raises(httpx2.ReadTimeout):
            await http.get(f"http://127.0.0.1:{server.port}/", timeout=0.2)


async def test_a_body_cut_short_is_an_error() -> None:
    async def cut(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(sized(b"0123456789")[:-5])
        return False

    async with serving(cut) as server, client() as http:
        with pytest.raises(DROPPED, match="without sending complete"):
            await http.get(f"http://127.0.0.1:{server.port}/")


async def test_a_closed_port_is_a_connect_error(unused_tcp_port: int) -> None:
    async with client() as http:
        with pytest.raises(httpx2.ConnectError):
            await http.get(f"http://127.0.0.1:{unused_tcp_port}/")


async def test_a_garbled_answer_is_a_protocol_error() -> None:
    async def garbled(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SPDY/3 200 OK\r\n\r\n")
        return False

    async with serving(garbled) as server, client() as http:
        with pytest.raises(httpx2.RemoteProtocolError):
            await http.get(f"http://127.0.0.1:{server.port}/")


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext  # trusts the server's self-signed certificate


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A self-signed certificate for 127.0.0.1, made with openssl as the sandbox's are."""
    directory: Path = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    request = "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    san = ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(["openssl", *request.split(), *san], check=True, capture_output=True)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return Tls(server, ssl.create_default_context(cafile=str(cert)))


async def test_tls_carries_sized_and_chunked_bodies_on_one_connection(tls: Tls) -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"/watch" in request:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (b"a" * 40000, b"b\n")))
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(sized(b"x" * 100000))
        return True

    async with serving(answer, tls.server) as server, client(tls.client) as http:
        sized_body = await http.get(f"https://127.0.0.1:{server.port}/big")
        chunked = await http.get(f"https://127.0.0.1:{server.port}/watch")
    assert sized_body.content == b"x" * 100000
    assert chunked.content == b"a" * 40000 + b"b\n"
    assert server.connections == 1


async def test_a_tls_connection_closed_while_idle_is_replaced(tls: Tls) -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(sized(b"ok"))
        return False  # close_notify and FIN after each answer, without Connection: close

    async with serving(answer, tls.server) as server, client(tls.client) as http:
        first = await http.get(f"https://127.0.0.1:{server.port}/1")
        await asyncio.sleep(0.1)
        second = await http.get(f"https://127.0.0.1:{server.port}/2")
    assert (first.text, second.text) == ("ok", "ok")
    assert server.connections == 2


async def test_an_untrusted_certificate_is_a_connect_error(tls: Tls) -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        return False

    async with serving(answer, tls.server) as server, client(ssl.create_default_context()) as http:
        with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(f"https://127.0.0.1:{server.port}/")


@asynccontextmanager
async def client(context: ssl.SSLContext | None = None) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(transport=Replaying(context or True), timeout=5) as http:
        yield http
