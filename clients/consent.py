"""The consent records a client sends with its requests (VerifyRequest.consent).

- :func:`signed_consent`: an application's consent (授权书), signed by the household's adult
  members, with the SHA-256 of the scanned form;
- :class:`StandingAuthorisation`: the dated document under which a re-verification campaign
  (复核) re-checks enrolled households; every request of the campaign carries it.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hedui.clients.errors import ClientError
from hedui.core.clock import is_adult
from hedui.core.resident_id import parse as parse_id
from hedui.proto.v1 import verification_pb2

MAX_FORM_BYTES = 64 * 1024 * 1024
"""The largest scanned form or document hashed (64 MiB): a scan of a few signed pages is well
under it; anything over is refused rather than read."""
MAX_FORM_TEXT = "64 MiB"
_CHUNK = 1024 * 1024


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    for test, words in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return words
    return "a special file"


def form_digest(path: Path, what: str, option: str) -> bytes:
    """SHA-256 of a scanned form or document, read in 1 MiB chunks; a clear error when it cannot
    be read, is not a regular file (a pipe, a device, a folder) or is over ``MAX_FORM_BYTES``."""

    def unreadable(e: OSError) -> ClientError:
        if e.errno == errno.EISDIR:
            return not_regular("a folder")
        return ClientError(
            f"cannot read the {what} {path}: {(e.strerror or str(e)).lower()}; give the scanned "
            "file whose SHA-256 the audit log is to record"
        )

    def not_regular(kind: str) -> ClientError:
        return ClientError(
            f"{option} {path} is not a regular file ({kind}); give the scanned {what}, a file"
        )

    def too_large(size: str) -> ClientError:
        return ClientError(
            f"{option} {path} is {size}, over the limit of {MAX_FORM_TEXT} for a scanned {what}; "
            "give the scan itself (a few pages), not an archive or a stream"
        )

    try:
        # O_NONBLOCK: opening a named pipe does not wait for a writer (no effect on a file)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise unreadable(e) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FORM_BYTES:
        os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise not_regular(_kind(st.st_mode))
        raise too_large(f"{st.st_size:,} bytes")
    with os.fdopen(fd, "rb", buffering=0) as f:
        digest, size = hashlib.sha256(), 0
        try:
            while chunk := f.read(_CHUNK):
                size += len(chunk)
                if size > MAX_FORM_BYTES:  # grew while read
                    raise too_large(f"over {MAX_FORM_BYTES:,} bytes")
                digest.update(chunk)
        except OSError as e:
            raise unreadable(e) from None
    if not size:
        raise ClientError(f"the {what} {path} is empty; give the scanned file")
    return digest.digest()


def adults(id_numbers: Sequence[str], on: dt.date) -> list[str]:
    """Those of these ID numbers whose holders are adults on ``on``: who must sign."""
    return [i for i in id_numbers if is_adult(parse_id(i).birth_date, on)]


def signed_consent(
    case_number: str, signed_on: dt.date, form_sha256: bytes, signers: Sequence[str]
) -> verification_pb2.Consent:
    return verification_pb2.Consent(
        case_number=case_number,
        signed_on=signed_on.isoformat(),
        form_sha256=form_sha256,
        signer_id_numbers=list(signers),
    )


@dataclass(frozen=True)
class StandingAuthorisation:
    document_number: str
    issued_on: dt.date
    sha256: bytes

    @classmethod
    def from_file(
        cls,
        path: Path,
        issued_on: dt.date,
        document_number: str | None = None,
        option: str = "--authorisation",
    ) -> StandingAuthorisation:
        return cls(
            document_number or path.stem,
            issued_on,
            form_digest(path, "authorisation document", option),
        )

    def consent(self) -> verification_pb2.Consent:
        return verification_pb2.Consent(
            case_number=self.document_number,
            signed_on=self.issued_on.isoformat(),
            form_sha256=self.sha256,
            standing=True,
        )
