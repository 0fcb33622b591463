"""The ``heimdall`` command line: parses arguments and calls the stages."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from heimdall.errors import HeimdallError

app = typer.Typer(
    help="Heimdall: locate a radio transmitter from simultaneous web-receiver captures.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
networks_app = typer.Typer(help="Receiver networks: list the packaged ones, show one.", no_args_is_help=True)
app.add_typer(networks_app, name="networks")
console = Console(stderr=True)


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
    Console().print(table)


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
    Console().print(table)


@app.command()
def simulate(
    out: Annotated[str, typer.Option("--out", help="Output dataset (folder or URI).")],
    network: Annotated[str, typer.Option(help="Packaged network name or YAML path.")] = "nw-italy",
    sessions: Annotated[int, typer.Option(help="Number of sessions.")] = 100,
    world_seed: Annotated[int, typer.Option(help="World seed (gains, static shadowing maps).")] = 0,
    seed: Annotated[int, typer.Option(help="Session seed.")] = 0,
    world: Annotated[Path | None, typer.Option(help="World YAML overriding the reference world.")] = None,
    synchronised: Annotated[bool, typer.Option(help="GNSS-synchronised receivers.")] = False,
    duration_s: Annotated[float | None, typer.Option(help="Capture length, s.")] = None,
    shard_size: Annotated[int, typer.Option(help="Sessions per shard.")] = 256,
    workers: Annotated[int, typer.Option(help="Worker processes (0 = all cores).")] = 0,
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
            progress=lambda n: bar.advance(task, n),
        )  # fmt: skip
    elapsed = time.perf_counter() - start
    console.print(
        f"wrote {summary['sessions']} sessions to {out} "
        f"({summary['resumed_shards']} shards resumed) in {elapsed:.1f} s"
    )
    Console().print_json(json.dumps(summary))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, printing user errors as one line (exit code 2)."""
    try:
        app(args=argv, standalone_mode=False)
    except HeimdallError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("aborted")
        sys.exit(1)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
