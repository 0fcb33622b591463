"""Inference service latency and throughput over HTTP, and the size of the exported model.

Run: ``.venv/bin/python bench/serve.py [--model model.onnx | --grid no-map|map] [--requests 300]
[--clients 16] [--json]``.

Without ``--model`` it exports the default LocalizationNet architecture (the training
defaults; untrained weights: timing does not depend on the weights) for 7 receivers ×
1 s at 12 kHz of the reference world; ``--grid no-map`` exports an untrained
GridPosteriorNet without a radio map, ``--grid map`` one carrying a map fitted
(``heimdall map fit``'s code) from ``--labelled`` simulated labelled sessions of the
reference world. ``--model`` may be either kind (a grid-posterior model is recognised by
its metadata). Requests name stations for models with a network, else give positions. It
starts ``heimdall serve`` as a separate process on 127.0.0.1 and measures, on the client
side, over HTTP:

- single-request latency (``POST /v1/localize``, one simulated session of 7 receivers ×
  12000 int16 samples, ~0.9 MB of JSON): p50 / p99 / mean over ``--requests`` sequential calls;
- batch throughput (``POST /v1/localize/batch``, ``--batch`` sessions per call): sessions/s;
- under load: ``--clients`` concurrent clients sending ``--load-requests`` single requests to a
  server limited to ``--max-concurrent`` requests in flight: sessions/s, p99 latency, busy 503s
  (retried after ``Retry-After``);
- the server's peak resident memory (``VmHWM`` of /proc/<pid>/status, Linux);
- the model alone (no HTTP, no decoding) for one session, for reference: the Gaussian graph
  in onnxruntime, or a grid model's posterior (measurement, coarse grid, refinement), in this
  process with the server's malloc settings (:func:`heimdall.serve.run.keep_freed_memory`);
- the ONNX file size.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from heimdall.data.session import SessionBatch
from heimdall.export.onnx import model_metadata, to_onnx_bytes
from heimdall.export.predictor import load_predictor
from heimdall.models.config import ModelSection
from heimdall.models.grid_predictor import GridPosteriorPredictor
from heimdall.models.net import LocalizationNet, NetConfig
from heimdall.models.predict import session_inputs
from heimdall.network import load_network
from heimdall.serve.client import session_request
from heimdall.serve.run import keep_freed_memory
from heimdall.sim import World, load_world


def _default_model(world: World) -> bytes:
    net = world.network
    config = NetConfig(
        n_samples=world.n_samples, sample_rate_hz=world.sample_rate_hz, **ModelSection().model_dump()
    )
    meta = {
        "ref_lat": net.reference.lat,
        "ref_lon": net.reference.lon,
        "network": net.model_dump(mode="json"),
        "network_name": net.name,
        "world": world.config.model_dump(mode="json"),
        "world_seed": world.seed,
        "dataset_hash": "bench (untrained)",
    }
    torch.manual_seed(0)
    model = LocalizationNet(config, metadata=meta).eval()
    return to_onnx_bytes(model, model_metadata(model))


def _grid_model(world: World, kind: str, n_labelled: int, folder: Path) -> bytes:
    """An untrained GridPosteriorNet, without a map or with one fitted from labelled sessions of ``world``."""
    from heimdall.export.grid_onnx import export_grid_model, grid_metadata
    from heimdall.maps.artifact import load_map, save_map
    from heimdall.maps.config import MapsConfig
    from heimdall.maps.fit import fit_radio_map
    from heimdall.maps.observations import observations_from_store
    from heimdall.models.gridnet import GridPosteriorNet
    from heimdall.sim.simulate_job import run_simulation

    torch.set_num_threads(1)
    if kind == "no-map":
        model = GridPosteriorNet(MapsConfig())
        return export_grid_model(model, str(folder / "grid"), grid_metadata(model, 12, {})).onnx_bytes
    lab, uri = str(folder / "labelled"), str(folder / "map")
    run_simulation(
        lab, world.network.name, n_labelled, world_seed=world.seed, seed=7, duration_s=0.1, workers=1
    )
    obs, net = observations_from_store(lab)
    save_map(fit_radio_map(obs, net, MapsConfig()), uri, sources=[lab])
    rmap, meta = load_map(uri)
    model = GridPosteriorNet(rmap.config)
    model.load_map(rmap)
    n_rx = len(rmap.network.receivers)
    return export_grid_model(
        model, str(folder / "grid"), grid_metadata(model, n_rx, {}, meta, uri)
    ).onnx_bytes


def _model_alone_ms(predictor, batch: SessionBatch, n: int = 30) -> list[float]:
    """Times (ms) of the model on one session without HTTP: the graph, or a grid model's posterior."""
    if isinstance(predictor, GridPosteriorPredictor):
        one = batch.select([0])
        one.iq = one.iq[:, :, : predictor.n_samples]  # what the service keeps of a longer capture

        def run() -> None:
            predictor.posterior(one)
    else:
        inputs = session_inputs(batch, predictor.frame, predictor.n_samples)

        def run() -> None:
            predictor.run(**inputs)

    for _ in range(3):
        run()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        run()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory (VmHWM) of a process, MiB; None where /proc is missing."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _load(url: str, requests: list[dict], clients: int, n: int) -> dict:
    """``n`` single requests from ``clients`` threads at once; 503s are retried after Retry-After."""
    bodies = [json.dumps(r).encode() for r in requests]
    counter = iter(range(n))
    lock = threading.Lock()
    lat_ms: list[float] = []
    busy = [0]

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while True:
                with lock:
                    k = next(counter, None)
                if k is None:
                    return
                t0 = time.perf_counter()
                while True:
                    r = http.post(
                        url + "/v1/localize",
                        content=bodies[k % len(bodies)],
                        headers={"content-type": "application/json"},
                    )
                    if r.status_code != 503:
                        break
                    with lock:
                        busy[0] += 1
                    time.sleep(float(r.headers.get("retry-after", "1")))
                r.raise_for_status()
                with lock:
                    lat_ms.append((time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {
        "load_clients": clients,
        "load_requests": n,
        "load_throughput_sessions_per_s": n / elapsed,
        "load_latency_p99_ms": float(np.percentile(lat_ms, 99)),
        "load_busy_503": busy[0],
    }


def _start(model_path: Path, threads: int, max_concurrent: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [
        str(Path(sys.executable).parent / "heimdall"),
        "serve",
        "--model",
        str(model_path),
        "--port",
        str(port),
    ]
    cmd += ["--threads", str(threads), "--max-concurrent", str(max_concurrent)]
    env = {k: v for k, v in os.environ.items() if k != "HEIMDALL_TOKEN"}  # loopback, no token
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("heimdall serve did not start")


def _pick_sessions(world: World, n: int, by_station: bool = True) -> list[dict]:
    """Requests for sessions with all 7 receivers online and at least 3 simulated as heard (> 3 dB)."""
    out: list[dict] = []
    seed = 0
    while len(out) < n:
        batch = world.simulate(16, session_seed=1000 + seed)
        seed += 1
        for i in range(batch.n_sessions):
            if batch.online[i].all() and (batch.rx_snr_db[i] > 3.0).sum() >= 3 and len(out) < n:
                out.append(session_request(batch, i, by_station=by_station))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, help="exported model.onnx (default: export the default architecture)"
    )
    parser.add_argument(
        "--grid", choices=("no-map", "map"), help="export an untrained grid-posterior model instead"
    )
    parser.add_argument("--labelled", type=int, default=300, help="labelled sessions fitting --grid map")
    parser.add_argument("--requests", type=int, default=300, help="sequential single requests")
    parser.add_argument("--batch", type=int, default=32, help="sessions per batch request")
    parser.add_argument("--batch-calls", type=int, default=8, help="batch requests")
    parser.add_argument(
        "--threads", type=int, default=1, help="onnxruntime threads in the server (0: all cores)"
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients of the load phase")
    parser.add_argument("--load-requests", type=int, default=400, help="requests of the load phase")
    parser.add_argument(
        "--max-concurrent", type=int, default=4, help="the server's limit of requests in flight"
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    keep_freed_memory()  # as `heimdall serve` does: the model alone is timed as the server runs it

    world = World(load_network("nw-italy"), load_world(), 0)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = args.model or Path(tmp) / "model.onnx"
        if args.model is None:
            model = (
                _default_model(world)
                if args.grid is None
                else _grid_model(world, args.grid, args.labelled, Path(tmp))
            )
            model_path.write_bytes(model)
        data = model_path.read_bytes()
        predictor = load_predictor(str(model_path), threads=args.threads or None)
        grid = isinstance(predictor, GridPosteriorPredictor)
        requests = _pick_sessions(world, 8, by_station=predictor.network is not None)
        body_bytes = len(json.dumps(requests[0]))
        graph_ms = _model_alone_ms(predictor, world.simulate(1, session_seed=1000))

        proc, url = _start(model_path, args.threads, args.max_concurrent)
        try:
            # bodies encoded once: the client's JSON encoding (~0.45 MB of integers) is not the service's time
            bodies = [json.dumps(r).encode() for r in requests]
            headers = {"content-type": "application/json"}
            with httpx.Client(timeout=60) as client:
                for k in range(20):  # warm-up
                    client.post(
                        url + "/v1/localize", content=bodies[k % len(bodies)], headers=headers
                    ).raise_for_status()
                lat_ms = []
                for k in range(args.requests):
                    t0 = time.perf_counter()
                    client.post(
                        url + "/v1/localize", content=bodies[k % len(bodies)], headers=headers
                    ).raise_for_status()
                    lat_ms.append((time.perf_counter() - t0) * 1000)
                sessions = {"sessions": [requests[k % len(requests)] for k in range(args.batch)]}
                client.post(url + "/v1/localize/batch", json=sessions).raise_for_status()
                t0 = time.perf_counter()
                for _ in range(args.batch_calls):
                    client.post(url + "/v1/localize/batch", json=sessions).raise_for_status()
                batch_rate = args.batch * args.batch_calls / (time.perf_counter() - t0)
            load = _load(url, requests, args.clients, args.load_requests) if args.load_requests else {}
            peak_rss_mb = _peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    lat = np.array(lat_ms)
    result = {
        "model": str(args.model)
        if args.model
        else ("default architecture" if args.grid is None else f"grid-posterior, {args.grid}")
        + " (untrained)",
        "kind": "grid-posterior" + (" with map" if predictor.network is not None else " without map")
        if grid
        else "gaussian",
        "onnx_size_mb": len(data) / 1e6,
        "request": "7 receivers x 1 s at 12 kHz, int16",
        "request_body_mb": body_bytes / 1e6,
        "requests": args.requests,
        "latency_p50_ms": float(np.percentile(lat, 50)),
        "latency_p99_ms": float(np.percentile(lat, 99)),
        "latency_mean_ms": float(lat.mean()),
        "batch_sessions": args.batch,
        "batch_throughput_sessions_per_s": batch_rate,
        "model_only_p50_ms": float(np.percentile(graph_ms, 50)),
        "model_only_p99_ms": float(np.percentile(graph_ms, 99)),
        "load_average_1min": os.getloadavg()[0],
        **load,
        "server_max_concurrent": args.max_concurrent,
        "server_peak_rss_mb": peak_rss_mb,
        "cpu_cores": os.cpu_count(),
        "server_threads": args.threads or "all cores",
    }
    if not args.json:
        for key, value in result.items():
            print(f"{key:34s} {value:.2f}" if isinstance(value, float) else f"{key:34s} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
