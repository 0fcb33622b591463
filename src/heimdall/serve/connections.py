"""A deadline for a request's headers: a connection that does not finish them in time is closed.

uvicorn bounds open connections (``limit_concurrency``, 503 beyond it) and closes a
keep-alive connection idle for a few seconds, but a client that opens a connection and
trickles its headers a byte at a time, or sends nothing, holds it for ever: a hundred
such sockets take every connection and ``/health`` gets 503 (slowloris). The service
therefore runs uvicorn's HTTP/1.1 protocol (h11) with one more timer: from the moment a
connection is opened, and again after each response, the next request's headers must be
complete within ``header_timeout_s`` seconds, else the connection is closed. A request
whose headers arrived is bounded by the body deadline and the slots of
:mod:`heimdall.serve.limits` instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a connection has to send a request's complete headers (then it is closed).
HEADER_TIMEOUT_S = 10.0


def header_deadline_protocol(header_timeout_s: float = HEADER_TIMEOUT_S) -> type[H11Protocol]:
    """The h11 protocol class of uvicorn with a ``header_timeout_s`` (s) deadline for request headers."""
    if not header_timeout_s > 0.0:
        raise ValueError(f"header timeout must be > 0 s, got {header_timeout_s}")

    class HeaderDeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not before:  # a request's headers arrived: its body has its own deadline
                self._disarm()

        def on_response_complete(self) -> None:
            self._arm()  # before: a pipelined request handled inside disarms it again
            super().on_response_complete()

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout_s, self._headers_overdue)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_overdue(self) -> None:
            self._deadline = None
            if self.cycle is None or self.cycle.response_complete:  # no request in progress
                self.transport.close()

    return HeaderDeadlineProtocol
