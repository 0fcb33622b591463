"""The ``heimdall`` command line: parses arguments and calls the stages."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer.exceptions import TyperException

from heimdall.errors import HeimdallError

app = typer.Typer(
    help="Heimdall: locate a radio transmitter from simultaneous web-receiver captures.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
networks_app = typer.Typer(help="Receiver networks: list the packaged ones, show one.", no_args_is_help=True)
app.add_typer(networks_app, name="networks", rich_help_panel="Data")
console = Console(stderr=True)
#: Width of tables written to a pipe or a log file (characters): no column is cut.
_PIPED_WIDTH = 200


def stdout_console() -> Console:
    """A console on stdout; piped or logged, wide enough that tables keep whole headers."""
    return Console() if sys.stdout.isatty() else Console(width=_PIPED_WIDTH)


def progress_bar() -> Progress:
    """A rich progress bar on stderr (stdout stays clean for --json)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@networks_app.command("list")
def networks_list() -> None:
    """List the networks packaged with Heimdall."""
    from heimdall.network import list_networks, load_network

    table = Table("name", "receivers", "description")
    for name in list_networks():
        net = load_network(name)
        table.add_row(name, str(len(net.receivers)), net.description)
    stdout_console().print(table)


@networks_app.command("show")
def networks_show(name: Annotated[str, typer.Argument(help="Packaged network name or YAML path.")]) -> None:
    """Show a network's receivers and reference point."""
    from heimdall.network import load_network

    net = load_network(name)
    table = Table("id", "name", "lat", "lon", "east km", "north km", "height m", "NF dB", "bands",
                  title=f"{net.name} (reference {net.reference.lat}, {net.reference.lon})")  # fmt: skip
    for rx, (e, n) in zip(net.receivers, net.positions_km, strict=True):
        table.add_row(rx.id, rx.name, f"{rx.lat:.3f}", f"{rx.lon:.3f}", f"{e:.1f}", f"{n:.1f}",
                      f"{rx.height_m:.0f}", f"{rx.noise_figure_db:.1f}", ",".join(rx.bands))  # fmt: skip
    stdout_console().print(table)


@app.command(rich_help_panel="Data")
def simulate(
    out: Annotated[str, typer.Option("--out", help="Output dataset (folder or URI).")],
    network: Annotated[
        str, typer.Option(help="Packaged network name or YAML path; family:<name or YAML> draws networks.")
    ] = "nw-italy",
    sessions: Annotated[int, typer.Option(help="Number of sessions.")] = 100,
    world_seed: Annotated[
        str, typer.Option(help="World seed (gains, noise, shadowing maps), a range 0-99, or random.")
    ] = "0",
    seed: Annotated[int, typer.Option(help="Session seed.")] = 0,
    world: Annotated[Path | None, typer.Option(help="World YAML overriding the reference world.")] = None,
    synchronised: Annotated[bool, typer.Option(help="GNSS-synchronised receivers.")] = False,
    duration_s: Annotated[float | None, typer.Option(help="Capture length, s.")] = None,
    shard_size: Annotated[int, typer.Option(help="Sessions per shard.")] = 256,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes (0 = all cores).")] = 0,
    positions: Annotated[
        str, typer.Option(help="Transmitter positions: uniform, or clustered (towns, roads, fixed stations).")
    ] = "uniform",
    sessions_per_world: Annotated[
        int, typer.Option(help="With world / network families: sessions per drawn world.")
    ] = 256,
    mode: Annotated[
        str | None, typer.Option(help="Only this signal mode: nbfm, cw, fsk or aprs (default: the mix).")
    ] = None,
) -> None:
    """Simulate sessions of the world and write them to a session store (resumable)."""
    from heimdall.sim.simulate_job import run_simulation

    if sessions < 0:
        raise HeimdallError(f"--sessions must be >= 0, got {sessions}")
    if shard_size < 1:
        raise HeimdallError(f"--shard-size must be >= 1, got {shard_size}")
    start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("simulating", total=sessions)
        summary = run_simulation(
            out=out, network=network, sessions=sessions, world_seed=world_seed, seed=seed,
            world_path=world, synchronised=synchronised, duration_s=duration_s,
            shard_size=shard_size, workers=workers or None,
            progress=lambda n: bar.advance(task, n), positions=positions, world_block=sessions_per_world,
            mode=mode,
        )  # fmt: skip
    elapsed = time.perf_counter() - start
    console.print(
        f"wrote {summary['sessions']} sessions to {out} "
        f"({summary['resumed_shards']} shards resumed) in {elapsed:.1f} s"
    )
    stdout_console().print_json(json.dumps(summary))


@app.command(rich_help_panel="Model")
def train(
    config: Annotated[Path, typer.Option("--config", help="Training config YAML (e.g. configs/quick.yaml).")],
    data: Annotated[
        str | None, typer.Option("--data", help="Stored training set URI (default: simulate).")
    ] = None,
    val: Annotated[str | None, typer.Option("--val", help="Stored validation set URI.")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Wall-clock limit of training, minutes.")] = None,
    max_epochs: Annotated[int | None, typer.Option(help="Maximum number of epochs.")] = None,
    tracking_uri: TrackingOpt = None,
    accelerator: Annotated[str | None, typer.Option(help="cpu, gpu or auto.")] = None,
    devices: Annotated[int | None, typer.Option(help="Number of devices (processes for DDP).")] = None,
    strategy: Annotated[str | None, typer.Option(help="Lightning strategy, e.g. ddp.")] = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue from this checkpoint (e.g. runs/<id>/last.ckpt).")
    ] = None,
    out_dir: Annotated[str | None, typer.Option(help="Checkpoint folder (default: the config's).")] = None,
    summary: Annotated[Path | None, typer.Option(help="Write run id, checkpoint, metrics as JSON.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a model; log to MLflow; print the run id, the checkpoint and validation metrics.

    A config with top-level ``kind: grid-posterior`` (configs/gridnet.yaml) pretrains the
    production grid-posterior model on CPU; any other config trains the Gaussian LocalizationNet.
    """
    from heimdall.models.config import load_config
    from heimdall.models.gridnet_config import is_gridnet_config
    from heimdall.models.train import run_training

    if summary is not None and (summary.is_dir() or not summary.parent.is_dir()):
        raise HeimdallError(f"--summary {str(summary)!r}: not a file path in an existing folder")
    if is_gridnet_config(config):
        if resume is not None:
            raise HeimdallError("--resume: a grid-posterior config has no resumable checkpoint; rerun it")
        device_opts = {"--accelerator": accelerator, "--devices": devices, "--strategy": strategy}
        if given_device := [k for k, v in device_opts.items() if v is not None]:
            raise HeimdallError(
                f"{', '.join(given_device)}: a grid-posterior config trains on one CPU process "
                "(its threads: trainer.cpu_threads); leave these out"
            )
        given = {"max_minutes": max_minutes, "max_epochs": max_epochs, "out_dir": out_dir}
        _train_gridnet(config, data, val, {k: v for k, v in given.items() if v is not None}, tracking_uri,
                       summary, progress)  # fmt: skip
        return
    cfg = load_config(config)
    pick = {k: v for k, v in {"train": data, "val": val}.items() if v is not None}
    given = {"max_minutes": max_minutes, "max_epochs": max_epochs, "accelerator": accelerator,
             "devices": devices, "strategy": strategy, "out_dir": out_dir}  # fmt: skip
    trainer = {k: v for k, v in given.items() if v is not None}
    tracking = {"uri": tracking_uri} if tracking_uri else {}
    cfg = cfg.with_overrides(data=pick, trainer=trainer, tracking=tracking)
    result = run_training(cfg, resume=resume, progress=progress)
    if result.run_id is None:  # a non-zero DDP rank
        return
    console.print(f"parameters: {result.n_parameters:,} ({result.n_parameters * 4 / 1e6:.2f} MB float32)")
    console.print(f"MLflow run id: {result.run_id}")
    console.print(
        f"best checkpoint: {result.best_checkpoint} (covariance temperature {result.temperature:.3f})"
    )
    table = Table("validation metric", "calibrated", "raw", title="final validation metrics")
    for key, value in result.metrics.items():
        table.add_row(key, f"{value:.4g}", f"{result.raw_metrics.get(key, float('nan')):.4g}")
    stdout_console().print(table)
    if summary is not None:
        fields = {"run_id": result.run_id, "best_checkpoint": result.best_checkpoint,
                  "temperature": result.temperature, "n_parameters": result.n_parameters,
                  "val_metrics": result.metrics, "val_metrics_raw": result.raw_metrics,
                  "train_seconds": result.train_seconds, "sessions_seen": result.sessions_seen}  # fmt: skip
        summary.write_text(json.dumps(fields, indent=1))


def _train_gridnet(
    config: Path, data: str | None, val: str | None, trainer: dict, tracking_uri: str | None,
    summary: Path | None, progress: bool,
) -> None:  # fmt: skip
    """``train`` of a grid-posterior config: pretrain, then print the learnt parameters and figures."""
    from heimdall.models.gridnet_config import load_gridnet_config
    from heimdall.models.gridnet_train import run_gridnet_training

    cfg = load_gridnet_config(config)
    pick = {k: v for k, v in {"train": data, "val": val}.items() if v is not None}
    tracking = {"uri": tracking_uri} if tracking_uri else {}
    cfg = cfg.with_overrides(data=pick, trainer=trainer, tracking=tracking)
    result = run_gridnet_training(cfg, progress=progress)
    console.print(f"MLflow run id: {result.run_id}")
    console.print(f"checkpoint: {result.checkpoint} ({result.n_train} train, {result.n_val} val sessions)")
    table = Table("parameter", "start", "learnt", title="grid-posterior model: learnt parameters")
    for key, value in result.parameters.items():
        table.add_row(key, f"{result.start_parameters[key]:.3f}", f"{value:.3f}")
    for key, value in result.val_metrics.items():
        table.add_row(f"val {key}", f"{result.start_val_metrics[key]:.3f}", f"{value:.3f}")
    table.add_row("seconds (data, measure, train, total)", "",
                  ", ".join(f"{result.seconds.get(k, float('nan')):.0f}" for k in ("data", "measure", "train",
                                                                                    "total")))  # fmt: skip
    stdout_console().print(table)
    if summary is not None:
        fields = {"run_id": result.run_id, "checkpoint": result.checkpoint, "parameters": result.parameters,
                  "start_parameters": result.start_parameters, "val_metrics": result.val_metrics,
                  "start_val_metrics": result.start_val_metrics, "seconds": result.seconds}  # fmt: skip
        summary.write_text(json.dumps(fields, indent=1))


data_app = typer.Typer(
    help="Session stores (local or s3://): describe, import SigMF / acquisition folders, export, split.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data", rich_help_panel="Data")
EndpointOpt = Annotated[
    str | None, typer.Option("--endpoint-url", help="S3 endpoint (MinIO ...); default AWS_ENDPOINT_URL.")
]
TrackingOpt = Annotated[str | None, typer.Option(help="MLflow tracking URI (default sqlite:///mlruns.db).")]
StorageOpt = Annotated[
    list[str] | None, typer.Option("--storage-option", help="Object-store option KEY=VALUE (repeatable).")
]


def _options(endpoint_url: str | None, storage_option: list[str] | None) -> dict:
    from heimdall.data.fs import parse_storage_options

    return parse_storage_options(endpoint_url, storage_option)


@data_app.command("info")
def data_info(
    uri: Annotated[str, typer.Argument(help="Store: folder or s3://bucket/prefix.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    max_sessions: Annotated[
        int, typer.Option(min=0, help="Sessions whose IQ is measured for the SNR.")
    ] = 2000,
    endpoint_url: EndpointOpt = None,
    storage_option: StorageOpt = None,
) -> None:
    """Describe a store: sessions, receivers, states, measured SNR, labelled fraction, content hash."""
    from heimdall.data.info import store_info

    info = store_info(uri, _options(endpoint_url, storage_option), max_sessions=max_sessions)
    if as_json:
        stdout_console().print_json(json.dumps(info))
        return
    table = Table("property", "value", title=f"session store {uri}")
    for key, value in info.items():
        if key != "provenance":
            table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    stdout_console().print(table)


def _run_import(kind: str, src: Path, out: str, shard_size: int, sample_rate: float | None,
                samples: int | None, opts: dict) -> None:  # fmt: skip
    from heimdall.data.importer import import_sessions

    if kind == "sigmf":
        from heimdall.data.sigmf_io import read_sigmf_dir

        sessions, metadata = read_sigmf_dir(src)
    else:
        from heimdall.data.acquisition import read_acquisition_dir

        sessions, metadata = read_acquisition_dir(src), {}
    metadata = {**metadata, "source": {"format": kind, "path": str(src)}}
    with progress_bar() as bar:
        task = bar.add_task(f"importing {kind}", total=len(sessions))
        summary = import_sessions(sessions, out, metadata, shard_size=shard_size, rate_hz=sample_rate,
                                  n_samples=samples, storage_options=opts,
                                  progress=lambda n: bar.advance(task, n))  # fmt: skip
    console.print(f"imported {summary['sessions']} sessions into {out} ({summary['n_samples']} samples each)")
    stdout_console().print_json(json.dumps(summary))


ShardOpt = Annotated[int, typer.Option(help="Sessions per shard.")]
RateOpt = Annotated[
    float | None, typer.Option(help="Resample every session to this rate, Hz (default: lowest).")
]
SamplesOpt = Annotated[int | None, typer.Option(help="Samples kept per capture (default: the shortest).")]


@data_app.command("import-sigmf")
def data_import_sigmf(
    directory: Annotated[Path, typer.Argument(help="Folder of SigMF collections (one per session).")],
    out: Annotated[str, typer.Option("--out", help="Output store (folder or s3://bucket/prefix).")],
    shard_size: ShardOpt = 64,
    sample_rate: RateOpt = None,
    samples: SamplesOpt = None,
    endpoint_url: EndpointOpt = None,
    storage_option: StorageOpt = None,
) -> None:
    """Import SigMF recordings (a session = a collection, a receiver = a recording) into a store."""
    _run_import(
        "sigmf", directory, out, shard_size, sample_rate, samples, _options(endpoint_url, storage_option)
    )


@data_app.command("import-heimdall")
def data_import_heimdall(
    directory: Annotated[
        Path, typer.Argument(help="Acquisition folder: sessions/{id}/websdr_{n}.npy + metadata.json.")
    ],
    out: Annotated[str, typer.Option("--out", help="Output store (folder or s3://bucket/prefix).")],
    shard_size: ShardOpt = 64,
    sample_rate: RateOpt = None,
    samples: SamplesOpt = None,
    endpoint_url: EndpointOpt = None,
    storage_option: StorageOpt = None,
) -> None:
    """Import the original acquisition layout (complex64 .npy per receiver + JSON metadata) into a store."""
    _run_import(
        "heimdall", directory, out, shard_size, sample_rate, samples, _options(endpoint_url, storage_option)
    )


@data_app.command("export-sigmf")
def data_export_sigmf(
    uri: Annotated[str, typer.Argument(help="Store: folder or s3://bucket/prefix.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    limit: Annotated[int | None, typer.Option(help="Export only the first N sessions.")] = None,
    endpoint_url: EndpointOpt = None,
    storage_option: StorageOpt = None,
) -> None:
    """Export sessions as SigMF: one collection per session, one ci16_le recording per receiver."""
    from heimdall.data.sigmf_io import export_sigmf

    with progress_bar() as bar:
        task = bar.add_task("exporting SigMF", total=limit)
        summary = export_sigmf(uri, out, limit=limit, storage_options=_options(endpoint_url, storage_option),
                               progress=lambda n: bar.advance(task, n))  # fmt: skip
    console.print(f"exported {summary['sessions']} sessions to {out}")
    stdout_console().print_json(json.dumps(summary))


@data_app.command("split")
def data_split(
    uri: Annotated[str, typer.Argument(help="Store to split: folder or s3://bucket/prefix.")],
    out: Annotated[str, typer.Option("--out", help="Prefix: writes PREFIX/train, PREFIX/val, PREFIX/test.")],
    fractions: Annotated[str, typer.Option(help="train,val,test fractions (sum 1).")] = "0.8,0.1,0.1",
    seed: Annotated[int, typer.Option(help="Seed of the session permutation.")] = 0,
    shard_size: ShardOpt = 256,
    endpoint_url: EndpointOpt = None,
    storage_option: StorageOpt = None,
) -> None:
    """Split a store by session into train / val / test stores (seeded; disjoint; resumable)."""
    from heimdall.data.split import parse_fractions, split_store

    fracs = parse_fractions(fractions)
    with progress_bar() as bar:
        task = bar.add_task("splitting", total=None)
        summary = split_store(uri, out, fracs, seed=seed, shard_size=shard_size,
                              storage_options=_options(endpoint_url, storage_option),
                              progress=lambda n: bar.advance(task, n))  # fmt: skip
    console.print(", ".join(f"{k}: {summary[k]['sessions']} sessions" for k in ("train", "val", "test")))
    stdout_console().print_json(json.dumps(summary))


@data_app.command("label")
def data_label(
    uri: Annotated[str, typer.Argument(help="Session store of 144.800 MHz captures: folder or s3:// URI.")],
    out: Annotated[str, typer.Option("--out", help="Labelled session store to write (resumable).")],
    max_radius_km: Annotated[float, typer.Option(help="Largest 99 % label radius kept, km.")] = 1.0,
    max_range_km: Annotated[float, typer.Option(help="Farthest a decoding receiver may be, km.")] = 250.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    endpoint_url: EndpointOpt = None,
    storage_option: StorageOpt = None,
) -> None:
    """Label sessions from APRS position beacons decoded by Dire Wolf (docs/DATA.md, Labels from APRS)."""
    from heimdall.labels.job import run_label
    from heimdall.labels.policy import LabelPolicy

    policy = LabelPolicy(max_range_km=max_range_km, max_radius_km=max_radius_km)
    options = _options(endpoint_url, storage_option)
    if as_json:
        summary = run_label(uri, out, policy, storage_options=options)
    else:
        with progress_bar() as bar:
            task = bar.add_task("labelling", total=None)
            summary = run_label(uri, out, policy, options, progress=lambda n: bar.advance(task, n))
        console.print(f"{summary['n_labelled']} of {summary['n_sessions']} sessions labelled into {out}")
    print(json.dumps(summary)) if as_json else stdout_console().print_json(json.dumps(summary))


map_app = typer.Typer(
    help="Radio maps learned from labelled sessions: fit, update, show.", no_args_is_help=True
)
app.add_typer(map_app, name="map", rich_help_panel="Model")


@map_app.command("fit")
def map_fit(
    store: Annotated[str, typer.Argument(help="Labelled session store (folder or s3:// URI).")],
    out: Annotated[str, typer.Option("--out", help="Map folder to write (local or s3://).")],
    network: Annotated[
        str | None, typer.Option(help="Network name or YAML (default: the store's network).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Map settings YAML (configs/maps.yaml).")
    ] = None,
    update: Annotated[
        str | None, typer.Option("--update", help="Previous map URI: add the store's new sessions to it.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Grid-posterior model whose learnt law and statistics are the prior.")
    ] = None,
    tracking_uri: TrackingOpt = None,
    endpoint_url: EndpointOpt = None,
    storage_option: StorageOpt = None,
) -> None:
    """Fit per-receiver path loss and kriged fields from labelled sessions (docs/MAPS.md)."""
    from heimdall.maps.job import run_map_fit

    opts = _options(endpoint_url, storage_option) or None
    prior = None
    if model is not None:
        from heimdall.export.predictor import load_predictor
        from heimdall.models.grid_predictor import map_prior

        prior = map_prior(load_predictor(model, storage_options=opts, tracking_uri=tracking_uri).metadata)
    meta = run_map_fit(store, out, network=network, config=config, update=update, storage_options=opts,
                       tracking_uri=tracking_uri, prior=prior)  # fmt: skip
    keys = ("map_version", "n_labels", "hyper", "metrics", "mlflow_run_id")
    console.print(f"wrote map v{meta['map_version']} to {out}")
    stdout_console().print_json(json.dumps({k: meta.get(k) for k in keys}))


@map_app.command("locate")
def map_locate(
    source: Annotated[str, typer.Argument(help="A stored session as URI#index.")],
    map_uri: Annotated[str, typer.Option("--map", help="Radio map from 'map fit' (local or s3://).")],
    geojson: Annotated[
        Path | None, typer.Option("--geojson", help="Write the 50 % / 90 % regions as GeoJSON here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON answer.")] = False,
    endpoint_url: EndpointOpt = None,
    storage_option: StorageOpt = None,
) -> None:
    """Locate one session with a radio map: MAP, top modes and the 90 % region, beside the truth."""
    from heimdall.maps.artifact import load_map
    from heimdall.maps.locate import locate_with_map, summary_lines
    from heimdall.serve.locate import load_session

    opts = _options(endpoint_url, storage_option) or None
    rmap, _ = load_map(map_uri, opts)
    rx = rmap.network.receivers[0]
    batch = load_session(source, rx.sample_rate_hz, 0, opts)
    result = locate_with_map(rmap, batch)
    if geojson is not None:
        features = [
            {"type": "Feature", "properties": {"hpd": k}, "geometry": result[k]} for k in ("hpd50", "hpd90")
        ]
        geojson.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    for line in summary_lines(result):
        console.print(line)


@map_app.command("show")
def map_show(
    uri: Annotated[str, typer.Argument(help="Map folder (local or s3://).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for one PNG per receiver.")],
    endpoint_url: EndpointOpt = None,
    storage_option: StorageOpt = None,
) -> None:
    """Draw each receiver's field mean and std with the label positions."""
    from heimdall.maps.job import run_map_show

    paths = run_map_show(uri, out, _options(endpoint_url, storage_option) or None)
    console.print(f"wrote {len(paths)} PNG files to {out}")


@app.command(rich_help_panel="Model")
def evaluate(
    data: Annotated[str, typer.Option("--data", help="Labelled session store (folder or s3:// URI).")],
    out: Annotated[
        str | None,
        typer.Option("--out", help="Report folder (report.json, plots, report.html); optional with --json."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Checkpoint, ONNX file / URI or models:/NAME@ALIAS.")
    ] = None,
    labelled: Annotated[
        str | None,
        typer.Option(
            "--labelled", help="Labelled store: fit radio maps from it and score radio_map_kriging."
        ),
    ] = None,
    map_uri: Annotated[
        str | None, typer.Option("--map", help="Radio map from 'map fit' to score radio_map_kriging with.")
    ] = None,
    baselines: Annotated[
        str, typer.Option(help="all, none or a list: weighted_centroid,rss_ml,oracle,tdoa_ml.")
    ] = "all",
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N sessions.")] = None,
    allow_overlap: Annotated[
        bool,
        typer.Option(help="Evaluate even a store that overlaps the model's training / validation data."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON report on stdout.")] = False,
    mlflow_run: Annotated[str | None, typer.Option(help="Log the report to this MLflow run id.")] = None,
    tracking_uri: TrackingOpt = None,
    endpoint_url: EndpointOpt = None,
    storage_option: StorageOpt = None,
) -> None:
    """Evaluate a model beside the classical baselines, the oracle and the Cramér-Rao bound."""
    import tempfile

    from heimdall.eval.job import run_evaluation

    if out is None and not as_json:
        raise HeimdallError("--out: give a report folder (only --json may go without one)")
    with progress_bar() as bar, tempfile.TemporaryDirectory(prefix="heimdall-eval-") as tmp:
        task = bar.add_task("evaluating", total=None)
        report = run_evaluation(
            data, out or tmp, model=model, baselines=baselines, limit=limit,
            storage_options=_options(endpoint_url, storage_option) or None,
            tracking_uri=tracking_uri, mlflow_run=mlflow_run, allow_overlap=allow_overlap,
            progress=lambda n: bar.advance(task, n), on_total=lambda n: bar.update(task, total=n),
            plots=out is not None, labelled=labelled, map_uri=map_uri,
        )  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
        return
    cols = ("median_km", "mean_km", "p90_km", "rmse_km", "coverage_1sigma", "coverage_2sigma", "nll")
    prov = report.get("provenance")
    title = f"evaluation of {report['n']} sessions ({data})" + (f"\n{prov['summary']}" if prov else "")
    table = Table("estimator", "n", *cols, title=title)
    for name, m in report["estimators"].items():
        table.add_row(name, str(m["n"]), *("—" if m[c] is None else f"{m[c]:.3f}" for c in cols))
    stdout_console().print(table)
    post_cols = ("map_median_km", "hpd_coverage_50", "hpd_coverage_90", "hpd90_area_km2_median", "log_score")
    posteriors = {n: m for n, m in report["estimators"].items() if m.get("hpd_coverage_50") is not None}
    if posteriors:
        post = Table("estimator", *post_cols, title="posterior answers (HPD coverage ideal: 0.50, 0.90)")
        for name, m in posteriors.items():
            post.add_row(name, *("—" if m.get(c) is None else f"{m[c]:.3f}" for c in post_cols))
        stdout_console().print(post)
    crlb, hpd = report["crlb_rmse_km"], report["oracle_hpd_coverage"]
    if crlb and crlb["median"] is not None:
        console.print(f"RSS CRLB RMSE: median {crlb['median']:.1f} km, {crlb['singular']} singular sessions")
    if hpd["p393"] is not None:
        console.print(f"oracle HPD coverage: {hpd['p393']:.3f} (0.393 ideal), {hpd['p865']:.3f} (0.865)")
    console.print(f"report: {out}/report.html")


@app.command("export", rich_help_panel="Deploy")
def export_cmd(
    out: Annotated[str, typer.Option("--out", help="Folder / prefix (local or s3://) or a .onnx path.")],
    checkpoint: Annotated[Path | None, typer.Option(help="Lightning .ckpt or saved model file.")] = None,
    run: Annotated[
        str | None,
        typer.Option("--run", help="MLflow run id ('latest': the newest run of the training experiment)."),
    ] = None,
    experiment: Annotated[
        str | None, typer.Option(help="Training experiment searched by --run latest (default: heimdall).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Training config: its tracking experiment and URI.")
    ] = None,
    register: Annotated[str | None, typer.Option(help="Register as a version of this model name.")] = None,
    alias: Annotated[str, typer.Option(help="Alias for the registered version.")] = "production",
    evaluation: Annotated[
        Path | None,
        typer.Option(help="report.json of `heimdall evaluate` on a held-out test set (model card figures)."),
    ] = None,
    radio_map: Annotated[
        str | None,
        typer.Option("--map", help="Radio map (map fit) whose fields go into a grid-posterior model."),
    ] = None,
    tracking_uri: TrackingOpt = None,
    endpoint_url: EndpointOpt = None,
    storage_option: StorageOpt = None,
) -> None:
    """Export a model to ONNX (checked, parity with PyTorch), write it to the object store, register it."""
    from heimdall.export.job import run_export

    if config is not None:
        from heimdall.models.config import load_config
        from heimdall.models.gridnet_config import is_gridnet_config, load_gridnet_config

        loader = load_gridnet_config if is_gridnet_config(config) else load_config
        tracking = loader(config).tracking
        experiment = experiment or tracking.experiment
        tracking_uri = tracking_uri or tracking.uri
    report = run_export(out, checkpoint=checkpoint, run_id=run, register=register, alias=alias,
                        evaluation=evaluation, tracking_uri=tracking_uri,
                        storage_options=_options(endpoint_url, storage_option) or None,
                        experiment=experiment, radio_map=radio_map)  # fmt: skip
    if hasattr(report, "parity_max_tv"):
        parity = f"posterior total variation {report.parity_max_tv:.1e}"
    else:
        worst = max(report.parity, key=lambda c: c.max_position_diff_m)
        parity = f"worst {worst.max_position_diff_m * 1000:.2f} mm over {len(report.parity)} batches"
    size = f"{report.size_bytes / 1e6:.2f} MB"
    console.print(f"wrote {report.uri} ({size}, opset {report.opset}); parity with PyTorch: {parity}")
    if report.registered:
        console.print(f"registered {report.registered['model_uri']} (version {report.registered['version']})")
    stdout_console().print_json(json.dumps({k: v for k, v in report.as_dict().items() if k != "metadata"}))


@app.command(rich_help_panel="Deploy")
def locate(
    source: Annotated[
        str, typer.Argument(help="A stored session URI#index, or a folder of SigMF recordings.")
    ],
    model: Annotated[str, typer.Option(help="Model: .ckpt, .onnx path/URI, or models:/NAME@ALIAS.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    geojson: Annotated[Path | None, typer.Option(help="Write point + ellipse polygons as GeoJSON.")] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Write a self-contained map page of the answer (HTML).")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI for models:/ specs.")] = None,
    endpoint_url: EndpointOpt = None,
    storage_option: StorageOpt = None,
) -> None:
    """Locate the transmitter of one session: lat/lon, 1σ and 95 % ellipses, receivers' distances."""
    from heimdall.export.predictor import load_predictor
    from heimdall.serve.locate import (
        load_session,
        locate_first,
        locate_session,
        receivers_table,
        summary_lines,
        write_geojson,
    )

    options = _options(endpoint_url, storage_option) or None
    predictor = load_predictor(model, storage_options=options, tracking_uri=tracking_uri)
    session = load_session(source, float(predictor.sample_rate_hz), int(predictor.n_samples), options)
    located = locate_first(predictor, session)  # one model run for the answer and the HTML map
    result = locate_session(predictor, session, located)
    if geojson is not None:
        write_geojson(result, geojson)
    if html is not None:
        from heimdall.serve.page import write_locate_html

        title = f"{source} located by {result['model_version']}"
        write_locate_html(predictor, session, result, html, title, located)
    if as_json:
        stdout_console().print_json(json.dumps({k: v for k, v in result.items() if k != "geojson"}))
        return
    out = stdout_console()
    for line in summary_lines(result):
        out.print(line)
    out.print(receivers_table(result))


@app.command(rich_help_panel="Deploy")
def serve(
    model: Annotated[str, typer.Option(help="Exported model: .onnx path/URI or models:/NAME@ALIAS.")],
    host: Annotated[
        str, typer.Option(help="Interface to bind (127.0.0.1: this machine only; others need --token).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body, MiB (larger: 413).")] = 32.0,
    threads: Annotated[
        int, typer.Option(help="onnxruntime threads per request (0: all cores); requests run in parallel.")
    ] = 1,
    max_concurrent: Annotated[
        int, typer.Option(help="Requests in flight at once; bounds memory (others wait, then 503).")
    ] = 4,
    queue_timeout: Annotated[
        float, typer.Option(help="Seconds a request waits for a free slot before 503 + Retry-After.")
    ] = 2.0,
    max_connections: Annotated[
        int, typer.Option(help="Open connections at most (more: immediate 503).")
    ] = 100,
    header_timeout: Annotated[
        float,
        typer.Option(help="Seconds a connection has to send a request's headers (then it is closed)."),
    ] = 10.0,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="HEIMDALL_TOKEN",
            show_default=False,
            help="API token: /v1 calls need 'Authorization: Bearer TOKEN'. Required off loopback.",
        ),
    ] = None,
    tiles: Annotated[
        str, typer.Option(help="Map page basemap: tile URL template ({z}/{x}/{y}), or 'none' (borders only).")
    ] = "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
    tiles_attribution: Annotated[
        str, typer.Option(help="Attribution shown for the --tiles source.")
    ] = "© OpenStreetMap contributors",
    data: Annotated[
        str | None, typer.Option("--data", help="Session store offered on the map page (folder or s3://).")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI for models:/ specs.")] = None,
    endpoint_url: EndpointOpt = None,
    storage_option: StorageOpt = None,
) -> None:
    """Serve an exported model over HTTP (FastAPI + onnxruntime); OpenAPI docs at /docs."""
    from heimdall.serve.page import PageConfig
    from heimdall.serve.run import serve_model

    options = _options(endpoint_url, storage_option) or None
    serve_model(model, host=host, port=port, max_body_bytes=int(max_body_mb * 1024 * 1024),
                threads=threads or None, tracking_uri=tracking_uri,
                storage_options=_options(endpoint_url, storage_option) or None,
                max_concurrent=max_concurrent, queue_timeout_s=queue_timeout, token=token,
                max_connections=max_connections, header_timeout_s=header_timeout,
                page=PageConfig(tiles=tiles, attribution=tiles_attribution, data=data,
                                storage_options=options))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, printing user errors as one line (exit code 2)."""
    try:
        app(args=argv, prog_name="heimdall", standalone_mode=False)
    except HeimdallError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")  # a message's [brackets] are text
        sys.exit(2)
    except OSError as exc:  # the file system refused (read-only, a file where a folder goes, ...)
        where = f"{exc.filename}: " if exc.filename else ""
        console.print(f"[red]error:[/red] {escape(where + (exc.strerror or str(exc)))}")
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("aborted")
        sys.exit(1)
    except TyperException as exc:  # usage errors: unknown command / option, missing or bad value
        if hasattr(exc, "show"):
            exc.show()
        else:
            console.print(f"[red]error:[/red] {escape(exc.format_message())}")
        sys.exit(2)


if __name__ == "__main__":
    main()
