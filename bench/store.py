"""Session store throughput: write / stream / random access, local and over a local S3 endpoint (moto_server).

Run: ``.venv/bin/python bench/store.py [--sessions 256] [--shard-size 64]``. Prints a table and JSON.
The simulator's own rate (1 process, 1 s captures of the reference world) is measured beside.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from heimdall.data.session import SessionBatch
from heimdall.data.store import SessionStore
from heimdall.network import load_network
from heimdall.sim import World, load_world


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = str(Path(sys.executable).parent / "moto_server")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    import boto3

    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="heimdall-bench")
    return proc, url


def measure(uri: str, batch: SessionBatch, shard: int, seed: int = 0) -> dict[str, float]:
    n = batch.n_sessions
    mb = batch.iq.nbytes / 1e6
    t0 = time.perf_counter()
    with SessionStore.create(uri, {"bench": True}, resume=False) as store:
        for k, start in enumerate(range(0, n, shard)):
            store.append_shard(k, batch.select(slice(start, start + shard)))
    write_s = time.perf_counter() - t0
    with SessionStore.open(uri) as store:
        t0 = time.perf_counter()
        total = sum(b.n_sessions for b in store.iter_shards())
        stream_s = time.perf_counter() - t0
        assert total == n
    rng = np.random.default_rng(seed)
    lat = []
    with SessionStore.open(uri) as store:  # cold: every read hits a shard not in the cache
        for i in rng.choice(n, size=min(40, n), replace=False):
            store._cache.clear()
            t0 = time.perf_counter()
            store.read([int(i)])
            lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(5):
            store._cache.clear()
            store.read(np.sort(rng.choice(n, size=32, replace=False)))
        batch_s = (time.perf_counter() - t0) / 5
    return {
        "write_sessions_s": n / write_s, "write_mb_s": mb / write_s,
        "stream_sessions_s": n / stream_s, "stream_mb_s": mb / stream_s,
        "random_ms_median": 1e3 * float(np.median(lat)), "random_ms_p90": 1e3 * float(np.percentile(lat, 90)),
        "random_batch32_sessions_s": 32 / batch_s,
    }  # fmt: skip


def disk_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=64)
    args = parser.parse_args()
    world = World(load_network("nw-italy"), load_world(), 0)
    t0 = time.perf_counter()
    batch = world.simulate(args.sessions, 0)
    sim_rate = args.sessions / (time.perf_counter() - t0)
    tmp = Path(tempfile.mkdtemp(prefix="heimdall-bench-"))
    proc, _url = start_moto()
    try:
        results = {
            "simulator_sessions_s_per_process": sim_rate,
            "sessions": args.sessions, "shard_size": args.shard_size,
            "mb_per_session": batch.iq.nbytes / 1e6 / args.sessions,
            "local": measure(str(tmp / "store"), batch, args.shard_size),
            "s3_moto": measure("s3://heimdall-bench/store", batch, args.shard_size),
            "iq_bytes_on_disk_fraction": disk_bytes(tmp / "store") / batch.iq.nbytes,
        }  # fmt: skip
    finally:
        proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    mb = results["mb_per_session"]
    print(f"simulator: {sim_rate:.0f} sessions/s per process ({mb:.3f} MB IQ per session)")
    cols = ("write s/s", "write MB/s", "stream s/s", "stream MB/s", "rand ms", "rand p90", "batch32 s/s")
    keys = ("write_sessions_s", "write_mb_s", "stream_sessions_s", "stream_mb_s", "random_ms_median",
            "random_ms_p90", "random_batch32_sessions_s")  # fmt: skip
    print(f"{'backend':8s} " + " ".join(f"{c:>11s}" for c in cols))
    for name in ("local", "s3_moto"):
        print(f"{name:8s} " + " ".join(f"{results[name][k]:11.1f}" for k in keys))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
