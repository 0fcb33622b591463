"""Slow clients cannot hold the service's connections: a request's headers have a deadline.

A real ``heimdall serve`` (``--header-timeout 1``, 8 connections at most) is opened by
sockets that trickle their headers a byte at a time (slowloris), or say nothing; before the
deadline they hold every connection (``/health`` gets uvicorn's 503), after it the server has
closed them and ``/health`` answers again.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from heimdall.serve.connections import header_deadline_protocol

from .conftest import Served, start_server, stop_server

pytestmark = pytest.mark.slow

MAX_CONNECTIONS = 8
HEADER_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def strict(model_path: Path) -> Iterator[Served]:
    server = start_server(
        model_path, "--header-timeout", str(HEADER_TIMEOUT_S), "--max-connections", str(MAX_CONNECTIONS),
        "--max-concurrent", "2", name="strict",
    )  # fmt: skip
    try:
        yield server
    finally:
        stop_server(server)


def _connect(served: Served) -> socket.socket:
    url = urlsplit(served.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=5.0)
    sock.setblocking(False)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """True when the server has closed the connection (reads end of stream, or it was reset)."""
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False  # open, nothing to read
    except ConnectionResetError:
        return True


def test_trickled_and_silent_connections_are_closed_and_health_recovers(strict: Served) -> None:
    partial = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "
    socks = [_connect(strict) for _ in range(MAX_CONNECTIONS)]
    for k, s in enumerate(socks):
        if k % 2 == 0:  # half trickle their headers, half say nothing
            s.send(partial[:10])
    time.sleep(0.2)
    assert httpx.get(strict.url + "/health", timeout=5.0).status_code == 503  # every connection taken
    start = time.monotonic()
    while time.monotonic() - start < HEADER_TIMEOUT_S + 3.0:
        for k, s in enumerate(socks):
            if k % 2 == 0:
                try:
                    s.send(b"a")  # one more header byte now and then: never complete
                except (BrokenPipeError, ConnectionResetError):
                    pass
        if all(_closed_by_server(s) for s in socks):
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - start
    assert all(_closed_by_server(s) for s in socks), "a slow connection outlived the header deadline"
    assert elapsed >= HEADER_TIMEOUT_S - 0.3  # not before the deadline
    assert httpx.get(strict.url + "/health", timeout=5.0).status_code == 200
    for s in socks:
        s.close()


def test_keep_alive_connection_trickling_its_next_request_is_closed(strict: Served) -> None:
    """After a response, the next request's headers have the same deadline (trickling resets
    uvicorn's own keep-alive timer, not this one); a complete request is answered as ever."""
    sock = _connect(strict)
    sock.setblocking(True)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    sock.setblocking(False)
    start = time.monotonic()
    while time.monotonic() - start < HEADER_TIMEOUT_S + 3.0 and not _closed_by_server(sock):
        try:
            sock.send(b"G")
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.2)
    assert _closed_by_server(sock)
    sock.close()


def test_the_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError, match="header timeout must be > 0 s"):
        header_deadline_protocol(0.0)
