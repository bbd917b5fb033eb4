"""The commands of a party's own operator, on that party's host.

    hedui ca init --dir CA                         the deployment's offline CA
    hedui keys request --party NAME --role ROLE --keys DIR
                                                   the party's keys, made here; a CSR to send
                                                   (ROLE: service, custodian, registry,
                                                   connector, intake or auditor)
    hedui ca sign --dir CA REQUEST.csr --name NAME --role ROLE   the CA signs it (REQUEST.pem)
    hedui keys install --party NAME --keys DIR --cert CERT --ca CA.pem [--crl CRL.pem]
    hedui ca revoke --dir CA --name NAME           a new revocation list, to copy to every party
    hedui serve service|custodian|registry|connector [NAME] --config FILE
    hedui serve witness --workdir DIR              a log witness (c2sp.org/tlog-witness): its
                                                   config, key and state in DIR
    hedui db upgrade|status --config FILE          the service's databases: schema migrations

Each `serve` runs the party's own code (``hedui.server.serve``, ``hedui.custodian.serve``,
``hedui.connectors.serve``, ``hedui.witness.serve``) with only the key directory its config
names.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Collection, Iterator
from pathlib import Path

from hedui.clients.errors import ClientError
from hedui.clients.logs import configure_party_logging
from hedui.core.keyfiles import read_public


class _Roles(Collection[str]):
    """The roles of :data:`hedui.core.tls.ROLES` for argparse's ``choices``, imported only
    when an argument is checked or shown: hedui.core.tls imports grpc and cryptography, which
    `hedui --help` and `hedui --version` need not load."""

    @staticmethod
    def _all() -> tuple[str, ...]:
        from hedui.core.tls import ROLES

        return ROLES

    def __contains__(self, role: object) -> bool:
        return role in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


ROLES = _Roles()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def cmd_serve(args: argparse.Namespace) -> int:
    if (args.party == "witness") != (args.workdir is not None) or (
        (args.party == "witness") == bool(args.config)
    ):
        args.serve_parser.error(
            "the witness takes --workdir DIR (and no --config); every other party --config FILE"
        )
    configure_party_logging(args.log_format)
    env = dict(os.environ)
    if args.party == "witness":
        from hedui.witness.serve import serve as serve_witness

        serve_witness(args.workdir, env)
    elif args.party == "service":
        from hedui.server.serve import serve

        serve(args.config[0], env)
    elif args.party == "custodian":
        from hedui.custodian.serve import serve as serve_custodian

        serve_custodian(args.config[0], env)
    elif args.party == "registry":
        from hedui.connectors.serve import serve_registry

        serve_registry(args.config[0], env)
    else:
        from hedui.connectors.serve import serve_connectors

        if args.name is not None and len(args.config) != 1:
            raise ClientError("with a NAME, give its one --config FILE")
        serve_connectors(args.config, env, args.name)
    return 0


def cmd_ca_init(args: argparse.Namespace) -> int:
    from hedui.core.ca import CertificateAuthority

    ca = CertificateAuthority(args.dir)
    if not ca.init(_now()):
        print(f"{args.dir} already holds a CA; nothing changed")
        return 0
    print(f"CA created in {args.dir}: give {ca.cert_path} and {ca.crl_path} to every party;")
    print(f"{args.dir / 'ca.key'} never leaves this directory")
    return 0


def cmd_ca_sign(args: argparse.Namespace) -> int:
    from hedui.core.ca import CertificateAuthority
    from hedui.core.tls import requested_hosts

    ca = CertificateAuthority(args.dir)
    try:
        csr = args.request.read_bytes()
    except OSError as e:
        raise ClientError(f"cannot read {args.request}: {e.strerror}") from None
    cert = ca.sign(csr, _now(), name=args.name, role=args.role)
    out = args.out or args.request.with_suffix(".pem")
    out.write_bytes(cert)
    hosts = ", ".join(requested_hosts(csr)) or "loopback only"
    print(f"signed {args.name} in role {args.role} (hosts: {hosts}): {out}")
    print(f"send it with {ca.cert_path} and {ca.crl_path} to the party")
    return 0


def cmd_ca_revoke(args: argparse.Namespace) -> int:
    from hedui.core.ca import CertificateAuthority, format_serial, parse_serial

    ca = CertificateAuthority(args.dir)
    serial = None
    if args.serial is not None:
        try:
            serial = parse_serial(args.serial)
        except ValueError:
            raise ClientError(
                f"--serial {args.serial!r} is not a serial number: give it as `hedui ca list` "
                "prints it (hex, colon-separated or not)"
            ) from None
    revoked = ca.revoke(_now(), name=args.name, serial=serial)
    print(
        f"revoked certificate {format_serial(revoked)}; copy {ca.crl_path} to every party's key "
        "directory (its servers read it again on the next call)"
    )
    return 0


def cmd_ca_refresh(args: argparse.Namespace) -> int:
    from hedui.core.ca import CertificateAuthority

    issued = CertificateAuthority(args.dir).refresh(_now())
    print(
        f"revocation list number {issued.number} issued, valid until "
        f"{issued.next_update:%Y-%m-%d %H:%M} UTC; copy {args.dir / 'crl.pem'} to every party's "
        "key directory before the old one expires"
    )
    return 0


def cmd_ca_list(args: argparse.Namespace) -> int:
    from hedui.core.ca import CertificateAuthority, format_serial

    ca = CertificateAuthority(args.dir)
    crl = ca.revocation_list()
    print(
        f"# revocation list number {crl.number}, valid until {crl.next_update:%Y-%m-%d %H:%M} UTC"
    )
    records = ca.records()
    today = _now().date()
    rows = [("SERIAL", "ROLE", "NAME", "ISSUED", "NOT AFTER", "STATUS")] + [
        (format_serial(r.serial), r.role, r.name, r.issued_on, r.not_after, r.status(today))
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if not records:
        print("(no certificate signed yet)")
    return 0


def cmd_keys_request(args: argparse.Namespace) -> int:
    from hedui.clients.provision import own_secrets
    from hedui.core.keystore import KeyDir
    from hedui.core.tls import check_role

    check_role(args.party, args.role)  # before any key is made
    keys = KeyDir(args.keys)
    args.keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys.create_own_keys(args.party, args.role, paillier_bits=args.paillier_bits)
    csr = keys.request_certificate(args.party, args.role, args.host or ())
    made = [str(p) for p in own_secrets(keys, args.party) if p.exists()]
    print(f"keys of {args.party} made in {args.keys}" + (f": {', '.join(made)}" if made else ""))
    print(f"send {csr} (a certificate signing request, no secret) to the CA's operator")
    return 0


def cmd_keys_install(args: argparse.Namespace) -> int:
    from hedui.core.keystore import KeyDir

    keys = KeyDir(args.keys)
    who = keys.install_certificate(
        args.party,
        read_public(args.cert),
        read_public(args.ca),
        crl_pem=None if args.crl is None else read_public(args.crl),
        crl_where=f"{args.crl}",
        replace_ca=args.replace_ca,
        now=_now(),
    )
    print(f"certificate of {who.name} (role {who.role}) installed in {keys.tls_paths(who.name)[0]}")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from hedui.server.config import load
    from hedui.server.databases import upgrade_databases

    for done in upgrade_databases(load(args.config, dict(os.environ))):
        if done.adopted:
            print(
                f"{done.schema.name}: a database from before migrations, recorded at {done.before}"
            )
        if done.applied:
            print(f"{done.schema.name}: applied {', '.join(done.applied)}; now at {done.after}")
        else:
            print(f"{done.schema.name}: already at {done.after}; nothing to do")
    return 0


def cmd_db_status(args: argparse.Namespace) -> int:
    """Each database's schema against this release's; exit 0 only when the service can serve
    both as they are (1: one is behind, newer, of no known revision, or cannot be read)."""
    from hedui.audit.schema import AUDIT_SCHEMA
    from hedui.core.migrations import status
    from hedui.server.config import load
    from hedui.server.schema import SERVICE_SCHEMA

    config = load(args.config, dict(os.environ))
    found = [  # the same two as `hedui db upgrade` (hedui.server.databases)
        status(config.audit_database, AUDIT_SCHEMA),
        status(config.service_database, SERVICE_SCHEMA),
    ]
    for s in found:
        line = s.text(f"hedui db upgrade --config {args.config}")
        if s.state == "unreadable":  # an error, as every command reports one
            print(f"hedui: error: {line}", file=sys.stderr)
        else:
            print(line)
    return 0 if all(s.servable for s in found) else 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run one party on this host (its operator's command)")
    p.add_argument(
        "party",
        choices=["service", "custodian", "registry", "connector", "witness"],
        help="which party: the verification service, the key custodian, the household "
        "registry (and token authority), a bank's or department's connector, or a witness "
        "of the audit log",
    )
    p.add_argument(
        "name", nargs="?", help="connector only: its id, e.g. bank-07 (checked against the config)"
    )
    p.add_argument(
        "--config",
        type=Path,
        action="append",
        help="the party's TOML config, required for every party but the witness (default: "
        "none); every setting may be overridden by a HEDUI_<SETTING> variable (connector: "
        "repeat to serve several connectors from one process)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="witness only, and required for it: its directory (witness.toml, its key and "
        "state; the key is made at the first start and its verifier key written to "
        "witness.vkey) (default: none)",
    )
    p.add_argument(
        "--log-format",
        choices=["json", "text"],
        default="json",
        help="log lines on stderr: json (with the time zone) or text (default: %(default)s)",
    )
    p.set_defaults(func=cmd_serve, serve_parser=p)

    db = sub.add_parser("db", help="the service's databases (audit log and state): schema")
    dbs = db.add_subparsers(dest="db_command", required=True)
    for name, func, what in (
        ("upgrade", cmd_db_upgrade, "bring them to this release's schema (back them up first)"),
        (
            "status",
            cmd_db_status,
            "show each one's schema revision and this release's; exit 1 unless both can be "
            "served as they are",
        ),
    ):
        p = dbs.add_parser(name, help=what)
        p.add_argument(
            "--config",
            type=Path,
            required=True,
            help="the service's TOML config (its audit_database and service_database)",
        )
        p.set_defaults(func=func)

    ca = sub.add_parser("ca", help="the deployment's certificate authority (offline)")
    cas = ca.add_subparsers(dest="ca_command", required=True)
    p = cas.add_parser("init", help="create the CA and an empty revocation list")
    p.add_argument("--dir", type=Path, required=True, help="the CA's directory (kept offline)")
    p.set_defaults(func=cmd_ca_init)
    p = cas.add_parser("sign", help="sign a party's certificate signing request")
    p.add_argument("--dir", type=Path, required=True, help="the CA's directory")
    p.add_argument("request", type=Path, help="the party's .csr file (from `hedui keys request`)")
    p.add_argument("--name", required=True, help="the party the request must be for, e.g. bank-07")
    p.add_argument(
        "--role",
        choices=ROLES,
        metavar="ROLE",  # not {service,…}: argparse would list ROLES, importing hedui.core.tls
        required=True,
        help="the role it must ask for: service, custodian, registry (for the party named "
        "registry only), connector, intake or auditor",
    )
    p.add_argument("--out", type=Path, help="where to write the certificate (default: REQUEST.pem)")
    p.set_defaults(func=cmd_ca_sign)
    p = cas.add_parser("revoke", help="revoke a certificate and write a new revocation list")
    p.add_argument("--dir", type=Path, required=True, help="the CA's directory")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--name", help="the party whose live certificate to revoke (default: give --serial)"
    )
    group.add_argument(
        "--serial",
        help="the certificate's serial number as `ca list` prints it (hex, colon-separated "
        "or not) (default: give --name)",
    )
    p.set_defaults(func=cmd_ca_revoke)
    p = cas.add_parser(
        "refresh", help="issue a fresh revocation list before the current one expires"
    )
    p.add_argument("--dir", type=Path, required=True, help="the CA's directory")
    p.set_defaults(func=cmd_ca_refresh)
    p = cas.add_parser("list", help="every certificate the CA signed")
    p.add_argument("--dir", type=Path, required=True, help="the CA's directory")
    p.set_defaults(func=cmd_ca_list)


def add_keys_parsers(keys: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = keys.add_parser(
        "request", help="make a party's keys on its host and a certificate signing request"
    )
    p.add_argument("--party", required=True, help="its name, e.g. bank-07, service, custodian")
    p.add_argument(
        "--role",
        choices=ROLES,
        metavar="ROLE",
        required=True,
        help="its certificate role: service, custodian, registry (the household registry and "
        "token authority, party name registry), connector (a bank or department), intake or "
        "auditor (a client). A registry enrolled with role connector keeps working",
    )
    p.add_argument("--keys", type=Path, required=True, help="the party's key directory")
    p.add_argument(
        "--host",
        action="append",
        help="a full DNS name or IP address its server answers on (repeatable; default: "
        "loopback only)",
    )
    p.add_argument(
        "--paillier-bits",
        type=int,
        default=2048,
        help="custodian only: the Paillier key size (default: %(default)s)",
    )
    p.set_defaults(func=cmd_keys_request)
    p = keys.add_parser("install", help="install the certificate the CA signed")
    p.add_argument("--party", required=True, help="its name, as in the request")
    p.add_argument("--keys", type=Path, required=True, help="the party's key directory")
    p.add_argument("--cert", type=Path, required=True, help="the signed certificate")
    p.add_argument("--ca", type=Path, required=True, help="the CA's certificate (ca.pem)")
    p.add_argument(
        "--crl",
        type=Path,
        help="the CA's revocation list, crl.pem, checked against the CA (default: none; copy "
        "it later: the party's servers refuse every call until it is there)",
    )
    p.add_argument(
        "--replace-ca",
        action="store_true",
        help="trust this CA instead of the one installed before (default: refuse another CA)",
    )
    p.set_defaults(func=cmd_keys_install)
