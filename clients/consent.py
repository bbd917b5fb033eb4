"""The consent records a client sends with its requests (VerifyRequest.consent).

- :func:`signed_consent`: an application's consent (授权书), signed by the household's adult
  members, with the SHA-256 of the scanned form;
- :class:`StandingAuthorisation`: the dated document under which a re-verification campaign
  (复核) re-checks enrolled households; every request of the campaign carries it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hedui.clients.errors import ClientError
from hedui.core.clock import is_adult
from hedui.core.resident_id import parse as parse_id
from hedui.proto.v1 import verification_pb2


def form_digest(path: Path, what: str) -> bytes:
    """SHA-256 of a scanned form or document; a clear error when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ClientError(
            f"cannot read the {what} {path}: {(e.strerror or str(e)).lower()}; give the scanned "
            "file whose SHA-256 the audit log is to record"
        ) from None
    if not data:
        raise ClientError(f"the {what} {path} is empty; give the scanned file")
    return hashlib.sha256(data).digest()


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
        cls, path: Path, issued_on: dt.date, document_number: str | None = None
    ) -> StandingAuthorisation:
        return cls(
            document_number or path.stem,
            issued_on,
            form_digest(path, "authorisation document"),
        )

    def consent(self) -> verification_pb2.Consent:
        return verification_pb2.Consent(
            case_number=self.document_number,
            signed_on=self.issued_on.isoformat(),
            form_sha256=self.sha256,
            standing=True,
        )
