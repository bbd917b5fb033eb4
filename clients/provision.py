"""Enrol every party of a deployment on one machine (what `hedui up` does for development).

On a real deployment each step happens on its own host, by that party's operator (README,
"Operating hedui"): the party makes its own keys and a certificate signing request
(`hedui keys request`), the CA's operator signs it (`hedui ca sign`) and sends back the
certificate, the CA's certificate and its revocation list; the parties exchange their *public*
files. Here the same steps run one after another, each party in its own directory
``W/parties/<party>`` (0700), so that no directory holds another party's private key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from hedui.core.ca import PARTY_NAME
from hedui.core.custody import CUSTODIAN_ID
from hedui.core.deployment import DEPARTMENT_KINDS
from hedui.core.errors import CryptoError, KeyFileError
from hedui.core.keyfiles import read_public, write_secret
from hedui.core.keystore import CLIENT_ROLES, REGISTRY_ID, KeyDir
from hedui.core.tls import CRL_DAYS, identity_from_pem
from hedui.core.workdir import Workdir

SERVICE = "service"
CLIENTS = (
    "intake",
    "auditor",
    "bureau",
)  # the default intake system and auditor of a dev deployment


def role_of(party: str) -> str:
    """A party's certificate role: its name for the service, custodian, registry and the
    default clients; ``connector`` for every bank and department."""
    if party in (SERVICE, CUSTODIAN_ID, REGISTRY_ID, *CLIENTS):
        return party
    return "connector"


def own_secrets(keys: KeyDir, party: str) -> list[Path]:
    """The private files a party makes for itself (beyond its TLS key)."""
    role = role_of(party)
    if role == CUSTODIAN_ID:
        return [keys.paillier_private_path]
    if role == SERVICE:
        return [keys.root / "service" / "audit.key", keys.root / "log" / "log.key"]
    if party == REGISTRY_ID:
        return [keys.root / "token-authority" / "grant.key"]
    if role == "connector":
        d = keys.connector_dir(party)
        return [d / "signing.key", d / "integrity.key"]
    return []


def enrol(
    w: Workdir,
    party: str,
    now: dt.datetime,
    *,
    paillier_bits: int,
    on_create: Callable[[str], None] = lambda _: None,
) -> None:
    """Give ``party`` its own keys and a certificate from the deployment's CA; a party
    already enrolled keeps everything, and one whose key went missing is refused by name
    (hedui never silently replaces a key that others pinned)."""
    w.prepare_party(party)
    keys = w.keys(party)
    cert, tls_key = keys.tls_paths(party)
    if cert.exists():
        missing = [p for p in [tls_key, *own_secrets(keys, party)] if not p.exists()]
        if missing:
            raise KeyFileError(
                f"{party} is enrolled, but {', '.join(str(p) for p in missing)} is missing: "
                "restore it from the party's backup; hedui does not replace a key others pinned"
            )
        if role_of(party) == SERVICE:
            keys.write_shared_audit_token_key()  # a deployment enrolled before it existed
        if role_of(party) == CUSTODIAN_ID:
            keys.ensure_judgement_key()  # likewise (issue #24)
        return
    keys.create_own_keys(party, role_of(party), paillier_bits=paillier_bits, on_create=on_create)
    csr = keys.request_certificate(party, role_of(party))
    signed = w.ca.sign(csr.read_bytes(), now, name=party, role=role_of(party))
    keys.install_certificate(party, signed, w.ca.cert_path.read_bytes())


def trusted_files(party: str, role: str, connector_ids: Sequence[str]) -> list[tuple[str, Path]]:
    """The public files ``party`` needs from others: (whose, path in their key directory)."""
    paillier = (CUSTODIAN_ID, Path("custodian/paillier.pub"))
    # the key of the custodian's signed judgements (issue #24): the service checks every one
    judgement = (CUSTODIAN_ID, Path("custodian/judgement.pub"))
    grant = (REGISTRY_ID, Path("token-authority/grant.pub"))
    log_key = (SERVICE, Path("log/log.pub"))
    # the log's witness's verifier key (made at its first start): whose cosignatures to require
    witness = ("witness", Path("witness/witness.vkey"))
    answers = [(c, Path("connectors") / c / "signing.pub") for c in connector_ids]
    if party == REGISTRY_ID:  # the token authority encrypts the decoys' selectors (issue #26)
        return [paillier]
    if party == SERVICE:
        return [paillier, judgement, witness, *answers]
    if party == CUSTODIAN_ID:
        return [grant, log_key, witness, *answers]
    if role == "auditor":
        return [log_key, witness, judgement]
    if role == "connector" and party != REGISTRY_ID:
        return [paillier, grant]
    return []


def distribute(w: Workdir, parties: Iterable[str], connector_ids: Sequence[str]) -> None:
    """Copy to each party the CA's certificate and revocation list and the public files of
    others it needs (what the parties' operators exchange)."""
    ca_pem, crl_pem = w.ca.cert_path.read_bytes(), w.ca.crl_path.read_bytes()
    for party in parties:
        keys = w.keys(party)
        keys.receive("ca.pem", ca_pem)
        keys.receive("crl.pem", crl_pem)
        role = identity_from_pem(read_public(keys.tls_paths(party)[0])).role
        for whose, relative in trusted_files(party, role, connector_ids):
            made_later = whose == "witness" or relative.name == "judgement.pub"
            if made_later and not (w.keys(whose).root / relative).exists():
                # the witness makes its key at its first start, the custodian its judgement
                # key at its enrolment: given out after it
                continue
            keys.trust(w.keys(whose), relative)
        if party == REGISTRY_ID and w.keys(SERVICE).shared_audit_token_path.exists():
            # the one secret two parties share: the registry binds grants to audit tokens
            shared = w.keys(SERVICE).shared_audit_token_path.read_bytes()
            mine = keys.shared_audit_token_path
            if not mine.exists() or mine.read_bytes() != shared:
                write_secret(mine, shared)


def provision(
    w: Workdir,
    connector_ids: Sequence[str],
    now: dt.datetime,
    *,
    paillier_bits: int,
    on_create: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """The CA, every party enrolled, and the public files exchanged; the parties."""
    w.prepare()
    if w.ca.init(now):
        on_create("certificate authority")
    elif w.ca.revocation_list().next_update < now + dt.timedelta(days=CRL_DAYS / 2):
        w.ca.refresh(now)  # as the CA's operator would, well before every server refuses calls
        on_create("revocation list (refreshed)")
    parties = [REGISTRY_ID, *connector_ids, CUSTODIAN_ID, SERVICE, *CLIENTS]
    for party in parties:
        enrol(w, party, now, paillier_bits=paillier_bits, on_create=on_create)
    distribute(w, parties, connector_ids)
    return parties


def enrol_client(w: Workdir, name: str, role: str, now: dt.datetime) -> None:
    """One more intake system or auditor: its own directory, key and certificate."""
    if role not in CLIENT_ROLES:
        raise CryptoError(f"a client certificate is for one of {', '.join(CLIENT_ROLES)}")
    if (
        not PARTY_NAME.fullmatch(name)
        or name in (SERVICE, CUSTODIAN_ID, REGISTRY_ID, *CLIENTS)
        or name.startswith(("hedui-", "bank-"))  # the names parties write their own entries as
        or name in DEPARTMENT_KINDS
    ):
        raise CryptoError(
            f"{name!r} is not a usable name: 3 to 48 lower-case letters, digits and "
            "hyphens, e.g. intake-hangzhou, and not a party's name"
        )
    if w.keys(name).tls_paths(name)[0].exists():
        raise CryptoError(f"{name} already has a certificate in {w.party_dir(name)}")
    w.prepare_party(name)
    keys = w.keys(name)
    csr = keys.request_certificate(name, role)
    signed = w.ca.sign(csr.read_bytes(), now, name=name, role=role)
    keys.install_certificate(name, signed, w.ca.cert_path.read_bytes())
    distribute(w, [name], ())
