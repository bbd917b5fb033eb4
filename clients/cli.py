"""The ``hedui`` command line.

Library code raises :class:`hedui.core.errors.HeduiError`; only :func:`main` catches it and
prints a message for a person (with the traceback only under ``--verbose``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hedui.clients import (
    audit_cli,
    campaign_cli,
    console_cli,
    monitoring_cli,
    party_cli,
    payment_cli,
    policy_cli,
    report_cli,
)
from hedui.clients.args import (
    check_writable_dir,
    check_writable_file,
    database_url,
    date_arg,
    positive_seconds,
    unwritable,
)
from hedui.clients.consent import MAX_FORM_TEXT
from hedui.clients.errors import ClientError
from hedui.clients.intake import INTAKE_STEP
from hedui.core.clock import DEPLOYMENT
from hedui.core.errors import HeduiError

# A command's own code (grpc, cryptography, SQLAlchemy, the parties) is imported in its
# handler: `hedui --version`, `--help` and a parse error load only the parsers.
if TYPE_CHECKING:
    from hedui.clients.deploy import Deployment, DeploySettings
    from hedui.connectors.population import PopulationSummary
    from hedui.core.workdir import Workdir
    from hedui.proto.v1 import verification_pb2


def _today() -> dt.date:
    return DEPLOYMENT.today()


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _setup_logging(verbose: bool) -> None:
    from hedui.clients.logs import LOG_FORMAT, ZonedFormatter

    handlers: list[logging.Handler] = [
        logging.StreamHandler(sys.stderr) if verbose else logging.NullHandler()
    ]
    for h in handlers:
        h.setFormatter(ZonedFormatter(LOG_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=handlers)


# -- commands -------------------------------------------------------------------------------


def cmd_keys_init(args: argparse.Namespace) -> int:
    from hedui.clients.deploy import DeploySettings
    from hedui.core.workdir import Workdir

    settings = DeploySettings(
        workdir=args.workdir, paillier_bits=args.paillier_bits, banks=args.banks
    )
    from hedui.clients.provision import provision

    w = Workdir(args.workdir)
    parties = provision(
        w,
        settings.connectors(),
        dt.datetime.now(dt.UTC),
        paillier_bits=args.paillier_bits,
        on_create=lambda s: _say(f"creating {s}"),
    )
    print(f"{len(parties)} parties enrolled, each in its own directory under {w.root / 'parties'}")
    return 0


def _standard_on(as_of: dt.date) -> int:
    from hedui.core.policy.book import PolicyBook

    return PolicyBook.builtin().regions["demo"].get("dibao_standard", as_of).value


def known_regions() -> list[str]:
    """The regions a deployment started by `hedui up` serves: the built-in parameter files."""
    from hedui.core.policy.book import PolicyBook

    return sorted(PolicyBook.builtin().regions)


def cmd_population_generate(args: argparse.Namespace) -> int:
    from hedui.connectors.population import generate

    check_writable_dir(args.out, "--out")
    as_of = args.as_of or _today()
    try:
        summary = generate(
            args.out,
            households=args.households,
            seed=args.seed,
            as_of=as_of,
            standard_fen=_standard_on(as_of),
        )
    except OSError as e:
        raise unwritable(Path(e.filename or args.out), "--out", e) from None
    print(
        f"{summary.households} households, {summary.people} people, {len(summary.files)} files in {args.out}"
    )
    return 0


def _authority(w: Workdir, address: str | None) -> tuple[str, bool]:
    """The token authority's address (the registry's) and whether channels are plaintext."""
    import tomllib

    try:
        doc = tomllib.loads(w.service_config.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        doc = {}
    found = address or doc.get("registry", {}).get("address")
    if not isinstance(found, str) or not found:
        raise ClientError(
            "a connector's import needs the token authority (the registry of the running "
            "deployment): start it with `hedui up`, or pass --authority HOST:PORT"
        )
    return found, bool(doc.get("service", {}).get("insecure", False))


def cmd_keys_issue(args: argparse.Namespace) -> int:
    """A certificate of its own for one more intake system or auditor, and its profile."""
    from hedui.clients.auditor import write_auditor_profile
    from hedui.clients.deploy import record_operator_entry, write_intake_profile
    from hedui.clients.intake import IntakeProfile
    from hedui.clients.provision import enrol_client
    from hedui.core.workdir import Workdir
    from hedui.proto.v1 import audit_pb2

    w = Workdir(args.workdir)
    if not w.ca.exists():
        raise ClientError(f"{w.root} holds no deployment CA; run `hedui up` first")
    enrol_client(w, args.name, args.role, dt.datetime.now(dt.UTC))
    index = record_operator_entry(
        w,
        audit_pb2.AuditEntry(
            config_change=audit_pb2.ConfigChange(
                setting=f"certificate:{args.name}", new_value=f"issued, role {args.role}"
            )
        ),
    )
    profile = w.root / f"{args.name}.toml"
    base = w.intake_profile if args.role == "intake" else w.auditor_profile
    if base.exists():
        earlier = IntakeProfile.load(base)
        write = write_intake_profile if args.role == "intake" else write_auditor_profile
        write(w, earlier.address, earlier.tls is None, name=args.name, path=profile)
        print(f"certificate for {args.name} (role {args.role}) issued; profile {profile}")
    else:
        print(f"certificate for {args.name} (role {args.role}) issued in {w.party_dir(args.name)}")
    print(f"logged as audit entry {index}; its entries are found by `--caller {args.name}`")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from hedui.clients.deploy import record_operator_entry
    from hedui.core.workdir import Workdir
    from hedui.proto.v1 import audit_pb2

    w = Workdir(args.workdir)
    if not args.tokens:
        raise ClientError("say which keys to rotate: --tokens (a new token epoch)")
    from hedui.core.keystore import REGISTRY_ID

    epoch = w.keys(REGISTRY_ID).rotate_token_epoch()
    index = record_operator_entry(
        w,
        audit_pb2.AuditEntry(
            key_event=audit_pb2.KeyEvent(
                event="rotated", key_name=f"token-authority:oprf:epoch-{epoch}"
            )
        ),
    )
    print(f"token key rotated; audit entry {index}")
    print(
        f"token epoch {epoch} started. Restart `hedui up --data DIR`: every connector imports its "
        "data again by blinded evaluation under the new epoch; until it has, its answers are "
        "refused by name (NEEDS_REVIEW), never counted as 0"
    )
    return 0


def cmd_connector_sync(args: argparse.Namespace) -> int:
    from hedui.clients.connector_cli import sync_on_host

    return sync_on_host(
        args.name,
        args.config,
        args.authority,
        args.epoch,
        _today(),
        allow_shrink=args.allow_shrink,
        say=_say,
    )


def cmd_connector_events(args: argparse.Namespace) -> int:
    from hedui.clients.connector_cli import events_on_host

    return events_on_host(
        args.name,
        args.config,
        file=args.file,
        since=args.since,
        authority=args.authority,
        service=args.service,
        epoch=args.epoch,
        today=_today(),
    )


def cmd_connector_import(args: argparse.Namespace) -> int:
    from hedui.core.workdir import Workdir

    if args.config is not None:
        from hedui.clients.connector_cli import import_on_host

        return import_on_host(
            args.config,
            args.file,
            args.authority,
            args.epoch,
            _today(),
            allow_shrink=args.allow_shrink,
        )
    if args.connector is None:
        raise ClientError("with --workdir, say which connector: --connector NAME")
    from hedui.clients.deploy import connector_seal, import_connector, record_import
    from hedui.connectors.importer import (
        check_shrink,
        current_population,
        read_dataset,
        validate_dataset,
        write_database,
    )
    from hedui.core.deployment import default_connector_ids
    from hedui.core.keystore import REGISTRY_ID

    w = Workdir(args.workdir)
    cid = args.connector
    if cid != REGISTRY_ID and cid not in default_connector_ids():
        raise ClientError(
            f"unknown connector {cid!r}; connectors are registry, the departments and bank-01..bank-73"
        )
    if not args.file.is_file():
        raise ClientError(f"{args.file} is not a file")
    before = current_population(w.connector_db(cid), cid)
    if not args.allow_shrink:
        check_shrink(cid, before, validate_dataset(args.file, cid, today=_today()))
    if cid == REGISTRY_ID:
        data = read_dataset(args.file, cid, None, today=_today())
    else:  # the IDs become tokens at the token authority, blinded
        address, insecure = _authority(w, args.authority)
        data = import_connector(w, cid, args.file, address, insecure, _today())
    write_database(
        w.connector_db(cid), data, None if cid == REGISTRY_ID else connector_seal(w, cid)
    )
    index = record_import(w, cid, before, data.size)
    what = (
        "residents into the household register"
        if cid == REGISTRY_ID
        else f"people into {cid} (stored by token, not by ID number)"
    )
    print(
        f"imported {data.size} {what} (before: {before if before is not None else 'none'}; "
        f"audit entry {index}); restart `hedui up` to serve the new data"
    )
    return 0


def _deploy_settings(args: argparse.Namespace, workdir: Path, data: Path | None) -> DeploySettings:
    from hedui.clients.deploy import DeploySettings

    return DeploySettings(
        workdir=workdir,
        data=data,
        insecure=args.insecure,
        paillier_bits=args.paillier_bits,
        min_banks=args.min_banks,
        query_timeout_seconds=args.timeout,
        database_url=getattr(args, "database_url", None) or "",
    )


def cmd_up(args: argparse.Namespace) -> int:
    from hedui.clients.deploy import Deployment, prepare, run_until_signalled
    from hedui.clients.logs import log_to_file
    from hedui.core.workdir import Workdir

    settings = _deploy_settings(args, args.workdir, args.data)
    holder = Workdir(args.workdir)
    holder.lock()  # one deployment per workdir: a second `hedui up` refuses
    try:
        w = prepare(settings, _say, _today())
        log_to_file(w.log_dir)
        if args.insecure:
            _say(
                "WARNING: --insecure: plaintext channels without authentication; for local experiments only"
            )
        deployment = Deployment(settings, w)
        deployment.say = _say  # "started 44/87 connectors" on stderr while they start
        _say(f"starting {len(settings.connectors()) + 1} connectors and the verification service …")
        run_until_signalled(deployment, lambda address: _print_ready(deployment, address))
    finally:
        holder.unlock()
    _say("stopped")
    return 0


def _print_ready(deployment: Deployment, address: str) -> None:
    """The "ready" line (the service's address first), then where each process serves its
    Prometheus /metrics (also in W/run/metrics.txt)."""
    w = deployment.workdir
    print(
        f"ready: verification service at {address} (intake profile {w.intake_profile}); Ctrl-C stops",
        flush=True,
    )
    shown = deployment.metrics_by_process()
    if shown:
        print(f"metrics (Prometheus; every party's in {deployment.metrics_file}):")
        width = max(len(who) for who, _ in shown)
        for who, metrics in shown:
            print(f"  {who:<{width}}  http://{metrics}/metrics")
        sys.stdout.flush()


def _request(
    args: argparse.Namespace, id_number: str, consent: verification_pb2.Consent
) -> verification_pb2.VerifyRequest:
    from hedui.proto.v1 import verification_pb2

    return verification_pb2.VerifyRequest(
        request_id=args.request_id or f"cli-{uuid.uuid4()}",
        id_number=id_number,
        program=args.program,
        region=args.region or "",
        consent=consent,
        as_of=args.as_of.isoformat() if args.as_of else "",
        caseworker_id=getattr(args, "caseworker", None) or "",
    )


def cmd_verify(args: argparse.Namespace) -> int:
    from hedui.clients.consent import form_digest, signed_consent
    from hedui.clients.intake import (
        IntakeClient,
        IntakeProfile,
        intake_profile_path,
        verdict_to_dict,
        verdict_to_text,
        verify_option,
    )

    if args.region is not None and args.region not in (known := known_regions()):
        raise ClientError(f"unknown region {args.region!r}; known regions: {', '.join(known)}")
    profile = intake_profile_path(args.profile, args.workdir)
    consent = signed_consent(
        args.case_number,
        args.signed_on,
        form_digest(args.consent_form, "consent form", "--consent-form"),
        args.signer,
    )
    client = IntakeClient(IntakeProfile.load(profile))
    try:
        verdict = client.verify(_request(args, args.id, consent), fields=verify_option)
    finally:
        client.close()
    if args.json:
        print(json.dumps(verdict_to_dict(verdict), ensure_ascii=False, indent=2))
    else:
        print(verdict_to_text(verdict))
    return 0


def cmd_bench_load(args: argparse.Namespace) -> int:
    from hedui.clients.intake import IntakeProfile
    from hedui.clients.loadgen import run_load
    from hedui.core.workdir import Workdir

    w = Workdir(args.workdir)
    try:
        applicants = [
            line.strip()
            for line in args.ids.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except OSError as e:
        raise ClientError(f"cannot read {args.ids}: {e.strerror}") from None
    result = run_load(
        IntakeProfile.load(w.intake_profile),
        applicants,
        concurrency=args.concurrency,
        seconds=args.seconds,
        program=args.program,
        prefix=f"load-{uuid.uuid4().hex[:8]}",
        campaign=args.campaign,
    )
    if not result.completed:
        raise ClientError(result.summary())
    print(result.summary())
    return 0


def cmd_recheck(args: argparse.Namespace) -> int:
    from hedui.clients.intake import IntakeProfile
    from hedui.clients.recheck import progress_bar, recheck
    from hedui.core.workdir import Workdir

    w = Workdir(args.workdir)
    out = args.out or args.ids.with_suffix(".verdicts.jsonl")
    if not args.ids.is_file():
        raise ClientError(
            f"the roster {args.ids} is not a file; give --ids the case system's export, "
            "one ID number per line"
        )
    check_writable_file(out, "--out")  # before anything is contacted
    try:
        summary = recheck(
            IntakeProfile.load(w.intake_profile),
            args.ids,
            out,
            program=args.program,
            campaign_number=args.campaign,
            campaign=args.round,
            progress=progress_bar() if not args.quiet else (lambda d, t: None),
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; results so far are in {out}; run the same command to resume",
            file=sys.stderr,
        )
        return 130
    print(summary.text())
    print(f"verdicts: {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hedui.clients.deploy import Deployment, prepare
    from hedui.clients.intake import IntakeClient, IntakeProfile, verdict_to_dict
    from hedui.connectors.population import generate
    from hedui.core.resident_id import parse as parse_id
    from hedui.proto.v1 import verification_pb2

    today = _today()
    check_writable_file(args.report, "--report")
    with tempfile.TemporaryDirectory(prefix="hedui-demo-") as tmp:
        root = Path(tmp)
        _say(f"generating {args.households} households …")
        summary = generate(
            root / "data",
            households=args.households,
            seed=args.seed,
            as_of=today,
            standard_fen=_standard_on(today),
        )
        settings = _deploy_settings(args, root / "work", root / "data")
        w = prepare(settings, _say, today)
        deployment = Deployment(settings, w)
        _say("starting 87 connectors and the verification service …")
        deployment.start()
        try:
            heads = dict(summary.applicants)
            picks = [(label, heads[h]) for label, h in summary.thresholds]
            chosen = {p[1] for p in picks}
            others = [i for _, i in summary.applicants if i not in chosen]
            picks += [("random", i) for i in others[: max(0, args.samples - len(picks))]]
            picks = picks[: args.samples]
            client = IntakeClient(IntakeProfile.load(w.intake_profile))
            rows = []
            try:
                for label, id_number in picks:
                    args.request_id = None
                    start = time.perf_counter()
                    verdict = client.verify(
                        _request(args, id_number, _demo_consent(summary, id_number, today))
                    )
                    ms = (time.perf_counter() - start) * 1000
                    rows.append((label, parse_id(id_number).masked(), verdict, ms))
                if rows:
                    report = client.report(
                        verification_pb2.ReportRequest(request_id=rows[0][2].request_id)
                    )
                    try:
                        args.report.write_bytes(report.document)
                    except OSError as e:
                        raise unwritable(args.report, "--report", e) from None
            finally:
                client.close()
            _say(
                "主动发现: enrolling one household, then the civil affairs department reports a death …"
            )
            discovered = monitoring_cli.demo_discovery(w, summary.applicants[-1][1], root, today)
        finally:
            deployment.stop()
    if args.json:
        out = []
        for label, masked, verdict, ms in rows:
            d = verdict_to_dict(verdict)
            d.update({"sample": label, "id_masked": masked, "time_ms": round(ms)})
            out.append(d)
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    print(demo_table(rows))
    print(
        f"\n{len(rows)} verifications against 87 connectors; benefit in yuan per month; policy {rows[0][2].policy_version if rows else '-'}"
    )
    print(f"\n{discovered}")
    if rows:
        print(
            f"\n核对报告 of {rows[0][2].request_id} ({rows[0][0]}): {args.report} (A4, open it in a "
            "browser and print; `hedui report` makes one for any verdict)"
        )
    return 0


def _demo_consent(
    summary: PopulationSummary, applicant: str, today: dt.date
) -> verification_pb2.Consent:
    """The demo's consent for an applicant: signed today by the household's adult members,
    the "scanned form" being a line of text that names the case."""
    from hedui.clients.consent import adults, signed_consent

    household = next(h for h, head in summary.applicants if head == applicant)
    case = f"DEMO-{today.year}-{household}"
    return signed_consent(
        case,
        today,
        hashlib.sha256(case.encode()).digest(),
        adults(summary.members[household], today),
    )


def demo_table(rows: Sequence[tuple[str, str, verification_pb2.Verdict, float]]) -> str:
    """The `hedui demo` table: one line per sample, decisions in English and Chinese."""
    from hedui.clients.intake import benefit_text, decision_text, pad
    from hedui.proto.v1 import common_pb2

    width = 23  # "NEEDS_REVIEW 需人工复核" on a terminal (a Chinese character takes two columns)
    lines = [
        f"{'sample':<24} {'applicant':<20} {'size':>4}  {pad('decision', width)} {'benefit':>10}  "
        f"{'time':>7}  undecided/failed rules"
    ]
    for label, masked, v, ms in rows:
        notes = ",".join(r.id for r in v.rules if r.outcome != common_pb2.PASSED)
        lines.append(
            f"{label:<24} {masked:<20} {v.household_size:>4}  {pad(decision_text(v.decision), width)} "
            f"{benefit_text(v):>10}  {ms:>5.0f}ms  {notes or '-'}"
        )
    return "\n".join(lines)


# -- parser ---------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _version() -> str:
    try:
        return importlib.metadata.version("hedui")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed)"


WORKDIR_HELP = "the deployment's working directory (keys, databases, profiles and logs)"
PROGRAM_HELP = "programme: dibao, dibian, zhichu or tekun (default: %(default)s)"


def _add_deploy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext channels without authentication, for local experiments only "
        "(default: mutual TLS)",
    )
    p.add_argument(
        "--paillier-bits",
        type=_positive,
        default=2048,
        help="Paillier key size in bits, used only when keys are created (default: %(default)s)",
    )
    p.add_argument(
        "--min-banks",
        type=_positive,
        default=3,
        help="fewest bank answers the key custodian decrypts a total of (default: %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        help="deadline of each connector query, in seconds (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hedui", description="household economic-status verification (核对)"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="log to stderr and show a traceback on errors (default: quiet)",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"hedui {_version()}",
        help="print the version of hedui and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    keys = sub.add_parser("keys", help="key management").add_subparsers(
        dest="keys_command", required=True
    )
    p = keys.add_parser("init", help="create the CA, certificates and keys of a deployment")
    p.add_argument("--workdir", type=Path, required=True, help=WORKDIR_HELP)
    p.add_argument(
        "--paillier-bits",
        type=_positive,
        default=2048,
        help="Paillier key size in bits (default: %(default)s)",
    )
    p.add_argument(
        "--banks",
        type=_positive,
        default=73,
        help="number of bank connectors to create keys for (default: %(default)s)",
    )
    p.set_defaults(func=cmd_keys_init)
    p = keys.add_parser(
        "issue", help="a certificate of its own for another intake system or auditor"
    )
    p.add_argument("--workdir", type=Path, required=True, help=WORKDIR_HELP)
    p.add_argument(
        "--name", required=True, help="its name in the certificate, e.g. intake-hangzhou"
    )
    p.add_argument(
        "--role",
        choices=["intake", "auditor"],
        required=True,
        help="intake (calls Verify) or auditor (reads the log)",
    )
    p.set_defaults(func=cmd_keys_issue)
    p = keys.add_parser("rotate", help="start a new key epoch")
    p.add_argument("--workdir", type=Path, required=True, help=WORKDIR_HELP)
    p.add_argument(
        "--tokens",
        action="store_true",
        help="a new token epoch: a new OPRF key at the token authority (default: off)",
    )
    p.set_defaults(func=cmd_keys_rotate)
    party_cli.add_keys_parsers(keys)

    pop = sub.add_parser("population", help="synthetic data").add_subparsers(
        dest="pop_command", required=True
    )
    p = pop.add_parser("generate", help="write a synthetic population as one CSV per connector")
    p.add_argument(
        "--households", type=_positive, required=True, help="number of households to generate"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=1,
        help="random seed; the same seed gives the same population (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder to write registry.csv and <connector>.csv into (created if missing)",
    )
    p.add_argument(
        "--as-of",
        type=date_arg,
        help="date YYYY-MM-DD whose dibao standard sets the threshold households "
        "(default: today in China Standard Time)",
    )
    p.set_defaults(func=cmd_population_generate)

    con = sub.add_parser("connector", help="connector data").add_subparsers(
        dest="con_command", required=True
    )
    p = con.add_parser("import", help="replace a connector's data with a CSV file")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--workdir",
        type=Path,
        help="the `hedui up` working directory (default: none; give --workdir or --config)",
    )
    where.add_argument(
        "--config",
        type=Path,
        help="on the connector's own host: its config file, as for `hedui serve connector` "
        "(default: none; give --workdir or --config)",
    )
    p.add_argument(
        "--connector",
        help="with --workdir, the connector to replace: registry, hrss, tax, …, bank-01 … "
        "bank-73 (default: none; with --config, the config names it)",
    )
    p.add_argument(
        "--epoch",
        type=_positive,
        default=1,
        help="with --config: the token epoch the registry's operator announced "
        "(default: %(default)s)",
    )
    p.add_argument("--file", type=Path, required=True, help="CSV file with a header row")
    p.add_argument(
        "--allow-shrink",
        action="store_true",
        help="accept a file that empties the connector or drops over 20%% of its people "
        "(default: refused)",
    )
    p.add_argument(
        "--authority",
        help="address of the token authority (the registry) "
        "(default: the running deployment's, from the service's config)",
    )
    p.set_defaults(func=cmd_connector_import)
    p = con.add_parser(
        "sync", help="build a connector's token index from its source database ([source])"
    )
    p.add_argument("name", help="the connector, e.g. bank-07 (checked against the config)")
    p.add_argument("--config", type=Path, required=True, help="the connector's config file")
    p.add_argument(
        "--authority", required=True, help="address of the token authority (the registry)"
    )
    p.add_argument(
        "--epoch",
        type=_positive,
        default=1,
        help="the token epoch the registry's operator announced (default: %(default)s)",
    )
    p.add_argument(
        "--allow-shrink",
        action="store_true",
        help="accept a source that empties the connector or drops over 20%% of its people "
        "(default: refused)",
    )
    p.set_defaults(func=cmd_connector_sync)

    p = con.add_parser(
        "events", help="push a department's events (主动发现) to the verification service"
    )
    p.add_argument("name", help="the connector, e.g. civil (checked against the config)")
    p.add_argument("--config", type=Path, required=True, help="the connector's config file")
    p.add_argument(
        "--file", type=Path, help="CSV of id_number,kind,occurred_on,amount_fen (default: none)"
    )
    p.add_argument(
        "--since",
        type=date_arg,
        help="send the events of [source] events from this day, YYYY-MM-DD (default: none)",
    )
    p.add_argument(
        "--authority", required=True, help="address of the token authority (the registry)"
    )
    p.add_argument("--service", required=True, help="address of the verification service")
    p.add_argument(
        "--epoch",
        type=_positive,
        default=1,
        help="the token epoch the registry's operator announced (default: %(default)s)",
    )
    p.set_defaults(func=cmd_connector_events)

    p = sub.add_parser("up", help="run a deployment on this machine until Ctrl-C")
    p.add_argument(
        "--data",
        type=Path,
        help="folder of <connector>.csv files, e.g. from `hedui population generate` "
        "(needed the first time; default: keep the data already imported)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        required=True,
        help="the deployment's working directory, created if missing (keys, databases, "
        "profiles and logs)",
    )
    _add_deploy_flags(p)
    p.add_argument(
        "--database-url",
        type=database_url,
        metavar="URL",
        help="SQLAlchemy URL of the database for the service's state and the audit log, e.g. "
        "postgresql+psycopg://hedui@db.example/hedui; kept in the service's config for later starts "
        "(default: SQLite files audit.sqlite and service.sqlite in WORKDIR/parties/service/db)",
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("verify", help="verify one applicant (the intake client)")
    p.add_argument(
        "--workdir",
        type=Path,
        help="the `hedui up` working directory, whose intake.toml is used "
        "(default: none; an intake host gives --profile instead)",
    )
    p.add_argument("--id", required=True, help="the applicant's resident ID number")
    p.add_argument("--program", required=True, help="programme: dibao, dibian, zhichu or tekun")
    p.add_argument(
        "--region",
        help="region whose parameters apply, e.g. demo or shanghai "
        "(default: the deployment's default region)",
    )
    p.add_argument(
        "--as-of",
        type=date_arg,
        help="application date YYYY-MM-DD (default: today in China Standard Time)",
    )
    p.add_argument(
        "--case-number",
        required=True,
        help="the application's case number (案件编号), as on the signed consent form",
    )
    p.add_argument(
        "--consent-form",
        type=Path,
        required=True,
        metavar="FILE",
        help="the scanned signed consent form (授权书), a regular file of at most "
        f"{MAX_FORM_TEXT}; its SHA-256 is sent and logged",
    )
    p.add_argument(
        "--signed-on",
        type=date_arg,
        required=True,
        help="the date the consent was signed, YYYY-MM-DD",
    )
    p.add_argument(
        "--signer",
        action="append",
        required=True,
        metavar="ID",
        help="resident ID number of a household member who signed (the applicant too); "
        "repeat for each; every adult member of the household must have signed",
    )
    p.add_argument(
        "--caseworker",
        help="your user id at the intake system, logged with the request (default: none)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="the intake profile to call with: an intake host's own "
        f"({INTAKE_STEP}), or one from `hedui keys issue` (default: WORKDIR/intake.toml)",
    )
    p.add_argument(
        "--request-id",
        help="idempotency key: the same key returns the stored verdict (default: a new one)",
    )
    p.add_argument("--json", action="store_true", help="print the verdict as JSON (default: text)")
    p.set_defaults(func=cmd_verify)

    audit_cli.add_parser(sub)
    party_cli.add_parser(sub)
    policy_cli.add_parser(sub)
    monitoring_cli.add_parser(sub)
    campaign_cli.add_parser(sub)
    payment_cli.add_parser(sub)
    report_cli.add_parser(sub)
    console_cli.add_parser(sub)

    p = sub.add_parser(
        "recheck", help="re-verify a roster of enrolled applicants (半年复核), resumable"
    )
    p.add_argument("--workdir", type=Path, required=True, help=WORKDIR_HELP)
    p.add_argument("--ids", type=Path, required=True, help="the roster: one ID number per line")
    p.add_argument("--program", default="dibao", help=PROGRAM_HELP)
    p.add_argument(
        "--out",
        type=Path,
        help="JSON lines file of verdicts, appended to and resumed from "
        "(default: <ids>.verdicts.jsonl)",
    )
    p.add_argument(
        "--campaign",
        required=True,
        metavar="NUMBER",
        help="the document number (文号) of the re-verification campaign the bureau registered "
        "with the household registry (hedui campaign register); only households on its "
        "roster are answered",
    )
    p.add_argument(
        "--round",
        help="name of this run in request ids and the results file, ASCII letters, digits and "
        "- (default: a digest of the roster, programme and campaign)",
    )
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (default: a bar on stderr)"
    )
    p.set_defaults(func=cmd_recheck)

    bench = sub.add_parser("bench", help="load generators").add_subparsers(
        dest="bench_command", required=True
    )
    p = bench.add_parser("load", help="concurrent Verify calls against a running deployment")
    p.add_argument("--workdir", type=Path, required=True, help=WORKDIR_HELP)
    p.add_argument("--ids", type=Path, required=True, help="applicant ID numbers, one per line")
    p.add_argument(
        "--concurrency",
        type=_positive,
        default=8,
        help="calls kept in flight at once (default: %(default)s)",
    )
    p.add_argument(
        "--seconds",
        type=positive_seconds,
        default=30.0,
        help="how long to keep calling, in seconds (default: %(default)s)",
    )
    p.add_argument("--program", default="dibao", help=PROGRAM_HELP)
    p.add_argument(
        "--campaign",
        required=True,
        metavar="NUMBER",
        help="the registered campaign (hedui campaign register) the calls re-check under; "
        "its roster must hold the --ids households",
    )
    p.set_defaults(func=cmd_bench_load)

    p = sub.add_parser(
        "demo", help="generate, start, verify a sample and stop, in a temporary folder"
    )
    p.add_argument(
        "--households",
        type=_positive,
        default=200,
        help="households in the synthetic population (default: %(default)s)",
    )
    p.add_argument(
        "--samples",
        type=_positive,
        default=14,
        help="applicants to verify, the threshold cases first (default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=int, default=1, help="random seed of the population (default: %(default)s)"
    )
    p.add_argument(
        "--json", action="store_true", help="print the verdicts as JSON (default: a table)"
    )
    p.add_argument(
        "--report",
        type=Path,
        default=Path("hedui-demo-report.html"),
        metavar="FILE",
        help="where to write the 核对报告 of the first verdict, to open in a browser; the demo's "
        "own file, replaced at every run (default: %(default)s here)",
    )
    _add_deploy_flags(p)
    p.set_defaults(func=cmd_demo, program="dibao", region=None, as_of=None, request_id=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except HeduiError as e:
        if args.verbose:
            logging.exception("failed")
        print(f"hedui: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hedui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
