"""Standard Webhooks signatures: webhook-id, webhook-timestamp, webhook-signature v1 (HMAC-SHA256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh endpoint secret: whsec_ and 24 random bytes in base64, as Standard Webhooks' libraries make."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def new_webhook_id() -> str:
    return "msg_" + secrets.token_hex(16)


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header: `v1,` and the base64 HMAC-SHA256 of "id.timestamp.body"."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, webhook_id, timestamp, body)}
