"""Per-caller quotas and the enumeration alarm (issue #11 item 3).

Every intake system (the name in its certificate) has a rate per minute and a quota per day
(China Standard Time); a call over either is refused with RESOURCE_EXHAUSTED and a
``QuotaFailure`` naming the caller and the limit. NOT_FOUND answers are counted per caller: a
burst (``not_found_alert`` within ``not_found_window_seconds``) raises an alert, which the
service writes to the audit log and its own log (``hedui audit alerts`` lists them), and stops
the enumeration: the caller's every application (Verify and VerifyBatch alike) is refused for
``not_found_cooloff_seconds`` (issue #24 item 7), with RESOURCE_EXHAUSTED, a ``QuotaFailure``
and a ``RetryInfo`` of the time left. A burst after the cooling-off starts another. With
``not_found_cooloff_seconds = 0`` nothing is refused and the burst raises one alert per window.

Counts are kept in this process's memory: replicas each enforce the limits on their share.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hedui.core.clock import DEPLOYMENT
from hedui.server.errors import ServiceError


@dataclass(frozen=True)
class QuotaSettings:
    per_minute: int = 300
    per_day: int = 20_000
    not_found_alert: int = 20
    not_found_window_seconds: int = 600
    # caller name -> (per minute, per day), for callers that need other limits than the default
    overrides: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    # re-verification campaigns (VerifyBatch) are flow-controlled by their stream and counted
    # against this daily budget per caller, not against the interactive rate and quota
    campaign_per_day: int = 1_000_000
    # after a burst of NOT_FOUND answers the caller is refused this long (0: alert only)
    not_found_cooloff_seconds: int = 900

    def limits(self, caller: str) -> tuple[int, int]:
        return self.overrides.get(caller, (self.per_minute, self.per_day))


class QuotaExceeded(ServiceError):
    """A caller over its rate or daily quota; ``subject`` and ``limit`` for the QuotaFailure."""

    def __init__(self, subject: str, message: str, retry_seconds: int = 60) -> None:
        super().__init__(message)
        self.subject = subject
        self.retry_seconds = max(1, retry_seconds)  # when asking again may succeed


@dataclass(frozen=True)
class Alert:
    kind: str
    subject: str
    description: str
    count: int
    window_seconds: int


class Quotas:
    def __init__(self, settings: QuotaSettings, now: Callable[[], dt.datetime] = DEPLOYMENT.now):
        self._settings = settings
        self._now = now
        self._lock = threading.Lock()
        self._recent: dict[str, deque[float]] = {}  # caller -> call times in the last minute
        self._day: dict[str, tuple[dt.date, int]] = {}  # caller -> (CST date, calls that day)
        self._campaign: dict[str, tuple[dt.date, int]] = {}  # the same, for campaigns
        self._not_found: dict[str, deque[float]] = {}
        self._alerted: dict[str, float] = {}  # caller -> when its last burst alert was raised
        self._cooling: dict[str, float] = {}  # caller -> when its cooling-off ends

    def _until_midnight(self, now: dt.datetime) -> int:
        local = now.astimezone(DEPLOYMENT.zone)
        midnight = dt.datetime.combine(
            local.date() + dt.timedelta(days=1), dt.time(), tzinfo=DEPLOYMENT.zone
        )
        return int((midnight - local).total_seconds()) + 1

    def _refuse_if_cooling(self, caller: str, t: float) -> None:
        """Under the lock: refuse ``caller`` while it cools off after a burst of NOT_FOUND."""
        ends = self._cooling.get(caller)
        if ends is None:
            return
        if t >= ends:
            del self._cooling[caller]
            return
        left = math.ceil(ends - t)
        raise QuotaExceeded(
            f"caller:{caller}",
            f"{caller} is cooling off after a burst of applicants not found in the register "
            f"(possible enumeration of ID numbers): every application is refused for {left} "
            "more seconds",
            left,
        )

    def cooling_off(self, caller: str) -> float:
        """Seconds left of ``caller``'s cooling-off (0: none)."""
        t = self._now().timestamp()
        with self._lock:
            return max(0.0, self._cooling.get(caller, t) - t)

    @staticmethod
    def _used(days: dict[str, tuple[dt.date, int]], caller: str, today: dt.date) -> int:
        """What ``caller`` has used of a daily count on ``today`` (0 on a new day)."""
        day, used = days.get(caller, (today, 0))
        return used if day == today else 0

    def charge_campaign(self, caller: str, calls: int = 1) -> None:
        """Count ``calls`` of a campaign against ``caller``'s daily campaign budget, or raise
        QuotaExceeded (nothing counted then)."""
        now = self._now()
        today = now.astimezone(DEPLOYMENT.zone).date()
        limit = self._settings.campaign_per_day
        with self._lock:
            self._refuse_if_cooling(caller, now.timestamp())
            used = self._used(self._campaign, caller, today)
            if used + calls > limit:
                raise QuotaExceeded(
                    f"campaign:{caller}",
                    f"{caller} has used its budget of {limit} campaign verifications for "
                    f"{today}; it renews at midnight China Standard Time",
                    self._until_midnight(now),
                )
            self._campaign[caller] = (today, used + calls)

    def charge(self, caller: str, calls: int = 1) -> None:
        """Count ``calls`` for ``caller`` or raise QuotaExceeded (nothing counted then)."""
        per_minute, per_day = self._settings.limits(caller)
        now = self._now()
        t, today = now.timestamp(), now.astimezone(DEPLOYMENT.zone).date()
        with self._lock:
            self._refuse_if_cooling(caller, t)
            recent = self._recent.setdefault(caller, deque())
            while recent and recent[0] <= t - 60:
                recent.popleft()
            used = self._used(self._day, caller, today)
            if used + calls > per_day:
                raise QuotaExceeded(
                    f"caller:{caller}",
                    f"{caller} has used its quota of {per_day} verifications for {today}; "
                    "it renews at midnight China Standard Time",
                    self._until_midnight(now),
                )
            if len(recent) + calls > per_minute:
                raise QuotaExceeded(
                    f"caller:{caller}",
                    f"{caller} is over its rate of {per_minute} verifications a minute; "
                    "slow down and retry",
                    int(recent[0] + 60 - t) + 1 if recent else 60,
                )
            recent.extend([t] * calls)
            self._day[caller] = (today, used + calls)

    def not_found(self, caller: str) -> Alert | None:
        """Count a NOT_FOUND answer; the alert to log when it completes a burst. The burst
        starts the caller's cooling-off (its alert is the one entry of it); without a
        cooling-off, one alert a window."""
        s = self._settings
        t = self._now().timestamp()
        with self._lock:
            seen = self._not_found.setdefault(caller, deque())
            seen.append(t)
            while seen and seen[0] <= t - s.not_found_window_seconds:
                seen.popleft()
            if len(seen) < s.not_found_alert:
                return None
            count = len(seen)
            refused = ""
            if s.not_found_cooloff_seconds > 0:
                if self._cooling.get(caller, t) > t:  # calls admitted before it began
                    return None
                # the burst is spent on this cooling-off; the next needs a burst of its own
                seen.clear()
                self._cooling[caller] = t + s.not_found_cooloff_seconds
                until = dt.datetime.fromtimestamp(self._cooling[caller], DEPLOYMENT.zone)
                refused = (
                    f"; every application of the caller refused for "
                    f"{s.not_found_cooloff_seconds} seconds, until {until:%Y-%m-%d %H:%M:%S} "
                    "China Standard Time"
                )
            elif t - self._alerted.get(caller, float("-inf")) < s.not_found_window_seconds:
                return None
            self._alerted[caller] = t
            return Alert(
                "NOT_FOUND_BURST",
                f"caller:{caller}",
                f"{count} applicants not found in the register within "
                f"{s.not_found_window_seconds // 60} minutes: possible enumeration of ID "
                f"numbers{refused}",
                count,
                s.not_found_window_seconds,
            )
