"""The deployment's certificate authority: an offline directory (``hedui ca init``).

    ca/ca.pem        the CA certificate every party trusts (copied to each party)
    ca/ca.key        its private key: never leaves this directory
    ca/issued.tsv    one line per certificate signed: serial (hex), name, role, date issued,
                     "revoked" or nothing, date of expiry (not after; absent in older lines)
    ca/crl.pem       the revocation list: copied to every party, whose servers check it on
                     each call (a revoked certificate gets UNAUTHENTICATED)

The CA signs certificate signing requests (``hedui ca sign``); it never sees a party's key.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from hedui.core.errors import CryptoError, KeyFileError
from hedui.core.keyfiles import (
    read_public,
    read_secret,
    replace_public,
    write_public,
    write_secret,
)
from hedui.core.tls import (
    Issued,
    RevocationList,
    check_revocation_list,
    create_ca,
    requested_hosts,
    revocation_list,
    sign_request,
)

PARTY_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,46}[a-z0-9]")
# what a party's certificate was valid for when issued.tsv did not record the expiry date yet
_OLDER_VALIDITY = dt.timedelta(days=825)
_HEX_SERIAL = re.compile(r"(?:0x)?([0-9a-f]{2}(?::[0-9a-f]{2})*|[0-9a-f]+)")


def format_serial(serial: int) -> str:
    """A certificate's serial as OpenSSL prints it (``openssl x509 -text``): upper-case hex,
    two digits per byte, colon-separated."""
    digits = f"{serial:X}"
    digits = "0" * (len(digits) % 2) + digits
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def parse_serial(text: str) -> int:
    """A serial as given on the command line: what ``hedui ca list`` prints (colon-separated
    hex, any case) or plain hex (``openssl x509 -serial``, older ``ca list`` output, with or
    without 0x). ValueError for anything else."""
    found = _HEX_SERIAL.fullmatch(text.strip().lower())
    if found is None:
        raise ValueError(f"{text!r} is not a hexadecimal serial number")
    return int(found.group(1).replace(":", ""), 16)


@dataclass(frozen=True)
class IssuedRecord:
    serial: int
    name: str
    role: str
    issued_on: str
    revoked: bool
    not_after: str = ""  # YYYY-MM-DD, the certificate's expiry

    def status(self, today: dt.date) -> str:
        """revoked, expired or valid (on ``today``)."""
        if self.revoked:
            return "revoked"
        if self.not_after and dt.date.fromisoformat(self.not_after) < today:
            return "expired"
        return "valid"

    def line(self, *, revoked: bool) -> str:
        """Its line in issued.tsv."""
        mark = "revoked" if revoked else ""
        cells = (f"{self.serial:x}", self.name, self.role, self.issued_on, mark, self.not_after)
        return "\t".join(cells) + "\n"


class CertificateAuthority:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def cert_path(self) -> Path:
        return self.root / "ca.pem"

    @property
    def crl_path(self) -> Path:
        return self.root / "crl.pem"

    @property
    def _key_path(self) -> Path:
        return self.root / "ca.key"

    @property
    def _issued_path(self) -> Path:
        return self.root / "issued.tsv"

    def exists(self) -> bool:
        return self.cert_path.exists()

    def init(self, now: dt.datetime, name: str = "hedui deployment CA") -> bool:
        """Create the CA (and an empty revocation list) unless it exists; whether it was made."""
        if self.exists():
            return False
        if self._key_path.exists():
            raise KeyFileError(
                f"{self._key_path} exists without ca.pem: restore ca.pem from your backup"
            )
        made = create_ca(name, now)
        write_secret(self._key_path, made.key_pem)
        self.root.chmod(0o700)
        write_public(self._issued_path, b"")
        write_public(self.crl_path, revocation_list(made, [], now=now, number=int(now.timestamp())))
        write_public(self.cert_path, made.cert_pem)  # last: marks a complete CA
        return True

    def _ca(self) -> Issued:
        if not self.exists():
            raise KeyFileError(f"{self.root} holds no CA; run `hedui ca init --dir {self.root}`")
        return Issued(read_public(self.cert_path), read_secret(self._key_path))

    def sign(
        self,
        csr_pem: bytes,
        now: dt.datetime,
        *,
        name: str | None = None,
        role: str | None = None,
    ) -> bytes:
        """A certificate for the request; refused when its name already holds a valid one
        (revoke that first), so that one name never has two live certificates. ``name`` and
        ``role``: what the CA's operator expects (checked against the request, which names
        them itself). A name is 3 to 48 lower-case letters, digits and hyphens; an extra host
        name the request asks for must be a DNS name with a dot (a host), never a bare name
        that could be another party's (``custodian``, ``service``, ``bank-08``)."""
        cert_pem, who = sign_request(self._ca(), csr_pem, now=now)
        if not PARTY_NAME.fullmatch(who.name) or who.name.startswith("hedui-"):
            raise CryptoError(
                f"the request names {who.name!r}: a party's name is 3 to 48 lower-case letters, "
                "digits and hyphens (not starting with hedui-)"
            )
        if (name is not None and who.name != name) or (role is not None and who.role != role):
            raise CryptoError(
                f"the request is for {who.name} in role {who.role}, not {name} in role {role}; "
                "nothing was signed"
            )
        for host in requested_hosts(csr_pem):
            if host != who.name and "." not in host and ":" not in host:
                raise CryptoError(
                    f"the request asks for the bare host name {host!r}, which could be another "
                    "party's name; give hosts as full DNS names (bank07.example) or IP addresses"
                )
        live = [r for r in self.records() if r.name == who.name and not r.revoked]
        if live:
            raise CryptoError(
                f"{who.name} already holds certificate {format_serial(live[0].serial)} (issued "
                f"{live[0].issued_on}); revoke it first: hedui ca revoke --dir {self.root} "
                f"--name {who.name}"
            )
        cert = x509.load_pem_x509_certificate(cert_pem)
        record = IssuedRecord(
            cert.serial_number,
            who.name,
            who.role,
            f"{now:%Y-%m-%d}",
            False,
            f"{cert.not_valid_after_utc:%Y-%m-%d}",
        )
        with self._issued_path.open("a", encoding="utf-8") as f:
            f.write(record.line(revoked=False))
        return cert_pem

    def records(self) -> list[IssuedRecord]:
        if not self._issued_path.exists():
            return []
        out = []
        for line in self._issued_path.read_text(encoding="utf-8").splitlines():
            serial, name, role, when, revoked, until = (line.split("\t") + [""] * 6)[:6]
            if not until and when:  # a line written before the expiry date was kept
                until = f"{dt.date.fromisoformat(when) + _OLDER_VALIDITY}"
            out.append(IssuedRecord(int(serial, 16), name, role, when, revoked == "revoked", until))
        return out

    def revoke(
        self, now: dt.datetime, *, name: str | None = None, serial: int | None = None
    ) -> int:
        """Revoke the live certificate of ``name`` (or the one with ``serial``); write the new
        revocation list. Returns the serial revoked."""
        records = self.records()
        found = [
            r
            for r in records
            if not r.revoked and (r.name == name if name is not None else r.serial == serial)
        ]
        if not found:
            what = f"name {name}" if name is not None else f"serial {format_serial(serial or 0)}"
            raise CryptoError(f"no live certificate with {what} in {self._issued_path}")
        target = found[0].serial
        lines = [r.line(revoked=r.revoked or r.serial == target) for r in records]
        write_public(self._issued_path, "".join(lines).encode())
        self._issue_list(now, [r.serial for r in records if r.revoked or r.serial == target])
        return target

    def refresh(self, now: dt.datetime) -> RevocationList:
        """A fresh revocation list (same serials, a new next-update time): issued before the
        last one expires, since every server refuses calls once its list has expired."""
        return self._issue_list(now, [r.serial for r in self.records() if r.revoked])

    def revocation_list(self) -> RevocationList:
        """The list the CA issued last."""
        return check_revocation_list(
            read_public(self.cert_path), read_public(self.crl_path), str(self.crl_path)
        )

    def _issue_list(self, now: dt.datetime, serials: list[int]) -> RevocationList:
        ca = self._ca()
        # numbered by issue time, so a lost crl.pem never restarts the count below the lists
        # parties hold
        earlier = self.revocation_list().number if self.crl_path.exists() else 0
        number = max(earlier + 1, int(now.timestamp()))
        replace_public(self.crl_path, revocation_list(ca, serials, now=now, number=number))
        return self.revocation_list()
