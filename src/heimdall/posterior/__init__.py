"""The grid posterior of the transmitter position: one home for every estimator that has one.

Stage: above ``data``, ``sim`` and ``network``; below ``models``, ``eval``,
``export`` and ``serve`` (the oracle, the classical estimators, radio maps,
the model head, ``locate`` and the service all use it).

Modules
-------
- :mod:`~heimdall.posterior.measure`: band power, noise floor and SNR of a capture (the one definition).
- :mod:`~heimdall.posterior.grid`: :class:`SearchGrid` (cell centres, north-major) and grid moments.
- :mod:`~heimdall.posterior.likelihood`: the received-power likelihood, P0 marginalised, censored terms.
- :mod:`~heimdall.posterior.density`: HPD levels / thresholds / areas, log score, sub-cell peak refinement.
- :mod:`~heimdall.posterior.refine`: coarse-to-fine posteriors (sub-cells where the mass lies).
- :mod:`~heimdall.posterior.modes`: modes and their mass (basins of steepest ascent).
- :mod:`~heimdall.posterior.regions`: HPD regions as polygons and GeoJSON MultiPolygons.
- :mod:`~heimdall.posterior.map`: :class:`PosteriorMap`, one session's posterior with all of the above.

The likelihood API (stable; a radio map plugs in its own fields)::

    from heimdall.posterior.likelihood import power_observations, log_posterior_grid

    obs = power_observations(band_db, noise_db, heard, online, clipped, sigma_db, detection_snr_db)
    lp = log_posterior_grid(
        mean_rx_db,      # (R, G) | (H, R, G) | (H, B, R, G): predicted received power at each
                         #   grid point for P0 = 0 dB (path loss + field + gain), dB
        var_db2,         # its variance, broadcastable to mean_rx_db (0 = known exactly), dB²
        obs,             # PowerObservations of B sessions (measurement σ in obs.weight = 1/σ²)
        p0_range_db,     # (lo, hi): uniform prior of the transmit power, same reference as y − mean
        log_weight=None, # (H,) log weights of alternative fields (e.g. transmitter heights)
        log_prior=None,  # (G,) log prior of the position; None = flat
        p0_nodes=8,      # quadrature nodes of P0 for censored (silent / clipped) terms
    )                    # -> (B, G) unnormalised log posterior, nats
    post = PosteriorMap.from_log_posterior(grid, lp[b], frame)
    post.map_km(), post.mean_cov(), post.modes(3), post.hpd_geojson(0.9), post.hpd_area_km2(0.9)
    post.log_score(truth_km)
"""

from heimdall.posterior.grid import SearchGrid, grid_moments, search_grid
from heimdall.posterior.likelihood import PowerObservations, log_posterior_grid, power_observations
from heimdall.posterior.map import PosteriorMap

__all__ = [
    "PosteriorMap",
    "PowerObservations",
    "SearchGrid",
    "grid_moments",
    "log_posterior_grid",
    "power_observations",
    "search_grid",
]
