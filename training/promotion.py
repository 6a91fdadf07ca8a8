"""Champion/challenger gating, and promotions and rollbacks by people, with their history.

A challenger becomes ``champion`` only when it is at least as good as the
champion on the same holdout data, metric by metric, as the gate rules say
(:data:`DEFAULT_GATE`; ``aiops train --gate FILE`` reads other rules). A
metric that neither model has is skipped; one that only the champion has
fails the gate (the challenger cannot show it is as good); when no rule
could be compared the gate fails too. Moving the alias and its history
live in :mod:`registry.aliases` (the service's admin endpoints use them
too) and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from registry.aliases import (
    AliasMove,
    champion_history,
    model_versions,
    rollback,
    set_champion,
)

__all__ = ["DEFAULT_GATE", "AliasMove", "GateDecision", "GateRule", "champion_history", "gate",
           "load_gate", "model_versions", "rollback", "set_champion"]


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


