"""A deployment installed party by party, as README "Operating hedui" walks it: each party in
its own directory (its "host") with only its own keys, enrolled at an offline CA by a signing
request, public files exchanged by hand, each started with `hedui serve`; one bank's connector
reads its core system's PostgreSQL database (`hedui connector sync`), the others CSV files. Its verdicts agree
with the independent oracle; a revoked certificate gets UNAUTHENTICATED; and no party's
directory holds another party's private key."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, text

from hedui.audit.checkpoint import vkey
from hedui.clients.cli import main
from hedui.clients.intake import IntakeProfile
from hedui.connectors.population import PopulationSummary, generate
from hedui.core import signing
from hedui.core.deployment import DEPARTMENT_KINDS, bank_ids
from hedui.core.rpc import open_channel
from hedui.proto.v1 import verification_pb2, verification_pb2_grpc
from tests.conftest import pg_schema
from tests.e2e import oracle
from tests.e2e.conftest import STANDARD, TODAY, consent_for, grpc_code, verify_dibao

BANKS = bank_ids(3)
CONNECTORS = (*DEPARTMENT_KINDS, *BANKS)
ROLES = {"registry": "registry", "custodian": "custodian", "service": "service"}
ROLES |= {"intake": "intake", "intake-b": "intake"} | {c: "connector" for c in CONNECTORS}
# an intake system that passes the benefit straight to payment (issue #24 item 2)
ROLES |= {"intake-pay": "intake"}
AUDITOR = "auditor-prov"  # an auditor on a host of its own (README, "Auditor host")
ROLES |= {AUDITOR: "auditor"}
ROLES |= {"witness": "witness"}  # the log's witness (issue #23): a host and an operator of its own
ORIGIN = "hedui.example/demo-log"


def _hedui(*args: str) -> None:
    assert main(list(args)) == 0, args


@dataclass
class Install:
    root: Path
    data: Path
    summary: PopulationSummary
    processes: dict[str, subprocess.Popen[bytes]]
    addresses: dict[str, str]

    def host(self, party: str) -> Path:
        return self.root / party

    def profile(self, name: str) -> Path:
        keys = self.host(name) / "keys"
        path = self.host(name) / "intake.toml"
        path.write_text(
            f'address = "{self.addresses["service"]}"\nserver_name = "service"\n'
            f'ca = "{keys / "ca.pem"}"\ncert = "{keys / "tls" / f"{name}.pem"}"\n'
            f'key = "{keys / "tls" / f"{name}.key"}"\n'
        )
        return path

    def auditor_profile(self) -> Path:
        """The auditor host's profile (README, "Auditor host"): the service's address, its TLS
        files, the log's public key and origin, its own state file."""
        keys = self.host(AUDITOR) / "keys"
        path = self.host(AUDITOR) / "auditor.toml"
        path.write_text(
            f'address = "{self.addresses["service"]}"\nserver_name = "service"\n'
            f'ca = "{keys / "ca.pem"}"\ncert = "{keys / "tls" / f"{AUDITOR}.pem"}"\n'
            f'key = "{keys / "tls" / f"{AUDITOR}.key"}"\n'
            f'log_public_key = "{keys / "log" / "log.pub"}"\n'
            'log_origin = "hedui.example/demo-log"\n'
            f'state = "{self.host(AUDITOR) / "state" / "auditor.json"}"\n'
            f'witness_vkeys = ["{self.witness_vkey()}"]\n'
            f'judgement_key = "{keys / "custodian" / "judgement.pub"}"\n'
        )
        return path

    def witness_vkey(self) -> str:
        """The witness's verifier key, as its operator sends it to the others."""
        return (self.host("witness") / "witness.vkey").read_text().strip()


def _exchange(root: Path) -> None:
    """The public files the parties' operators send each other (README, step 3)."""

    def give(whose: str, relative: str, to: list[str]) -> None:
        for party in to:
            target = root / party / "keys" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / whose / "keys" / relative, target)

    give("custodian", "custodian/paillier.pub", ["service", "registry", *CONNECTORS])
    # the key of the custodian's signed judgements (issue #24), made at its `keys request`
    give("custodian", "custodian/judgement.pub", ["service", AUDITOR])
    give("registry", "token-authority/grant.pub", ["custodian", *CONNECTORS])
    give("service", "log/log.pub", ["custodian", AUDITOR])
    # the one secret: the audit token key, from the service to the registry (mode 0600)
    secret = root / "registry" / "keys" / "service" / "audit-token.key"
    secret.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(root / "service" / "keys" / "service" / "audit-token.key", secret)
    secret.chmod(0o600)
    for c in CONNECTORS:
        give(c, f"connectors/{c}/signing.pub", ["service", "custodian"])


def _serve(root: Path, party: str, *args: str) -> subprocess.Popen[bytes]:
    log = (root / party / "serve.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "hedui.clients.cli", "serve", *args],
        stdout=log,
        stderr=log,
        env={k: v for k, v in os.environ.items() if not k.startswith("HEDUI_")},
    )


def _address(root: Path, party: str, proc: subprocess.Popen[bytes]) -> str:
    path = root / party / "run" / f"{party}.listening"
    deadline = time.monotonic() + 120
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{party} did not start: {(root / party / 'serve.log').read_text()}")
        time.sleep(0.1)
    return path.read_text().strip()


def _connector_toml(root: Path, party: str, extra: str = "") -> Path:
    path = root / party / f"{party}.toml"
    path.write_text(
        f'[connector]\nconnector_id = "{party}"\n'
        f'database_url = "sqlite:///{root / party / "db" / f"{party}.sqlite"}"\n'
        f'keys_dir = "{root / party / "keys"}"\naddress = "127.0.0.1:0"\n{extra}'
    )
    return path


SYNCED = BANKS[0]


def _core_banking(url: str, csv_file: Path) -> str:
    """A bank's core system standing in: customers and their accounts (several per person, two
    kinds) in a PostgreSQL schema of its own, filled from the bank's CSV; the connector's
    [source] table that reads it."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE customers (customer_no serial PRIMARY KEY, id_number text)")
        )
        conn.execute(text("CREATE TABLE accounts (customer_no int, kind text, balance_fen bigint)"))
        with csv_file.open() as f:
            for row in csv.DictReader(f):
                no = conn.execute(
                    text("INSERT INTO customers (id_number) VALUES (:i) RETURNING customer_no"),
                    {"i": row["id_number"]},
                ).scalar_one()
                deposits = int(row["deposits"])
                for kind, fen in (
                    ("deposit", deposits // 2),
                    ("deposit", deposits - deposits // 2),
                    ("wealth", int(row["wealth_products"])),
                ):
                    conn.execute(
                        text("INSERT INTO accounts VALUES (:n, :k, :b)"),
                        {"n": no, "k": kind, "b": fen},
                    )
    engine.dispose()
    query = (
        "SELECT c.id_number, a.balance_fen FROM accounts a "
        "JOIN customers c USING (customer_no) WHERE a.kind = '{}'"
    )
    return (
        f'\n[source]\nurl = "{url}"\n[source.queries]\n'
        f'deposits = "{query.format("deposit")}"\nwealth_products = "{query.format("wealth")}"\n'
    )


@pytest.fixture(scope="module")
def source() -> Iterator[str]:
    """A PostgreSQL schema of its own (the bank's core system)."""
    yield from pg_schema("corebank")


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory, source: str) -> Iterator[Install]:
    root = tmp_path_factory.mktemp("hosts")
    data = tmp_path_factory.mktemp("data")
    summary = generate(data, households=12, seed=5, as_of=TODAY, standard_fen=STANDARD)
    for f in data.glob("bank-*.csv"):  # three banks in this deployment
        if f.stem not in BANKS:
            f.unlink()
    # 1. the CA (offline), and each party's keys made on its own host; only requests leave
    _hedui("ca", "init", "--dir", str(root / "ca"))
    for party, role in ROLES.items():
        keys = root / party / "keys"
        _hedui("keys", "request", "--party", party, "--role", role, "--keys", str(keys))
        # 2. the CA signs; the party installs its certificate, the CA's and the revocation list
        csr = keys / "tls" / f"{party}.csr"
        _hedui(
            "ca", "sign", "--dir", str(root / "ca"), str(csr), "--out", str(root / f"{party}.pem"),
            "--name", party, "--role", role,
        )  # fmt: skip
        _hedui(
            "keys", "install", "--party", party, "--keys", str(keys),
            "--cert", str(root / f"{party}.pem"), "--ca", str(root / "ca" / "ca.pem"),
            "--crl", str(root / "ca" / "crl.pem"),
        )  # fmt: skip
    # 3. public files exchanged
    _exchange(root)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    addresses: dict[str, str] = {}
    try:
        # 4. the registry: its register imported, then served
        (root / "registry" / "authority.toml").write_text(
            "connectors = [" + ", ".join(f'"{c}"' for c in CONNECTORS) + "]\n"
            "[allowances]\n" + "".join(f'"{c}" = 1000\n' for c in CONNECTORS)
        )
        config = _connector_toml(
            root, "registry", f'authority_config = "{root / "registry" / "authority.toml"}"\n'
        )
        (root / "registry" / "db").mkdir()
        _hedui("connector", "import", "--config", str(config), "--file", str(data / "registry.csv"))
        processes["registry"] = _serve(root, "registry", "registry", "--config", str(config))
        addresses["registry"] = _address(root, "registry", processes["registry"])
        # 5. each connector imports its data through the token authority and is served; the
        # first bank reads its core system's database (PostgreSQL) instead of a file
        for c in CONNECTORS:
            (root / c / "db").mkdir()
            if c == SYNCED:
                config = _connector_toml(root, c, _core_banking(source, data / f"{c}.csv"))
                _hedui("connector", "sync", c, "--config", str(config),
                       "--authority", addresses["registry"])  # fmt: skip
            else:
                config = _connector_toml(root, c)
                _hedui(
                    "connector", "import", "--config", str(config), "--file", str(data / f"{c}.csv"),
                    "--authority", addresses["registry"],
                )  # fmt: skip
            processes[c] = _serve(root, c, "connector", c, "--config", str(config))
        for c in CONNECTORS:
            addresses[c] = _address(root, c, processes[c])
        # 6. the log's witness: it witnesses the service's log (its origin and the log key's
        # vkey, from log/log.pub); its own cosigning key is made at its first start
        log_key = signing.load_public_key(
            (root / "service" / "keys" / "log" / "log.pub").read_bytes()
        )
        (root / "witness" / "witness.toml").write_text(
            '[witness]\nname = "witness.example/w1"\naddress = "127.0.0.1:0"\n'
            f'[[log]]\norigin = "{ORIGIN}"\nvkey = "{vkey(ORIGIN, log_key)}"\n'
        )
        processes["witness"] = _serve(
            root, "witness", "witness", "--workdir", str(root / "witness")
        )
        addresses["witness"] = _address(root, "witness", processes["witness"])
        witness_vkey = (root / "witness" / "witness.vkey").read_text().strip()
        # 7. the key custodian, decrypting only under checkpoints the witness cosigned
        (root / "custodian" / "custodian.toml").write_text(
            f'[custodian]\nkeys_dir = "{root / "custodian" / "keys"}"\n'
            f'state_dir = "{root / "custodian" / "state"}"\n'
            "connectors = [" + ", ".join(f'"{c}"' for c in CONNECTORS) + "]\n"
            'log_origin = "hedui.example/demo-log"\nmin_banks = 3\naddress = "127.0.0.1:0"\n'
            f'witness_vkeys = ["{witness_vkey}"]\n'
        )
        processes["custodian"] = _serve(
            root, "custodian", "custodian", "--config", str(root / "custodian" / "custodian.toml")
        )
        addresses["custodian"] = _address(root, "custodian", processes["custodian"])
        # 8. the verification service, each checkpoint cosigned by the witness
        db = root / "service" / "db"
        db.mkdir()
        (root / "service" / "service.toml").write_text(
            f'[service]\nkeys_dir = "{root / "service" / "keys"}"\n'
            f'audit_database = "sqlite:///{db / "audit.sqlite"}"\n'
            f'service_database = "sqlite:///{db / "service.sqlite"}"\n'
            f'custodian_address = "{addresses["custodian"]}"\naddress = "127.0.0.1:0"\n'
            f'[registry]\naddress = "{addresses["registry"]}"\n[connectors]\n'
            + "".join(f'"{c}" = "{addresses[c]}"\n' for c in CONNECTORS)
            + f'[witness]\nurl = "https://{addresses["witness"]}"\nvkey = "{witness_vkey}"\n'
            # the payment system's public key (made on its host by `hedui payment keys`)
            + '[disclosure]\n"intake-pay" = { mode = "decision_only", payment_key = "'
            + f'{root / "payment" / "payment.pub"}" }}\n'
        )
        _hedui("payment", "keys", "--out", str(root / "payment"))  # before the service reads it
        _hedui("db", "upgrade", "--config", str(root / "service" / "service.toml"))
        processes["service"] = _serve(
            root, "service", "service", "--config", str(root / "service" / "service.toml")
        )
        addresses["service"] = _address(root, "service", processes["service"])
        yield Install(root, data, summary, processes, addresses)
    finally:
        for proc in processes.values():
            proc.send_signal(signal.SIGTERM)
        for proc in processes.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _verify(install: Install, id_number: str, request_id: str, who: str = "intake") -> dict:
    consent = consent_for(install.summary, id_number)
    return verify_dibao(install.profile(who), id_number, request_id, consent)


def test_verdicts_agree_with_the_oracle(install: Install) -> None:
    households, person = oracle.load(install.data)
    heads = dict(install.summary.applicants)
    cases = [(label, heads[h], h) for label, h in install.summary.thresholds][:4]
    for i, (label, id_number, household) in enumerate(cases):
        got = _verify(install, id_number, f"party-{i}")
        want = oracle.expected(households[household], person, TODAY.isoformat())
        assert got["decision"] == want["decision"], label
        assert got["benefit_fen"] == want["benefit_fen"], label
        assert {r["id"]: r["passed"] for r in got["rules"]} == want["rules"], label
        assert got["connectors_answered"] == len(CONNECTORS) and got["failures"] == []


def test_no_host_holds_another_partys_private_key(install: Install) -> None:
    for host in [p for p in install.root.iterdir() if p.is_dir() and p.name in ROLES]:
        assert host.stat().st_mode & 0o077 == 0 or (host / "keys").stat().st_mode & 0o077 == 0
        for path in host.rglob("*"):
            if path.is_file() and b"PRIVATE KEY" in path.read_bytes()[:200]:
                assert path.name in (
                    f"{host.name}.key", "signing.key", "log.key", "grant.key", "judgement.key"
                ), path  # fmt: skip
                if path.name == "signing.key":
                    assert path.parent.name == host.name, path
                if path.name == "judgement.key":  # the custodian's own (issue #24)
                    assert host.name == "custodian", path
            if path.suffix == ".key":
                assert path.stat().st_mode & 0o077 == 0, path
    assert not any(p.name == "ca.key" for p in install.root.rglob("*") if "ca" not in p.parts)


def test_a_revoked_certificate_is_refused_on_its_next_call(install: Install) -> None:
    id_number = install.summary.applicants[0][1]
    assert _verify(install, id_number, "before-revocation", who="intake-b")["decision"]
    _hedui("ca", "revoke", "--dir", str(install.root / "ca"), "--name", "intake-b")
    # the CA's operator sends the new list; the service's operator copies it in place
    shutil.copyfile(install.root / "ca" / "crl.pem", install.root / "service" / "keys" / "crl.pem")
    profile = IntakeProfile.load(install.profile("intake-b"))
    channel = open_channel(profile.address, tls=profile.tls, server_name="service")
    stub = verification_pb2_grpc.VerificationServiceStub(channel)
    request = verification_pb2.VerifyRequest(
        request_id="after-revocation",
        id_number=id_number,
        program="dibao",
        consent=consent_for(install.summary, id_number),
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.Verify(request, timeout=30)
    channel.close()
    assert grpc_code(info.value) == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (info.value.details() or "")  # type: ignore[attr-defined]
    # the others go on
    assert _verify(install, id_number, "other-intake", who="intake")["decision"]


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_an_intake_host_verifies_and_prints_a_report_with_its_profile_alone(
    install: Install, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """README, "Intake host": no workdir, only the host's own profile."""
    profile = install.profile("intake")
    id_number = install.summary.applicants[1][1]
    consent = consent_for(install.summary, id_number)
    form = tmp_path / "consent.pdf"
    form.write_bytes(f"scanned consent {consent.case_number}".encode())
    signers = [a for s in consent.signer_id_numbers for a in ("--signer", s)]
    code, out, err = _cli(
        capsys, "verify", "--profile", str(profile), "--id", id_number, "--program", "dibao",
        "--case-number", consent.case_number, "--consent-form", str(form),
        "--signed-on", consent.signed_on, *signers, "--json",
    )  # fmt: skip
    assert code == 0, err
    verdict = json.loads(out)
    report = tmp_path / "report.html"
    code, out, err = _cli(
        capsys, "report", "--profile", str(profile), "--request-id", verdict["request_id"],
        "--out", str(report),
    )  # fmt: skip
    assert code == 0, err
    assert verdict["request_id"] in report.read_text(encoding="utf-8")


def test_an_auditor_host_audits_the_log_with_its_profile_alone(
    install: Install, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """README, "Auditor host": enrolled like any party, given log/log.pub by the service's
    operator; it has no database, and reads the log through the service's AuditService."""
    id_number = install.summary.applicants[2][1]
    assert _verify(install, id_number, "for-the-auditor")["decision"]
    profile = str(install.auditor_profile())
    state = install.host(AUDITOR) / "state" / "auditor.json"
    code, out, err = _cli(capsys, "audit", "verify", "--profile", profile)
    assert code == 0, err
    assert out.startswith("log OK:") and "first verification" in out and state.exists()
    assert "checkpoint cosigned by the witness witness.example/w1" in out, out
    code, out, err = _cli(capsys, "audit", "verify", "--profile", profile, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ok"] and doc["consistent_with_size"] and doc["state"] == str(state)
    # every verdict entry is the decision the key custodian signed (issue #24)
    assert doc["judgements"]["checked"] >= 1 and doc["judgements"]["tampering"] == []
    code, out, err = _cli(capsys, "audit", "show", "--profile", profile, "--last", "50")
    assert code == 0 and "for-the-auditor" in out, err
    code, out, err = _cli(capsys, "audit", "prove", "0", "--profile", profile)
    assert code == 0 and "entry 0 is included in the signed tree" in out, err
    code, out, err = _cli(capsys, "audit", "search", "--profile", profile, "--caller", "intake")
    assert code == 0 and "for-the-auditor" in out and "this search was itself logged" in out, err
    export = tmp_path / "export.json"
    today = TODAY.isoformat()
    code, out, err = _cli(
        capsys, "audit", "export", "--profile", profile, "--since", today, "--until", today,
        "--out", str(export),
    )  # fmt: skip
    assert code == 0 and f"--profile {profile} --export {export}" in out, err
    code, out, err = _cli(capsys, "audit", "verify", "--profile", profile, "--export", str(export))
    assert code == 0 and out.startswith("export OK"), err
    # its search was logged, attributed to it
    code, out, err = _cli(capsys, "audit", "search", "--profile", profile, "--caller", AUDITOR)
    assert code == 0, err
    assert any(line.split()[4:6] == ["search", AUDITOR] for line in out.splitlines()), out
    # no database on this host: --offline is refused, saying why
    code, out, err = _cli(capsys, "audit", "verify", "--profile", profile, "--offline")
    assert code == 1 and "--offline" in err and "--workdir" in err, err


def test_a_decision_only_intake_sees_the_decision_and_payment_opens_the_benefit(
    install: Install, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue #24 item 2: an intake system configured decision_only gets the decision and each
    rule's outcome, no figure and no benefit; its payment system opens the sealed benefit."""
    households, person = oracle.load(install.data)
    for n, (household, id_number) in enumerate(install.summary.applicants):
        want = oracle.expected(households[household], person, TODAY.isoformat())
        if want["decision"] == "ELIGIBLE" and want["benefit_fen"] > 0:
            break
    got = _verify(install, id_number, f"pay-{n}", who="intake-pay")
    assert got["decision"] == "ELIGIBLE" and got["disclosure"] == "decision_only"
    assert got["benefit_fen"] == 0 and not got["figures_opening"] and got["sealed_benefit"]
    assert all(
        r["value"] is None and r["threshold"] is None and not r["figures"] for r in got["rules"]
    )
    assert {r["id"]: r["passed"] for r in got["rules"]} == want["rules"]
    assert str(want["benefit_fen"]) not in json.dumps(got).replace(got["sealed_benefit"], "")
    verdicts = tmp_path / "pay.jsonl"
    verdicts.write_text(json.dumps(got) + "\n")
    key = install.root / "payment" / "payment.key"
    code, out, err = _cli(capsys, "payment", "open", "--key", str(key), "--verdicts", str(verdicts))
    assert code == 0, err
    opened = json.loads(out)
    assert opened["benefit_fen"] == want["benefit_fen"] and opened["request_id"] == f"pay-{n}"
    # another intake asking about the same household is shown the benefit as before
    assert _verify(install, id_number, f"full-{n}")["benefit_fen"] == want["benefit_fen"]
