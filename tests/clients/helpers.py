"""Helpers for the command-line tests: run `hedui` in-process or as a user does."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

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


def authorisation(folder: Path) -> list[str]:
    """`hedui recheck`'s campaign flag (the campaign need not be registered where the service
    is not reached); ``folder`` is unused, kept for the callers' shape."""
    return ["--campaign", "测民复〔2026〕1号"]


def consent_flags(folder: Path, signer: str) -> list[str]:
    """`hedui verify`'s consent flags, the form written in ``folder``."""
    form = folder / "consent.pdf"
    form.write_bytes(b"scanned consent")
    return [
        "--case-number", "case-1", "--consent-form", str(form), "--signed-on", "2026-01-05",
        "--signer", signer,
    ]  # fmt: skip
