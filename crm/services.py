"""Start-up checks: every configured service must answer, or we stop with one clear line."""

from __future__ import annotations

import socket

import redis
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from crm.config import ConfigError


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]


def check_services(app: Flask) -> None:
    """Raise ConfigError naming the first unreachable service."""
    from campaigns.transport import smtp_settings
    from crm.extensions import db
    from crm.redis_conn import get_redis

    with app.app_context():
        try:
            with db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise ConfigError("DATABASE_URL", f"cannot connect: {_reason(exc)}") from None
        try:
            get_redis(app).ping()
        except (redis.exceptions.RedisError, OSError) as exc:
            raise ConfigError("REDIS_URL", f"cannot connect: {_reason(exc)}") from None
        if app.config.get("SMTP_URL"):
            s = smtp_settings(app)
            try:
                socket.create_connection((s["host"], s["port"]), timeout=5).close()
            except OSError as exc:
                reason = exc.strerror or exc
                raise ConfigError("SMTP_URL", f"cannot connect to {s['host']}:{s['port']}: {reason}") from None
