"""Run a whole deployment on this machine: ``hedui up`` and ``hedui demo``.

Every party runs as its own OS process started with the same command an operator uses on
that party's host (``hedui serve registry|connector|custodian|service --config FILE``), each
from its own directory ``W/parties/<party>`` (0700) holding only its own keys and the public
files of others it trusts (see :mod:`hedui.clients.provision`). The connectors are grouped into
a few processes (one ``hedui serve connector --config A --config B …`` each) to spare memory;
each still has its own directory, certificate and port. Every process serves its Prometheus
``/metrics`` on a port of its own on 127.0.0.1 (kept in ``W/run/metrics.txt``; the connectors
of one process share its port, their series labelled by party). This process writes the configs,
imports connector data through the token authority, supervises the processes and restarts one
that dies on the same ports. Every channel is mutual TLS unless ``insecure``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hedui.audit.checkpoint import parse_and_verify, vkey
from hedui.audit.errors import VerificationError
from hedui.audit.log import DEFAULT_ORIGIN, AuditLog, key_name, new_origin
from hedui.audit.store import LogStore, open_log_engine
from hedui.clients.auditor import write_auditor_profile
from hedui.clients.provision import SERVICE, distribute, provision
from hedui.connectors.errors import ConnectorError, ImportRejected
from hedui.connectors.importer import Dataset, read_dataset, validate_dataset, write_database
from hedui.connectors.integrity import RowSeal
from hedui.connectors.serve import connector_config_toml, write_authority_config
from hedui.connectors.server import ConnectorSettings
from hedui.connectors.store import HoldingStore, open_engine
from hedui.connectors.tokenizer import AuthorityTokenizer
from hedui.core.clock import DEPLOYMENT
from hedui.core.config import toml_value
from hedui.core.custody import CUSTODIAN_ID
from hedui.core.deployment import default_connector_ids, kind_of
from hedui.core.errors import HeduiError, KeyFileError
from hedui.core.keyfiles import read_public
from hedui.core.keystore import REGISTRY_ID
from hedui.core.rpc import open_channel, wait_healthy
from hedui.core.tls import identity_from_pem
from hedui.core.workdir import Workdir
from hedui.custodian.service import CustodianConfig
from hedui.proto.v1 import audit_pb2
from hedui.server.config import ServiceConfig
from hedui.server.config import load as load_service_config
from hedui.server.databases import upgrade_databases
from hedui.server.fanout import Endpoint

log = logging.getLogger("hedui.deploy")


class Progress:
    """Lines of progress for a person, at most one every ``interval`` seconds (the first one
    ``interval`` after the start: the line that says what begins is said by the caller).
    Never "ready" nor an address: scripts wait for `hedui up`'s ready line (see cli)."""

    def __init__(
        self,
        say: Callable[[str], None],
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._say, self._interval, self._clock = say, interval, clock
        self._last = clock()

    def __call__(self, line: str | Callable[[], str]) -> None:
        """Say ``line`` (made only when said) unless a line was said less than the interval ago."""
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            self._say(line if isinstance(line, str) else line())


SERVICE_ID = SERVICE  # the verification service's party name
WITNESS_ID = "witness"  # the log's witness (c2sp.org/tlog-witness), a party of its own
WITNESS_ROLE = "witness"  # its certificate's role: it serves HTTPS and may call nothing
WITNESS_VKEY = Path("witness") / "witness.vkey"  # in its key directory, given to the others
PER_PARTY = frozenset(
    "HEDUI_" + name.upper()
    for name in (
        "address",
        "metrics_address",
        "keys_dir",
        "state_dir",
        "database_url",
        "audit_database",
        "service_database",
        "connector_id",
        "authority_config",
    )
)


@dataclass(frozen=True)
class DeploySettings:
    workdir: Path
    data: Path | None = None
    insecure: bool = False
    paillier_bits: int = 2048
    banks: int = 73
    worker_processes: int = 2
    min_banks: int = 3
    query_timeout_seconds: float = 10.0
    connector_ids: tuple[str, ...] = field(default=())
    database_url: str = ""  # the service's state and the audit log; "" = SQLite in the workdir

    def connectors(self) -> tuple[str, ...]:
        return self.connector_ids or default_connector_ids(self.banks)


def prepare(settings: DeploySettings, say: Callable[[str], None], today: dt.date) -> Workdir:
    """Enrol every party (a CA, each party's own keys and certificate in its own directory);
    import the CSV of the household register when it has no database yet.

    Every file is validated before anything is written; a connector without a file holds
    nothing. The data folder is checked before any key is created, so a mistyped workdir
    does not end up with a fresh key set.
    """
    w = Workdir(settings.workdir)
    ids = settings.connectors()
    todo = [c for c in (REGISTRY_ID, *ids) if not w.connector_db(c).exists()]
    if todo and settings.data is None:
        raise ConnectorError(
            f"{w.root} has no data yet for {len(todo)} connector(s); pass --data DIR with the CSV files"
        )
    if todo and settings.data is not None and not settings.data.is_dir():
        raise ConnectorError(f"--data {settings.data} is not a directory")
    if (
        todo
        and settings.data is not None
        and REGISTRY_ID in todo
        and not (settings.data / "registry.csv").is_file()
    ):
        raise ConnectorError(
            f"{settings.data} has no registry.csv; the household register is required"
        )
    provision(
        w,
        ids,
        dt.datetime.now(dt.UTC),
        paillier_bits=settings.paillier_bits,
        on_create=lambda what: say(f"creating {what}"),
    )
    enrol_witness(w, dt.datetime.now(dt.UTC), on_create=lambda what: say(f"creating {what}"))
    if not todo or settings.data is None:
        return w
    counts: dict[str, int] = {}
    problems = []
    for cid in todo:
        try:
            counts[cid] = validate_dataset(settings.data / f"{cid}.csv", cid, today=today)
        except ImportRejected as e:
            problems.extend(e.problems)
    if problems:
        raise ImportRejected(problems)
    # each connector may evaluate about as many tokens per epoch and 30 days as it has customers
    # (its import), with a small margin; more is refused by the token authority and recorded as
    # an alert. A re-import within 30 days under the same epoch needs its allowance raised in
    # the registry's authority.toml; a new epoch (`hedui keys rotate --tokens`) starts a new
    # allowance.
    # A department that pushes 主动发现 events (`hedui connector events`) evaluates the tokens of
    # the people its events are about: it gets a tenth of the population more per 30 days.
    people = counts.get(REGISTRY_ID, 0)
    write_authority_config(
        w.authority_config,
        ids,
        {
            c: n + 16 + n // 50 + (0 if kind_of(c).is_bank else people // 10)
            for c, n in counts.items()
            if c != REGISTRY_ID
        },
    )
    if REGISTRY_ID in todo:
        say(f"importing the household register into {w.connector_db(REGISTRY_ID)}")
        write_database(
            w.connector_db(REGISTRY_ID),
            read_dataset(settings.data / "registry.csv", REGISTRY_ID, None, today=today),
        )
    return w


def enrol_witness(
    w: Workdir, now: dt.datetime, *, on_create: Callable[[str], None] = lambda _: None
) -> None:
    """The log's witness enrols as every party does: its own TLS key and a certificate of role
    ``witness`` from the deployment's CA, in its own directory (its cosigning key it makes at
    its first start, see :mod:`hedui.witness.config`). One enrolled whose TLS key is missing is
    refused by name."""
    w.prepare_party(WITNESS_ID)
    keys = w.keys(WITNESS_ID)
    cert, tls_key = keys.tls_paths(WITNESS_ID)
    if cert.exists():
        if not tls_key.exists():
            raise KeyFileError(
                f"{WITNESS_ID} is enrolled, but {tls_key} is missing: restore it from the "
                "party's backup; hedui does not replace a key others pinned"
            )
    else:
        on_create("the log's witness's certificate")
        csr = keys.request_certificate(WITNESS_ID, WITNESS_ROLE)
        signed = w.ca.sign(csr.read_bytes(), now, name=WITNESS_ID, role=WITNESS_ROLE)
        keys.install_certificate(WITNESS_ID, signed, w.ca.cert_path.read_bytes())
    distribute(w, [WITNESS_ID], ())  # the CA's certificate and revocation list


def witness_name(origin: str) -> str:
    """The key name of the deployment's witness's cosignatures: after its log's origin
    (``hedui.local/0123abcd-log`` → ``hedui.local/0123abcd-witness``)."""
    return origin.removesuffix("-log") + "-witness"


def connector_seal(w: Workdir, connector_id: str) -> RowSeal:
    return RowSeal(w.keys(connector_id).connector_integrity_key(connector_id), connector_id)


def import_connector(
    w: Workdir, connector_id: str, file: Path, registry_address: str, insecure: bool, today: dt.date
) -> Dataset:
    """Validate ``file`` and turn its IDs into the connector's tokens at the token authority
    (blinded evaluation under the connector's own certificate)."""
    tokenizer = AuthorityTokenizer(
        registry_address,
        None if insecure else w.tls(connector_id),
        connector_id,
        w.keys(REGISTRY_ID).token_epoch(),
    )
    try:
        return read_dataset(file, connector_id, tokenizer, today=today)
    finally:
        tokenizer.close()


IMPORT_CALLER = "hedui-operator"


def record_import(w: Workdir, connector_id: str, before: int | None, after: int) -> int:
    """Append the import (people before and after) to the deployment's audit log; its index."""
    return record_operator_entry(
        w,
        audit_pb2.AuditEntry(
            config_change=audit_pb2.ConfigChange(
                setting=f"data:{connector_id}:people",
                old_value="" if before is None else str(before),
                new_value=str(after),
            )
        ),
    )


def record_operator_entry(w: Workdir, entry: audit_pb2.AuditEntry) -> int:
    """Append an operator's act (an import, a key rotation) to the deployment's audit log,
    as the service's operator (with the service's log key, from its own directory)."""
    from hedui.server.app import audit_witnesses

    config = load_service_config(w.service_config, {}) if w.service_config.exists() else None
    engine = open_log_engine(config.audit_database if config else w.audit_db_url)
    # its checkpoint cosigned when the witness runs, else the service's next one is
    witnesses = audit_witnesses(config, w.keys(SERVICE)) if config else None
    try:
        log = AuditLog(
            LogStore(engine),
            origin=config.log_origin if config else DEFAULT_ORIGIN,
            signing_key=w.keys(SERVICE).log_signing_key(),
            witnesses=witnesses,
        )
        entry.time_unix_ms = int(DEPLOYMENT.now().timestamp() * 1000)
        entry.caller, entry.caller_role = IMPORT_CALLER, "operator"
        (receipt,) = log.append([entry])
    finally:
        engine.dispose()
        if witnesses is not None:
            witnesses.close()
    return receipt.leaf_index


def _epoch_of(w: Workdir, connector_id: str) -> int | None:
    engine = open_engine(w.connector_db_url(connector_id))
    try:
        return HoldingStore(engine).token_epoch()
    finally:
        engine.dispose()


@dataclass
class PartyProcess:
    """One ``hedui serve`` process: the parties it serves, its command, its OS process."""

    parties: list[str]
    argv: list[str]
    log_file: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def describe(self) -> str:
        named = {
            SERVICE_ID: "the verification service",
            CUSTODIAN_ID: "the key custodian",
            REGISTRY_ID: "the registry",
            WITNESS_ID: "the log's witness",
        }
        if len(self.parties) == 1 and self.parties[0] in named:
            return named[self.parties[0]]
        names = ",".join(self.parties[:3]) + ("…" if len(self.parties) > 3 else "")
        return f"the process of {names}"


def serve_command(kind: str, configs: Sequence[Path]) -> list[str]:
    """The command line an operator runs to serve these parties."""
    argv = [sys.executable, "-m", "hedui.clients.cli", "serve", kind]
    for c in configs:
        argv += ["--config", str(c)]
    return argv


class Deployment:
    """A running deployment: one ``hedui serve`` OS process per party (connectors grouped)."""

    def __init__(
        self, settings: DeploySettings, workdir: Workdir, env: Mapping[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.workdir = workdir
        # the operator's HEDUI_* overrides reach every party, except those that name one party's
        # own place (its address, keys, databases): `hedui up` writes those per party
        self._env = {
            k: v for k, v in (os.environ if env is None else env).items() if k not in PER_PARTY
        }
        self._processes: list[PartyProcess] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.restarts = 0
        self.service_port: int | None = None
        self.config: ServiceConfig | None = None
        # the log's origin: the one the service's config keeps from an earlier start, else a
        # fresh one, so that each deployment's log is a log of its own to its auditors
        self.origin = (
            load_service_config(workdir.service_config, {}).log_origin
            if workdir.service_config.exists()
            else new_origin()
        )
        self.metrics: dict[str, str] = {}  # party: HOST:PORT of its process's /metrics
        self.witness_port: int | None = None
        self.witness_vkey = ""  # the witness's verifier key, once it started
        # progress of start() for a person (`hedui up` gives stderr): "started 44/87 connectors"
        self.say: Callable[[str], None] = lambda line: None
        self.progress_interval = 2.0

    @property
    def metrics_file(self) -> Path:
        """``W/run/metrics.txt``: each party and the address of its process's ``/metrics``."""
        return self.workdir.root / "run" / "metrics.txt"

    def metrics_by_process(self) -> list[tuple[str, str]]:
        """(who, HOST:PORT) of each process's ``/metrics``, in the order they started."""
        with self._lock:
            groups = [p.parties for p in self._processes]
        shown = []
        for parties in groups:
            address = self.metrics.get(parties[0])
            if address is None:
                continue
            who = parties[0] if len(parties) == 1 else f"{len(parties)} connectors"
            if len(parties) > 1:
                who += f" ({parties[0]} … {parties[-1]})"
            shown.append((who, address))
        return shown

    @property
    def address(self) -> str:
        assert self.service_port is not None
        return f"127.0.0.1:{self.service_port}"

    # -- configs -----------------------------------------------------------------------------
    def _metrics_address(self, party: str) -> str:
        """Where ``party``'s process serves /metrics: the port it got, or any free one first."""
        return self.metrics.get(party, "127.0.0.1:0")

    def _connector_settings(self, cid: str, port: int = 0) -> ConnectorSettings:
        w = self.workdir
        return ConnectorSettings(
            cid,
            w.connector_db_url(cid),
            address=f"127.0.0.1:{port}",
            metrics_address=self._metrics_address(cid),
            insecure=self.settings.insecure,
            keys_dir=w.keys(cid).root,
            authority_config=w.authority_config if cid == REGISTRY_ID else None,
        )

    def _write_connector_config(self, cid: str, port: int = 0) -> Path:
        path = self.workdir.config_file(cid)
        path.write_text(connector_config_toml(self._connector_settings(cid, port)), "utf-8")
        return path

    @property
    def witness_url(self) -> str:
        """The witness's submission prefix (c2sp.org/tlog-witness), once it started."""
        assert self.witness_port is not None
        return f"https://127.0.0.1:{self.witness_port}"

    def _write_witness_config(self, port: int = 0) -> Path:
        """The witness's config: its name, address and certificate, the service as the one
        submitter, and the one log it witnesses (this deployment's origin and log key)."""
        w, q = self.workdir, toml_value
        log_vkey = vkey(key_name(self.origin), w.keys(SERVICE_ID).log_public_key())
        w.witness_config.write_text(
            "# hedui log witness (written by `hedui up`; see hedui.witness.config)\n"
            "[witness]\n"
            f"name = {q(witness_name(self.origin))}\n"
            f"address = {q(f'127.0.0.1:{port}')}\n"
            f"tls_name = {q(WITNESS_ID)}\n"
            f"submitters = {q([SERVICE_ID])}\n"
            f"metrics_address = {q(self._metrics_address(WITNESS_ID))}\n"
            "\n[[log]]\n"
            f"origin = {q(self.origin)}\n"
            f"vkey = {q(log_vkey)}\n",
            encoding="utf-8",
        )
        return w.witness_config

    def _start_witness(self) -> None:
        """Start the witness (`hedui serve witness --workdir DIR`); its verifier key, made at its
        first start, goes to the service, the key custodian and the auditors, as its operator
        sends it to theirs."""
        w = self.workdir
        self._write_witness_config()
        argv = [sys.executable, "-m", "hedui.clients.cli", "serve", "witness"]
        argv += ["--workdir", str(w.witness_dir)]
        self.witness_port = self._start_process("witness", [WITNESS_ID], [], argv=argv)[WITNESS_ID]
        self._write_witness_config(self.witness_port)
        made = w.witness_dir / "witness.vkey"
        self.witness_vkey = made.read_text(encoding="utf-8").strip()
        w.keys(WITNESS_ID).receive(WITNESS_VKEY, f"{self.witness_vkey}\n".encode())
        distribute(w, [SERVICE_ID, CUSTODIAN_ID, *_auditors(w)], self.settings.connectors())

    def _first_checkpoint(self) -> tuple[int, str]:
        """The log's checkpoint the custodian starts its chain from, pinned when it enrols:
        kept from its config; for a custodian enrolled into a log that has checkpoints (no
        witness state, no config), the latest, read with the log's key from its database as
        the service's operator gives it; else none (0, "")."""
        w = self.workdir
        if w.custodian_config.exists():
            try:
                earlier = tomllib.loads(w.custodian_config.read_text(encoding="utf-8"))
                table = earlier.get("custodian", {})
                return (
                    int(table.get("first_checkpoint_size", 0)),
                    str(table.get("first_checkpoint_root", "")),
                )
            except (OSError, ValueError, TypeError):
                return 0, ""
        if (w.custodian_dir / "witness.json").exists() or not w.service_config.exists():
            return 0, ""
        try:
            config = load_service_config(w.service_config, {})
            engine = open_log_engine(config.audit_database)
            try:
                latest = LogStore(engine).latest_checkpoint()
            finally:
                engine.dispose()
            if latest is None:
                return 0, ""
            cp = parse_and_verify(
                latest[1],
                key_name(self.origin),
                w.keys(SERVICE_ID).log_public_key(),
                origin=self.origin,
            )
        except (HeduiError, VerificationError) as e:
            log.warning("no first checkpoint pinned for the key custodian: %s", e)
            return 0, ""
        log.info("pinning the key custodian's first checkpoint: size %d", cp.size)
        return cp.size, cp.root.hex()

    def _write_custodian_config(self, port: int = 0) -> Path:
        w = self.workdir
        first_size, first_root = self._first_checkpoint()
        config = CustodianConfig(
            keys_dir=w.keys(CUSTODIAN_ID).root,
            state_dir=w.custodian_dir,
            connectors=self.settings.connectors(),
            log_origin=self.origin,
            min_banks=self.settings.min_banks,
            address=f"127.0.0.1:{port}",
            insecure=self.settings.insecure,
            metrics_address=self._metrics_address(CUSTODIAN_ID),
            witness_vkeys=(self.witness_vkey,),
            first_checkpoint_size=first_size,
            first_checkpoint_root=first_root,
        )
        w.custodian_config.write_text(config.to_toml(), encoding="utf-8")
        return w.custodian_config

    # -- processes ---------------------------------------------------------------------------
    def _launch(self, p: PartyProcess) -> None:
        for party in p.parties:
            self.workdir.listening_file(party).unlink(missing_ok=True)
            _metrics_file(self.workdir, party).unlink(missing_ok=True)
        with p.log_file.open("ab") as out:
            p.process = subprocess.Popen(
                p.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=self._env,
                start_new_session=True,  # a Ctrl-C reaches `hedui up`, which stops them in order
            )
        p.started_at = time.monotonic()

    def _ready(self, p: PartyProcess, waiting: Callable[[], None] = lambda: None) -> dict[str, int]:
        """Wait until the process listens (see _await); then note its pid for operators and
        where it serves /metrics (written before its parties' listening files)."""
        ports = self._await(p, waiting=waiting)
        assert p.process is not None
        for party in p.parties:
            metrics = _metrics_file(self.workdir, party)
            if metrics.exists():
                self.metrics[party] = metrics.read_text(encoding="utf-8").strip()
            if party in (SERVICE_ID, CUSTODIAN_ID, REGISTRY_ID, WITNESS_ID):
                self.workdir.pid_file(party).write_text(f"{p.process.pid}\n", encoding="utf-8")
        return ports

    def _await(
        self,
        p: PartyProcess,
        timeout: float = 180.0,
        waiting: Callable[[], None] = lambda: None,
    ) -> dict[str, int]:
        """The ports of the process's parties once each listens; an error naming the process
        (and the last lines of its log) if it exits first. ``waiting`` is called meanwhile
        (progress)."""
        assert p.process is not None
        deadline = time.monotonic() + timeout
        files = {party: self.workdir.listening_file(party) for party in p.parties}
        while True:
            if all(f.exists() for f in files.values()):
                return {
                    party: int(f.read_text(encoding="utf-8").strip().rsplit(":", 1)[1])
                    for party, f in files.items()
                }
            if p.process.poll() is not None or time.monotonic() > deadline:
                if p.process.poll() is None:
                    p.process.kill()
                tail = _tail(p.log_file)
                raise ConnectorError(f"{p.describe()} failed to start: {tail}")
            waiting()
            time.sleep(0.1)

    def _start_process(
        self,
        kind: str,
        parties: list[str],
        configs: list[Path],
        waiting: Callable[[], None] = lambda: None,
        *,
        argv: list[str] | None = None,
    ) -> dict[str, int]:
        label = parties[0] if len(parties) == 1 else f"connectors-{len(self._processes)}"
        p = PartyProcess(
            parties, argv or serve_command(kind, configs), self.workdir.log_dir / f"{label}.log"
        )
        self._launch(p)
        ports = self._ready(p, waiting)
        self._processes.append(p)
        return ports

    def _supervise(self) -> None:
        """Restart a process that died (a crash, a SIGKILL) on the same ports, so that the
        service's channels reconnect; meanwhile its connectors count as failed (NEEDS_REVIEW).
        A process that keeps dying soon after its start is restarted with a growing delay."""
        failures: dict[int, int] = {}
        not_before: dict[int, float] = {}
        while not self._stopping.wait(0.5):
            with self._lock:
                for i, p in enumerate(self._processes):
                    if p.process is None or p.process.poll() is None or self._stopping.is_set():
                        continue
                    now = time.monotonic()
                    if now < not_before.get(i, 0.0):
                        continue
                    if i not in not_before:  # first noticed
                        short_lived = now - p.started_at < 30.0
                        failures[i] = failures.get(i, 0) + 1 if short_lived else 0
                        delay = min(60.0, 2.0 ** failures[i]) if failures[i] else 0.0
                        not_before[i] = now + delay
                        log.warning(
                            "%s died (exit %s); restarting it on the same ports%s",
                            p.describe(),
                            p.process.returncode,
                            f" in {delay:.0f} s" if delay else "",
                        )
                        if delay:
                            continue
                    try:
                        self._launch(p)
                        self._ready(p)
                    except ConnectorError as e:
                        failures[i] = failures.get(i, 0) + 1
                        delay = min(60.0, 2.0 ** failures[i])
                        not_before[i] = time.monotonic() + delay
                        log.error("restart of %s failed: %s; next in %.0f s", p.parties, e, delay)
                    else:
                        self.restarts += 1
                        del not_before[i]
                        log.warning("%s restarted", p.describe())
                    break

    def _import_missing(self, registry_address: str, skip: Collection[str]) -> None:
        """Connectors that have no database yet import their files through the token authority."""
        w, data = self.workdir, self.settings.data
        epoch = w.keys(REGISTRY_ID).token_epoch()
        missing = [
            c
            for c in self.settings.connectors()
            if c not in skip and not w.connector_db(c).exists()
        ]
        if missing and data is None:
            raise ConnectorError(f"{len(missing)} connector(s) have no data yet; pass --data DIR")
        # after `hedui keys rotate --tokens`: with the data at hand, import again under the new
        # epoch; without it, a stale connector is refused by name until its data comes again
        stale = [
            c
            for c in self.settings.connectors()
            if c not in skip and c not in missing and data is not None and _epoch_of(w, c) != epoch
        ]
        todo = missing + stale
        if not todo or data is None:
            return
        log.info("importing %d connector database(s) through the token authority", len(todo))
        self.say(f"importing the data of {len(todo)} connector(s) through the token authority …")
        shown = Progress(self.say, self.progress_interval)
        for n, cid in enumerate(todo):
            shown(f"imported {n}/{len(todo)} connectors' data")
            dataset = import_connector(
                w,
                cid,
                data / f"{cid}.csv",
                registry_address,
                self.settings.insecure,
                DEPLOYMENT.today(),
            )
            write_database(w.connector_db(cid), dataset, connector_seal(w, cid))

    def start(self, endpoints: Mapping[str, str] | None = None) -> None:
        """Start every party; ``endpoints`` points chosen connectors at other addresses instead.

        The registry (the token authority) starts first; connectors that have no database yet
        import their data through it; then the connectors, the key custodian and the service.
        Each party's config is written with port 0 for its first start, then with the port it
        got, so that a restart (and every caller's channel) finds it on the same port."""
        overrides = dict(endpoints or {})
        w = self.workdir
        if not w.authority_config.exists():
            write_authority_config(w.authority_config, self.settings.connectors(), {})
        try:
            ports = self._start_process(
                "registry", [REGISTRY_ID], [self._write_connector_config(REGISTRY_ID)]
            )
            self._write_connector_config(REGISTRY_ID, ports[REGISTRY_ID])
            self._import_missing(f"127.0.0.1:{ports[REGISTRY_ID]}", overrides)
            ids = [c for c in self.settings.connectors() if c not in overrides]
            n = max(1, self.settings.worker_processes)
            groups = [g for g in (ids[i::n] for i in range(n)) if g]
            self.say(f"starting {len(ids)} connectors in {len(groups)} process(es) …")
            shown = Progress(self.say, self.progress_interval)

            def started() -> str:
                up = sum(w.listening_file(c).exists() for c in ids)
                return f"started {up}/{len(ids)} connectors"

            for group in groups:
                if group:
                    configs = [self._write_connector_config(c) for c in group]
                    got = self._start_process(
                        "connector", group, configs, waiting=lambda: shown(started)
                    )
                    for c, port in got.items():
                        self._write_connector_config(c, port)
                    ports.update(got)
            if ids:
                self.say(
                    f"started {len(ids)}/{len(ids)} connectors; starting the log's witness, the "
                    "key custodian and the verification service …"
                )
            self._start_witness()
            ports.update(
                self._start_process("custodian", [CUSTODIAN_ID], [self._write_custodian_config()])
            )
            self._write_custodian_config(ports[CUSTODIAN_ID])
            addresses = {c: f"127.0.0.1:{p}" for c, p in ports.items()} | overrides
            database = self.settings.database_url or self._earlier_database()
            self.config = ServiceConfig(
                keys_dir=w.keys(SERVICE_ID).root,
                log_origin=self.origin,
                registry=Endpoint(REGISTRY_ID, addresses[REGISTRY_ID]),
                connectors=tuple(Endpoint(c, addresses[c]) for c in self.settings.connectors()),
                audit_database=database or w.audit_db_url,
                service_database=database or w.service_db_url,
                insecure=self.settings.insecure,
                min_banks=self.settings.min_banks,
                custodian_address=addresses[CUSTODIAN_ID],
                token_epoch=w.keys(REGISTRY_ID).token_epoch(),
                query_timeout_seconds=self.settings.query_timeout_seconds,
                metrics_address=self._metrics_address(SERVICE_ID),
                witness_urls=(self.witness_url,),
                witness_vkeys=(self.witness_vkey,),
            )
            w.service_config.write_text(self.config.to_toml(), encoding="utf-8")
            for done in upgrade_databases(self.config):  # as its operator runs `hedui db upgrade`
                if done.applied:
                    log.info("%s: applied %s", done.schema.name, ", ".join(done.applied))
            self.service_port = self._start_process("service", [SERVICE_ID], [w.service_config])[
                SERVICE_ID
            ]
            w.service_config.write_text(
                dataclasses.replace(
                    self.config,
                    address=self.address,
                    metrics_address=self._metrics_address(SERVICE_ID),
                ).to_toml(),
                encoding="utf-8",
            )
            self._wait_healthy({**ports, SERVICE_ID: self.service_port})
        except BaseException:
            self.stop()
            raise
        self.metrics_file.write_text(
            "# party  HOST:PORT of its process's Prometheus /metrics (written by `hedui up`)\n"
            + "".join(f"{party} {address}\n" for party, address in self.metrics.items()),
            encoding="utf-8",
        )
        write_intake_profile(w, self.address, self.settings.insecure)
        write_auditor_profile(w, self.address, self.settings.insecure)
        with w.auditor_profile.open("a", encoding="utf-8") as profile:  # whose cosignatures
            profile.write(f"witness_vkeys = {toml_value([self.witness_vkey])}\n")
        public = w.keys(SERVICE_ID).log_public_key()
        w.log_vkey.write_text(
            vkey(key_name(self.config.log_origin), public) + "\n", encoding="utf-8"
        )

    def _earlier_database(self) -> str:
        """The database a previous start was given (kept in the service's config), if not
        SQLite's."""
        if not self.workdir.service_config.exists():
            return ""
        earlier = load_service_config(self.workdir.service_config, {}).audit_database
        return "" if earlier == self.workdir.audit_db_url else earlier

    def _wait_healthy(self, ports: dict[str, int]) -> None:
        """Every party reports SERVING (checked as the service's operator would)."""
        tls = None if self.settings.insecure else self.workdir.tls(SERVICE_ID)
        for name, port in ports.items():
            channel = open_channel(f"127.0.0.1:{port}", tls=tls, server_name=name)
            try:
                wait_healthy(channel, timeout=30)
            finally:
                channel.close()

    def worker_pid(self, party: str) -> int:
        """The pid of the process serving ``party`` (a connector id, registry, custodian…)."""
        with self._lock:
            for p in self._processes:
                if party in p.parties and p.process is not None:
                    return p.process.pid
        raise KeyError(party)

    def supervise(self) -> None:
        """Start restarting processes that die (`hedui up` does; tests may)."""
        self._supervisor = threading.Thread(target=self._supervise, daemon=True, name="supervisor")
        self._supervisor.start()

    def stop(self) -> None:
        """Stop the service first (so nothing new reaches the parties it calls), then the rest."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        with self._lock:
            service = [p for p in self._processes if SERVICE_ID in p.parties]
            others = [p for p in self._processes if SERVICE_ID not in p.parties]
            for batch in (service, others):
                for p in batch:
                    if p.process is not None and p.process.poll() is None:
                        p.process.send_signal(signal.SIGTERM)
                for p in batch:
                    if p.process is None:
                        continue
                    try:
                        p.process.wait(15)
                    except subprocess.TimeoutExpired:
                        p.process.kill()
                        p.process.wait(5)
            self._processes.clear()


def _auditors(w: Workdir) -> list[str]:
    """The parties of the workdir enrolled as auditors (certificate role ``auditor``)."""
    found = []
    parties = w.root / "parties"
    for d in sorted(parties.iterdir()) if parties.is_dir() else []:
        cert = w.keys(d.name).tls_paths(d.name)[0]
        try:
            if identity_from_pem(read_public(cert)).role == "auditor":
                found.append(d.name)
        except (OSError, ValueError, HeduiError):
            continue
    return found


def _metrics_file(w: Workdir, party: str) -> Path:
    """Written by ``hedui serve`` beside the party's listening file: its process's /metrics."""
    listening = w.listening_file(party)
    return listening.with_name(f"{party}.metrics")


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or f"(nothing in {path})"


def write_intake_profile(
    w: Workdir, address: str, insecure: bool, *, name: str = "intake", path: Path | None = None
) -> None:
    keys = w.keys(name)
    cert, key = keys.tls_paths(name)
    text = (
        "# hedui intake client profile (written by `hedui up`)\n"
        f'address = "{address}"\n'
        'server_name = "service"\n'
        f"insecure = {'true' if insecure else 'false'}\n"
        f'ca = "{keys.root / "ca.pem"}"\n'
        f'cert = "{cert}"\n'
        f'key = "{key}"\n'
    )
    (path or w.intake_profile).write_text(text, encoding="utf-8")


def run_until_signalled(deployment: Deployment, on_ready: Callable[[str], None]) -> None:
    """Start, report ready, and stop cleanly on SIGINT or SIGTERM."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        deployment.start()
        deployment.supervise()
        on_ready(deployment.address)
        while not stop.wait(0.5):
            pass
    finally:
        deployment.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
