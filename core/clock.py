"""The deployment's one clock: every "today" and every shown time is in its time zone.

China keeps one civil time (Asia/Shanghai). A process that took the machine's date instead (UTC on
most servers) would disagree with the others for eight hours a day: a newborn registered this
morning would be "born in the future" to one process and valid to the next. So nothing calls
``date.today()``; everything asks a :class:`Clock`, which tests can pin.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hedui.core.errors import HeduiError

DEFAULT_TIMEZONE = "Asia/Shanghai"


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; :class:`HeduiError` naming it when it does not exist."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise HeduiError(
            f"unknown time zone {name!r}; use an IANA name such as {DEFAULT_TIMEZONE}"
        ) from None


@dataclass(frozen=True)
class Clock:
    """Aware time in the deployment's zone; ``source`` is injectable for tests."""

    timezone: str = DEFAULT_TIMEZONE
    source: Callable[[dt.tzinfo], dt.datetime] | None = field(default=None, compare=False)

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.timezone)

    def now(self) -> dt.datetime:
        z = self.zone
        if self.source is None:
            return dt.datetime.now(z)
        return self.source(z).astimezone(z)

    def today(self) -> dt.date:
        return self.now().date()

    def local(self, unix_ms: int) -> dt.datetime:
        """A stored timestamp (Unix milliseconds) as an aware time in the deployment's zone."""
        return dt.datetime.fromtimestamp(unix_ms / 1000, self.zone)

    def show(self, unix_ms: int) -> str:
        """A stored timestamp as a person reads it, with its zone: ``2026-11-23 08:05:00 +08:00``."""
        t = self.local(unix_ms)
        return t.strftime("%Y-%m-%d %H:%M:%S ") + t.strftime("%z")[:3] + ":" + t.strftime("%z")[3:]


DEPLOYMENT = Clock()


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_date(text: str) -> dt.date:
    """A calendar date written YYYY-MM-DD, nothing else (not 2025-W01-1, not 20250101);
    ValueError otherwise."""
    if not _ISO_DATE.fullmatch(text):
        raise ValueError(f"{text!r} is not a date YYYY-MM-DD")
    return dt.date.fromisoformat(text)


def fixed(at: dt.datetime, timezone: str = DEFAULT_TIMEZONE) -> Clock:
    """A clock that always reads ``at`` (an aware datetime), for tests."""
    return Clock(timezone, lambda _z: at)


def age_on(birth: dt.date, date: dt.date) -> int:
    """Completed years of age on ``date`` (a birthday counts from its day on)."""
    before_birthday = (date.month, date.day) < (birth.month, birth.day)
    return date.year - birth.year - before_birthday


ADULT_AGE = 18  # 《中华人民共和国民法典》第十七条: 十八周岁以上的自然人为成年人


def is_adult(birth: dt.date, date: dt.date) -> bool:
    """Whether someone born on ``birth`` is an adult on ``date`` (who must sign a consent)."""
    return age_on(birth, date) >= ADULT_AGE
