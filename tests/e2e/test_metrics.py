"""Every process of `hedui up` serves Prometheus /metrics on a port of its own (W/run/metrics.txt)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Up, verify_dibao


def _scrape(address: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _sum(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **want: str
) -> float:
    return sum(
        v
        for (n, labels), v in samples.items()
        if n == name and all((k, w) in labels for k, w in want.items())
    )


def _metrics_txt(up: Up) -> dict[str, str]:
    lines = (up.workdir.root / "run" / "metrics.txt").read_text(encoding="utf-8").splitlines()
    return dict(line.split() for line in lines if line and not line.startswith("#"))  # type: ignore[misc]


def test_service_and_connectors_serve_metrics_that_count_a_verification(up: Up) -> None:
    kept = _metrics_txt(up)
    assert {"service", "custodian", "registry", "bank-01", "hrss"} <= kept.keys()
    # every process its own port on 127.0.0.1 (grouped connectors share their process's)
    service, custodian, registry, bank = (
        kept[p] for p in ("service", "custodian", "registry", "bank-01")
    )
    assert all(a.startswith("127.0.0.1:") for a in kept.values())
    assert len({service, custodian, registry, bank}) == 4
    assert service not in (up.address,)
    # the configs name them, so a restarted party serves on the same port
    assert f'metrics_address = "{service}"' in up.workdir.service_config.read_text()
    assert f'metrics_address = "{bank}"' in up.workdir.config_file("bank-01").read_text()
    assert (
        up.workdir.party_dir("service") / "run" / "service.metrics"
    ).read_text().strip() == service

    before = _scrape(service), _scrape(bank)
    id_number = up.summary.applicants[4][1]
    got = verify_dibao(up.workdir.intake_profile, id_number, "metrics-1", up.consent(id_number))
    assert got["connectors_answered"] == 86
    after = _scrape(service), _scrape(bank)

    def verifies(s: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
        return sum(
            v
            for (n, labels), v in s.items()
            if n == "hedui_rpc_requests_total"
            and ("party", "service") in labels
            and ("code", "OK") in labels
            and any(k == "method" and m.endswith("/Verify") for k, m in labels)
        )

    assert verifies(after[0]) == verifies(before[0]) + 1
    for name, labels in (
        ("hedui_connector_answers_total", {"connector": "bank-01", "outcome": "answered"}),
        ("hedui_audit_appends_total", {}),
    ):
        assert _sum(after[0], name, **labels) > _sum(before[0], name, **labels), name
    # the connector's process: bank-01 answered the service's query
    bank_calls = _sum(after[1], "hedui_rpc_requests_total", party="bank-01", code="OK")
    assert bank_calls > _sum(before[1], "hedui_rpc_requests_total", party="bank-01", code="OK")
    # nothing about the person
    raw = urllib.request.urlopen(f"http://{service}/metrics", timeout=10).read().decode()
    assert id_number not in raw
