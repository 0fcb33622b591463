"""Usage errors on every command: the usage line and the message, exit status 2, no traceback.

The commands are discovered from the app itself, so a command added later is covered too.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer.main

from heimdall.cli import app, main


def _leaf_commands() -> list[tuple[list[str], list[str]]]:
    """(command path, names of its required parameters) for every leaf command."""
    found: list[tuple[list[str], list[str]]] = []

    def walk(command, path: list[str]) -> None:
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                walk(sub, [*path, name])
        else:
            found.append((path, [p.name for p in command.params if p.required]))

    walk(typer.main.get_command(app), [])
    return found


COMMANDS = _leaf_commands()
IDS = [" ".join(path) for path, _ in COMMANDS]


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out + err


def test_every_command_is_found() -> None:
    assert {"simulate", "evaluate", "serve", "networks show", "data info"} <= set(IDS)


@pytest.mark.parametrize(("path", "required"), COMMANDS, ids=IDS)
def test_unknown_option(capsys, path: list[str], required: list[str]) -> None:
    code, text = _run(capsys, [*path, "--no-such-option-xyz"])
    assert code == 2, text
    assert "Usage: heimdall " + " ".join(path) in text
    assert "No such option: --no-such-option-xyz" in text
    assert "Traceback" not in text


@pytest.mark.parametrize(("path", "required"), [c for c in COMMANDS if c[1]], ids=[i for i, c in
                         zip(IDS, COMMANDS, strict=True) if c[1]])  # fmt: skip
def test_missing_required(capsys, path: list[str], required: list[str]) -> None:
    code, text = _run(capsys, path)
    assert code == 2, text
    assert "Usage: heimdall " + " ".join(path) in text
    assert "Missing" in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    "argv",
    [["bogus"], ["data", "bogus"], ["networks", "bogus"]],
    ids=["top", "data", "networks"],
)
def test_unknown_command(capsys, argv: list[str]) -> None:
    code, text = _run(capsys, argv)
    assert code == 2
    assert "No such command 'bogus'" in text and "Usage:" in text
    assert "Traceback" not in text


def test_bad_value(capsys, tmp_path) -> None:
    code, text = _run(capsys, ["simulate", "--out", str(tmp_path / "x"), "--sessions", "many"])
    assert code == 2
    assert "Invalid value for '--sessions'" in text
    assert "Traceback" not in text


def test_console_script_exit_status() -> None:
    """The installed entry point (a real process) exits 2 on a usage error, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-c", "from heimdall.cli import main; main()", "simulate", "--no-such-flag"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "No such option: --no-such-flag" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
