"""Per-caller rate and daily quota, and the NOT_FOUND burst alarm (issue #11 item 3)."""

from __future__ import annotations

import datetime as dt

import pytest

from hedui.core.clock import DEPLOYMENT
from hedui.server.quotas import QuotaExceeded, Quotas, QuotaSettings


class FakeNow:
    def __init__(self) -> None:
        self.t = dt.datetime(2026, 11, 24, 23, 58, tzinfo=DEPLOYMENT.zone)

    def __call__(self) -> dt.datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += dt.timedelta(seconds=seconds)


def test_the_rate_is_per_caller_and_per_minute() -> None:
    now = FakeNow()
    q = Quotas(QuotaSettings(per_minute=3, per_day=100), now)
    for _ in range(3):
        q.charge("intake-a")
    with pytest.raises(QuotaExceeded, match="rate of 3") as info:
        q.charge("intake-a")
    assert info.value.subject == "caller:intake-a"
    q.charge("intake-b")  # another caller has its own count
    now.advance(61)
    q.charge("intake-a")  # a minute later it may go on


def test_the_daily_quota_renews_at_midnight_china_time() -> None:
    now = FakeNow()  # 23:58 CST
    q = Quotas(QuotaSettings(per_minute=100, per_day=2), now)
    q.charge("intake-a", 2)
    with pytest.raises(QuotaExceeded, match="quota of 2"):
        q.charge("intake-a")
    now.advance(3 * 60)  # 00:01 CST the next day
    q.charge("intake-a", 2)


def test_a_refused_call_is_not_counted_and_overrides_apply() -> None:
    now = FakeNow()
    q = Quotas(QuotaSettings(per_minute=1, per_day=1, overrides={"city": (5, 5)}), now)
    q.charge("town")
    with pytest.raises(QuotaExceeded):
        q.charge("town")
    for _ in range(5):
        q.charge("city")


def test_a_burst_of_not_found_raises_one_alert_a_window() -> None:
    now = FakeNow()  # alert only: no cooling-off (see below for the default)
    settings = QuotaSettings(
        not_found_alert=3, not_found_window_seconds=600, not_found_cooloff_seconds=0
    )
    q = Quotas(settings, now)
    assert q.not_found("intake-a") is None
    assert q.not_found("intake-a") is None
    alert = q.not_found("intake-a")
    assert alert is not None and alert.kind == "NOT_FOUND_BURST" and alert.count == 3
    assert alert.subject == "caller:intake-a"
    assert q.not_found("intake-a") is None  # once per window
    assert q.not_found("intake-b") is None
    now.advance(601)
    for _ in range(2):
        assert q.not_found("intake-a") is None
    assert q.not_found("intake-a") is not None


def test_spread_out_misses_raise_nothing() -> None:
    now = FakeNow()
    q = Quotas(QuotaSettings(not_found_alert=3, not_found_window_seconds=600), now)
    for _ in range(10):
        assert q.not_found("intake-a") is None
        now.advance(301)


def test_a_campaign_has_its_own_budget_apart_from_the_interactive_rate() -> None:
    t = [dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)]
    q = Quotas(QuotaSettings(per_minute=1, per_day=1, campaign_per_day=3), lambda: t[0])
    q.charge("city")  # the interactive minute and day are used up
    for _ in range(3):
        q.charge_campaign("city")  # a campaign is not counted against them
    with pytest.raises(QuotaExceeded) as e:
        q.charge_campaign("city")
    assert e.value.subject == "campaign:city" and "campaign" in str(e.value)
    # renews at midnight China Standard Time: 12:00 UTC is 20:00 in Beijing, 4 hours before
    assert e.value.retry_seconds == 4 * 3600 + 1
    with pytest.raises(QuotaExceeded) as e:
        q.charge("city")
    assert e.value.retry_seconds == 4 * 3600 + 1  # its daily quota, not only its minute


def test_an_enumeration_is_refused_for_the_cooling_off_then_let_through() -> None:
    """Issue #24 item 7: 240 lookups of ID numbers in 40 s raised one alert and blocked nothing.
    Now the caller is refused from the burst's last answer until the cooling-off ends."""
    now = FakeNow()
    settings = QuotaSettings(per_minute=1_000, per_day=100_000, not_found_cooloff_seconds=900)
    q = Quotas(settings, now)
    alerts = []
    for _ in range(settings.not_found_alert):  # a lookup every 1/6 s, all of strangers
        q.charge("intake-a")
        alerts.append(q.not_found("intake-a"))
        now.advance(1 / 6)
    (alert,) = [a for a in alerts if a is not None]  # one alert: the cooling-off's entry
    assert alert.kind == "NOT_FOUND_BURST" and alert.subject == "caller:intake-a"
    assert (
        "refused for 900 seconds" in alert.description
        and "China Standard Time" in alert.description
    )
    # every application after the threshold is refused, interactive or a campaign's
    for charge in (q.charge, q.charge_campaign):
        with pytest.raises(QuotaExceeded, match="cooling off") as info:
            charge("intake-a")
        assert info.value.subject == "caller:intake-a"
        assert 890 < info.value.retry_seconds <= 900  # RetryInfo: the cooling-off left
    q.charge("intake-b")  # another caller is not held up
    now.advance(600)
    with pytest.raises(QuotaExceeded) as info:
        q.charge("intake-a")
    assert info.value.retry_seconds <= 300
    assert 0 < q.cooling_off("intake-a") < 300
    now.advance(300)
    assert q.cooling_off("intake-a") == 0
    q.charge("intake-a")  # the cooling-off ended
    q.charge_campaign("intake-a")


def test_the_refused_lookups_are_not_counted_and_a_new_burst_cools_off_again() -> None:
    now = FakeNow()
    q = Quotas(QuotaSettings(per_day=5, not_found_alert=3, not_found_cooloff_seconds=60), now)
    for _ in range(3):
        q.charge("intake-a")
        q.not_found("intake-a")
    for _ in range(10):
        with pytest.raises(QuotaExceeded, match="cooling off"):
            q.charge("intake-a")
    assert q.not_found("intake-a") is None  # an answer of a call admitted before: no new alert
    now.advance(61)
    q.charge("intake-a")  # the refused calls used none of its quota of 5 (3 used so far)
    assert q.not_found("intake-a") is None  # a new cooling-off needs a burst of its own
    q.charge("intake-a")
    assert q.not_found("intake-a") is not None
    with pytest.raises(QuotaExceeded, match="cooling off"):
        q.charge("intake-a")


def test_without_a_cooling_off_a_burst_only_alerts() -> None:
    now = FakeNow()
    q = Quotas(QuotaSettings(not_found_alert=3, not_found_cooloff_seconds=0), now)
    alerts = [q.not_found("intake-a") for _ in range(240)]
    assert sum(a is not None for a in alerts) == 1
    q.charge("intake-a")
