"""Screenshot of the map page (`make screenshot` → docs/map-page.png).

Starts `heimdall serve` on 127.0.0.1 with a model (``--model``; default: a small
untrained network exported on the spot, enough to show the drawing), a few
simulated sessions as the stored set, uploads one of them as SigMF in headless
Chromium (Debian's chromium + chromium-driver) at 1280×800 and saves the page.
Basemap: ``--tiles`` (default none: the offline Natural Earth borders, so the
picture does not depend on the network).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tiny_model(path: Path, seconds: float) -> None:
    """An untrained network (fixed seed) exported to ONNX: it answers, with no skill."""
    import torch

    from heimdall.export.onnx import model_metadata, to_onnx_bytes
    from heimdall.models.net import LocalizationNet, NetConfig
    from heimdall.network import load_network
    from heimdall.sim import load_world

    network, world = load_network("nw-italy"), load_world()
    config = NetConfig(n_samples=int(seconds * 12000), n_fft=64, n_time=8, n_bins=16, d_model=16,
                       n_heads=2, n_layers=1, cnn_channels=4)  # fmt: skip
    meta = {
        "ref_lat": network.reference.lat, "ref_lon": network.reference.lon,
        "network": network.model_dump(mode="json"), "network_name": network.name,
        "world": world.model_dump(mode="json"), "world_seed": 0, "dataset_hash": "screenshot",
    }  # fmt: skip
    torch.manual_seed(0)
    model = LocalizationNet(config, metadata=meta).eval()
    path.write_bytes(to_onnx_bytes(model, model_metadata(model, {})))


def _sessions(store: Path, sigmf: Path, seconds: float) -> Path:
    """Four simulated sessions with ≥ 4 receivers well heard; session 0 also as SigMF."""
    from heimdall.data.sigmf_io import export_session
    from heimdall.data.store import SessionStore
    from heimdall.network import load_network
    from heimdall.sim import World, load_world

    world = World(load_network("nw-italy"), load_world().with_overrides(duration_s=seconds), seed=0)
    batch = world.simulate(32, session_seed=7)
    keep = [i for i in range(batch.n_sessions) if (batch.rx_snr_db[i] > 10.0).sum() >= 5][:4]
    batch = batch.select(keep)
    with SessionStore.create(str(store), {"note": "map page screenshot"}) as s:
        s.append_shard(0, batch)
    return export_session(batch, 0, sigmf)


def _wait_status(driver, wanted: tuple[str, ...], timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = driver.execute_script("return document.body.dataset.status")
        if status in wanted:
            return status
        time.sleep(0.1)
    raise RuntimeError(f"the page did not reach {wanted}")


def _shoot(url: str, folder: Path, out: Path, size: tuple[int, int], profile: Path) -> None:
    """Open the page in headless Chromium at ``size`` (CSS pixels), upload ``folder``, save a PNG."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    flags = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={profile}")  # fmt: skip
    for flag in flags:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))
    try:
        metrics = {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": size[0] < 760}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        driver.get(url + "/")
        _wait_status(driver, ("ready",))
        driver.find_element("id", "files").send_keys("\n".join(str(p) for p in sorted(folder.iterdir())))
        _wait_status(driver, ("result", "error"))
        time.sleep(1.0)  # let the fit-to-bounds animation end
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def main() -> None:
    """Serve, upload, screenshot."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--model", help="exported model (default: a small untrained one)")
    parser.add_argument("--tiles", default="none", help="tile URL template, or none")
    parser.add_argument("--size", default="1280,800", help="window width,height in pixels")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="heimdall-shot-") as tmp_name:
        tmp = Path(tmp_name)
        model, seconds = args.model, 0.25
        if model is None:
            model = str(tmp / "model.onnx")
            _tiny_model(Path(model), seconds)
        else:
            from heimdall.export.predictor import load_predictor

            meta = load_predictor(model).metadata
            seconds = float(meta["n_samples"]) / float(meta["sample_rate_hz"])
        folder = _sessions(tmp / "store", tmp / "sigmf", seconds)
        port = _free_port()
        exe = Path(sys.executable).parent / "heimdall"
        cmd = [str(exe), "serve", "--model", model, "--port", str(port), "--tiles", args.tiles,
               "--data", str(tmp / "store")]  # fmt: skip
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            _shoot(url, folder, args.out, tuple(int(v) for v in args.size.split(",")), tmp / "profile")
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
