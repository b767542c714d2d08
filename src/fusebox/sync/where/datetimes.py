"""date, time, timestamp and timestamptz as Postgres stores them: plain integers.

- date: days since 2000-01-01; -infinity/infinity are INT32_MIN/INT32_MAX.
- timestamp, timestamptz: microseconds since 2000-01-01 00:00 (UTC for timestamptz);
  -infinity/infinity are INT64_MIN/INT64_MAX.
- time: microseconds since midnight (24:00:00 allowed).

Integers make comparisons and date arithmetic exact and cover Postgres's whole range
(4713 BC to 5874897 AD for dates), which `datetime` cannot.

Text is ISO (`DateStyle = ISO`), as Electric's sessions use. timestamptz values read from
rows may carry any offset; where a conversion depends on the session time zone (date to
timestamptz, timestamptz to text), UTC is assumed: the snapshot session must set
`TimeZone = 'UTC'` (see `SESSION_SETTINGS`).
"""

from __future__ import annotations

import re

from .errors import WhereEvalError
from .numbers import InputError

USECS_PER_SEC = 1_000_000
USECS_PER_DAY = 86_400 * USECS_PER_SEC
DATE_NOBEGIN = -(2**31)
DATE_NOEND = 2**31 - 1
TS_NOBEGIN = -(2**63)
TS_NOEND = 2**63 - 1

_EPOCH_JDATE = 2451545  # date2j(2000, 1, 1)
_DATE_MIN = 0 - _EPOCH_JDATE  # Julian day 0: 4714-11-24 BC
_DATE_END = 2147483494 - _EPOCH_JDATE  # 5874898-01-01, exclusive
_TS_MIN = -211813488000000000  # 4714-11-24 00:00:00 BC
_TS_END = 9223371331200000000  # 294277-01-01 00:00:00, exclusive


def date2j(year: int, month: int, day: int) -> int:
    """Postgres's date2j: proleptic Gregorian date to Julian day (year 0 is 1 BC)."""
    if month > 2:
        month += 1
        year += 4800
    else:
        month += 13
        year += 4799
    century = year // 100
    julian = year * 365 - 32167
    julian += year // 4 - century + century // 4
    julian += 7834 * month // 256 + day
    return julian


def j2date(julian_day: int) -> tuple[int, int, int]:
    julian = julian_day + 32044
    quad = julian // 146097
    extra = (julian - quad * 146097) * 4 + 3
    julian += 60 + quad * 3 + extra // 146097
    quad = julian // 1461
    julian -= quad * 1461
    y = julian * 4 // 1461
    julian = ((julian + 305) % 365 if y != 0 else (julian + 306) % 366) + 123
    y += quad * 4
    year = y - 4800
    quad = julian * 2141 // 65536
    day = julian - 7834 * quad // 256
    month = (quad + 10) % 12 + 1
    return year, month, day


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_in_month(year: int, month: int) -> int:
    return 29 if month == 2 and _is_leap(year) else _DAYS_IN_MONTH[month - 1]


def valid_date(days: int) -> bool:
    return _DATE_MIN <= days < _DATE_END


def valid_timestamp(usecs: int) -> bool:
    return _TS_MIN <= usecs < _TS_END


# -- reading Postgres's own output ----------------------------------------------------------

_OUT_DATE = re.compile(r"(\d{4,})-(\d\d)-(\d\d)")
_OUT_TIME = re.compile(r"(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?")
_OUT_OFFSET = re.compile(r"([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?")


def _split_bc(text: str) -> tuple[str, bool]:
    if text.endswith(" BC"):
        return text[:-3], True
    return text, False


def _astronomical(year: int, bc: bool) -> int:
    return 1 - year if bc else year


def _micros(fraction: str | None) -> int:
    return int(fraction.ljust(6, "0")) if fraction else 0


def parse_date_output(text: str) -> int:
    if text == "infinity":
        return DATE_NOEND
    if text == "-infinity":
        return DATE_NOBEGIN
    body, bc = _split_bc(text)
    year, month, day = body.split("-")
    return date2j(_astronomical(int(year), bc), int(month), int(day)) - _EPOCH_JDATE


def parse_time_output(text: str) -> int:
    match = _OUT_TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"unexpected time output {text!r}")
    hour, minute, second, fraction = match.groups()
    return ((int(hour) * 60 + int(minute)) * 60 + int(second)) * USECS_PER_SEC + _micros(fraction)


def parse_timestamp_output(text: str) -> int:
    if text == "infinity":
        return TS_NOEND
    if text == "-infinity":
        return TS_NOBEGIN
    body, bc = _split_bc(text)
    date_part, time_part = body.split(" ")
    year, month, day = date_part.split("-")
    days = date2j(_astronomical(int(year), bc), int(month), int(day)) - _EPOCH_JDATE
    return days * USECS_PER_DAY + parse_time_output(time_part)


def parse_timestamptz_output(text: str) -> int:
    if text == "infinity":
        return TS_NOEND
    if text == "-infinity":
        return TS_NOBEGIN
    body, bc = _split_bc(text)
    date_part, time_and_offset = body.split(" ")
    cut = max(time_and_offset.rfind("+"), time_and_offset.rfind("-"))
    local = parse_timestamp_output(f"{date_part} {time_and_offset[:cut]}{' BC' if bc else ''}")
    match = _OUT_OFFSET.fullmatch(time_and_offset[cut:])
    if match is None:
        raise ValueError(f"unexpected timestamptz output {text!r}")
    return local - _offset_usecs(match.groups())


def _offset_usecs(groups: tuple[str | None, ...]) -> int:
    sign, hours, minutes, seconds = groups
    offset = (int(hours or 0) * 60 + int(minutes or 0)) * 60 + int(seconds or 0)
    return (-offset if sign == "-" else offset) * USECS_PER_SEC


# -- literals -----------------------------------------------------------------------------
# Postgres's date/time input is very liberal (month names, 'today', DMY orders...).
# Literals here accept a strict ISO subset, so their meaning can never be in doubt; the
# generated SQL carries them re-rendered in canonical form.

_IN_DATE = r"(\d{4,})-(\d{1,2})-(\d{1,2})"
_IN_TIME = r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?"
_LITERAL_DATE = re.compile(_IN_DATE + r"(\s+BC)?", re.IGNORECASE)
_LITERAL_TIMESTAMP = re.compile(
    _IN_DATE + r"(?:[T ]" + _IN_TIME + r")?(?:\s*(Z|UTC|[+-][0-9:]+))?(\s+BC)?", re.IGNORECASE
)
_LITERAL_OFFSET = re.compile(r"([+-])(\d{1,2})(?::(\d{2})(?::(\d{2}))?)?|([+-])(\d{2})(\d{2})")
_LITERAL_TIME = re.compile(_IN_TIME)
_SPECIAL = {"infinity": 1, "+infinity": 1, "-infinity": -1}


def _bad(type_word: str, text: str) -> InputError:
    return InputError(
        f'{type_word} literal "{text}" is not supported: use ISO 8601, as in'
        " 2024-01-31, 2024-01-31 13:45:00.123 or 2024-01-31T13:45:00+02:00"
    )


def _literal_days(year_s: str, month_s: str, day_s: str, bc: bool, text: str) -> int:
    year, month, day = int(year_s), int(month_s), int(day_s)
    if year == 0:
        raise InputError(f'date/time field value out of range: "{text}"')
    year = _astronomical(year, bc)  # 1 BC is year 0, a leap year
    if not 1 <= month <= 12 or not 1 <= day <= _days_in_month(year, month):
        raise InputError(f'date/time field value out of range: "{text}"')
    return date2j(year, month, day) - _EPOCH_JDATE


def _literal_time(
    hour: str, minute: str, second: str | None, fraction: str | None, text: str, allow_24: bool
) -> int:
    h, m, s = int(hour), int(minute), int(second or 0)
    micros = _micros(fraction)
    if h == 24 and allow_24 and m == 0 and s == 0 and micros == 0:
        return USECS_PER_DAY
    if h > 23 or m > 59 or s > 59:
        raise InputError(f'date/time field value out of range: "{text}"')
    return ((h * 60 + m) * 60 + s) * USECS_PER_SEC + micros


def _literal_offset(zone: str, text: str) -> int:
    if zone.upper() in ("Z", "UTC"):
        return 0
    match = _LITERAL_OFFSET.fullmatch(zone)
    if match is None:
        raise _bad("timestamp with time zone", text)
    sign, hours, minutes, seconds, sign2, hours2, minutes2 = match.groups()
    if sign is None:
        sign, hours, minutes, seconds = sign2, hours2, minutes2, None
    if int(hours) > 15 or int(minutes or 0) > 59 or int(seconds or 0) > 59:
        raise InputError(f'time zone displacement out of range: "{text}"')
    return _offset_usecs((sign, hours, minutes, seconds))


def parse_date_input(text: str) -> int:
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in _SPECIAL:
        return DATE_NOEND if _SPECIAL[lowered] > 0 else DATE_NOBEGIN
    if lowered == "epoch":
        return date2j(1970, 1, 1) - _EPOCH_JDATE
    match = _LITERAL_DATE.fullmatch(stripped)
    if match is None:
        raise _bad("date", text)
    year, month, day, bc = match.groups()
    days = _literal_days(year, month, day, bc is not None, text)
    if not valid_date(days):
        raise InputError(f'date out of range: "{text}"')
    return days


def parse_time_input(text: str) -> int:
    match = _LITERAL_TIME.fullmatch(text.strip())
    if match is None:
        raise _bad("time without time zone", text)
    return _literal_time(*match.groups(), text=text, allow_24=True)


def _parse_timestamp_literal(text: str, with_zone: bool) -> int:
    word = "timestamp with time zone" if with_zone else "timestamp without time zone"
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in _SPECIAL:
        return TS_NOEND if _SPECIAL[lowered] > 0 else TS_NOBEGIN
    if lowered == "epoch":
        return (date2j(1970, 1, 1) - _EPOCH_JDATE) * USECS_PER_DAY
    match = _LITERAL_TIMESTAMP.fullmatch(stripped)
    if match is None:
        raise _bad(word, text)
    year, month, day, hour, minute, second, fraction, zone, bc = match.groups()
    if zone is not None and not with_zone:
        # Postgres silently ignores a zone given to timestamp; refuse the ambiguity instead.
        raise InputError(
            f'a time zone in a timestamp without time zone literal is not supported: "{text}"'
        )
    days = _literal_days(year, month, day, bc is not None, text)
    micros = 0
    if hour is not None:
        micros = _literal_time(hour, minute, second, fraction, text, allow_24=False)
    value = days * USECS_PER_DAY + micros
    if zone is not None:
        value -= _literal_offset(zone, text)
    if not valid_timestamp(value):
        raise InputError(f'timestamp out of range: "{text}"')
    return value


def parse_timestamp_input(text: str) -> int:
    return _parse_timestamp_literal(text, with_zone=False)


def parse_timestamptz_input(text: str) -> int:
    """A zone-less literal means UTC: the session contract fixes TimeZone to UTC."""
    return _parse_timestamp_literal(text, with_zone=True)


# -- output -------------------------------------------------------------------------------


def _format_ymd(days: int) -> tuple[str, bool]:
    year, month, day = j2date(days + _EPOCH_JDATE)
    bc = year <= 0
    if bc:
        year = 1 - year
    return f"{year:04d}-{month:02d}-{day:02d}", bc


def _format_clock(micros: int) -> str:
    seconds, fraction = divmod(micros, USECS_PER_SEC)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    text = f"{hour:02d}:{minute:02d}:{second:02d}"
    if fraction:
        text += "." + f"{fraction:06d}".rstrip("0")
    return text


def format_date(days: int) -> str:
    if days == DATE_NOEND:
        return "infinity"
    if days == DATE_NOBEGIN:
        return "-infinity"
    text, bc = _format_ymd(days)
    return text + " BC" if bc else text


def format_time(micros: int) -> str:
    return _format_clock(micros)


def format_timestamp(usecs: int, zone: str = "") -> str:
    if usecs == TS_NOEND:
        return "infinity"
    if usecs == TS_NOBEGIN:
        return "-infinity"
    days, micros = divmod(usecs, USECS_PER_DAY)
    date_text, bc = _format_ymd(days)
    text = f"{date_text} {_format_clock(micros)}{zone}"
    return text + " BC" if bc else text


def format_timestamptz(usecs: int) -> str:
    return format_timestamp(usecs, "+00")


# -- conversions --------------------------------------------------------------------------


def date_to_timestamp(days: int) -> int:
    if days == DATE_NOBEGIN:
        return TS_NOBEGIN
    if days == DATE_NOEND:
        return TS_NOEND
    usecs = days * USECS_PER_DAY
    if not valid_timestamp(usecs):
        raise WhereEvalError("date out of range for timestamp")
    return usecs


def date_timestamp_key(days: int) -> int:
    """A date placed among timestamps for comparison (date_cmp_timestamp).

    Dates past the last timestamp sort after every finite timestamp but before infinity.
    """
    if days == DATE_NOBEGIN:
        return TS_NOBEGIN
    if days == DATE_NOEND:
        return TS_NOEND
    return min(days * USECS_PER_DAY, _TS_END)


def timestamp_to_date(usecs: int) -> int:
    if usecs == TS_NOBEGIN:
        return DATE_NOBEGIN
    if usecs == TS_NOEND:
        return DATE_NOEND
    return usecs // USECS_PER_DAY


def timestamp_to_time(usecs: int) -> int | None:
    if usecs in (TS_NOBEGIN, TS_NOEND):
        return None  # Postgres returns NULL here rather than raising
    return usecs % USECS_PER_DAY


def date_add_days(days: int, delta: int) -> int:
    if days in (DATE_NOBEGIN, DATE_NOEND):
        return days
    result = days + delta
    if not valid_date(result):
        raise WhereEvalError("date out of range")
    return result


def date_diff(a: int, b: int) -> int:
    if a in (DATE_NOBEGIN, DATE_NOEND) or b in (DATE_NOBEGIN, DATE_NOEND):
        raise WhereEvalError("cannot subtract infinite dates")
    return a - b
