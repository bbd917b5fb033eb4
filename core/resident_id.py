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
import string
import unicodedata
from collections.abc import Callable
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


# -- free text that cannot carry an ID number -----------------------------------------------
#
# Text a caller chooses (request ids, caseworker ids, case numbers, alert notes) is logged and
# stored, so it must not hold an ID number however it is written. The text is folded first:
# NFKC (full-width and circled forms, ⑴ to "(1)"), every character with a Unicode digit value
# (Arabic-Indic ٣, Devanagari ३, ❶ ...) to its ASCII digit, CJK numerals (〇零一二三四五六七八九,
# 幺 as read aloud, the financial 壹贰叁肆伍陆柒捌玖 and their traditional forms) to digits. A
# separator is any character that is neither a letter nor a digit once folded (punctuation,
# symbols, spaces, invisible format characters). Then the text is refused when
#   - it has a run of 15 or more digits, where short digit groups (1 to 3 digits) separated only
#     by separators count as one run ("3+3+0+…", "(3)(3)(0)…", "三、三、〇…"); reading the text
#     backwards gives the same runs, so a reversed number is refused alike; or
#   - with every separator between digits taken out, forwards or backwards, it holds an ID number
#     (18 characters with a valid check character, or its first 17 digits: a province's region
#     code and a plausible birth date), or a 15-digit legacy number as a run of its own.
# Longer groups stand alone so that identifiers such as "recheck-<12 hex>-<line>" and dates
# ("2026.03.04-2026.12.31") are not taken for an ID.

LONG_RUN = 15  # digits: an ID has 17 (+ check character), a legacy one 15
_SHORT_GROUP = 3  # digits: groups this short join across separators
_CJK_DIGITS = {
    **dict.fromkeys("〇零", "0"),
    **dict.fromkeys("一壹幺", "1"),
    **dict.fromkeys("二贰貳两兩", "2"),
    **dict.fromkeys("三叁參叄", "3"),
    **dict.fromkeys("四肆", "4"),
    **dict.fromkeys("五伍", "5"),
    **dict.fromkeys("六陆陸", "6"),
    **dict.fromkeys("七柒", "7"),
    **dict.fromkeys("八捌", "8"),
    **dict.fromkeys("九玖", "9"),
}


def fold_digits(text: str) -> str:
    """``text`` with every way of writing a digit made an ASCII digit (NFKC first, then Unicode
    digit values and CJK numerals); the other characters as NFKC leaves them."""
    out = []
    for ch in unicodedata.normalize("NFKC", text):
        if "0" <= ch <= "9":
            out.append(ch)
        elif ch in _CJK_DIGITS:
            out.append(_CJK_DIGITS[ch])
        else:
            d = unicodedata.digit(ch, None)
            out.append(ch if d is None else str(d))
    return "".join(out)


def _is_separator(ch: str) -> bool:
    return not unicodedata.category(ch).startswith(("L", "N"))


def _groups(folded: str) -> list[tuple[str, bool]]:
    """The digit groups of folded text, each with whether only separators stand between it and
    the group before."""
    groups: list[tuple[str, bool]] = []
    digits: list[str] = []
    gap_is_separators = False  # before the first group there is no group to join
    for ch in folded:
        if "0" <= ch <= "9":
            digits.append(ch)
            continue
        if digits:
            groups.append(("".join(digits), gap_is_separators))
            digits = []
            gap_is_separators = True
        if not _is_separator(ch):
            gap_is_separators = False
    if digits:
        groups.append(("".join(digits), gap_is_separators))
    return groups


def longest_digit_run(text: str) -> int:
    """The longest run of digits in ``text`` once folded: short groups (up to 3 digits) that
    only separators keep apart count as one run."""
    best = run = 0
    last = ""
    for digits, joined in _groups(fold_digits(text)):
        if joined and len(digits) <= _SHORT_GROUP and 0 < len(last) <= _SHORT_GROUP:
            run += len(digits)
        else:
            run = len(digits)
        best = max(best, run)
        last = digits
    return best


_FUSED_RUN = re.compile(r"[0-9]{15,}[Xx]?")


def _fused(folded: str) -> str:
    """Folded text with the separators between two digits taken out."""
    return re.sub(r"(?<=[0-9])[^0-9]+(?=[0-9])", lambda m: _keep_letters(m.group(0)), folded)


def _keep_letters(gap: str) -> str:
    return gap if any(not _is_separator(c) for c in gap) else ""


def _plausible_first17(digits: str) -> bool:
    """17 digits that begin with a province's region code and a birth date that exists."""
    if digits[:2] not in PROVINCE_CODES:
        return False
    try:
        birth = _parse_date(digits[6:14])
    except InvalidResidentId:
        return False
    return 1890 <= birth.year and birth <= DEPLOYMENT.today()


def _holds_id(fused: str) -> bool:
    for run in _FUSED_RUN.findall(fused):
        digits = run.rstrip("Xx")
        if len(digits) == 15 and len(run) == 15:
            try:
                parse(run)
                return True
            except InvalidResidentId:
                pass
        for start in range(len(digits) - 16):
            if _plausible_first17(digits[start : start + 17]):
                return True
    return False


def looks_like_id(text: str) -> bool:
    """Whether free text could carry a resident ID number (see the rules above): a run of 15
    or more digits however the digits are written, or an ID number (or its first 17 digits)
    forwards or backwards with separators between its digits. Such text is refused wherever it
    would be stored or logged, so no ID reaches the audit log through a reference or a note."""
    if longest_digit_run(text) >= LONG_RUN:
        return True
    fused = _fused(fold_digits(text))
    return _holds_id(fused) or _holds_id(fused[::-1])


# -- the character sets of caller-chosen text ------------------------------------------------


def _ascii_set(extra: str) -> Callable[[str], bool]:
    allowed = frozenset(string.ascii_letters + string.digits + extra)
    return allowed.__contains__


def _case_number_char(ch: str) -> bool:
    return (
        ch in _CASE_NUMBER_ASCII
        or "\uff10" <= ch <= "\uff19"  # full-width digits
        or "\u4e00" <= ch <= "\u9fff"  # CJK unified ideographs
        or "\u3400" <= ch <= "\u4dbf"  # extension A
        or ch in "〇（）〔〕【】"
    )


_CASE_NUMBER_ASCII = frozenset(string.ascii_letters + string.digits + " ._/#()[]-")


def _note_char(ch: str) -> bool:
    if ch == "\n" or "0" <= ch <= "9" or "\uff10" <= ch <= "\uff19" or ch == "〇":
        return True
    category = unicodedata.category(ch)
    return category[0] in "LPS" or category == "Zs"


@dataclass(frozen=True)
class FreeText:
    """A field of caller-chosen text: its length and the characters it may hold."""

    min_chars: int
    max_chars: int
    allowed: Callable[[str], bool]  # one character
    described: str  # the set, for the caller's error message and the documentation

    def problem(self, value: str) -> str | None:
        """What is wrong with ``value``, or None; the description never repeats the value."""
        if looks_like_id(value):
            return (
                "looks like a resident ID number (a run of 15 or more digits, however written); "
                "an ID is sent only as id_number (free text is logged)"
            )
        if not value and self.min_chars:
            return f"required, 1 to {self.max_chars} characters"
        if not self.min_chars <= len(value) <= self.max_chars:
            size = (
                f"up to {self.max_chars}"
                if self.min_chars == 0
                else f"{self.min_chars} to {self.max_chars}"
            )
            return f"{size} characters, this has {len(value)}"
        bad = sorted({c for c in value if not self.allowed(c)})
        if bad:
            shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:3])
            return f"only {self.described} are allowed, not {shown}"
        return None


# Request ids: what recheck-<campaign>-<line>, enrol-<batch>-<line>, cli-<uuid> and
# monitor-event-<n> are made of.
REQUEST_ID = FreeText(1, 128, _ascii_set("._:-"), "ASCII letters, digits and . _ : -")
# Caseworker ids: a user id at the intake system ("zhang.wei", "zw@hz"); never "/", which
# separates the caller from the caseworker in the log ("<caller>/<caseworker>").
CASEWORKER_ID = FreeText(0, 64, _ascii_set("._@-"), "ASCII letters, digits and . _ @ -")
# Case numbers (案件编号) and the document numbers (文号) of standing authorisations:
# "2026-001", "民政〔2026〕12号", "杭民（2026）第3号".
CASE_NUMBER = FreeText(
    1,
    64,
    _case_number_char,
    "ASCII letters and digits, full-width digits, CJK ideographs and 〇, space and "
    ". _ / # - ( ) [ ] （ ） 〔 〕 【 】",
)
# Alert notes: prose in any script, line breaks allowed; no control or invisible characters and
# no digits but ASCII and full-width ones (no Arabic-Indic, circled or parenthesised digits).
NOTE = FreeText(
    0,
    500,
    _note_char,
    "letters of any script, ASCII and full-width digits, punctuation, symbols, spaces "
    "and line breaks",
)


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
