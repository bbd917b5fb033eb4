"""Resident identity numbers (公民身份号码) per GB 11643-1999.

An 18-character number: a 6-digit administrative region code, an 8-digit birth date
(YYYYMMDD), a 3-digit sequence (odd for men, even for women) and a check character computed
with ISO 7064 MOD 11-2 (``0``-``9`` or ``X``). Legacy 15-digit numbers (GB 11643-1989) have a
6-digit birth date ``YYMMDD`` in the 20th century and no check character; they are converted.

Input is normalised first: surrounding white space is dropped, full-width digits and letters
(as typed on a Chinese input method) become ASCII, and a lowercase ``x`` becomes ``X``.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass

from hedui.core.clock import DEPLOYMENT
from hedui.core.errors import InvalidResidentId

MAX_INPUT_CHARS = 64
_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))  # 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2
_CHECK_CHARS = "10X98765432"
# The province-level codes of GB/T 2260 (the first two digits of every region code): 11-15
# 华北, 21-23 东北, 31-37 华东, 41-46 中南, 50-54 西南 (50 is 重庆), 61-65 西北, 71 台湾, 81-82
# 香港/澳门 and 83 (the residence permits of Taiwan residents).
PROVINCE_CODES = frozenset(
    f"{n}"
    for n in (
        *range(11, 16),
        *range(21, 24),
        *range(31, 38),
        *range(41, 47),
        *range(50, 55),
        *range(61, 66),
        71,
        *range(81, 84),
    )
)


def check_character(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise InvalidResidentId("characters", "the first 17 characters must be digits")
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


@dataclass(frozen=True)
class ResidentId:
    """A validated, normalised 18-character resident ID number."""

    value: str

    @property
    def region(self) -> str:
        return self.value[:6]

    @property
    def birth_date(self) -> dt.date:
        return _parse_date(self.value[6:14])

    @property
    def is_male(self) -> bool:
        return int(self.value[16]) % 2 == 1

    def masked(self) -> str:
        """The form that may be shown on a screen: region prefix and check character only."""
        return self.value[:3] + "*" * 14 + self.value[17]

    def __str__(self) -> str:  # never log this; it is the plaintext ID
        return self.value

    def __repr__(self) -> str:
        return f"ResidentId({self.masked()})"


def _parse_date(yyyymmdd: str) -> dt.date:
    try:
        return dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    except ValueError:
        raise InvalidResidentId(
            "birth_date",
            f"the birth date {yyyymmdd[:4]}-{yyyymmdd[4:6]}-{yyyymmdd[6:8]} does not exist",
        ) from None


_DIGIT_RUN = re.compile(r"[0-9]{15,}[Xx]?")
_SEPARATORS = re.compile(r"[\s\-_.,/:;|·・]+")


def looks_like_id(text: str) -> bool:
    """Whether free text holds a resident ID number: once full-width forms are folded (NFKC)
    and spaces, dashes and other separators are taken out, some 18 or 15 characters in a row
    parse as a valid number (region, birth date, check character). Such text is refused
    wherever it would be stored or logged, so no ID reaches the audit log through a reference
    or a note; a date or a long counter does not parse and is let through."""
    folded = _SEPARATORS.sub("", unicodedata.normalize("NFKC", text))
    for run in _DIGIT_RUN.findall(folded):
        # an 18-character number anywhere in a run (it has a check character); a 15-digit
        # legacy number (none) only as a run of its own, so that a counter is not taken for one
        for size in (18, 15) if len(run) == 15 else (18,):
            for start in range(len(run) - size + 1):
                try:
                    parse(run[start : start + size])
                except InvalidResidentId:
                    continue
                return True
    return False


def normalise(raw: str) -> str:
    """White space stripped, full-width forms folded to ASCII (NFKC), lowercase x upper-cased."""
    return unicodedata.normalize("NFKC", raw).strip().upper()


def parse(raw: str, *, today: dt.date | None = None) -> ResidentId:
    """Validate ``raw`` and return the normalised 18-character number.

    ``today`` bounds the birth date; it defaults to today in the deployment's time zone
    (Asia/Shanghai), never the machine's own date.
    Raises :class:`InvalidResidentId` naming the first problem found.
    """
    if len(raw) > MAX_INPUT_CHARS:
        raise InvalidResidentId(
            "too_long", f"an ID number has 18 characters, this input has {len(raw)}"
        )
    text = normalise(raw)
    if not text:
        raise InvalidResidentId("empty", "the ID number is empty")
    if len(text) == 15:
        if not text.isascii() or not text.isdigit():
            raise InvalidResidentId("characters", "a 15-digit ID number may hold digits only")
        first17 = text[:6] + "19" + text[6:15]
        text = first17 + check_character(first17)
    if len(text) != 18:
        raise InvalidResidentId(
            "length", f"an ID number has 18 characters (or 15 for the old form), got {len(text)}"
        )
    body, check = text[:17], text[17]
    if not body.isascii() or not body.isdigit() or not (check.isdigit() or check == "X"):
        raise InvalidResidentId(
            "characters", "only digits are allowed, and X as the last character"
        )
    if body[:2] not in PROVINCE_CODES:
        raise InvalidResidentId(
            "region",
            f"{body[:6]} is not an administrative region code (no province has the code {body[:2]})",
        )
    birth = _parse_date(body[6:14])
    limit = today if today is not None else DEPLOYMENT.today()
    if birth > limit:
        raise InvalidResidentId(
            "birth_date", f"the birth date {birth.isoformat()} is in the future"
        )
    if birth.year < 1890:
        raise InvalidResidentId(
            "birth_date", f"the birth date {birth.isoformat()} is not plausible"
        )
    expected = check_character(body)
    if check != expected:
        raise InvalidResidentId(
            "check_character",
            "the check character does not match the other 17 digits; the number was mistyped",
        )
    return ResidentId(text)


def make(region: str, birth: dt.date, sequence: int) -> ResidentId:
    """Build a valid ID number (used by the synthetic population and by tests)."""
    if not 0 <= sequence <= 999:
        raise ValueError("sequence must be 0..999")
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return ResidentId(first17 + check_character(first17))
