"""Durations and timestamps as people write them: the one grammar of each for every command.

Every command option, config field and validator that takes a step, a period or
a time parses it here, so ``aiops data synth --step 1m30s`` means what
``aiops data import-prometheus --step 1m30s`` means, and an error names the
argument and the forms it takes. Callers keep only their own limits (a synthetic
step of 1 s to 1 h, Prometheus' 1 ms floor), never a grammar of their own.

Durations (:func:`parse_duration`, :func:`parse_seconds`), the union of what
the commands accepted before they shared a parser:

- a number of seconds: ``15``, ``2.5``, ``"90"``, ``"1e3"``;
- Prometheus' form, whole numbers with units ``ms s m h d w y``, chained:
  ``"250ms"``, ``"10s"``, ``"1m30s"``, ``"1h30m"``, ``"2d"``; ``y`` is 365 days
  as in Prometheus;
- pandas' form, one number (decimals allowed) and a unit, or what
  ``pandas.Timedelta`` reads: ``"1.5m"``, ``"5min"``, ``"1D"``, ``"12h"``,
  ``"1 hour"``, ``"01:30:00"``, ``"P1DT2H"``. ``m`` is minutes, as in
  Prometheus, and the older aliases keep their meaning (``T`` minutes, ``H``
  hours, ``S`` seconds, ``d`` days, ``w`` weeks);
- a ``pandas.Timedelta`` or ``datetime.timedelta``.

A duration must be positive. Refused, with the accepted forms in the message: a
unit without a number (``"m"``: write ``1m``), months and years of the calendar
(``"1M"``, ``"1Y"``: their length varies), a number without a unit after a unit
(``"1m30"``), signs inside (``"1h-5m"``), NaN and infinity.

Timestamps (:func:`parse_timestamp` for one value, :func:`parse_timestamps` for
a data file's column):

- RFC 3339 / ISO 8601 with an offset or ``Z``: ``"2026-11-27T12:00:00Z"``,
  ``"2026-11-27T13:00:00+01:00"``; other text pandas reads as a time
  (``"2026-11-27 12:00 UTC"``) too;
- Unix seconds, as a number or text: ``1795000000``, ``"1795000000.5"``
  (one value only: a data column of numbers stays an error);
- relative to now, as Prometheus' and Grafana's tools write it: ``"now"``,
  ``"now-1h"``, ``"now+15m"``, ``"-1h30m"`` (before now), offsets in
  Prometheus' form (one value only);
- a ``pandas.Timestamp`` or ``datetime.datetime``.

A time without a zone is taken as UTC where the caller says so (a synthetic
fleet's ``start``, ``aiops forecast --until``, NAB windows and CSV files, which
carry no zone) and refused elsewhere (``--start``/``--end`` of an import, the
store's ``start``/``end``), since a zone we do not know cannot be guessed. The
result is always in UTC.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
import re
import warnings
from typing import Literal

import numpy as np
import pandas as pd

from features.schema import TIMESTAMP, DataValidationError, first_bad_row

Naive = Literal["utc", "error"]

#: The accepted forms, as error messages list them.
DURATION_FORMS = ("a number of seconds (15, 2.5) or a duration such as 250ms, 10s, 1m30s, "
                  "1.5m, 5min, 1h, 1D")
TIMESTAMP_FORMS = ("RFC 3339 (2026-11-27T12:00:00Z), Unix seconds nor a time relative to now "
                   "(now, now-1h, -30m)")

_PROMETHEUS_PART = r"\d+(?:ms|s|m|h|d|w|y)"
_PROMETHEUS = re.compile(rf"(?:{_PROMETHEUS_PART})+")
_PROMETHEUS_PARTS = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_PROMETHEUS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
                  "w": 7 * 86_400_000, "y": 365 * 86_400_000}
#: One number and one unit, pandas' way: the unit is looked up in the aliases first.
_ONE_UNIT = re.compile(r"(\+?(?:\d+(?:\.\d*)?|\.\d+))\s*([A-Za-z]+)")
#: Spellings pandas reads differently or has deprecated, with the meaning they always had here.
_UNIT_ALIASES = {"m": "min", "T": "min", "H": "h", "S": "s", "d": "D", "w": "W"}
#: Calendar units: a month or a year has no fixed length.
_CALENDAR_UNITS = frozenset({"M", "ME", "MS", "Q", "QE", "QS", "Y", "YE", "YS", "y", "A", "AS"})
_BARE_UNIT = re.compile(r"[A-Za-z]+")
#: "now", "now-1h", "now + 15m", or "-1h30m" (now is implied before a minus).
_RELATIVE_TIME = re.compile(rf"(?P<now>now)?\s*(?:(?P<sign>[+-])\s*"
                            rf"(?P<duration>(?:{_PROMETHEUS_PART})+))?")
#: The end of a text timestamp that carries its zone: "Z" or an offset such as "+02:00".
_ZONE_SUFFIX = r"(?:Z|[+-]\d{2}:?\d{2})\s*$"


# -- durations ------------------------------------------------------------------------------
def parse_duration(value: object, *, name: str = "duration") -> pd.Timedelta:
    """A positive duration from any accepted spelling (see the module docstring).

    Raises
    ------
    TypeError
        ``value`` is neither text, a number nor a timedelta (a bool is not a number here).
    ValueError
        The text is no duration, a calendar unit, or not positive; the message
        names ``name``, the value and the accepted forms.
    """
    read = _read_duration(value, name)
    return read if isinstance(read, pd.Timedelta) else pd.Timedelta(read, unit="s")


def parse_seconds(value: object, *, name: str = "duration") -> float:
    """:func:`parse_duration` in seconds; a number, or a number as text, is returned exactly."""
    read = _read_duration(value, name)
    return read.total_seconds() if isinstance(read, pd.Timedelta) else read


def _read_duration(value: object, name: str) -> float | pd.Timedelta:
    """Seconds (for a number) or a Timedelta, checked positive."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a duration, got {value!r}")
    if isinstance(value, pd.Timedelta | dt.timedelta | np.timedelta64):
        read: float | pd.Timedelta = pd.Timedelta(value)
    elif isinstance(value, numbers.Real):
        read = float(value)
    elif isinstance(value, str):
        read = _duration_text(value, name)
    else:
        raise TypeError(f"{name} must be a duration such as '1m' or a number of seconds, got "
                        f"{type(value).__name__} ({value!r})")
    # NaN, NaT and infinity compare False with everything; "not > 0" catches them too.
    if isinstance(read, float) and not math.isfinite(read):
        raise ValueError(f"{name} {value!r} is not a duration; write {DURATION_FORMS}")
    if pd.isna(read) or not read > (pd.Timedelta(0) if isinstance(read, pd.Timedelta) else 0):
        raise ValueError(f"{name} {value!r} is not a positive number of seconds or duration; "
                         f"write {DURATION_FORMS}")
    return read


def _duration_text(value: str, name: str) -> float | pd.Timedelta:
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    if _PROMETHEUS.fullmatch(text):
        ms = sum(int(n) * _PROMETHEUS_MS[u] for n, u in _PROMETHEUS_PARTS.findall(text))
        return pd.Timedelta(ms, unit="ms")
    if _BARE_UNIT.fullmatch(text):
        raise ValueError(f"{name} {value!r} is not a duration: a unit needs a number (1{text}, "
                         f"not {text}); write {DURATION_FORMS}")
    one = _ONE_UNIT.fullmatch(text)
    if one is not None:
        number, unit = one.groups()
        if unit in _CALENDAR_UNITS:
            raise ValueError(f"{name} {value!r} is not a duration of fixed length (months and "
                             f"years vary); write {DURATION_FORMS}")
        text = number + _UNIT_ALIASES.get(unit, unit)
    try:
        # pandas warns about unit spellings it plans to drop; the ones meant here are mapped.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            delta = pd.Timedelta(text)
    except (ValueError, TypeError, OverflowError):
        delta = pd.NaT
    # pandas reads "" and "NaT" as NaT rather than refusing them.
    if pd.isna(delta):
        raise ValueError(f"{name} {value!r} is not a duration; write {DURATION_FORMS}")
    return delta


# -- timestamps -----------------------------------------------------------------------------
def parse_timestamp(value: object, *, name: str = "time", naive: Naive = "error",
                    now: pd.Timestamp | None = None) -> pd.Timestamp:
    """A UTC timestamp from any accepted spelling of one value (see the module docstring).

    ``naive`` says what a time without a zone means: UTC, or an error. ``now``
    (default: the current time) anchors relative times, so that one command's
    ``start`` and ``end`` share it.

    Raises
    ------
    TypeError
        ``value`` is neither text, a number nor a timestamp.
    ValueError
        The text is no time, or has no zone where one is needed; the message
        names ``name``, the value and the accepted forms.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a time, got {value!r}")
    if isinstance(value, pd.Timestamp | dt.datetime | np.datetime64):
        stamp = pd.Timestamp(value)
    elif isinstance(value, numbers.Real):
        stamp = _unix_seconds(float(value), value, name)
    elif isinstance(value, str):
        raw = value.strip()
        relative = _RELATIVE_TIME.fullmatch(raw.lower())
        if relative and (relative["now"] or relative["sign"] == "-"):
            now = pd.Timestamp.now(tz="UTC") if now is None else now.tz_convert("UTC")
            if not relative["duration"]:
                return now
            offset = parse_duration(relative["duration"], name=name)
            return now + offset if relative["sign"] == "+" else now - offset
        try:
            seconds = float(raw)
        except ValueError:
            seconds = None
        if seconds is not None:
            return _unix_seconds(seconds, value, name)
        try:
            stamp = pd.Timestamp(raw)
        except (ValueError, OverflowError):
            raise ValueError(f"{name} {value!r} is neither {TIMESTAMP_FORMS}") from None
    else:
        raise TypeError(f"{name} must be a time such as '2026-11-27T12:00:00Z', got "
                        f"{type(value).__name__} ({value!r})")
    if pd.isna(stamp):
        raise ValueError(f"{name} {value!r} is not a time")
    if stamp.tzinfo is None:
        if naive == "error":
            raise ValueError(f"{name} {value!r} has no timezone; write it as RFC 3339 with an "
                             f"offset, e.g. 2026-11-27T12:00:00Z")
        return stamp.tz_localize("UTC")
    return stamp.tz_convert("UTC")


def _unix_seconds(seconds: float, value: object, name: str) -> pd.Timestamp:
    if not math.isfinite(seconds):
        raise ValueError(f"{name} {value!r} is not a time")
    return pd.Timestamp(seconds, unit="s", tz="UTC")


def parse_timestamps(raw: pd.Series, *, file: str | None = None, naive: Naive = "error") -> pd.Series:
    """Parse a data file's timestamp column to ``datetime64[ns, UTC]``.

    The column form of :func:`parse_timestamp`, vectorised because a file holds
    millions of rows: the same absolute times and the same ``naive`` rule (CSV
    files such as NAB's carry no zone, so their reader passes ``"utc"``). Unix
    seconds and Prometheus-style relative times (``-1h``) are left out: in a file
    they would be a guess (seconds or milliseconds?) or change with the hour it is read.

    Raises
    ------
    DataValidationError
        Naming the file, the column and the first bad row.
    """
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        if naive == "error":
            raise DataValidationError(
                "timestamps carry no timezone; store them as UTC (datetime64[ns, UTC])",
                file=file,
                column=TIMESTAMP,
                row=0,
            )
        return raw.dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    text = raw.astype("string")
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna() & text.notna()
    missing = text.isna()
    if missing.any():
        raise DataValidationError(
            "timestamp is missing", file=file, column=TIMESTAMP, row=first_bad_row(missing, raw.index)
        )
    if bad.any():
        row = first_bad_row(bad, raw.index)
        raise DataValidationError(
            f"cannot parse timestamp {text.iloc[int(np.flatnonzero(bad.to_numpy())[0])]!r}",
            file=file,
            column=TIMESTAMP,
            row=row,
        )
    if naive == "error":
        # pandas parses "2024-01-01 00:00" as UTC under utc=True: tell zone-less text apart.
        has_zone = text.str.contains(_ZONE_SUFFIX, regex=True, na=False)
        if not has_zone.all():
            raise DataValidationError(
                "timestamp has no timezone; write it with an offset such as 'Z' or '+00:00'",
                file=file,
                column=TIMESTAMP,
                row=first_bad_row(~has_zone, raw.index),
            )
    return parsed.astype("datetime64[ns, UTC]")
