"""What is written down is scrubbed: tokens removed, personal-looking values pseudonymised.

The registry records why a champion moved (a reason typed by a person), the service logs
requests and audits admin actions: each goes through :func:`scrub` first, so that a
bearer token pasted into a reason or an e-mail address in an error never reaches the
tracking store or a log. It lives below training and serving because both write such
records.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_IPV6 = re.compile(r"\b(?:[0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{1,4}\b")
_USER_ID = re.compile(r"\b(?:user|uid|customer|account)[_-]?(?:id)?[=:_-]\s*[\w-]+", re.I)
_BEARER = re.compile(r"(?i)bearer\s+[\w.~+/=-]+")
_TOKEN = re.compile(r"nva_[\w-]{20,}")
#: A per-process key: the same value hashes alike within a process, so log lines correlate,
#: but a hash cannot be looked up in a precomputed table.
_KEY = secrets.token_bytes(16)


def pseudonym(value: str) -> str:
    return "anon-" + hmac.new(_KEY, value.encode(), hashlib.sha256).hexdigest()[:10]


def scrub(text: str) -> str:
    """``text`` with tokens removed and personal-looking values replaced by pseudonyms."""
    text = _BEARER.sub("Bearer [redacted]", text)
    text = _TOKEN.sub("[redacted-token]", text)
    for pattern in (_EMAIL, _USER_ID, _IPV6, _IPV4):
        text = pattern.sub(lambda m: pseudonym(m.group(0)), text)
    return text


def looks_personal(value: str) -> bool:
    return any(p.search(value) for p in (_EMAIL, _USER_ID, _IPV6, _IPV4))
