"""API keys: made by admins (the token shown once), stored as a SHA-256, revoked at once."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy.exc import IntegrityError

from crm import audit
from crm.extensions import db
from crm.models import API_SCOPES, ApiKey, utcnow

TOKEN_PREFIX = "crm_"
LABEL_MAX = 100
TOKEN_MAX = 200  # longer headers are not ours: refused before hashing
SCOPE_LABELS = {"read": "Read only", "read_write": "Read and write"}


class KeyInvalid(ValueError):
    """The key's label or scope breaks a rule; `errors` maps field name to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(m for ms in errors.values() for m in ms))
        self.errors = errors


def hash_token(token: str) -> str:
    """The stored form of a token: hex SHA-256 (the token is random, so no salt or slow hash is needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def problems(label: str, scope: str) -> dict[str, list[str]]:
    """Every rule a new key's label and scope break (nothing is written)."""
    errors: dict[str, list[str]] = {}
    label = " ".join((label or "").split())
    if not label:
        errors["label"] = ["Give the key a label, e.g. the website or tool that will use it."]
    elif len(label) > LABEL_MAX:
        errors["label"] = [f"At most {LABEL_MAX} characters."]
    elif db.session.scalar(db.select(ApiKey.id).where(ApiKey.label == label)) is not None:
        errors["label"] = ["Another key already has this label."]
    if scope not in API_SCOPES:
        errors["scope"] = ["Choose read only, or read and write."]
    return errors


def create_key(label: str, scope: str, staff_id: int | None) -> tuple[ApiKey, str]:
    """Make a key and commit; returns it with its token, which is never available again."""
    label = " ".join((label or "").split())
    if errors := problems(label, scope):
        raise KeyInvalid(errors)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(label=label, scope=scope, token_hash=hash_token(token), token_prefix=token[:10],
                 created_by_id=staff_id)
    db.session.add(key)
    try:
        db.session.flush()
    except IntegrityError:  # a colleague saved the same label a moment ago
        db.session.rollback()
        raise KeyInvalid({"label": ["Another key already has this label."]}) from None
    audit.record("api.key_create", f"api_key:{key.id}", actor_id=staff_id, label=label, scope=scope)
    db.session.commit()
    return key, token


def revoke_key(key: ApiKey, staff_id: int | None) -> None:
    """Revoke now: the next request with it is refused (keys are looked up on every request)."""
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        key.revoked_by_id = staff_id
        audit.record("api.key_revoke", f"api_key:{key.id}", actor_id=staff_id, label=key.label)
    db.session.commit()


def list_keys() -> list[ApiKey]:
    return list(db.session.scalars(db.select(ApiKey).order_by(ApiKey.revoked_at.is_not(None), ApiKey.label)))


def find_active(token: str | None) -> ApiKey | None:
    """The unrevoked key whose token this is, or None."""
    if not token or len(token) > TOKEN_MAX:
        return None
    digest = hash_token(token)
    key = db.session.scalar(db.select(ApiKey).where(ApiKey.token_hash == digest))
    # The row was found by its hash; compare once more in constant time, so nothing about
    # how the index lookup compared strings decides the answer.
    if key is None or not hmac.compare_digest(key.token_hash, digest) or key.revoked_at is not None:
        return None
    return key
