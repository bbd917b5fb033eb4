"""Issue #24 item 6: forms and documents are hashed as streams with a size limit, and what is not
a regular file (a device, a named pipe, a folder) is refused with a message naming the option
and the path, before anything is contacted.

The commands run as a user runs them, in a process of their own under a memory limit and a
timeout: `--consent-form /dev/zero` used to read until the kernel killed the process, and a named
pipe without a writer to wait for ever.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from hedui.clients.consent import MAX_FORM_BYTES, form_digest
from hedui.clients.errors import ClientError

ID = "11010519491231002X"
MEMORY = (
    4 * 1024 * 1024 * 1024
)  # address space: far more than hedui needs (gRPC and OpenSSL threads reserve much), far less than /dev/zero offers


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def hedui(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own; under an address-space limit when it is given a
    device (the one case that used to read without end), with a timeout always."""
    return subprocess.run(
        [sys.executable, "-m", "hedui.clients.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=_limited if "/dev/zero" in args else None,
    )


def verify(workdir: Path, form: str) -> subprocess.CompletedProcess[str]:
    return hedui(
        "verify", "--workdir", str(workdir), "--id", ID, "--program", "dibao",
        "--case-number", "case-1", "--consent-form", form, "--signed-on", "2026-01-05",
        "--signer", ID,
    )  # fmt: skip


def _refused(r: subprocess.CompletedProcess[str], message: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "form.pdf"
    os.mkfifo(path)
    return path


def test_verify_refuses_a_device_as_the_consent_form(stopped_workdir: Path) -> None:
    _refused(
        verify(stopped_workdir, "/dev/zero"),
        "--consent-form /dev/zero is not a regular file (a character device)",
    )


def test_verify_refuses_a_named_pipe_and_a_folder(
    stopped_workdir: Path, fifo: Path, tmp_path: Path
) -> None:
    _refused(
        verify(stopped_workdir, str(fifo)),
        f"--consent-form {fifo} is not a regular file (a named pipe)",
    )
    _refused(
        verify(stopped_workdir, str(tmp_path)),
        f"--consent-form {tmp_path} is not a regular file (a folder)",
    )


def test_verify_refuses_a_form_over_the_limit(stopped_workdir: Path, tmp_path: Path) -> None:
    form = tmp_path / "huge.pdf"
    with form.open("wb") as f:  # sparse: costs no disk
        f.truncate(MAX_FORM_BYTES + 1)
    r = verify(stopped_workdir, str(form))
    _refused(r, f"--consent-form {form} is {MAX_FORM_BYTES + 1:,} bytes, over the limit of 64 MiB")
    assert "unavailable" not in r.stderr.lower()  # refused before the service was called


def test_the_limit_is_documented_in_the_help() -> None:
    for command in (["verify"], ["campaign", "register"]):
        r = hedui(*command, "--help")
        assert r.returncode == 0 and "at most 64 MiB" in " ".join(r.stdout.split()), command


def _register(
    workdir: Path, roster: Path, document: str, kind: str
) -> subprocess.CompletedProcess[str]:
    return hedui(
        "campaign", "register", "--workdir", str(workdir), "--number", "民复〔2026〕1号",
        "--kind", kind, "--issued-on", "2026-01-05", "--valid-until", "2026-12-31",
        "--document", document, "--roster", str(roster),
    )  # fmt: skip


def test_campaign_register_refuses_a_device_as_the_document(
    stopped_workdir: Path, roster: Path
) -> None:
    r = _register(stopped_workdir, roster, "/dev/zero", "recheck")
    _refused(r, "--document /dev/zero is not a regular file (a character device)")


def test_campaign_register_refuses_a_named_pipe_as_the_document(
    stopped_workdir: Path, roster: Path, fifo: Path
) -> None:
    r = _register(stopped_workdir, roster, str(fifo), "monitoring")
    _refused(r, f"--document {fifo} is not a regular file (a named pipe)")


def test_a_form_is_hashed_whole_in_chunks_up_to_the_limit(tmp_path: Path) -> None:
    form = tmp_path / "scan.pdf"
    data = os.urandom(1024 * 1024) * 2 + b"last page"  # over two chunks
    form.write_bytes(data)
    assert form_digest(form, "consent form", "--consent-form") == hashlib.sha256(data).digest()
    at_limit = tmp_path / "at-limit.pdf"
    with at_limit.open("wb") as f:
        f.truncate(MAX_FORM_BYTES)
    assert form_digest(at_limit, "consent form", "--consent-form") == (
        hashlib.sha256(bytes(MAX_FORM_BYTES)).digest()
    )
    link = tmp_path / "link.pdf"  # a link to a regular file is that file
    link.symlink_to(form)
    assert form_digest(link, "consent form", "--consent-form") == hashlib.sha256(data).digest()


def test_an_empty_or_missing_form_is_still_refused_as_before(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    with pytest.raises(ClientError, match="is empty"):
        form_digest(empty, "consent form", "--consent-form")
    with pytest.raises(ClientError, match=r"cannot read the consent form .*no such file"):
        form_digest(tmp_path / "missing.pdf", "consent form", "--consent-form")


def test_a_campaign_document_that_is_a_regular_file_passes(tmp_path: Path) -> None:
    """An ordinary document is hashed (the check refuses only the rest)."""
    doc = tmp_path / "authorisation.pdf"
    doc.write_bytes(b"standing authorisation")
    assert form_digest(doc, "campaign document", "--document") == (
        hashlib.sha256(doc.read_bytes()).digest()
    )
