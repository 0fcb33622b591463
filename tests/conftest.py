"""Shared fixtures: tiny generated worlds and sessions (no committed binaries)."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from heimdall.network import Network, load_network
from heimdall.sim import World, WorldConfig, load_world

# ---------------------------------------------------------------------- files opened by the code under test
_WATCHES: list[tuple[str, list[str]]] = []


def _audit(event: str, args: tuple) -> None:
    if event != "open" or not _WATCHES or not isinstance(args[0], str | bytes | os.PathLike):
        return
    real = os.path.realpath(os.fsdecode(args[0]))
    for folder, seen in _WATCHES:
        if real == folder or real.startswith(folder + os.sep):
            seen.append(real)


sys.addaudithook(_audit)  # process-wide and permanent; inert while nothing is watched


@contextmanager
def _opens_under(folder: Path) -> Iterator[list[str]]:
    seen: list[str] = []
    entry = (os.path.realpath(folder), seen)
    _WATCHES.append(entry)
    try:
        yield seen
    finally:
        _WATCHES.remove(entry)


@pytest.fixture
def opens_under():
    """``with opens_under(folder) as seen:`` collects every file Python opens (links resolved)
    below ``folder`` while the block runs (an audit hook on ``open``: real files, no mocks)."""
    return _opens_under


@pytest.fixture(scope="session")
def network() -> Network:
    return load_network("nw-italy")


@pytest.fixture(scope="session")
def reference_world() -> WorldConfig:
    return load_world()


@pytest.fixture(scope="session")
def world(network: Network, reference_world: WorldConfig) -> World:
    return World(network, reference_world, seed=0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _moto_server_exe() -> str:
    here = Path(sys.executable).parent / "moto_server"
    found = str(here) if here.exists() else shutil.which("moto_server")
    if not found:
        raise RuntimeError("moto_server executable not found (install moto[server])")
    return found


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP endpoint: `moto_server` on 127.0.0.1, with fake AWS_* credentials in the env."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [_moto_server_exe(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30.0
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start on {url}") from None
            time.sleep(0.1)
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "heimdall-test",
        "AWS_SECRET_ACCESS_KEY": "heimdall-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        try:
            yield url
        finally:
            proc.kill()
            proc.wait(timeout=10)


_BUCKET_NUMBERS = itertools.count()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on the test endpoint; yields its name."""
    import boto3

    name = f"heimdall-test-{os.getpid()}-{next(_BUCKET_NUMBERS)}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name
