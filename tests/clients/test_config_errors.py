"""A party's operator who gets a config wrong is told what and where, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hedui.clients.cli import main
from hedui.connectors.errors import ConnectorError
from hedui.connectors.store import open_engine
from hedui.core.errors import ListenError
from hedui.core.metrics import serve_metrics
from hedui.core.rpc import create_server

SERVICE = (
    '[service]\nkeys_dir = "k"\naudit_database = "sqlite://"\nservice_database = "sqlite://"\n'
    '[registry]\naddress = "127.0.0.1:1"\n[connectors]\n"bank-01" = "127.0.0.1:2"\n'
)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("service = 5\n", "service must be a table ([service] followed by its settings), not 5"),
        (SERVICE.replace("[service]\n", "[service]\nmin_bank = 3\n"), "has no setting min_bank"),
        (
            SERVICE.replace('address = "127.0.0.1:1"', "address = 7"),
            "[registry] address is required",
        ),
        ("connectors = 3\n" + SERVICE.split("[connectors]")[0], "connectors must be a table"),
    ],
)
def test_a_bad_service_config_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, said: str
) -> None:
    config = tmp_path / "service.toml"
    config.write_text(text, encoding="utf-8")
    for command in (["db", "status"], ["serve", "service"]):
        assert main([*command, "--config", str(config)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"hedui: error: {config}") and said in err, err
        assert "Traceback" not in err


def test_a_bad_custodian_or_connector_table_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for party, text in (("custodian", "custodian = []\n"), ("connector", 'connector = "x"\n')):
        config = tmp_path / f"{party}.toml"
        config.write_text(text, encoding="utf-8")
        assert main(["serve", party, "--config", str(config)]) == 1
        err = capsys.readouterr().err
        assert f"{party} must be a table" in err and "Traceback" not in err, err


def test_an_unreachable_connector_database_is_named_without_its_password() -> None:
    with pytest.raises(ConnectorError, match=r"cannot be opened.*check database_url") as info:
        open_engine("postgresql+psycopg://bank:s3cret@127.0.0.1:1/core")
    assert "s3cret" not in str(info.value) and "127.0.0.1:1/core" in str(info.value)


@pytest.mark.parametrize("url", ["not a url", "mysql://u:pw@h/db", "postgresql+psycopg2://u@h/d"])
def test_an_unusable_database_url_is_named_without_echoing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    config = tmp_path / "service.toml"
    config.write_text(SERVICE.replace('audit_database = "sqlite://"', f'audit_database = "{url}"'))
    assert main(["db", "status", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "database URL cannot be used" in err and "Traceback" not in err, err
    assert url not in err
    with pytest.raises(ConnectorError, match="database_url cannot be used"):
        open_engine(url)


def test_a_metrics_port_in_use_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(ListenError, match=rf"cannot serve metrics on {address}"):
            serve_metrics(address)


def test_a_port_in_use_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(ListenError, match=rf"cannot listen on {address}.*HEDUI_ADDRESS"):
            create_server(address, tls=None, roles={}, register=[], party="registry")
