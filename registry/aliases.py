"""The model registry's aliases: who moved the champion, when and why; the versions there are.

Shared by the ``aiops`` command line (promote, rollback, models), the
promotion gate of training runs and the service's admin endpoints. Every move
of the ``champion`` alias is recorded on the version (``champion.by``,
``champion.at``, ``champion.reason``) and appended to the registered model's
``champion_history`` tag, which is what a rollback reads.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import json
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from registry.redaction import scrub

CHAMPION = "champion"
CHALLENGER = "challenger"
#: The registered model's tag holding the moves of the champion alias, newest last.
HISTORY_TAG = "champion_history"
#: Entries kept in the history tag (MLflow limits a tag value's length).
HISTORY_LENGTH = 40


def alias_version(model_name: str, alias: str, client: MlflowClient | None = None) -> str | None:
    """The version number that ``alias`` points at, or None if unset or the model is unknown."""
    try:
        return str((client or MlflowClient()).get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


@dataclasses.dataclass(frozen=True)
class AliasMove:
    version: str
    action: str
    by: str
    at: str
    reason: str
    previous: str | None


def champion_history(model_name: str, client: MlflowClient | None = None) -> list[dict[str, Any]]:
    """The recorded moves of the champion alias, oldest first."""
    try:
        tags = (client or MlflowClient()).get_registered_model(model_name).tags
    except MlflowException as error:
        raise LookupError(f"no registered model {model_name!r}: {error.message}") from error
    try:
        history = json.loads(tags.get(HISTORY_TAG, "[]"))
    except json.JSONDecodeError:
        history = []
    return history if isinstance(history, list) else []


def set_champion(model_name: str, version: str, *, action: str, reason: str,
                 by: str | None = None, client: MlflowClient | None = None) -> AliasMove:
    """Point ``champion`` at ``version`` and record who, when and why (``reason`` scrubbed)."""
    client = client or MlflowClient()
    reason = scrub(reason)
    try:
        client.get_model_version(model_name, version)
    except MlflowException as error:
        raise LookupError(f"model {model_name!r} has no version {version!r}") from error
    move = AliasMove(version=str(version), action=action, by=by or _who(),
                     at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), reason=reason,
                     previous=alias_version(model_name, CHAMPION, client))
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    for key, value in (("champion.action", action), ("champion.by", move.by),
                       ("champion.at", move.at), ("champion.reason", reason[:4000])):
        client.set_model_version_tag(model_name, str(version), key, value)
    history = [*champion_history(model_name, client),
               dataclasses.asdict(move)][-HISTORY_LENGTH:]
    client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history))
    return move


def rollback(model_name: str, *, reason: str, by: str | None = None,
             client: MlflowClient | None = None) -> AliasMove:
    """Put back the champion that the current one replaced when it was promoted.

    Rollbacks stack: after rolling back from 3 to 2, the next rollback goes to the
    version that 2 replaced, not back to 3.
    """
    current = alias_version(model_name, CHAMPION, client)
    if current is None:
        raise LookupError(f"model {model_name!r} has no champion to roll back")
    for move in reversed(champion_history(model_name, client)):
        if (move.get("version") == current and move.get("action") != "rollback"
                and move.get("previous") not in (None, current)):
            return set_champion(model_name, move["previous"], action="rollback",
                                reason=reason, by=by, client=client)
    raise LookupError(f"the history of {model_name!r} records no champion before version "
                      f"{current}; promote a version by number instead")


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def model_versions(model_name: str, client: MlflowClient | None = None) -> list[dict[str, Any]]:
    """Every registered version of ``model_name``, newest first, with aliases and promotion."""
    client = client or MlflowClient()
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
        rows.append({"version": str(v.version),
                     "aliases": sorted(aliases_of.get(str(v.version), [])),
                     "created": created.isoformat(timespec="seconds"), "run_id": v.run_id,
                     "promotion": v.tags.get("champion.reason", "")[:120]})
    return rows


def client_for(tracking_uri: str) -> MlflowClient:
    """A client of the tracking store and registry at ``tracking_uri``."""
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
