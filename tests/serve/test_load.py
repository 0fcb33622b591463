"""A real `heimdall serve` under load: 16 concurrent clients, 400 requests, 10 % oversized or malformed.

The server runs with its default limits (4 requests in flight, 2 s queue timeout) and an
8 MiB body limit. Valid requests include captures 64 times longer than the model's (about
5 MB of JSON each; only the first samples count), so each answer must equal the answer to
the short request sent alone. Busy answers are documented 503s with ``Retry-After``; the
clients honour it and retry. The server's peak resident memory (``VmHWM``) must stay under
:data:`PEAK_RSS_BOUND_MB` (docs/SERVING.md).
"""

from __future__ import annotations

import base64
import copy
import json
import queue
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from heimdall.serve.client import encode_iq, session_request

from .conftest import Served, start_server, stop_server

pytestmark = pytest.mark.slow

#: Bound on the server's peak RSS under this load, MiB (measured ~ see docs/SERVING.md).
PEAK_RSS_BOUND_MB = 550.0
N_CLIENTS = 16
N_REQUESTS = 400
N_BAD = 40  # 10 %: 20 oversized + 20 malformed
N_LARGE = 2 * N_CLIENTS  # valid requests of ~7 MB (captures ~70 times the model's length, trimmed)
TIME_LIMIT_S = 60.0
MAX_RETRIES = 20


def _rss_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process from /proc/<pid>/status, MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024.0  # kB
    return fields


def _longer(body: dict, factor: int) -> dict:
    """The request with every capture ``factor`` times longer (zeros after the original samples)."""
    out = copy.deepcopy(body)
    for rx in out["receivers"]:
        if "iq" in rx:
            pairs = np.frombuffer(base64.b64decode(rx["iq"]), dtype="<i2").reshape(-1, 2)
            longer = np.zeros((pairs.shape[0] * factor, 2), np.int16)
            longer[: pairs.shape[0]] = pairs
            rx["iq"] = encode_iq(longer, "int16")
    return out


def _malformed(body: dict) -> list[bytes]:
    """Twenty bad bodies (4xx expected): broken JSON, wrong types, bad IQ, unknown receivers."""
    online = next(i for i, rx in enumerate(body["receivers"]) if "iq" in rx)
    bad: list[Any] = []
    b = copy.deepcopy(body)
    b["receivers"][online]["iq"] = "@@not base64@@"
    bad.append(b)
    b = copy.deepcopy(body)
    b["receivers"][online]["iq"] = b["receivers"][online]["iq"][:-8]
    bad.append(b)
    b = copy.deepcopy(body)
    b["receivers"][online]["station"] = "atlantis"
    bad.append(b)
    b = copy.deepcopy(body)
    rx = b["receivers"][online]
    rx.pop("station")
    rx.update({"lat": 45.6, "lon": 8.0})  # 42 km from any station, inside the trained area
    bad.append(b)
    bad.append({**body, "receivers": "torino"})
    bad.append({**body, "sample_rate_hz": "12000"})
    bad.append({**body, "iq_format": "int8"})
    bad.append({k: v for k, v in body.items() if k != "receivers"})
    bad.append({"sessions": [body, {"receivers": []}]})
    bad.append([])
    raw = [json.dumps(x).encode() for x in bad]
    raw += [
        b"",
        b"{receivers: [",
        b'{"center_freq_hz": NaN, "sample_rate_hz": 12000, "receivers": []}',
        json.dumps(body).encode()[:5000],
        b"\xff\xfe\x00garbage",
        b"null",
        b"[1, 2, 3]",
        b'{"center_freq_hz": 1e400}',
        json.dumps({**body, "extra": 1}).encode(),
        json.dumps({**body, "center_freq_hz": -5}).encode(),
    ]
    assert len(raw) == N_BAD // 2
    return raw


def _core(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "inference_ms"}


@pytest.fixture(scope="module")
def load_server(model_path: Path):
    server = start_server(model_path, name="load")
    try:
        yield server
    finally:
        stop_server(server)


def _worker(served: Served, jobs: queue.Queue, results: list, busy: list) -> None:
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=60.0) as client:
        while True:
            try:
                k, kind, path, body = jobs.get_nowait()
            except queue.Empty:
                return
            for _ in range(MAX_RETRIES):
                try:
                    r = client.post(served.url + path, content=body, headers=headers)
                except httpx.TransportError as exc:
                    results[k] = (kind, -1, repr(exc), {})
                    break
                if r.status_code == 503:
                    busy.append((r.headers.get("retry-after"), r.text))
                    time.sleep(float(r.headers.get("retry-after", "1")))
                    continue
                results[k] = (kind, r.status_code, r.text, dict(r.headers))
                break


def test_sixteen_clients_400_requests_bounded_memory_and_identical_answers(
    load_server: Served, sessions
) -> None:
    served = load_server
    small = [
        session_request(sessions, i, iq_format=fmt, by_station=by_station)
        for i in range(sessions.n_sessions)
        for fmt, by_station in [("int16", True), ("float32", True), ("int16", False)]
    ]
    valid = [(json.dumps(b).encode(), j) for j, b in enumerate(small)]
    factors = [int(7e6 / len(json.dumps(small[3 * i]))) for i in range(sessions.n_sessions)]
    large = [(json.dumps(_longer(small[3 * i], f)).encode(), 3 * i) for i, f in enumerate(factors)]
    assert all(6e6 < len(body) < 8 * 1024 * 1024 for body, _ in large)
    alone = []
    for body in small:  # each valid request sent alone first
        r = httpx.post(served.url + "/v1/localize", json=body, timeout=60.0)
        assert r.status_code == 200, r.text[:300]
        alone.append(_core(r.json()))
    before = _rss_mb(served.process.pid)

    oversized = b'{"receivers": "' + b"A" * (9 * 1024 * 1024) + b'"}'
    malformed = _malformed(small[0])
    rng = random.Random(0)
    schedule: list[tuple[str, int, bytes]] = [("oversized", -1, oversized)] * (N_BAD // 2)
    schedule += [("malformed", -1, m) for m in malformed]
    schedule += [
        ("valid", valid[k % len(valid)][1], valid[k % len(valid)][0])
        for k in range(N_REQUESTS - len(schedule) - N_LARGE)
    ]
    rng.shuffle(schedule)
    # the large requests first: every client sends one at the same moment, twice over
    schedule = [
        ("valid", large[k % len(large)][1], large[k % len(large)][0]) for k in range(N_LARGE)
    ] + schedule
    assert len(schedule) == N_REQUESTS
    jobs: queue.Queue = queue.Queue()
    for k, (kind, _, body) in enumerate(schedule):
        jobs.put((k, kind, "/v1/localize", body))
    results: list = [None] * N_REQUESTS
    busy: list = []
    threads = [threading.Thread(target=_worker, args=(served, jobs, results, busy)) for _ in range(N_CLIENTS)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIME_LIMIT_S)
    elapsed = time.monotonic() - start
    assert not any(t.is_alive() for t in threads), f"load not done in {TIME_LIMIT_S} s"
    after = _rss_mb(served.process.pid)
    print(
        f"\nload: {N_REQUESTS} requests from {N_CLIENTS} clients in {elapsed:.1f} s; {len(busy)} busy 503s "
        f"(retried); server RSS {before['VmRSS']:.0f} MiB before, peak (VmHWM) {after['VmHWM']:.0f} MiB"
    )

    statuses: dict[str, list[int]] = {"valid": [], "oversized": [], "malformed": []}
    for (kind, ref, _), result in zip(schedule, results, strict=True):
        assert result is not None, "a request was never answered"
        _, status, text, _ = result
        statuses[kind].append(status)
        assert status < 500, (kind, status, text[:300])  # 503s were retried; no other 5xx
        if kind == "valid":
            assert status == 200, text[:300]
            assert _core(json.loads(text)) == alone[ref]
        elif kind == "oversized":
            assert status == 413 and "exceeds the limit" in text
        else:
            assert status in (400, 422), (status, text[:300])
            assert "Traceback" not in text
    for retry_after, text in busy:
        assert retry_after == "1" and "server busy" in text
    assert after["VmHWM"] < PEAK_RSS_BOUND_MB, f"peak RSS {after['VmHWM']:.0f} MiB"
    assert httpx.get(served.url + "/health").json()["status"] == "ok"


def test_a_busy_server_answers_503_with_retry_after(model_path: Path, sessions) -> None:
    """One slot, no queue: 16 simultaneous 7 MB requests get 200 (the alone answer) or 503 + Retry-After."""
    body = session_request(sessions, 0)
    big = json.dumps(_longer(body, int(7e6 / len(json.dumps(body))))).encode()
    server = start_server(model_path, "--max-concurrent", "1", "--queue-timeout", "0", name="busy")
    try:
        alone = _core(httpx.post(server.url + "/v1/localize", json=body, timeout=60.0).json())
        barrier = threading.Barrier(N_CLIENTS)
        replies: list[httpx.Response] = []

        def client() -> None:
            barrier.wait()
            replies.append(
                httpx.post(
                    server.url + "/v1/localize",
                    content=big,
                    headers={"content-type": "application/json"},
                    timeout=60.0,
                )
            )

        threads = [threading.Thread(target=client) for _ in range(N_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60.0)
        assert httpx.get(server.url + "/health").status_code == 200
    finally:
        stop_server(server)
    codes = sorted(r.status_code for r in replies)
    assert len(codes) == N_CLIENTS and set(codes) <= {200, 503} and codes[0] == 200 and codes[-1] == 503, (
        codes
    )
    for r in replies:
        if r.status_code == 200:
            assert _core(r.json()) == alone
        else:
            assert (
                r.headers["retry-after"] == "1" and "server busy: 1 requests in flight" in r.json()["detail"]
            )
