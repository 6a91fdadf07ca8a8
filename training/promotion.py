"""Champion/challenger gating, and promotions and rollbacks by people, with their history.

A challenger becomes ``champion`` only when it is at least as good as the
champion on the same holdout data, metric by metric, as the gate rules say
(:data:`DEFAULT_GATE`; ``aiops train --gate FILE`` reads other rules). A
metric that neither model has is skipped; one that only the champion has
fails the gate (the challenger cannot show it is as good); when no rule
could be compared the gate fails too. Every move of the champion alias —
by the gate, ``aiops promote`` or ``aiops rollback`` — is appended to the
registered model's ``champion_history`` tag (version, action, who, when,
why), which is what a rollback reads.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from training.tracking import CHAMPION, alias_version

#: The registered model's tag holding the moves of the champion alias, newest last.
HISTORY_TAG = "champion_history"
#: Entries kept in the history tag (MLflow limits a tag value's length).
HISTORY_LENGTH = 40


@dataclasses.dataclass(frozen=True)
class GateRule:
    """``metric`` must be ``direction`` (higher: ``max``, lower: ``min``) within ``tolerance``."""

    metric: str
    direction: Literal["max", "min"]
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.direction not in ("max", "min"):
            raise ValueError(f"gate rule {self.metric!r}: direction={self.direction!r}; "
                             "accepted: max (higher is better), min (lower is better)")
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(f"gate rule {self.metric!r}: tolerance={self.tolerance} must be "
                             "a number >= 0")

    def passes(self, challenger: float, champion: float) -> bool:
        if self.direction == "max":
            return challenger >= champion - self.tolerance
        return challenger <= champion + self.tolerance


#: Event F1 of the combined score where the holdout has labels; forecast MASE on the holdout.
DEFAULT_GATE = (
    GateRule("holdout.combined.event_f1", "max", 0.0),
    GateRule("holdout.forecast.mase_mean", "min", 0.0),
)


def load_gate(path: str | Path) -> tuple[GateRule, ...]:
    """Gate rules from a JSON file: ``[{"metric": ..., "direction": "max", "tolerance": 0.01}]``."""
    try:
        raw = json.loads(Path(path).read_text())
        if not isinstance(raw, list) or not raw:
            raise ValueError("expected a non-empty JSON list of rules")
        return tuple(GateRule(**rule) for rule in raw)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"gate rules {path}: {error}") from error


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """Whether the challenger is promoted, why, and the metrics compared."""

    promote: bool
    reason: str
    compared: dict[str, dict[str, float | None]]


def gate(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    rules: Sequence[GateRule] = DEFAULT_GATE,
) -> GateDecision:
    """Compare ``challenger`` with ``champion`` (None: there is none yet) by ``rules``."""
    if champion is None:
        return GateDecision(True, "no champion yet: the first version becomes champion", {})
    compared: dict[str, dict[str, float | None]] = {}
    failed, passed, skipped = [], [], []
    for rule in rules:
        mine, theirs = _finite(challenger.get(rule.metric)), _finite(champion.get(rule.metric))
        compared[rule.metric] = {"challenger": mine, "champion": theirs}
        if mine is None and theirs is None:
            skipped.append(rule.metric)
        elif mine is None:
            failed.append(f"{rule.metric} missing for the challenger (champion {theirs:.4g})")
        elif theirs is None:
            passed.append(f"{rule.metric} {mine:.4g} (champion has none)")
        elif rule.passes(mine, theirs):
            passed.append(f"{rule.metric} {mine:.4g} vs {theirs:.4g}")
        else:
            better = "higher" if rule.direction == "max" else "lower"
            failed.append(f"{rule.metric} {mine:.4g} vs champion {theirs:.4g} "
                          f"({better} is better, tolerance {rule.tolerance:g})")
    notes = f"; skipped (neither has it): {', '.join(skipped)}" if skipped else ""
    if failed:
        return GateDecision(False, "worse than the champion: " + "; ".join(failed) + notes,
                            compared)
    if not passed:
        return GateDecision(False, "no gate metric could be compared" + notes, compared)
    return GateDecision(True, "at least as good as the champion: " + "; ".join(passed) + notes,
                        compared)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# -- moving the champion alias -----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class AliasMove:
    version: str
    action: str
    by: str
    at: str
    reason: str
    previous: str | None


def champion_history(model_name: str) -> list[dict[str, Any]]:
    """The recorded moves of the champion alias, oldest first."""
    try:
        tags = MlflowClient().get_registered_model(model_name).tags
    except MlflowException as error:
        raise LookupError(f"no registered model {model_name!r}: {error.message}") from error
    try:
        history = json.loads(tags.get(HISTORY_TAG, "[]"))
    except json.JSONDecodeError:
        history = []
    return history if isinstance(history, list) else []


def set_champion(model_name: str, version: str, *, action: str, reason: str,
                 by: str | None = None) -> AliasMove:
    """Point ``champion`` at ``version`` and record who, when and why."""
    client = MlflowClient()
    try:
        client.get_model_version(model_name, version)
    except MlflowException as error:
        raise LookupError(f"model {model_name!r} has no version {version!r}") from error
    move = AliasMove(version=str(version), action=action, by=by or _who(),
                     at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), reason=reason,
                     previous=alias_version(model_name, CHAMPION))
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    for key, value in (("champion.action", action), ("champion.by", move.by),
                       ("champion.at", move.at), ("champion.reason", reason[:4000])):
        client.set_model_version_tag(model_name, str(version), key, value)
    history = [*champion_history(model_name), dataclasses.asdict(move)][-HISTORY_LENGTH:]
    client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history))
    return move


def rollback(model_name: str, *, reason: str, by: str | None = None) -> AliasMove:
    """Put back the champion that the current one replaced when it was promoted.

    Rollbacks stack: after rolling back from 3 to 2, the next rollback goes to the
    version that 2 replaced, not back to 3.
    """
    current = alias_version(model_name, CHAMPION)
    if current is None:
        raise LookupError(f"model {model_name!r} has no champion to roll back")
    for move in reversed(champion_history(model_name)):
        if (move.get("version") == current and move.get("action") != "rollback"
                and move.get("previous") not in (None, current)):
            return set_champion(model_name, move["previous"], action="rollback",
                                reason=reason, by=by)
    raise LookupError(f"the history of {model_name!r} records no champion before version "
                      f"{current}; promote a version by number instead")


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def model_versions(model_name: str) -> list[dict[str, Any]]:
    """Every registered version of ``model_name``, newest first, with aliases and promotion."""
    client = MlflowClient()
    try:
        aliases_of: dict[str, list[str]] = {}
        for alias, version in client.get_registered_model(model_name).aliases.items():
            aliases_of.setdefault(str(version), []).append(alias)
        versions = client.search_model_versions(f"name = '{model_name}'")
    except MlflowException as error:
        raise LookupError(f"no registered model {model_name!r}: {error.message}") from error
    rows = []
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        created = dt.datetime.fromtimestamp(v.creation_timestamp / 1000, dt.UTC)
        rows.append({"version": str(v.version), "aliases": sorted(aliases_of.get(str(v.version), [])),
                     "created": created.isoformat(timespec="seconds"), "run_id": v.run_id,
                     "promotion": v.tags.get("champion.reason", "")[:120]})
    return rows
