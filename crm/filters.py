"""Template filters and globals."""

from flask import Flask, current_app

from crm.clock import local_time


def number(value) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def init_app(app: Flask) -> None:
    app.jinja_env.filters["datetime"] = local_time  # in the organisation's zone (crm/clock.py)
    app.jinja_env.filters["number"] = number

    @app.context_processor
    def org():
        cfg = current_app.config
        return {"org_name": cfg["ORG_NAME"], "is_dev": cfg["IS_DEV"], "outbox_enabled": outbox_enabled()}


def outbox_enabled() -> bool:
    """The dev outbox exists when no SMTP relay is configured, or when pointed at explicitly."""
    cfg = current_app.config
    return bool(cfg.get("OUTBOX_ENABLED", not cfg.get("SMTP_URL") or cfg["IS_DEV"]))
