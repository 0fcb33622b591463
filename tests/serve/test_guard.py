"""Who may call the service and how many at once: the concurrency limit, the API token, loopback binding."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from heimdall.errors import HeimdallError
from heimdall.serve.app import create_app
from heimdall.serve.auth import check_exposure, is_loopback
from heimdall.serve.limits import BodySizeLimit, ConcurrencyLimit

from .conftest import start_server, stop_server

TOKEN = "s3cret-token-for-tests-0123456789"


def _run_concurrently(limit: ConcurrencyLimit, paths: list[str], hold_s: float) -> tuple[list, int]:
    """Send one request per path at once through ``limit`` around an app that holds each for ``hold_s``.

    Returns each request's (status, headers, body) and the most app calls seen running at once.
    """
    running = peak = 0

    async def app(scope, receive, send) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(hold_s)
        running -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limit.app = app

    async def one(path: str):
        sent: list[dict] = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message) -> None:
            sent.append(message)

        await limit({"type": "http", "path": path, "headers": []}, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])

    async def main():
        return await asyncio.gather(*(one(p) for p in paths))

    results = asyncio.run(main())
    return results, peak


def test_requests_beyond_the_limit_wait_for_a_slot() -> None:
    """12 simultaneous requests, 3 slots, each 50 ms, 5 s queue timeout: all answered, never > 3 at once."""
    limit = ConcurrencyLimit(None, max_concurrent=3, queue_timeout_s=5.0)  # type: ignore[arg-type]
    results, peak = _run_concurrently(limit, ["/v1/localize"] * 12, hold_s=0.05)
    assert [status for status, _, _ in results] == [200] * 12
    assert peak == 3 and limit.peak_in_flight == 3 and limit.in_flight == 0


def test_a_request_that_waits_too_long_gets_503_with_retry_after() -> None:
    """1 slot held 0.5 s, queue timeout 0.1 s: the second request gets 503 + Retry-After; /health passes."""
    limit = ConcurrencyLimit(None, max_concurrent=1, queue_timeout_s=0.1)  # type: ignore[arg-type]
    results, peak = _run_concurrently(limit, ["/v1/localize", "/v1/model", "/health"], hold_s=0.5)
    (first, _, _), (second, headers, body), (health, _, _) = results
    assert (first, second, health) == (200, 503, 200)
    assert headers[b"retry-after"] == b"1" and headers[b"content-type"] == b"application/json"
    assert b"server busy: 1 requests in flight" in body and b"0.1 s" in body
    assert peak == 2  # the busy request and /health, which is never queued


def test_page_and_docs_are_never_queued() -> None:
    """1 slot held by the API: the map page, its static files and the docs still answer at once."""
    limit = ConcurrencyLimit(None, max_concurrent=1, queue_timeout_s=0.05)  # type: ignore[arg-type]
    paths = ["/v1/localize", "/", "/static/page.js", "/docs", "/v1/model"]
    results, peak = _run_concurrently(limit, paths, hold_s=0.3)
    assert [status for status, _, _ in results] == [200, 200, 200, 200, 503]
    assert peak == 4


def test_a_trickled_body_gets_408_and_frees_its_slot() -> None:
    """A body arriving 10 bytes every 0.2 s, 0.5 s allowed: 408 after 3 chunks; the app never runs.

    The deadline falls 0.1 s after the third chunk was asked for and 0.1 s before a fourth would be
    (a loaded machine's timer overshoot stays well inside that)."""
    called = []

    async def app(scope, receive, send) -> None:
        called.append(scope)

    pulled = 0

    async def receive():
        nonlocal pulled
        pulled += 1
        await asyncio.sleep(0.2)
        return {"type": "http.request", "body": b"x" * 10, "more_body": True}

    sent: list[dict] = []

    async def send(message) -> None:
        sent.append(message)

    guard = ConcurrencyLimit(BodySizeLimit(app, 1000, timeout_s=0.5), max_concurrent=1, queue_timeout_s=0)
    asyncio.run(guard({"type": "http", "path": "/v1/localize", "headers": []}, receive, send))
    assert sent[0]["status"] == 408 and not called and pulled == 3
    assert b"not received within 0.5 s (20 bytes arrived)" in sent[1]["body"]
    assert guard.in_flight == 0


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("heimdall.example.org", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    if not loopback:
        with pytest.raises(HeimdallError, match="without an API token"):
            check_exposure(host, None)
        assert "warning" in str(check_exposure(host, TOKEN))


@pytest.fixture(scope="module")
def guarded(predictor) -> TestClient:
    return TestClient(create_app(predictor, token=TOKEN))


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing API token"),
        ({"Authorization": "Bearer wrong-token-0123456789"}, "wrong API token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "wrong API token"),
        ({"Authorization": f"Basic {TOKEN}"}, "must be 'Bearer <token>'"),
    ],
)
def test_v1_without_the_right_token_is_401(guarded: TestClient, headers: dict, message: str) -> None:
    for method, path in [("GET", "/v1/model"), ("POST", "/v1/localize"), ("POST", "/v1/localize/batch")]:
        r = guarded.request(method, path, headers=headers, json={})
        assert r.status_code == 401 and message in r.json()["detail"], (path, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_right_token_passes_and_health_stays_open(guarded: TestClient) -> None:
    assert guarded.get("/v1/model", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert guarded.get("/v1/model", headers={"authorization": f"bearer {TOKEN}"}).status_code == 200
    r = guarded.post("/v1/localize", headers={"Authorization": f"Bearer {TOKEN}"}, json={})
    assert r.status_code == 422  # past the token check, refused by validation
    assert guarded.get("/health").status_code == 200
    head = guarded.head("/health")  # load balancers probe with HEAD: no token, no body
    assert head.status_code == 200 and head.content == b""
    schema = guarded.get("/openapi.json").json()  # open, and declares the token for /v1 operations
    assert schema["components"]["securitySchemes"]["bearerToken"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/localize"]["post"]["security"] == [{"bearerToken": []}]
    assert "security" not in schema["paths"]["/health"]["get"]


def _serve(model_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "heimdall"
    return subprocess.run(
        [str(exe), "serve", "--model", str(model_path), "--port", "1", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20"])
def test_non_loopback_without_token_refuses_to_start(model_path: Path, host: str) -> None:
    """Exit 2 with a message naming the host and the token options, before binding anything."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "HEIMDALL_TOKEN"}
    proc = _serve(model_path, "--host", host, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f"refusing to serve on {host!r} without an API token" in " ".join(out.split())
    assert "HEIMDALL_TOKEN" in out and "Traceback" not in out


def test_short_token_refuses_to_start(model_path: Path) -> None:
    proc = _serve(model_path, "--token", "short")
    assert proc.returncode == 2 and "at least 16" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_exposed_server_with_token_from_the_environment(model_path: Path) -> None:
    """`--host 0.0.0.0` with HEIMDALL_TOKEN: starts with a warning; /v1 needs the token; /health is open."""
    server = start_server(model_path, "--host", "0.0.0.0", env={"HEIMDALL_TOKEN": TOKEN}, name="exposed")
    try:
        url = server.url
        assert httpx.get(url + "/health").status_code == 200
        r = httpx.get(url + "/v1/model")
        assert r.status_code == 401 and "missing API token" in r.json()["detail"]
        assert (
            httpx.get(url + "/v1/model", headers={"Authorization": "Bearer nope-nope-nope-nope"}).status_code
            == 401
        )
        assert httpx.post(url + "/v1/localize", json={}).status_code == 401
        assert httpx.get(url + "/v1/model", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    finally:
        stop_server(server)
    log = (model_path.parent / f"exposed-{url.rsplit(':', 1)[1]}.log").read_text()
    assert "warning: serving on '0.0.0.0'" in log and "API token required on /v1" in log
