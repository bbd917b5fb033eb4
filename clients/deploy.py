"""Run a whole deployment on this machine: ``hedui up`` and ``hedui demo``.

The connectors run in a few worker processes (each connector is its own gRPC server with its
own certificate and port); the registry, the key custodian and the verification service each run
in a process of their own; this process supervises them and restarts one that dies. Every channel is
mutual TLS unless ``insecure``. The operator commands live here, at the top of the import
graph, because starting a deployment needs both the server and the connectors.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from pathlib import Path

from hedui.audit.checkpoint import vkey
from hedui.audit.log import DEFAULT_ORIGIN, AuditLog, key_name
from hedui.audit.store import LogStore, open_log_engine
from hedui.clients.auditor import write_auditor_profile
from hedui.clients.logs import worker_logging
from hedui.connectors.errors import ConnectorError, ImportRejected
from hedui.connectors.importer import Dataset, read_dataset, validate_dataset, write_database
from hedui.connectors.integrity import RowSeal
from hedui.connectors.server import ConnectorSettings, start_connector, start_registry
from hedui.connectors.store import HoldingStore, open_engine
from hedui.connectors.token_authority import AuthoritySettings
from hedui.connectors.tokenizer import AuthorityTokenizer
from hedui.core.clock import DEPLOYMENT
from hedui.core.custody import CUSTODIAN_ID
from hedui.core.deployment import default_connector_ids
from hedui.core.errors import HeduiError
from hedui.core.keystore import REGISTRY_ID
from hedui.core.rpc import RunningServer, open_channel, wait_healthy
from hedui.core.workdir import Workdir
from hedui.custodian.service import start_custodian, write_custodian_config
from hedui.proto.v1 import audit_pb2
from hedui.server.app import RunningService, start_service
from hedui.server.config import ServiceConfig
from hedui.server.config import load as load_service_config
from hedui.server.fanout import Endpoint

log = logging.getLogger("hedui.deploy")

SERVICE_ID = "service"  # the worker group of the verification service


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
    """Create missing keys; import the CSVs of connectors that have no database yet.

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
    w.prepare()
    w.keys.init(
        ids, paillier_bits=settings.paillier_bits, on_create=lambda what: say(f"creating {what}")
    )
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
    # registry.toml; a new epoch (`hedui keys rotate --tokens`) starts a new allowance.
    write_authority_config(
        w.authority_config,
        ids,
        {c: n + 16 + n // 50 for c, n in counts.items() if c != REGISTRY_ID},
    )
    if REGISTRY_ID in todo:
        say(f"importing the household register into {w.root / 'db'}")
        write_database(
            w.connector_db(REGISTRY_ID),
            read_dataset(settings.data / "registry.csv", REGISTRY_ID, None, today=today),
        )
    return w


def write_authority_config(
    path: Path, connector_ids: Sequence[str], allowances: Mapping[str, int]
) -> None:
    """The token authority's settings: the deployment's connectors and their allowances."""
    earlier = load_authority_settings(path).allowances if path.exists() else {}
    merged = {**earlier, **allowances}
    lines = [
        "# hedui token authority (the registry)",
        "connectors = [" + ", ".join(f'"{c}"' for c in connector_ids) + "]",
        "",
        "[allowances]  # token evaluations per connector per 30 days",
    ]
    lines += [f'"{c}" = {n}' for c, n in sorted(merged.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def load_authority_settings(path: Path) -> AuthoritySettings:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        return AuthoritySettings(
            tuple(str(c) for c in doc["connectors"]),
            {str(k): int(v) for k, v in doc.get("allowances", {}).items()},
            default_allowance=int(doc.get("default_allowance", 64)),
        )
    except (OSError, KeyError, ValueError, TypeError, tomllib.TOMLDecodeError) as e:
        raise ConnectorError(f"{path}: not a token authority configuration ({e})") from None


def connector_seal(w: Workdir, connector_id: str) -> RowSeal:
    return RowSeal(w.keys.connector_integrity_key(connector_id), connector_id)


def import_connector(
    w: Workdir, connector_id: str, file: Path, registry_address: str, insecure: bool, today: dt.date
) -> Dataset:
    """Validate ``file`` and turn its IDs into the connector's tokens at the token authority
    (blinded evaluation under the connector's own certificate)."""
    tokenizer = AuthorityTokenizer(
        registry_address,
        None if insecure else w.keys.tls(connector_id),
        connector_id,
        w.keys.token_epoch(),
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
    """Append an operator's act (an import, a key rotation) to the deployment's audit log."""
    settings = {}
    if w.service_config.exists():
        settings = tomllib.loads(w.service_config.read_text(encoding="utf-8")).get("service", {})
    w.prepare()
    engine = open_log_engine(str(settings.get("audit_database", w.audit_db_url)))
    try:
        log = AuditLog(
            LogStore(engine),
            origin=str(settings.get("log_origin", DEFAULT_ORIGIN)),
            signing_key=w.keys.log_signing_key(),
        )
        entry.time_unix_ms = int(DEPLOYMENT.now().timestamp() * 1000)
        entry.caller, entry.caller_role = IMPORT_CALLER, "operator"
        (receipt,) = log.append([entry])
    finally:
        engine.dispose()
    return receipt.leaf_index


def _serve_group(
    root: str, ids: Sequence[str], insecure: bool, conn: Connection, fixed: Mapping[str, int]
) -> None:
    """Worker process: serve some connectors until told to stop (or the parent goes away).
    ``fixed``: the ports of a restarted worker (the same as before, so callers reconnect)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    w = Workdir(Path(root))
    worker_logging(w.log_dir)
    servers: list[RunningServer | RunningService] = []
    try:
        ports = {}
        for cid in ids:
            running: RunningServer | RunningService
            address = f"127.0.0.1:{fixed.get(cid, 0)}"
            if cid == SERVICE_ID:  # the verification service, in a process of its own
                config = load_service_config(w.service_config, os.environ)
                running = start_service(dataclasses.replace(config, address=address))
            elif cid == CUSTODIAN_ID:  # the key custodian, in a process of its own
                running = start_custodian(
                    w.custodian_config, w.keys, insecure=insecure, address=address
                )
            elif cid == REGISTRY_ID:
                settings = ConnectorSettings(
                    cid, w.connector_db_url(cid), address=address, insecure=insecure
                )
                running = start_registry(
                    settings, w.keys, load_authority_settings(w.authority_config)
                )
            else:
                settings = ConnectorSettings(
                    cid, w.connector_db_url(cid), address=address, insecure=insecure
                )
                running = start_connector(settings, w.keys)
            servers.append(running)
            ports[cid] = running.port
        run = w.pid_file("x").parent
        run.mkdir(exist_ok=True)
        for cid in ids:
            if cid in (SERVICE_ID, CUSTODIAN_ID, REGISTRY_ID):
                w.pid_file(cid).write_text(f"{os.getpid()}\n", encoding="utf-8")
        conn.send(("ready", ports))
        try:
            conn.recv()
        except EOFError:
            pass
    except HeduiError as e:  # a message for people: reported to the parent, which prints it
        conn.send(("error", str(e)))
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        for s in servers:
            s.stop(0.5)


def _describe(group: Sequence[str]) -> str:
    named = {
        SERVICE_ID: "the verification service",
        CUSTODIAN_ID: "the key custodian",
        REGISTRY_ID: "the registry",
    }
    if len(group) == 1 and group[0] in named:
        return named[group[0]]
    names = ",".join(group[:3]) + ("…" if len(group) > 3 else "")
    return f"the worker of {names}"


def _epoch_of(w: Workdir, connector_id: str) -> int | None:
    engine = open_engine(w.connector_db_url(connector_id))
    try:
        return HoldingStore(engine).token_epoch()
    finally:
        engine.dispose()


class Deployment:
    """A running deployment: connector worker processes plus the verification service."""

    def __init__(
        self,
        settings: DeploySettings,
        workdir: Workdir,
        worker: Callable[[str, Sequence[str], bool, Connection, Mapping[str, int]], None]
        | None = None,
    ) -> None:
        self.settings = settings
        self.workdir = workdir
        self._worker = worker or _serve_group
        self._workers: list[tuple[mp.process.BaseProcess, Connection]] = []
        self._groups: list[tuple[list[str], dict[str, int]]] = []  # per worker: ids, ports
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.restarts = 0
        self.service_port: int | None = None
        self.config: ServiceConfig | None = None

    @property
    def address(self) -> str:
        assert self.service_port is not None
        return f"127.0.0.1:{self.service_port}"

    def _spawn(
        self, ctx: SpawnContext, group: list[str], fixed: Mapping[str, int] | None = None
    ) -> dict[str, int]:
        parent, child = ctx.Pipe()
        p = ctx.Process(
            target=self._worker,
            args=(str(self.workdir.root), group, self.settings.insecure, child, dict(fixed or {})),
            daemon=True,
        )
        p.start()
        if not parent.poll(120):
            p.terminate()
            raise ConnectorError("a worker process did not start within 120 s")
        kind, payload = parent.recv()
        if kind != "ready":
            p.terminate()
            raise ConnectorError(f"{_describe(group)} failed to start: {payload}")
        self._workers.append((p, parent))
        self._groups.append((group, dict(payload)))
        return dict(payload)

    def _supervise(self) -> None:
        """Restart a worker process that died (a crash, a SIGKILL) on the same ports, so the
        service's channels reconnect; meanwhile its connectors count as failed (NEEDS_REVIEW).
        A worker that keeps dying soon after its start is restarted with a growing delay."""
        ctx = mp.get_context("spawn")
        started: dict[tuple[str, ...], float] = {}
        failures: dict[tuple[str, ...], int] = {}
        not_before: dict[tuple[str, ...], float] = {}
        while not self._stopping.wait(0.5):
            with self._lock:
                for i, (p, conn) in enumerate(list(self._workers)):
                    if p.is_alive() or self._stopping.is_set():
                        continue
                    group, ports = self._groups[i]
                    key, now = tuple(group), time.monotonic()
                    if now < not_before.get(key, 0.0):
                        continue
                    if key not in not_before:  # first noticed
                        short_lived = now - started.get(key, float("-inf")) < 30.0
                        failures[key] = failures.get(key, 0) + 1 if short_lived else 0
                        delay = min(60.0, 2.0 ** failures[key]) if failures[key] else 0.0
                        not_before[key] = now + delay
                        log.warning(
                            "%s died (exit %s); restarting it on the same ports%s",
                            _describe(group),
                            p.exitcode,
                            f" in {delay:.0f} s" if delay else "",
                        )
                        if delay:
                            continue
                    del self._workers[i], self._groups[i]
                    try:
                        self._spawn(ctx, group, ports)
                    except ConnectorError as e:
                        failures[key] = failures.get(key, 0) + 1
                        delay = min(60.0, 2.0 ** failures[key])
                        not_before[key] = time.monotonic() + delay
                        log.error("restart of %s failed: %s; next attempt in %.0f s", key, e, delay)
                        self._workers.insert(i, (p, conn))
                        self._groups.insert(i, (group, ports))
                    else:
                        self.restarts += 1
                        started[key] = time.monotonic()
                        del not_before[key]
                        log.warning("%s restarted", _describe(group))
                    break

    def _import_missing(self, registry_address: str, skip: Collection[str]) -> None:
        """Connectors that have no database yet import their files through the token authority."""
        w, data = self.workdir, self.settings.data
        epoch = w.keys.token_epoch()
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
        for cid in todo:
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
        """Start everything; ``endpoints`` points chosen connectors at other addresses instead.

        The registry (the token authority) starts first; connectors that have no database yet
        import their data through it; then the connectors and the key custodian start."""
        overrides = dict(endpoints or {})
        ctx = mp.get_context("spawn")
        w = self.workdir
        write_custodian_config(
            w.custodian_config,
            self.settings.connectors(),
            self.settings.min_banks,
            DEFAULT_ORIGIN,
            w.custodian_dir,
        )
        if not w.authority_config.exists():
            write_authority_config(w.authority_config, self.settings.connectors(), {})
        ports = self._spawn(ctx, [REGISTRY_ID])
        try:
            self._import_missing(f"127.0.0.1:{ports[REGISTRY_ID]}", overrides)
        except BaseException:
            self.stop()
            raise
        ids = [c for c in self.settings.connectors() if c not in overrides]
        n = max(1, self.settings.worker_processes)
        # the custodian alone in its own process: the service and the connectors never hold
        # the private key
        for group in [*(ids[i::n] for i in range(n)), [CUSTODIAN_ID]]:
            if group:
                ports.update(self._spawn(ctx, group))
        addresses = {c: f"127.0.0.1:{p}" for c, p in ports.items()} | overrides
        w = self.workdir
        database = self.settings.database_url or self._earlier_database()
        self.config = ServiceConfig(
            keys_dir=w.keys.root,
            registry=Endpoint(REGISTRY_ID, addresses[REGISTRY_ID]),
            connectors=tuple(Endpoint(c, addresses[c]) for c in self.settings.connectors()),
            audit_database=database or w.audit_db_url,
            service_database=database or w.service_db_url,
            insecure=self.settings.insecure,
            min_banks=self.settings.min_banks,
            custodian_address=f"127.0.0.1:{ports[CUSTODIAN_ID]}",
            token_epoch=w.keys.token_epoch(),
            query_timeout_seconds=self.settings.query_timeout_seconds,
        )
        w.service_config.write_text(self.config.to_toml(), encoding="utf-8")
        try:
            self.service_port = self._spawn(ctx, [SERVICE_ID])[SERVICE_ID]
        except BaseException:
            self.stop()
            raise
        self._wait_healthy({**ports, SERVICE_ID: self.service_port})
        write_intake_profile(w, self.address, self.settings.insecure)
        write_auditor_profile(w, self.address, self.settings.insecure)
        public = w.keys.log_signing_key().public_key()
        w.log_vkey.write_text(
            vkey(key_name(self.config.log_origin), public) + "\n", encoding="utf-8"
        )

    def _earlier_database(self) -> str:
        """The database a previous start was given (kept in hedui.toml), if not SQLite's."""
        if not self.workdir.service_config.exists():
            return ""
        earlier = load_service_config(self.workdir.service_config, {}).audit_database
        return "" if earlier == self.workdir.audit_db_url else earlier

    def _wait_healthy(self, ports: dict[str, int]) -> None:
        tls = None if self.settings.insecure else self.workdir.keys.tls("service")
        for name, port in ports.items():
            channel = open_channel(f"127.0.0.1:{port}", tls=tls, server_name=name)
            try:
                wait_healthy(channel, timeout=30)
            finally:
                channel.close()

    def worker_pid(self, party: str) -> int:
        """The pid of the worker process serving ``party`` (a connector id, registry, custodian)."""
        with self._lock:
            for (p, _), (group, _) in zip(self._workers, self._groups, strict=True):
                if party in group and p.pid is not None:
                    return p.pid
        raise KeyError(party)

    def supervise(self) -> None:
        """Start restarting worker processes that die (`hedui up` does; tests may)."""
        self._supervisor = threading.Thread(target=self._supervise, daemon=True, name="supervisor")
        self._supervisor.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        # the service first, so that nothing new reaches the parties it calls
        order = sorted(
            zip(self._workers, self._groups, strict=True), key=lambda x: SERVICE_ID not in x[1][0]
        )
        for first in (True, False):
            batch = [w for w, (group, _) in order if (SERVICE_ID in group) == first]
            for _, parent in batch:
                try:
                    parent.send("stop")
                except (BrokenPipeError, OSError):
                    pass
            for p, _ in batch:
                p.join(10)
                if p.is_alive():
                    p.terminate()
                    p.join(5)
        self._workers.clear()
        self._groups.clear()


def write_intake_profile(
    w: Workdir, address: str, insecure: bool, *, name: str = "intake", path: Path | None = None
) -> None:
    cert, key = w.keys.tls_paths(name)
    text = (
        "# hedui intake client profile (written by `hedui up`)\n"
        f'address = "{address}"\n'
        'server_name = "service"\n'
        f"insecure = {'true' if insecure else 'false'}\n"
        f'ca = "{w.keys.root / "ca.pem"}"\n'
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
