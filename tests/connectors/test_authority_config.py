"""The registry's authority.toml: checked whole at start, and a connector missing from it is told
so, not that it used up an allowance it never had."""

from __future__ import annotations

from pathlib import Path

import pytest

from hedui.clients.cli import main
from hedui.connectors.errors import ConnectorError
from hedui.connectors.serve import load_authority_settings, write_authority_config
from hedui.connectors.server import ConnectorSettings, start_registry
from hedui.connectors.tokenizer import AuthorityTokenizer
from hedui.core.errors import ConfigFileError
from hedui.core.keystore import KeyDir

GOOD = 'connectors = ["hrss", "bank-01"]\ndefault_allowance = 10\n[allowances]\n"bank-01" = 5000\n'


def _written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "authority.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_file_is_read_with_its_defaults(tmp_path: Path) -> None:
    settings = load_authority_settings(_written(tmp_path, GOOD))
    assert settings.connector_ids == ("hrss", "bank-01")
    assert dict(settings.allowances) == {"bank-01": 5000} and settings.default_allowance == 10
    bare = load_authority_settings(_written(tmp_path, 'connectors = ["hrss"]\n'))
    assert bare.default_allowance == 64 and not bare.allowances


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (GOOD + "[limits]\nx = 1\n", "unknown setting 'limits'"),
        ("conectors = []\n" + GOOD, "unknown setting 'conectors'"),
        ('default_allowance = 5\n[allowances]\n"hrss" = 1\n', "connectors must be a list"),
        ('connectors = "hrss"\n', "connectors must be a list"),
        ('connectors = ["hrss", 7]\n', "connectors must be a list"),
        ('connectors = ["Bank 01"]\n', "connectors lists 'Bank 01'"),
        ('connectors = ["registry"]\n', "connectors lists 'registry'"),
        ('connectors = ["hrss", "hrss"]\n', "connectors lists hrss more than once"),
        (GOOD.replace("= 10", "= 0"), "default_allowance must be a positive whole number"),
        (GOOD.replace("= 10", '= "10"'), "default_allowance must be a positive whole number"),
        (GOOD.replace("5000", "-1"), '[allowances] "bank-01" must be a positive whole number'),
        (GOOD.replace("5000", "2.5"), '[allowances] "bank-01" must be a positive whole number'),
        (GOOD.replace("5000", "true"), '[allowances] "bank-01" must be a positive whole number'),
        (GOOD + '"bank-09" = 5\n', "[allowances] names 'bank-09', which connectors does not list"),
        ('connectors = ["hrss"]\nallowances = 5\n', "allowances must be a table"),
        ("connectors = [\n", "is not valid TOML"),
    ],
)
def test_a_wrong_entry_is_named_with_the_file(tmp_path: Path, text: str, said: str) -> None:
    path = _written(tmp_path, text)
    with pytest.raises(ConfigFileError) as info:
        load_authority_settings(path)
    assert str(info.value).startswith(str(path)) and said in str(info.value), info.value


def test_serve_registry_stops_at_start_naming_the_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    authority = _written(tmp_path, GOOD + "[limits]\nx = 1\n")
    config = tmp_path / "registry.toml"
    config.write_text(
        f'[connector]\nconnector_id = "registry"\ndatabase_url = "sqlite:///{tmp_path}/r.db"\n'
        f'keys_dir = "{tmp_path / "keys"}"\naddress = "127.0.0.1:0"\n'
        f'authority_config = "{authority}"\n',
        encoding="utf-8",
    )
    assert main(["serve", "registry", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{authority}: unknown setting 'limits'" in err and "Traceback" not in err, err


def test_rewriting_drops_allowances_of_connectors_no_longer_listed(tmp_path: Path) -> None:
    path = _written(tmp_path, GOOD)
    write_authority_config(path, ["hrss", "bank-02"], {"bank-02": 7})
    settings = load_authority_settings(path)
    assert settings.connector_ids == ("hrss", "bank-02")
    assert dict(settings.allowances) == {"bank-02": 7}


def test_a_connector_missing_from_the_file_is_told_it_is_missing(tmp_path: Path) -> None:
    keys = KeyDir(tmp_path / "keys")
    keys.init(["hrss", "bank-04"], paillier_bits=1024)
    path = _written(tmp_path, 'connectors = ["hrss"]\n')
    server = start_registry(
        ConnectorSettings("registry", f"sqlite:///{tmp_path / 'registry.sqlite'}"),
        keys,
        load_authority_settings(path),
    )
    tokenizers = [
        AuthorityTokenizer(f"127.0.0.1:{server.port}", keys.tls(c), c, 1)
        for c in ("hrss", "bank-04")
    ]
    try:
        assert len(tokenizers[0].tokens(["110105197103030216"])) == 1  # a listed one is served
        with pytest.raises(ConnectorError) as info:
            tokenizers[1].tokens(["110105197103030216"])
        said = str(info.value)
        assert f"bank-04 is not listed in authority.toml ({path}): add it to connectors" in said
        assert "token evaluations" not in said
    finally:
        for t in tokenizers:
            t.close()
        server.stop(0)
