"""Request-size and concurrency limits as plain ASGI middleware: what bounds the service's memory.

:class:`BodySizeLimit`: a request whose ``Content-Length`` exceeds the limit
gets 413 at once, without a byte of its body read. Any other body is read here
chunk by chunk (chunked transfer) and refused with 413 as soon as it passes the
limit, so no more than the limit is ever held in memory; an accepted body is
handed on as is. A body still incomplete after :data:`BODY_TIMEOUT_S` gets 408.

:class:`ConcurrencyLimit`: at most ``max_concurrent`` requests are in flight
(their bodies read, decoded, run); a further request waits for a free slot up
to ``queue_timeout_s`` without its body being read, then gets 503 with a
``Retry-After`` header. It sits outside :class:`BodySizeLimit`, so the memory
held by requests is at most ``max_concurrent`` times one request's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


#: Longest time a request body may take to arrive, s (then 408).
BODY_TIMEOUT_S = 30.0


async def json_response(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send a complete JSON ``{"detail": ...}`` response."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """Wrap an ASGI app so that request bodies over ``max_bytes`` get 413 (JSON ``detail``).

    A body that has not fully arrived ``timeout_s`` seconds after the request reached this
    middleware gets 408: a client trickling its body cannot hold a request slot for ever.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def _reject(self, send: Send, size: str) -> None:
        await json_response(
            send,
            413,
            f"request body of {size} exceeds the limit of {self.max_bytes} bytes",
            [(b"connection", b"close")],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared or streamed body size, then hand the request on (or answer 413)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > self.max_bytes:
                await self._reject(send, f"{declared} bytes")
                return
        chunks: list[bytes] = []
        seen = 0
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while True:  # bounded read: at most max_bytes are ever buffered
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                await json_response(
                    send,
                    408,
                    f"request body not received within {self.timeout_s:g} s ({seen} bytes arrived)",
                    [(b"connection", b"close")],
                )
                return
            if message["type"] != "http.request":
                return  # client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                await self._reject(send, f"more than {self.max_bytes} bytes")
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class ConcurrencyLimit:
    """Wrap an ASGI app so that at most ``max_concurrent`` HTTP requests run at once.

    Parameters
    ----------
    app
        The wrapped application.
    max_concurrent
        Requests in flight at most (≥ 1).
    queue_timeout_s
        How long a request waits for a free slot, s; then 503 with ``Retry-After``.
    retry_after_s
        The ``Retry-After`` value sent with a 503, whole seconds.
    limited
        Path prefixes whose requests take a slot: the API, whose requests hold IQ and run the
        model. Everything else (``/health``, which must see a busy server as alive, the map
        page's static files, the OpenAPI docs) is small and never queued.

    """

    def __init__(
        self,
        app: ASGIApp,
        max_concurrent: int,
        queue_timeout_s: float,
        retry_after_s: int = 1,
        limited: tuple[str, ...] = ("/v1/",),
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        self.app = app
        self.max_concurrent = max_concurrent
        self.queue_timeout_s = max(float(queue_timeout_s), 0.0)
        self.retry_after_s = retry_after_s
        self.limited = limited
        self.in_flight = 0
        self.peak_in_flight = 0
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        """The slots of the running event loop (one loop in a server; test clients may start several)."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:
            self._slots, self._loop = asyncio.Semaphore(self.max_concurrent), loop
        return self._slots

    async def _acquire(self, slots: asyncio.Semaphore) -> bool:
        if not slots.locked():
            await slots.acquire()  # a free slot: taken at once
            return True
        try:
            await asyncio.wait_for(slots.acquire(), timeout=self.queue_timeout_s or 1e-9)
        except TimeoutError:
            return False
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request in a free slot, or answer 503 after waiting ``queue_timeout_s``."""
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.limited):
            await self.app(scope, receive, send)
            return
        slots = self._semaphore()
        if not await self._acquire(slots):
            await json_response(
                send,
                503,
                f"server busy: {self.max_concurrent} requests in flight (the limit) and no slot freed "
                f"within {self.queue_timeout_s:g} s; retry after {self.retry_after_s} s",
                [(b"retry-after", str(self.retry_after_s).encode())],
            )
            return
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            slots.release()
