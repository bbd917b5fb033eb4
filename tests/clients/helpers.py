"""Helpers for the command-line tests: run `hedui` in-process or as a user does."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from hedui.clients.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``hedui ARGS`` in this process: exit status, stdout, stderr."""
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse: --help, --version, usage errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def run_process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hedui.clients.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
