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
    now = FakeNow()
    q = Quotas(QuotaSettings(not_found_alert=3, not_found_window_seconds=600), now)
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
