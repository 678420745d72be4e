"""Provider-specific code: each module turns one relay's webhook request into Feedback values,
after authenticating it the way that relay documents. Nothing here touches the database; a
refusal is a Rejected (4xx, nothing changed).

Each module has `parse(incoming: Incoming, settings: ProviderSettings) -> Parsed`.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from feedback.types import Feedback, Rejected


@dataclass(frozen=True)
class ProviderSettings:
    """What an admin saved for one provider (feedback/settings.py), the secret decrypted."""

    name: str
    enabled: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    secret: str = ""


@dataclass(frozen=True)
class Incoming:
    """The parts of a webhook request a provider needs: raw body, headers, client, the time."""

    body: bytes
    headers: Mapping[str, str]
    remote_addr: str | None = None
    basic_auth: tuple[str, str] | None = None
    now: float = field(default_factory=time.time)
    max_age: float = 300.0
    # Callables the views hand in, so parsers stay free of Redis and HTTP clients.
    remember_nonce: Any = None  # remember_nonce(scope, value, seconds) -> bool: False if seen before
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Parsed:
    feedback: list[Feedback] = field(default_factory=list)
    note: str = ""  # e.g. "subscription confirmed", shown in the JSON answer


def load_json(body: bytes) -> Any:
    """The body as JSON, or a 400 for anything else (not UTF-8, not JSON, nesting too deep)."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Rejected(400, "the body is not JSON") from None


def obj(value: Any, key: str) -> dict:
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, dict) else {}


def items(value: Any, key: str) -> list:
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, list) else []


def text(value: Any, key: str, limit: int = 2000) -> str:
    """A string field (numbers as text), '' when missing or of another type."""
    found = value.get(key) if isinstance(value, dict) else None
    if isinstance(found, bool) or found is None:
        return ""
    if isinstance(found, int | float):
        return str(found)
    return found[:limit] if isinstance(found, str) else ""


def check_fresh(timestamp: float, incoming: Incoming) -> None:
    """Refuse a signed timestamp further than max_age from now (old, or from the future)."""
    if not abs(incoming.now - timestamp) <= incoming.max_age:
        raise Rejected(400, "the timestamp is too old or in the future")


def unix_time(raw: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise Rejected(400, "the timestamp is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise Rejected(400, "the timestamp is not a number")
    return value


def iso_time(raw: str) -> datetime | None:
    """An ISO 8601 time as aware UTC, or None."""
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def from_unix(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def equal(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time comparison of two secrets or signatures."""
    a = a.encode("utf-8") if isinstance(a, str) else a
    b = b.encode("utf-8") if isinstance(b, str) else b
    return hmac.compare_digest(a, b)


def header_value(headers: list, name: str) -> str:
    """A header from a list of {"name", "value"} pairs (SES), case-insensitively."""
    for pair in headers:
        if isinstance(pair, dict) and str(pair.get("name", "")).lower() == name:
            value = pair.get("value")
            return value if isinstance(value, str) else ""
    return ""
