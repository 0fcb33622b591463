"""Self-contained HTML maps: one located session (``heimdall locate --html``) and the report's sessions.

The drawing is the map page's own (``heimdall-map.js``, Leaflet, topojson-client and
Natural Earth borders and coastlines from world-atlas); here every file is inlined,
so a document opens from disk with no server. Without internet it still shows
land, coastlines, borders and everything drawn; online it adds the tile basemap
(OpenStreetMap's standard tiles, with attribution). The web assets are package
data of ``heimdall.serve`` (``static/``, vendor files copied from npm by
``make vendor``); this module only reads them, so the evaluation report needs
no serving code.

Data the drawing takes (JSON, degrees, km, m):

- one session: ``{"result": <the map page's answer: latitude, longitude, ellipses,
  geojson, receivers, posterior, truth>}``;
- evaluation sessions: ``{"receivers": [{"id", "latitude", "longitude"}],
  "sessions": [{"id", "truth", "estimate", "ellipse_1sigma", "ellipse_95", "error_km"}]}``,
  ellipses as rings of [lat, lon].
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.errors import HeimdallError
from heimdall.models.ellipse import SCALE_95, ellipse_polygon_km
from heimdall.network.geodesy import LocalFrame

#: The web assets (package data of heimdall.serve).
STATIC_DIR = Path(str(resources.files("heimdall") / "serve" / "static"))
#: Basemap of documents: OpenStreetMap's standard tiles (used only when the reader is online).
DOC_BASEMAP = {
    "tiles": "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
    "attribution": "© OpenStreetMap contributors",
}
_SCRIPTS = ("vendor/leaflet.js", "vendor/topojson-client.min.js", "heimdall-map.js")
_STYLES = ("vendor/leaflet.css", "page.css")
_ATLAS = "vendor/countries-50m.json"


def script_json(obj: Any) -> str:
    """JSON safe inside an HTML ``<script type="application/json">`` element."""
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    path = STATIC_DIR / name
    if not path.is_file():
        raise HeimdallError(f"{path}: map assets missing; run `make vendor` (copies them from npm)")
    text = path.read_text(encoding="utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise HeimdallError(f"{path}: cannot be inlined in HTML (holds a closing script or style tag)")
    return text


def assets_available() -> bool:
    """Whether the vendor files are in the package (``make vendor`` ran)."""
    return all((STATIC_DIR / n).is_file() for n in (*_SCRIPTS, *_STYLES, _ATLAS))


def _inline(data: dict[str, Any]) -> tuple[str, str]:
    """(styles, scripts) elements: inlined assets, the atlas and ``data``."""
    styles = "".join(f"<style>{_asset(n)}</style>" for n in _STYLES)
    scripts = (
        f'<script id="heimdall-data" type="application/json">{script_json(data)}</script>'
        f'<script id="heimdall-atlas" type="application/json">{_asset(_ATLAS)}</script>'
        + "".join(f"<script>{_asset(n)}</script>" for n in _SCRIPTS)
    )
    return styles, scripts


def session_document(result: dict[str, Any], title: str) -> str:
    """A full-page HTML document of one located session: the map beside the answer's tables."""
    styles, scripts = _inline({"result": result, "basemap": DOC_BASEMAP})
    t = html.escape(title)
    return (
        '<!DOCTYPE html><html lang="en" class="heimdall-page"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{t}</title>{styles}</head><body>"
        f'<header class="bar"><h1>Heimdall</h1><span class="muted">{t}</span></header>'
        '<main class="layout"><div id="heimdall-map" role="region" aria-label="Map of the answer"></div>'
        '<aside class="heimdall-panel" id="heimdall-result" aria-label="Answer"></aside></main>'
        f"{scripts}</body></html>"
    )


def report_section(data: dict[str, Any]) -> str:
    """An HTML fragment (heading, map, inlined assets) for the evaluation report."""
    styles, scripts = _inline({**data, "basemap": DOC_BASEMAP})
    n = len(data["sessions"])
    return (
        f"<h2>map of {n} test sessions</h2>"
        "<p>Truth ★, estimate (dot) with its 1σ (solid) and 95 % (dotted) ellipse, receivers (grey). "
        "Land, coastlines and borders: Natural Earth; map tiles when online.</p>"
        f'{styles}<div class="heimdall-doc"><div id="heimdall-map" role="region" '
        f'aria-label="Map of test sessions"></div></div>{scripts}'
    )


def _ring(frame: LocalFrame, mean: np.ndarray, cov: np.ndarray, k: float, n: int = 48) -> list[list[float]]:
    poly = ellipse_polygon_km(mean, cov, k, n)
    lat, lon = frame.to_latlon(poly[:, 0], poly[:, 1])
    return [[round(float(a), 6), round(float(b), 6)] for a, b in zip(lat, lon, strict=True)]


def sessions_data(
    frame: LocalFrame,
    rx_km: np.ndarray,
    truth_km: np.ndarray,
    mean_km: np.ndarray,
    cov_km2: np.ndarray | None,
    n_show: int = 40,
    seed: int = 0,
) -> dict[str, Any]:
    """The drawing's data for evaluation sessions (a seeded sample of ``n_show``), local km in.

    Parameters
    ----------
    frame
        The local frame of the km coordinates.
    rx_km
        Receiver positions (N, R, 2), km (NaN for unused slots).
    truth_km, mean_km
        Truth and estimate (N, 2), km.
    cov_km2
        Covariances (N, 2, 2), km², or None (no ellipses).

    """
    pts = rx_km.reshape(-1, 2)
    pts = np.unique(np.round(pts[np.all(np.isfinite(pts), axis=1)], 3), axis=0)
    lat, lon = frame.to_latlon(pts[:, 0], pts[:, 1])
    receivers = [
        {"id": f"rx {k + 1}", "latitude": float(a), "longitude": float(b)}
        for k, (a, b) in enumerate(zip(lat, lon, strict=True))
    ]
    ok = np.flatnonzero(np.all(np.isfinite(truth_km), axis=1) & np.all(np.isfinite(mean_km), axis=1))
    rng = np.random.default_rng(seed)
    show = np.sort(rng.choice(ok, size=min(n_show, ok.size), replace=False)) if ok.size else ok
    sessions = []
    for i in show:
        t_lat, t_lon = frame.to_latlon(truth_km[i, 0], truth_km[i, 1])
        e_lat, e_lon = frame.to_latlon(mean_km[i, 0], mean_km[i, 1])
        s: dict[str, Any] = {
            "id": int(i),
            "truth": {"latitude": float(t_lat), "longitude": float(t_lon)},
            "estimate": {"latitude": float(e_lat), "longitude": float(e_lon)},
            "error_km": float(np.hypot(*(mean_km[i] - truth_km[i]))),
        }
        if cov_km2 is not None and np.all(np.isfinite(cov_km2[i])):
            s["ellipse_1sigma"] = _ring(frame, mean_km[i], cov_km2[i], 1.0)
            s["ellipse_95"] = _ring(frame, mean_km[i], cov_km2[i], SCALE_95)
        sessions.append(s)
    return {"receivers": receivers, "sessions": sessions}


def report_map(result: Any, n_show: int = 40) -> str:
    """The report's map section for an :class:`~heimdall.eval.evaluate.EvalResult` ('' without estimates).

    Draws the model's estimates when present, else the first estimator with a covariance
    (else the first). Without the web assets it says how to build them.
    """
    if not result.estimates:
        return ""
    if not assets_available():
        return "<h2>map of test sessions</h2><p>Map assets not built: run <code>make vendor</code>.</p>"
    names = list(result.estimates)
    with_cov = [n for n in names if result.estimates[n].cov_km2 is not None]
    name = "model" if "model" in names else (with_cov or names)[0]
    est = result.estimates[name]
    data = sessions_data(result.frame, result.rx_km, result.truth_km, est.mean_km, est.cov_km2, n_show)
    return report_section({**data, "estimator": name})
