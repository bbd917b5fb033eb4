"""The connector kinds of a deployment and the fields each one declares (DESIGN §10).

Every field is a non-negative integer: fen (分) unless its unit says it is a count.
The default deployment is the Zhejiang platform's scale: one household registry,
13 more departments and 73 banks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class FieldSpec:
    name: str
    unit: str  # "fen" or "count"
    description: str
    max_value: int  # the largest value one household may hold at one connector


@dataclass(frozen=True)
class ConnectorKind:
    kind: str
    display_name: str
    fields: tuple[FieldSpec, ...]
    is_bank: bool = False

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


_FEN_MAX = 10**13  # 100 billion yuan per household at one connector: far above any real holding
_COUNT_MAX = 10**4


def _fen(name: str, description: str) -> FieldSpec:
    return FieldSpec(name, "fen", description, _FEN_MAX)


def _count(name: str, description: str) -> FieldSpec:
    return FieldSpec(name, "count", description, _COUNT_MAX)


REGISTRY_KIND = "registry"
BANK_KIND = "bank"

_KINDS: tuple[ConnectorKind, ...] = (
    ConnectorKind(
        "hrss",
        "人社 Human Resources and Social Security",
        (
            _fen("monthly_wage", "wage paid per month"),
            _fen("monthly_pension", "pension paid per month"),
            _fen("monthly_unemployment_benefit", "unemployment benefit per month"),
        ),
    ),
    ConnectorKind(
        "tax", "税务 Taxation", (_fen("annual_taxable_income", "taxable income per year"),)
    ),
    ConnectorKind(
        "realestate",
        "不动产 Real Estate Registration",
        (
            _count("residential_properties", "residential properties owned"),
            _count("commercial_properties", "commercial properties owned"),
        ),
    ),
    ConnectorKind(
        "vehicles",
        "公安交管 Vehicle Registration",
        (_count("vehicles", "motor vehicles registered"), _fen("vehicle_value", "assessed value")),
    ),
    ConnectorKind(
        "business",
        "市场监管 Market Regulation",
        (
            _count("enterprises", "enterprises held or managed"),
            _fen("registered_capital", "registered capital subscribed"),
        ),
    ),
    ConnectorKind(
        "medical", "医保 Medical Insurance", (_fen("annual_out_of_pocket", "medical costs paid"),)
    ),
    ConnectorKind(
        "housingfund", "公积金 Housing Provident Fund", (_fen("fund_balance", "fund balance"),)
    ),
    ConnectorKind(
        "disability",
        "残联 Disabled Persons' Federation",
        (_count("severe_disability_members", "members with a severe disability"),),
    ),
    ConnectorKind(
        "civil",
        "民政 Civil Affairs",
        (_count("enrolled_assistance_members", "members already receiving assistance"),),
    ),
    ConnectorKind(
        "education",
        "教育 Education",
        (
            _count("enrolled_students", "members enrolled as students"),
            _fen("annual_tuition", "tuition paid per year"),
        ),
    ),
    ConnectorKind(
        "agriculture",
        "农业农村 Agriculture and Rural Affairs",
        (_fen("annual_land_income", "land contract income per year"),),
    ),
    ConnectorKind(
        "securities",
        "证券登记 Securities Depository",
        (_fen("securities_value", "market value of securities"),),
    ),
    ConnectorKind(
        "insurance", "保险 Insurance", (_fen("insurance_cash_value", "cash value of policies"),)
    ),
)

BANK = ConnectorKind(
    BANK_KIND,
    "银行 Bank",
    (_fen("deposits", "deposit balance"), _fen("wealth_products", "wealth management products")),
    is_bank=True,
)

DEPARTMENT_KINDS: Mapping[str, ConnectorKind] = MappingProxyType({k.kind: k for k in _KINDS})

# 主动发现: the events a department may push, and whether each carries an amount in fen (medical
# self-pay: the 12-month running total). The region's rules say which department reports which.
EVENT_AMOUNTS: Mapping[str, bool] = MappingProxyType(
    {
        "death": False,
        "unemployment": False,
        "medical_self_pay": True,
        "disability": False,
        "vehicle": False,
        "commercial_property": False,
        "business": False,
    }
)


def kind_of(connector_id: str) -> ConnectorKind:
    """The kind of a connector from its id: ``bank-NN`` is a bank, otherwise the id is the kind."""
    if connector_id.startswith("bank-") and connector_id[5:].isdigit() and len(connector_id) == 7:
        return BANK
    try:
        return DEPARTMENT_KINDS[connector_id]
    except KeyError:
        raise KeyError(f"unknown connector {connector_id!r}") from None


def bank_ids(count: int = 73) -> tuple[str, ...]:
    return tuple(f"bank-{i:02d}" for i in range(1, count + 1))


def default_connector_ids(banks: int = 73) -> tuple[str, ...]:
    """Every answering connector of the default deployment (the registry is separate)."""
    return tuple(DEPARTMENT_KINDS) + bank_ids(banks)


ALL_FIELDS: tuple[str, ...] = tuple(f.name for kind in (*_KINDS, BANK) for f in kind.fields)
