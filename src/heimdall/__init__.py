"""Heimdall: locate a radio transmitter from captures of several web receivers.

The package is organised by stage of the data flow: ``network`` (receiver
networks and geodesy), ``sim`` (world simulator), ``data`` (session store and
interchange), ``models`` (features, LocalizationNet, training), ``eval``
(baselines, bounds, reports), ``export`` (ONNX, object store, registry) and
``serve`` (the inference service).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("heimdall")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
