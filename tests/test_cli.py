"""The CLI as users run it: help, networks, simulate, and user errors without tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from heimdall.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_commands(capsys) -> None:
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    for command in ("simulate", "networks"):
        assert command in out


def test_networks_list_and_show(capsys) -> None:
    code, out, _ = _run(capsys, "networks", "list")
    assert code == 0 and "nw-italy" in out
    code, out, _ = _run(capsys, "networks", "show", "nw-italy")
    assert code == 0 and "genova" in out


def test_simulate_and_resume(capsys, tmp_path) -> None:
    out_dir = tmp_path / "ds"
    args = ["simulate", "--sessions", "5", "--shard-size", "2", "--out", str(out_dir),
            "--duration-s", "0.05", "--workers", "1"]  # fmt: skip
    code, out, _ = _run(capsys, *args)
    assert code == 0 and '"sessions": 5' in out
    code, out, _ = _run(capsys, *args)
    assert code == 0 and '"resumed_shards": 3' in out and '"sessions": 5' in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["simulate", "--sessions", "-3", "--out", "{tmp}/x"], "--sessions must be >= 0"),
        (["simulate", "--network", "nw-nowhere", "--out", "{tmp}/x"], "unknown network 'nw-nowhere'"),
        (["simulate", "--network", "{tmp}/bad.yaml", "--out", "{tmp}/x"], "not valid YAML"),
        (["simulate", "--sessions", "1", "--out", "{tmp}/file.txt/sub"], "cannot create output"),
        (["networks", "show", "nw-nowhere"], "unknown network"),
        (["simulate", "--duration-s", "0", "--out", "{tmp}/x"], "--duration-s must be in (0, 60] s, got 0.0"),
        (["simulate", "--duration-s", "nan", "--out", "{tmp}/x"], "got nan"),
        (["simulate", "--mode", "foo", "--out", "{tmp}/x"], "--mode 'foo': give one of nbfm, cw, fsk, aprs"),
        (
            ["simulate", "--workers", "-2", "--out", "{tmp}/x"],
            "Invalid value for '--workers': Input should be greater than or equal to 0",
        ),
        (
            ["data", "info", "{tmp}", "--max-sessions", "-5"],
            "Invalid value for '--max-sessions': Input should be greater than or equal to 0",
        ),
        (
            ["train", "--config", "{repo}/configs/gridnet.yaml", "--accelerator", "gpu"],
            "--accelerator: a grid-posterior config trains on one CPU process",
        ),
        (
            ["train", "--config", "{repo}/configs/gridnet.yaml", "--devices", "2", "--strategy", "ddp"],
            "--devices, --strategy: a grid-posterior config",
        ),
        (
            ["train", "--config", "{repo}/configs/gridnet.yaml", "--resume", "x.ckpt"],
            "no resumable checkpoint",
        ),
        # refused before any data is made or read: after training the run would be lost
        (
            ["train", "--config", "{repo}/configs/gridnet.yaml", "--out-dir", "{tmp}/file.txt"],
            "checkpoint folder",
        ),
        (
            ["train", "--config", "{repo}/configs/quick.yaml", "--out-dir", "{tmp}/file.txt/runs"],
            "cannot write there",
        ),
        (
            ["train", "--config", "{repo}/configs/gridnet.yaml", "--tracking-uri", "banana://x"],
            "MLflow has no store for scheme 'banana'",
        ),
        (["train", "--config", "{repo}/configs/gridnet.yaml", "--summary", "{tmp}"], "--summary"),
        (["simulate", "--sessions", "1", "--out", "{tmp}/file.txt"], "file.txt"),
    ],
)
def test_user_errors_are_one_line(capsys, tmp_path, argv: list[str], fragment: str) -> None:
    (tmp_path / "bad.yaml").write_text("receivers: [\n")
    (tmp_path / "file.txt").write_text("not a folder")
    repo = str(Path(__file__).parents[1])
    code, out, err = _run(capsys, *[a.replace("{tmp}", str(tmp_path)).replace("{repo}", repo) for a in argv])
    assert code == 2
    assert fragment in err.replace("\n", " ")
    assert "Traceback" not in err + out


def test_a_file_system_refusal_is_one_line(capsys, tmp_path) -> None:
    """An OSError the commands do not name themselves is printed as the path and the reason, no
    traceback (here a folder where the store writes its first file; read-only folders are alike)."""
    import os

    out = tmp_path / "ds"
    blocked = out / f"provenance.json.tmp-{os.getpid()}"  # the store's atomic write goes through it
    blocked.mkdir(parents=True)
    code, out_text, err = _run(capsys, "simulate", "--sessions", "1", "--out", str(out), "--workers", "1")
    assert code == 2
    assert blocked.name in "".join(err.split())  # the console may wrap the line
    assert "Traceback" not in err + out_text
