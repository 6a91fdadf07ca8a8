"""Bearer tokens with roles, the audit log of admin actions, and log hygiene.

Tokens are random strings handed to callers once; the service stores only
their SHA-256 (a token is high-entropy, so a plain hash is what a password
hash would be for a password), in a JSON file named by ``AIOPS_TOKENS_FILE``
or inline in ``AIOPS_TOKENS``::

    [{"name": "alerting-engine", "sha256": "<hex>", "roles": ["score"]},
     {"name": "autoscaler", "sha256": "<hex>", "roles": ["forecast"]},
     {"name": "ana", "sha256": "<hex>", "roles": ["score", "forecast", "admin"]}]

``aiops token new --name NAME --roles score,forecast`` prints a new token and
its entry. Roles: ``score`` (``/v1/score``), ``forecast`` (forecasts,
recommendations, cluster plans, right-sizing), ``admin`` (``/v1/admin/*``:
reload, list models, promote). No token → 401; a token without the role →
403. With no tokens configured the service runs open and says so in its log
and on ``/readyz`` (for a laptop; never in production).

Admin actions, performed or refused, are appended to the audit log
(``AIOPS_AUDIT_LOG``, JSON lines): who, when, what, the result. Log lines,
audit entries and promotion reasons never carry a token, and values that look
personal (e-mail addresses, IP addresses, user ids) are replaced by a short
keyed hash before they are logged or recorded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from registry.redaction import scrub

ROLES = ("score", "forecast", "admin")

_log = logging.getLogger(__name__)


class TokenConfigError(ValueError):
    """The token file or variable cannot be used; the message names the entry."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(name: str, roles: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """A fresh token and the entry that stores it (only its hash)."""
    roles = sorted(set(roles))
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise ValueError(f"roles {roles}: each must be one of {', '.join(ROLES)}")
    token = "nva_" + secrets.token_urlsafe(32)
    return token, {"name": name, "sha256": token_hash(token), "roles": roles}


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name and roles."""

    name: str
    roles: frozenset[str]


ANONYMOUS = Principal("anonymous", frozenset(ROLES))


class TokenStore:
    """Hashed tokens and their roles; ``authenticate`` compares in constant time."""

    def __init__(self, entries: list[dict[str, Any]], source: str = "tokens") -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        for i, entry in enumerate(entries):
            where = f"{source}: entry {i}"
            if not isinstance(entry, dict):
                raise TokenConfigError(f"{where} is not an object")
            name, digest, roles = entry.get("name"), entry.get("sha256"), entry.get("roles")
            if not isinstance(name, str) or not name:
                raise TokenConfigError(f"{where}: 'name' must be a non-empty string")
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise TokenConfigError(f"{where} ({name}): 'sha256' must be 64 lowercase hex "
                                       "digits (the SHA-256 of the token, never the token)")
            if (not isinstance(roles, list) or not roles
                    or any(r not in ROLES for r in roles)):
                raise TokenConfigError(f"{where} ({name}): 'roles' must be a non-empty list of "
                                       f"{', '.join(ROLES)}; got {roles!r}")
            self._entries.append((bytes.fromhex(digest), Principal(name, frozenset(roles))))

    @classmethod
    def from_sources(cls, file: str | None, inline: str | None) -> TokenStore | None:
        """From ``AIOPS_TOKENS_FILE`` or ``AIOPS_TOKENS``; None when neither is set."""
        if file:
            try:
                text, source = Path(file).read_text(), file
            except OSError as error:
                raise TokenConfigError(f"token file {file}: {error}") from error
        elif inline:
            text, source = inline, "AIOPS_TOKENS"
        else:
            return None
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as error:
            raise TokenConfigError(f"{source}: not JSON ({error})") from error
        if not isinstance(entries, list):
            raise TokenConfigError(f"{source}: expected a JSON list of token entries")
        return cls(entries, source)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for stored, principal in self._entries:  # no early exit: same time for every token
            if hmac.compare_digest(stored, digest):
                found = principal
        return found


# -- the audit log -------------------------------------------------------------------------
class AuditLog:
    """Admin actions as JSON lines: ``at``, ``who``, ``action``, ``detail``, ``result``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._logger = logging.getLogger("aiops.audit")

    def record(self, who: str, action: str, result: str, **detail: Any) -> dict[str, Any]:
        """Append one entry; its free text (``result``, ``detail``) passes through :func:`scrub`."""
        entry = {"at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "who": who,
                 "action": action, "result": scrub(result),
                 "detail": {key: scrub(value) if isinstance(value, str) else value
                            for key, value in detail.items()}}
        line = json.dumps(entry, default=str)
        self._logger.info(line)
        if self.path is not None:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a") as stream:
                    stream.write(line + "\n")
        return entry


# -- log hygiene: the rules live below training and serving, which both write records -----


class ScrubFilter(logging.Filter):
    """Applies :func:`scrub` to every record's message and traceback (install on the handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


#: The ``X-Request-Id`` values taken as they come; any other gets a new id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def request_id(sent: str | None) -> str:
    """``sent`` if it is a plain id, else a new random one.

    A plain id has at most 128 characters of ``A-Z a-z 0-9 . _ -`` and holds nothing that
    :func:`scrub` would change (a token, an address, a user id), so it can be echoed and
    logged as it is.
    """
    if sent and _REQUEST_ID.fullmatch(sent) and scrub(sent) == sent:
        return sent
    return uuid.uuid4().hex
