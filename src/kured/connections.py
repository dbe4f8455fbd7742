"""The HTTP connections every request of the daemon goes over: httpx2's own transport.

httpx2 (httpcore2 under it) does the protocol: keep-alive, TLS verified against the
``verify`` it is given (the cluster's CA from the kubeconfig or the ServiceAccount), chunked
watches, and noticing a kept connection that the server closed before it is reused. Two
choices are kured's:

* Idle connections are kept for up to a minute, less than the 90 s after which kube-apiserver
  closes them, so that a request rarely meets a connection the server is closing.
* A request that fails on its connection before any answer is sent once more, on a new
  connection, only when the server cannot have acted on it twice: a GET (or another method
  without side effects). That is Go's rule, which client-go and so Go kured follow; a POST,
  PUT or PATCH (an eviction, a lock written) is never sent again: its caller reads the state
  and decides.
"""

from __future__ import annotations

import ssl
import sys

import httpx2

# httpcore2 imports the HTTP/2 stack (h2, hpack's Huffman tables, hyperframe) whenever h2
# is installed, as lightkube's httpx2[http2] requirement does: 1.5 MiB of RSS for code kured
# never runs (it speaks HTTP/1.1). None in sys.modules is Python's documented way to make an
# import fail, and it takes httpcore2's own path for "h2 not installed".
sys.modules.setdefault("h2", None)  # type: ignore[arg-type]  # typeshed: modules only

KEEP_IDLE_SECONDS = 60.0
REPLAYABLE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # safe to send twice
# Failures of a connection itself, not of the server's answer: the connection was reset
# or closed before the response's head arrived. A timeout is not one of them (the server
# may still be working on the request), nor is a refused connection (httpx2's own retries).
DROPPED = (httpx2.ReadError, httpx2.WriteError, httpx2.RemoteProtocolError)


class Replaying(httpx2.AsyncBaseTransport):
    """httpx2's pooled transport, with Go's rule for sending a request again."""

    def __init__(
        self, verify: ssl.SSLContext | str | bool = True, keep_idle: float = KEEP_IDLE_SECONDS
    ) -> None:
        limits = httpx2.Limits(keepalive_expiry=keep_idle)
        self._pool = httpx2.AsyncHTTPTransport(verify=verify, limits=limits)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return await self._pool.handle_async_request(request)
        except DROPPED:
            if request.method not in REPLAYABLE:
                raise
        return await self._pool.handle_async_request(request)

    async def aclose(self) -> None:
        await self._pool.aclose()
