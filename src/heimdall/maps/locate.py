"""``heimdall map locate``: one session located with a fitted radio map — the posterior, not one ellipse.

The answer (:class:`heimdall.posterior.map.PosteriorMap` of
:class:`heimdall.maps.estimator.RadioMapLocator`) holds the posterior mode
(MAP, refined below the grid step), the posterior mean and covariance, the top
three modes with their probability mass, and the 50 % / 90 % highest-density
regions with their areas (km²), in lat/lon; for a session with a known
transmitter position, the truth beside it: the error of the MAP and of the
mean (km), the truth's HPD level and the log density there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from heimdall.data.session import SessionBatch
from heimdall.errors import HeimdallError
from heimdall.maps.estimator import RadioMapLocator
from heimdall.maps.fit import RadioMap
from heimdall.maps.observations import UNUSED


def locate_with_map(rmap: RadioMap, batch: SessionBatch) -> dict[str, Any]:
    """Posterior answer (JSON-ready) for the first session of ``batch`` with the maps ``rmap``."""
    obs = rmap.observe(batch.select([0]))
    if not np.any(obs.state[0] != UNUSED):
        session = int(batch.session_id[0])
        stations = sorted({str(s) for s in batch.rx_station[0] if str(s)})
        on_network = [s for s in stations if s in set(rmap.network.ids)]
        if on_network:
            raise HeimdallError(
                f"session {session}: none of its receivers in the map's network {rmap.network.name!r} "
                f"({', '.join(on_network)}) is online: no power was measured to locate from"
            )
        raise HeimdallError(
            f"session {session}: none of its receivers {stations} is in the map's network "
            f"{rmap.network.name!r}"
        )
    post = RadioMapLocator(rmap).posterior_map(obs)
    frame = rmap.network.frame
    summary = post.summary()
    to_ll = lambda e, n: [float(v) for v in frame.to_latlon(np.float64(e), np.float64(n))]  # noqa: E731
    out: dict[str, Any] = {
        **summary,
        "session_id": int(batch.session_id[0]),
        "map_latlon": to_ll(*summary["map_km"]),
        "mean_latlon": to_ll(*summary["mean_km"]),
        "modes": [
            {
                "lat_deg": to_ll(m["east_km"], m["north_km"])[0],
                "lon_deg": to_ll(m["east_km"], m["north_km"])[1],
                "mass": float(m["mass"]),
                "east_km": m["east_km"],
                "north_km": m["north_km"],
            }
            for m in summary["modes"]
        ],
        "n_heard": int(np.sum(obs.state[0] == 1)),
        "map_uri_labels": rmap.n_labels,
    }
    truth = obs.pos_km[0]
    if np.all(np.isfinite(truth)):
        out["truth_latlon"] = [float(batch.tx_lat_deg[0]), float(batch.tx_lon_deg[0])]
        out["map_error_km"] = float(np.hypot(*(np.asarray(summary["map_km"]) - truth)))
        out["mean_error_km"] = float(np.hypot(*(np.asarray(summary["mean_km"]) - truth)))
        out["truth_hpd_level"] = post.hpd_level_of(truth)
        out["truth_log_density"] = post.log_score(truth)
    return out


def summary_lines(r: dict[str, Any]) -> list[str]:
    """Human-readable answer: MAP, modes, 90 % region, truth beside them."""
    lines = [
        f"session {r['session_id']}: {r['n_heard']} receivers heard; map of {r['map_uri_labels']} labels",
        f"MAP  {r['map_latlon'][0]:.5f}, {r['map_latlon'][1]:.5f}"
        + (f"   (error {r['map_error_km']:.1f} km)" if "map_error_km" in r else ""),
        f"mean {r['mean_latlon'][0]:.5f}, {r['mean_latlon'][1]:.5f}"
        + (f"   (error {r['mean_error_km']:.1f} km)" if "mean_error_km" in r else ""),
    ]
    for k, m in enumerate(r["modes"], 1):
        lines.append(f"mode {k}: {m['lat_deg']:.5f}, {m['lon_deg']:.5f}  mass {m['mass']:.0%}")
    lines.append(f"50 % region {r['hpd50_area_km2']:.0f} km², 90 % region {r['hpd90_area_km2']:.0f} km²")
    if "truth_latlon" in r:
        inside = "inside" if r["truth_hpd_level"] <= 0.9 else "outside"
        lines.append(
            f"truth {r['truth_latlon'][0]:.5f}, {r['truth_latlon'][1]:.5f}: {inside} the 90 % region "
            f"(HPD level {r['truth_hpd_level']:.2f})"
        )
    return lines
