"""Argument types shared by several command groups.

They live apart from :mod:`cli.main` because ``main`` imports every group to
build the parser; a group importing ``main`` back would make a cycle.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from models.alarms import AlarmPolicy


def duration_argument(name: str) -> Callable[[str], float]:
    """An argparse type: seconds from any spelling of :func:`features.timeparse.parse_seconds`."""

    def parse(text: str) -> float:
        from features.timeparse import parse_seconds

        try:
            return parse_seconds(text, name=name)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def time_argument(name: str):
    """An argparse type: a UTC time from :func:`features.timeparse.parse_timestamp`, zone required."""

    def parse(text: str):
        from features.timeparse import parse_timestamp

        try:
            return parse_timestamp(text, name=name)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a count of cycles, say)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def alarm_policy(path: str | None) -> AlarmPolicy:
    """The policy the service pages with: ``path``, else ``AIOPS_ALARM_POLICY``, else the default."""
    path = path or os.environ.get("AIOPS_ALARM_POLICY")
    return AlarmPolicy.from_file(path) if path else AlarmPolicy()
