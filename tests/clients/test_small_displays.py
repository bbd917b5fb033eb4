"""Issue #25 item 13: `hedui ca list` with a header and serials as OpenSSL prints them (and
`ca revoke --serial` taking what it prints); `hedui audit show` with its columns aligned
whatever the kind of entry (config_change is the longest)."""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509

from hedui.clients import audit_cli
from hedui.core.ca import CertificateAuthority, format_serial, parse_serial
from hedui.proto.v1 import audit_pb2
from tests.clients.helpers import run


def _enrol(capsys: pytest.CaptureFixture[str], tmp_path: Path, party: str, role: str) -> int:
    keys = tmp_path / party
    assert (
        run(capsys, "keys", "request", "--party", party, "--role", role, "--keys", str(keys))[0]
        == 0
    )
    csr = keys / "tls" / f"{party}.csr"
    ca = str(tmp_path / "ca")
    assert run(capsys, "ca", "sign", "--dir", ca, str(csr), "--name", party, "--role", role)[0] == 0
    return x509.load_pem_x509_certificate(
        (keys / "tls" / f"{party}.pem").read_bytes()
    ).serial_number


def test_serials_are_colon_separated_hex_and_read_back_in_any_hex_form() -> None:
    assert format_serial(0x1A2B3) == "01:A2:B3"
    assert format_serial(0xFF) == "FF"
    for text in ("01:A2:B3", "01:a2:b3", "1a2b3", "01A2B3", "0x1a2b3", " 01:A2:B3 "):
        assert parse_serial(text) == 0x1A2B3, text
    for text in ("", "1:A2", "01::A2", "xyz", "01-A2", "0x"):
        with pytest.raises(ValueError):
            parse_serial(text)


def test_ca_list_has_a_header_and_revoke_takes_the_serial_it_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = str(tmp_path / "ca")
    assert run(capsys, "ca", "init", "--dir", ca)[0] == 0
    bank = _enrol(capsys, tmp_path, "bank-07", "connector")
    intake = _enrol(capsys, tmp_path, "intake-b", "intake")
    code, out, _ = run(capsys, "ca", "list", "--dir", ca)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("# revocation list number ")
    assert lines[1].split() == ["SERIAL", "ROLE", "NAME", "ISSUED", "NOT", "AFTER", "STATUS"]
    rows = {ln.split()[2]: ln.split() for ln in lines[2:]}
    assert rows["bank-07"][0] == format_serial(bank) and rows["bank-07"][1] == "connector"
    assert rows["intake-b"][0] == format_serial(intake) and rows["intake-b"][5] == "valid"
    cert = x509.load_pem_x509_certificate(
        (tmp_path / "bank-07" / "tls" / "bank-07.pem").read_bytes()
    )
    assert rows["bank-07"][4] == f"{cert.not_valid_after_utc:%Y-%m-%d}"
    # columns line up under the header
    for ln in lines[2:]:
        assert ln.index(ln.split()[1]) == lines[1].index("ROLE"), ln
    # what the list prints, pasted as it is
    code, out, _ = run(capsys, "ca", "revoke", "--dir", ca, "--serial", rows["bank-07"][0])
    assert code == 0 and f"revoked certificate {format_serial(bank)}" in out
    # the plain hex of older `ca list` output and of `openssl x509 -serial` still works
    code, _, err = run(capsys, "ca", "revoke", "--dir", ca, "--serial", f"{intake:X}")
    assert code == 0, err
    out = run(capsys, "ca", "list", "--dir", ca)[1]
    assert [ln.split()[-1] for ln in out.splitlines()[2:]] == ["revoked", "revoked"]
    code, _, err = run(capsys, "ca", "revoke", "--dir", ca, "--serial", "bank-07")
    assert code == 1 and "as `hedui ca list` prints it" in err and "Traceback" not in err


def test_an_issued_list_from_before_expiry_dates_were_kept_still_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = tmp_path / "ca"
    assert run(capsys, "ca", "init", "--dir", str(ca))[0] == 0
    (ca / "issued.tsv").write_text("1a2b3\tbank-07\tconnector\t2025-01-01\trevoked\n")
    (record,) = CertificateAuthority(ca).records()
    assert record.not_after == "2027-04-06" and record.status(dt.date(2026, 1, 1)) == "revoked"
    out = run(capsys, "ca", "list", "--dir", str(ca))[1]
    assert out.splitlines()[2].split() == [
        "01:A2:B3", "connector", "bank-07", "2025-01-01", "2027-04-06", "revoked",
    ]  # fmt: skip


@dataclass
class _Source:
    rows: list[tuple[int, bytes]]

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        return self.rows[start:end]


@dataclass
class _Session:
    source: _Source
    calls: list[str] = field(default_factory=list)

    def signed_size(self) -> int:
        return len(self.source.rows)


def _entries() -> list[tuple[int, bytes]]:
    ms = 1_795_000_000_000
    made = [
        audit_pb2.AuditEntry(
            time_unix_ms=ms,
            caller="service",
            caller_role="service",
            key_event=audit_pb2.KeyEvent(event="generated", key_name="log"),
        ),
        audit_pb2.AuditEntry(
            time_unix_ms=ms,
            caller="service",
            caller_role="service",
            config_change=audit_pb2.ConfigChange(
                setting="disclosure", old_value="", new_value="figures"
            ),
        ),
        audit_pb2.AuditEntry(
            time_unix_ms=ms,
            caller="an-intake-system-with-a-long-name",
            caller_role="intake",
            search=audit_pb2.AuditorSearch(by="caller"),
        ),
    ]
    return [(i, e.SerializeToString()) for i, e in enumerate(made)]


def test_audit_show_keeps_its_columns_with_a_config_change(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    session = _Session(_Source(_entries()))
    monkeypatch.setattr(audit_cli, "_session", lambda args: session)
    args = argparse.Namespace(last=10, json=False)
    assert audit_cli.cmd_show(args) == 0
    header, *rows, total = capsys.readouterr().out.splitlines()
    assert total == "3 entries in the log"
    kinds = ["key_event", "config_change", "search"]
    callers = ["service", "service", "an-intake-system-with-a-long-name"]
    for row, kind, caller in zip(rows, kinds, callers, strict=True):
        assert row[header.index("kind") :].startswith(kind + " "), row
        assert row[header.index("caller") :].startswith(caller + " "), row
        assert (
            row[header.index("decision / detail") - 2 : header.index("decision / detail")] == "  "
        )
    assert rows[1].endswith("disclosure: (unset) -> figures"), rows[1]
    assert rows[0].endswith("generated log"), rows[0]


def test_the_kind_column_is_as_wide_as_the_longest_kind() -> None:
    kinds = [f.name for f in audit_pb2.AuditEntry.DESCRIPTOR.oneofs_by_name["body"].fields]
    assert audit_cli.KIND_WIDTH == max(len(k) for k in kinds)
