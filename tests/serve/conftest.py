"""The service under test: a tiny exported model (random weights, 0.25 s captures) served by a real process.

The service's behaviour (decoding, validation, refusals, answers equal to a direct
onnxruntime run) does not depend on the weights, so these tests use an untrained
network; parity of a trained one is tested in tests/export.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch

from heimdall.data.session import SessionBatch
from heimdall.export.onnx import model_metadata, to_onnx_bytes
from heimdall.export.predictor import OnnxPredictor
from heimdall.models.net import LocalizationNet, NetConfig
from heimdall.network import Network
from heimdall.sim import World, WorldConfig

DURATION_S = 0.25


@dataclass(frozen=True)
class Served:
    """A running `heimdall serve` process, its base URL and the model file it serves."""

    url: str
    model_path: Path
    process: subprocess.Popen


def tiny_model(network: Network, world_config: WorldConfig, seed: int = 0) -> LocalizationNet:
    config = NetConfig(
        n_samples=int(DURATION_S * 12000),
        n_fft=64,
        n_time=8,
        n_bins=16,
        d_model=16,
        n_heads=2,
        n_layers=1,
        cnn_channels=4,
    )
    meta = {
        "ref_lat": network.reference.lat,
        "ref_lon": network.reference.lon,
        "network": network.model_dump(mode="json"),
        "network_name": network.name,
        "world": world_config.model_dump(mode="json"),
        "world_seed": 0,
        "dataset_hash": "tiny-test",
    }
    torch.manual_seed(seed)
    return LocalizationNet(config, metadata=meta).eval()


@pytest.fixture(scope="session")
def short_world(network: Network, reference_world: WorldConfig) -> World:
    return World(network, reference_world.with_overrides(duration_s=DURATION_S), seed=0)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory, short_world: World) -> Path:
    model = tiny_model(short_world.network, short_world.config)
    path = tmp_path_factory.mktemp("served") / "model.onnx"
    path.write_bytes(to_onnx_bytes(model, model_metadata(model, {"median_error_km": 42.0})))
    return path


@pytest.fixture(scope="session")
def family_model_path(tmp_path_factory: pytest.TempPathFactory, short_world: World) -> Path:
    """The tiny model as if trained on a network family (its metadata names the family)."""
    model = tiny_model(short_world.network, short_world.config)
    model.metadata["network_family"] = {"name": "piemonte-liguria"}
    path = tmp_path_factory.mktemp("served-family") / "model.onnx"
    path.write_bytes(to_onnx_bytes(model, model_metadata(model)))
    return path


@pytest.fixture(scope="session")
def predictor(model_path: Path) -> OnnxPredictor:
    return OnnxPredictor(model_path.read_bytes(), str(model_path))


@pytest.fixture(scope="session")
def sessions(short_world: World) -> SessionBatch:
    """Simulated sessions where at least 4 receivers are heard by a wide SNR margin (> 10 dB)."""
    batch = short_world.simulate(24, session_seed=11)
    keep = [i for i in range(batch.n_sessions) if (batch.rx_snr_db[i] > 10.0).sum() >= 4]
    assert len(keep) >= 3
    return batch.select(keep[:3])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    model_path: Path, *extra: str, env: dict[str, str] | None = None, name: str = "serve"
) -> Served:
    """Start `heimdall serve --model FILE --port P --max-body-mb 8 --threads 1 EXTRA...`; wait for /health.

    The caller's HEIMDALL_TOKEN is not passed on (only ``env`` sets one).
    """
    port = _free_port()
    exe = Path(sys.executable).parent / "heimdall"
    log_path = model_path.parent / f"{name}-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(exe),
                "serve",
                "--model",
                str(model_path),
                "--port",
                str(port),
                "--max-body-mb",
                "8",
                "--threads",
                "1",
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**{k: v for k, v in os.environ.items() if k != "HEIMDALL_TOKEN"}, **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60.0
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return Served(url, model_path, proc)
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"heimdall serve did not start: {log_path.read_text()}")
        time.sleep(0.1)


def stop_server(served: Served) -> None:
    """Terminate the server process and wait for it."""
    served.process.terminate()
    try:
        served.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait()


@pytest.fixture(scope="session")
def served(model_path: Path) -> Iterator[Served]:
    """`heimdall serve --model FILE --port P` as a subprocess on 127.0.0.1 (the default host)."""
    server = start_server(model_path)
    try:
        yield server
    finally:
        stop_server(server)
