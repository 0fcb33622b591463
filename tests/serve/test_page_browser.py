"""The map page in a real headless Chromium against a real `heimdall serve` process on 127.0.0.1.

Debian's `chromium` and `chromium-driver` (installed by `make browser`), driven by
Selenium with the driver's path given, so nothing downloads a browser. The tile URL
points to a closed port on 127.0.0.1: every tile request fails, as offline.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from heimdall.data.session import OFFLINE, SessionBatch
from heimdall.data.sigmf_io import export_session
from heimdall.data.store import SessionStore
from heimdall.serve.client import session_request

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "page-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
VENDOR = Path(__file__).parents[2] / "src" / "heimdall" / "serve" / "static" / "vendor"


def _require(condition: bool, what: str) -> None:
    if not condition:
        msg = f"{what} missing: run `make browser vendor`"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@dataclass(frozen=True)
class Page:
    url: str
    tiles_port: int
    process: subprocess.Popen


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(model_path: Path, tmp: Path, *extra: str) -> Iterator[Page]:
    port, tiles_port = _free_port(), _free_port()  # nothing listens on tiles_port
    log_path = tmp / f"serve-{port}.log"
    log = log_path.open("wb")
    exe = Path(sys.executable).parent / "heimdall"
    tiles = f"http://127.0.0.1:{tiles_port}/{{z}}/{{x}}/{{y}}.png"
    proc = subprocess.Popen(
        [str(exe), "serve", "--model", str(model_path), "--port", str(port), "--tiles", tiles, *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60.0
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            raise RuntimeError(f"heimdall serve did not start: {log_path.read_text()}")
        time.sleep(0.1)
    try:
        yield Page(url, tiles_port, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, sessions: SessionBatch) -> Path:
    path = tmp_path_factory.mktemp("page-store") / "store"
    with SessionStore.create(str(path), {"note": "map page test"}) as store:
        store.append_shard(0, sessions)
    return path


@pytest.fixture(scope="module")
def page(model_path: Path, stored: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    """One server for all tests: a stored set, an API token, tiles on a closed port."""
    yield from _start(model_path, tmp_path_factory.mktemp("page"), "--data", str(stored), "--token", TOKEN)


@pytest.fixture(scope="module")
def sigmf_session(tmp_path_factory: pytest.TempPathFactory, sessions: SessionBatch) -> Path:
    """Session 0 exported by the project's SigMF exporter: one collection folder."""
    return export_session(sessions, 0, tmp_path_factory.mktemp("sigmf"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    _require(Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), "chromium / chromium-driver")
    _require((VENDOR / "leaflet.js").exists(), "web assets (src/heimdall/serve/static/vendor)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no host but this machine
        "--window-size=1280,800",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    status = driver.execute_script("return document.body.dataset.status")
    error = driver.execute_script("return document.getElementById('error').textContent")
    raise AssertionError(f"timed out waiting for {what} (status {status!r}, error {error!r})")


def _status(driver) -> str:
    return driver.execute_script("return document.body.dataset.status")


def _open(driver, url: str) -> None:
    """Load the page and give it the token when it asks (it keeps it for the browser session)."""
    driver.get(url + "/")
    _wait(driver, lambda: _status(driver) in ("ready", "token"), what="page loaded")
    if _status(driver) == "token":
        _give_token(driver, TOKEN, "ready")


def _give_token(driver, token: str, expect: str) -> None:
    field = driver.find_element("id", "token")
    field.clear()
    field.send_keys(token)
    driver.execute_script("document.body.dataset.status = 'sent'")
    driver.find_element("css selector", "#token-form button").click()
    _wait(driver, lambda: _status(driver) == expect, what=f"status {expect} after the token")


def _upload(driver, paths: list[Path], expect: str) -> None:
    driver.execute_script("document.body.dataset.status = 'sent'")
    field = driver.find_element("id", "files")
    driver.execute_script("arguments[0].value = ''", field)
    field.send_keys("\n".join(str(p) for p in paths))
    _wait(driver, lambda: _status(driver) == expect, what=f"status {expect} after upload")


def _severe(driver, tiles_port: int) -> list[str]:
    """Console errors other than failed tile requests."""
    logs = driver.get_log("browser")
    return [
        e["message"] for e in logs if e["level"] == "SEVERE" and f"127.0.0.1:{tiles_port}" not in e["message"]
    ]


def test_page_offline_shows_borders_and_receivers(browser, page, network) -> None:
    _open(browser, page.url)
    assert _severe(browser, page.tiles_port) == []
    borders = browser.find_elements("css selector", "path.heimdall-border")
    coast = browser.find_elements("css selector", "path.heimdall-coast")
    assert borders and coast
    # drawn inside the map view (Leaflet clips paths to the view): tens of pixels of coastline and borders
    for cls in ("heimdall-coast", "heimdall-border"):
        box = browser.execute_script(f"return document.querySelector('path.{cls}').getBBox()")
        assert box["width"] > 50 and box["height"] > 50, (cls, box)
    scale = browser.find_element("css selector", ".leaflet-control-scale-line")
    assert scale.is_displayed() and scale.text.endswith(("km", " m"))
    stations = browser.find_elements("css selector", "path.heimdall-rx-station")
    assert len(stations) == len(network.ids)
    assert all(s.is_displayed() for s in stations)
    # the tiles were asked for, and failed: the page is offline, yet shows borders and receivers
    tiles = browser.execute_script("return document.querySelectorAll('img.leaflet-tile').length")
    assert tiles > 0
    # every request went to this server or the tile host
    hosts = set(
        browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => new URL(e.name).host)"
        )
    )
    assert hosts <= {page.url.removeprefix("http://"), f"127.0.0.1:{page.tiles_port}"}
    assert "openstreetmap" not in browser.page_source.split("heimdall-config")[0]


def test_upload_draws_the_service_answer(browser, page, sigmf_session: Path, sessions: SessionBatch) -> None:
    _open(browser, page.url)
    _upload(browser, sorted(sigmf_session.iterdir()), "result")
    assert _severe(browser, page.tiles_port) == []
    body = session_request(sessions, 0)
    answer = httpx.post(page.url + "/v1/localize", json=body, headers=AUTH, timeout=30).json()
    marker = browser.execute_script("return heimdallPage.current.mapPoint.getLatLng()")
    assert marker["lat"] == pytest.approx(answer["latitude"], abs=1e-9)
    assert marker["lng"] == pytest.approx(answer["longitude"], abs=1e-9)
    # the heat layer is the service's raster: the same PNG at the same bounds
    posterior = httpx.post(page.url + "/v1/posterior", json=body, headers=AUTH, timeout=30).json()[
        "posterior"
    ]
    src = browser.find_element("css selector", "img.heimdall-heat").get_attribute("src")
    assert src == "data:image/png;base64," + posterior["raster"]["png_base64"]
    b = browser.execute_script(
        "const b = heimdallPage.current.heat.getBounds();"
        "return [b.getSouth(), b.getWest(), b.getNorth(), b.getEast()]"
    )
    expected = posterior["raster"]["bounds"]
    assert b == pytest.approx([expected[k] for k in ("south", "west", "north", "east")], abs=1e-12)
    # the image's densest pixel lies at the MAP point (pixel centres: lon linear, rows linear in Mercator y)
    from PIL import Image

    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(posterior["raster"]["png_base64"]))))
    row, col = np.unravel_index(np.argmax(rgba[..., 3]), rgba.shape[:2])
    h, w = rgba.shape[:2]
    lon = expected["west"] + (col + 0.5) / w * (expected["east"] - expected["west"])
    y = lambda lat: np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))  # noqa: E731
    yc = y(expected["north"]) + (row + 0.5) / h * (y(expected["south"]) - y(expected["north"]))
    lat = np.degrees(2 * np.arctan(np.exp(yc)) - np.pi / 2)
    assert abs(lat - answer["latitude"]) < 2.0 * (expected["north"] - expected["south"]) / h
    assert abs(lon - answer["longitude"]) < 2.0 * (expected["east"] - expected["west"]) / w
    # contours, receivers by state, modes table and truth
    assert len(browser.find_elements("css selector", "path.heimdall-hpd")) >= 2
    states = ["offline" if s == OFFLINE else None for s in sessions.rx_state[0]]
    heard = set(answer["receivers_heard"])
    assert len(browser.find_elements("css selector", "path.heimdall-rx-heard")) == len(heard)
    assert len(browser.find_elements("css selector", "path.heimdall-rx-offline")) == states.count("offline")
    modes = browser.find_elements("css selector", "#modes tbody tr")
    assert (
        len(modes) == len(posterior["modes"]) and "100.0 %" in modes[0].text
    )  # a Gaussian: one basin, all the mass
    truth = browser.execute_script("return heimdallPage.current.truth.getLatLng()")
    assert truth["lat"] == pytest.approx(float(sessions.tx_lat_deg[0]), abs=1e-9)


def test_invalid_uploads_show_the_service_message(browser, page, sigmf_session: Path) -> None:
    _open(browser, page.url)
    data_only = sorted(sigmf_session.glob("*.sigmf-data"))
    _upload(browser, data_only, "error")
    text = browser.find_element("id", "error").text
    assert "no .sigmf-meta file" in text
    # two receivers only (no collection: the upload is what was sent)
    metas = sorted(p for p in sigmf_session.glob("*.sigmf-meta") if p.with_suffix(".sigmf-data").exists())[:2]
    files = [*metas, *(p.with_suffix(".sigmf-data") for p in metas)]
    _upload(browser, files, "error")
    payload = {
        "files": [{"name": p.name, "data_base64": base64.b64encode(p.read_bytes()).decode()} for p in files]
    }
    refusal = httpx.post(page.url + "/v1/upload/sigmf", json=payload, headers=AUTH, timeout=30)
    assert refusal.status_code == 422
    msg = refusal.json()["detail"][0]["msg"]
    assert "at least 3" in msg
    assert msg in browser.find_element("id", "error").text
    assert browser.find_element("id", "error").is_displayed()


def test_stored_session_with_truth(browser, page, sessions: SessionBatch) -> None:
    from selenium.webdriver.support.ui import Select

    _open(browser, page.url)
    select = Select(browser.find_element("id", "stored-select"))
    assert len(select.options) == 1 + sessions.n_sessions
    browser.execute_script("document.body.dataset.status = 'sent'")
    select.select_by_value("2")
    _wait(browser, lambda: _status(browser) == "result", what="stored session drawn")
    truth = browser.execute_script("return heimdallPage.current.truth.getLatLng()")
    assert truth["lat"] == pytest.approx(float(sessions.tx_lat_deg[2]), abs=1e-9)
    assert truth["lng"] == pytest.approx(float(sessions.tx_lon_deg[2]), abs=1e-9)
    assert "error" in browser.find_element("id", "result").text


@pytest.mark.parametrize("size", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_layout_fits_the_viewport(browser, page, size: tuple[int, int]) -> None:
    browser.set_window_size(*size)
    try:
        _open(browser, page.url)
        geo = browser.execute_script(
            "const r = (id) => document.getElementById(id).getBoundingClientRect();"
            "return {map: r('map'), panel: r('panel'), vw: window.innerWidth,"
            " sw: document.documentElement.scrollWidth}"
        )
        assert geo["sw"] <= geo["vw"]  # no horizontal scrolling
        assert geo["map"]["width"] >= 0.55 * geo["vw"] and geo["map"]["height"] >= 300
        if size[0] >= 1000:  # side by side
            assert geo["panel"]["left"] >= geo["map"]["right"] - 1
        else:  # stacked: panel below the map, full width
            assert (
                geo["panel"]["top"] >= geo["map"]["bottom"] - 1 and geo["panel"]["width"] >= 0.95 * geo["vw"]
            )
    finally:
        browser.set_window_size(1280, 800)


def test_token_is_asked_for_and_sent(browser, page, sigmf_session: Path) -> None:
    assert httpx.get(page.url + "/v1/model").status_code == 401
    browser.get(page.url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(page.url + "/")
    _wait(browser, lambda: _status(browser) == "token", what="the page asking for a token")
    form = browser.find_element("id", "token-form")
    assert form.is_displayed() and browser.find_element("id", "token").get_attribute("type") == "password"
    _give_token(browser, "wrong-token-0123456789", "token")
    assert form.is_displayed()
    _give_token(browser, TOKEN, "ready")
    assert not form.is_displayed()
    _upload(browser, sorted(sigmf_session.iterdir()), "result")


def _document(driver, path: Path) -> list[str]:
    """Open a self-contained document from disk; its console errors other than tile requests."""
    driver.get_log("browser")
    driver.get(path.as_uri())
    _wait(driver, lambda: driver.execute_script("return !!window.heimdallDocument"), what="document drawn")
    hosts = set(
        driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => new URL(e.name).host)"
        )
    )
    assert hosts <= {"tile.openstreetmap.org"}  # all else is inlined
    logs = driver.get_log("browser")
    return [
        e["message"] for e in logs if e["level"] == "SEVERE" and "tile.openstreetmap.org" not in e["message"]
    ]


def test_locate_html_draws_the_answer(
    browser, stored: Path, model_path: Path, predictor, sessions, tmp_path
) -> None:
    from heimdall.cli import main

    out = tmp_path / "answer.html"
    main(["locate", f"{stored}#1", "--model", str(model_path), "--html", str(out), "--json"])
    assert _document(browser, out) == []
    mean, _ = predictor.predict(sessions.select([1]))
    lat, lon = predictor.frame.to_latlon(mean[0, 0], mean[0, 1])
    marker = browser.execute_script("return heimdallDocument.drawn.mapPoint.getLatLng()")
    assert marker["lat"] == pytest.approx(float(lat), abs=1e-6) and marker["lng"] == pytest.approx(
        float(lon), abs=1e-6
    )
    assert browser.find_elements("css selector", "img.heimdall-heat")
    assert browser.find_elements("css selector", "path.heimdall-coast")
    assert len(browser.find_elements("css selector", "path.heimdall-hpd")) >= 2
    assert len(browser.find_elements("css selector", "#modes tbody tr")) >= 1
    truth = browser.execute_script("return heimdallDocument.drawn.truth.getLatLng()")
    assert truth["lat"] == pytest.approx(float(sessions.tx_lat_deg[1]), abs=1e-9)


def test_report_map_shows_the_test_sessions(
    browser, stored: Path, model_path: Path, sessions, tmp_path
) -> None:
    from heimdall.cli import main

    out = tmp_path / "report"
    main(
        [
            "evaluate",
            "--data",
            str(stored),
            "--model",
            str(model_path),
            "--out",
            str(out),
            "--baselines",
            "none",
        ]
    )
    assert _document(browser, out / "report.html") == []
    assert len(browser.find_elements("css selector", "path.heimdall-estimate")) == sessions.n_sessions
    assert len(browser.find_elements("css selector", ".heimdall-truth")) == sessions.n_sessions
    assert browser.find_elements("css selector", "path.heimdall-coast")


def test_page_module_files_are_packaged() -> None:
    """The page's own files exist and index.html references only local paths."""
    static = VENDOR.parent
    html = (static / "index.html").read_text()
    for name in (
        "page.js",
        "heimdall-map.js",
        "page.css",
        "vendor/leaflet.js",
        "vendor/topojson-client.min.js",
    ):
        assert f"static/{name}" in html
    assert "http" not in html
