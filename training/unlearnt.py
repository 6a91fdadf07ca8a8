"""What a refit does not learn: the incident the champion is paging when the refit runs.

A refit learns every row of its window. A level shift being paged at midnight
would be learnt by the nightly job, and its alert would end the next morning
while the shift went on. So before the final fit the champion scores each
series' last rows, as one window the way the service scores them, and the rows
of an incident still open at the end of the window
(:func:`models.alarms.unlearnt_rows`, under the alarm policy in force) are left
out of the detectors' fit (made missing, as a gap). Once the incident is older
than the policy's ``learn_incident_after_s`` it is learnt as the new normal.
The holdout measurement and the forecasters see every row: a forecast follows
the load as it is. ``aiops detect`` replays the same rule
(:func:`training.replay.score_series`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd

from features.series import SeriesKey
from models.alarms import AlarmPolicy, unlearnt_rows
from models.bundle import DetectorBundle
from training.comparison import CHAMPION_LOAD_ERRORS, load_champion
from training.tracking import CHAMPION, alias_version

_log = logging.getLogger(__name__)

#: Rows scored before the span looked at, as a live window carries the past its detectors read.
CONTEXT = pd.Timedelta(hours=1)


@dataclasses.dataclass(frozen=True)
class LeftOut:
    """The rows of one series a refit leaves out: ``[start, end)``, ``n_rows`` of them."""

    start: pd.Timestamp
    end: pd.Timestamp
    n_rows: int

    def note(self) -> str:
        return (f"{self.n_rows} rows from {self.start.isoformat()} to {self.end.isoformat()} "
                f"left out: an incident the champion is paging")


def champion_paging(series: Mapping[SeriesKey, pd.Series], model_name: str,
                    policy: AlarmPolicy, at: pd.Timestamp) -> dict[SeriesKey, LeftOut]:
    """:func:`paged_rows` of ``model_name``'s champion ({} without one, or when it cannot
    be loaded: then every row is learnt, and the log says why)."""
    if policy.learn_incident_after_s == 0 or alias_version(model_name, CHAMPION) is None:
        return {}
    try:
        champion = load_champion(model_name)
    except CHAMPION_LOAD_ERRORS as error:
        _log.warning("the champion of %r could not be loaded to find the incidents it is "
                     "paging; every row is learnt: %s", model_name, error)
        return {}
    return paged_rows(series, champion, policy, at)


def paged_rows(series: Mapping[SeriesKey, pd.Series], champion: DetectorBundle,
               policy: AlarmPolicy, at: pd.Timestamp) -> dict[SeriesKey, LeftOut]:
    """The rows of each series that a refit at ``at`` leaves out (series with none are absent).

    Only the span in which such an incident can lie is scored: ``learn_incident_after_s``
    and one merge gap before ``at`` (an incident that began earlier is old enough to be
    learnt), with :data:`CONTEXT` before it. Series the champion does not know, or cannot
    score, are learnt whole.
    """
    if policy.learn_incident_after_s == 0:
        return {}
    span = pd.Timedelta(seconds=policy.learn_incident_after_s + policy.merge_gap_s)
    left_out = {}
    for key, values in series.items():
        window = values[(values.index >= at - span - CONTEXT) & (values.index < at)]
        if key not in champion or window.count() < 2:
            continue
        try:
            scored = champion.score(*key, window)
        except ValueError as error:
            _log.warning("%s/%s: the champion could not score its last rows, so all of them "
                         "are learnt: %s", *key, error)
            continue
        live = np.where(window.index >= at - span, scored.score, np.nan)
        rows = unlearnt_rows(window.index.as_unit("ns").asi8, live,
                             policy.for_index(window.index).threshold, policy, at.value)
        if rows.stop > rows.start:
            left_out[key] = LeftOut(window.index[rows.start], at, rows.stop - rows.start)
    return left_out


def without(series: Mapping[SeriesKey, pd.Series],
            left_out: Mapping[SeriesKey, LeftOut]) -> dict[SeriesKey, pd.Series]:
    """``series`` with the ``left_out`` rows missing."""
    kept = dict(series)
    for key, rows in left_out.items():
        values = kept[key].copy()
        values[(values.index >= rows.start) & (values.index < rows.end)] = np.nan
        kept[key] = values
    return kept
