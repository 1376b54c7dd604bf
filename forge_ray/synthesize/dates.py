"""Shift a written date by a number of days, keeping the way it was written.

    shift_date("1984-03-12", 30)        -> "1984-04-11"
    shift_date("12. März 1984", 30)     -> "11. April 1984"
    shift_date("March 12, 1984", -3)    -> "March 9, 1984"

One shift per record keeps intervals between a record's dates (age at an event, time between two
visits) while no date stays the real one. Formats: ISO, D/M/Y and M/D/Y with '/', '.' or '-', and
day-month-name-year in English, French and German (the corpora's and the scanner's). A numeric
date whose order is ambiguous is read day first; the output uses the same order, so the result is
a valid date in the same layout either way. Returns None for a text it cannot read.
"""

from __future__ import annotations

import datetime as dt
import re

from forge_ray.corpora.fake_pii import MONTHS  # the names the corpora write dates with

_BY_NAME = {name.lower(): (lang, i + 1) for lang, names in MONTHS.items() for i, name in enumerate(names)}
_NAMES = "|".join(sorted((re.escape(n) for n in _BY_NAME), key=len, reverse=True))
_ISO = re.compile(r"^(\d{4})([-/.])(\d{1,2})\2(\d{1,2})$")
_NUM = re.compile(r"^(\d{1,2})([-/.])(\d{1,2})\2(\d{4})$")
_DAY_MONTH = re.compile(rf"^(\d{{1,2}})(er|\.)?\s+({_NAMES})\s+(\d{{4}})$", re.I)
_MONTH_DAY = re.compile(rf"^({_NAMES})\s+(\d{{1,2}}),?\s+(\d{{4}})$", re.I)


def _safe(y: int, m: int, d: int) -> dt.date | None:
    try:
        return dt.date(y, m, d)
    except ValueError:
        return None


def _name(lang: str, month: int, like: str) -> str:
    name = MONTHS[lang][month - 1]
    return name.lower() if like.islower() else name


def shift_date(text: str, days: int) -> str | None:
    """`text` (a whole date) moved by `days`, in the same layout; None if it is no date read here."""
    s = text.strip()
    if m := _ISO.match(s):
        d = _safe(int(m[1]), int(m[3]), int(m[4]))
        if d is None:
            return None
        d += dt.timedelta(days=days)
        return f"{d.year}{m[2]}{d.month:0{len(m[3])}d}{m[2]}{d.day:0{len(m[4])}d}"
    if m := _NUM.match(s):
        a, b, y = int(m[1]), int(m[3]), int(m[4])
        day_first = a > 12 or b <= 12  # ambiguous: day first, and written back the same way
        d = _safe(y, b, a) if day_first else _safe(y, a, b)
        if d is None:
            return None
        d += dt.timedelta(days=days)
        first, second = (d.day, d.month) if day_first else (d.month, d.day)
        return f"{first:0{len(m[1])}d}{m[2]}{second:0{len(m[3])}d}{m[2]}{d.year}"
    if m := _DAY_MONTH.match(s):
        lang, month = _BY_NAME[m[3].lower()]
        d = _safe(int(m[4]), month, int(m[1]))
        if d is None:
            return None
        d += dt.timedelta(days=days)
        suffix = m[2] or ""
        if suffix == "er" and d.day != 1:  # French "1er" only for the first of the month
            suffix = ""
        elif d.day == 1 and lang == "fr" and suffix == "":
            suffix = "er"
        return f"{d.day}{suffix} {_name(lang, d.month, m[3])} {d.year}"
    if m := _MONTH_DAY.match(s):
        lang, month = _BY_NAME[m[1].lower()]
        d = _safe(int(m[3]), month, int(m[2]))
        if d is None:
            return None
        d += dt.timedelta(days=days)
        comma = "," if "," in s else ""
        return f"{_name(lang, d.month, m[1])} {d.day}{comma} {d.year}"
    return None
