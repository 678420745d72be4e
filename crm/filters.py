"""Template filters and globals."""

from babel import Locale
from flask import Flask, current_app

from crm.clock import local_time

# The staff pages and public pages are in English; Babel's CLDR rules pick the plural form, so
# a page in another language later needs only its words, not new rules.
LOCALE = Locale("en")


def number(value) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def plural(n: int, one: str, other: str) -> str:
    """The word for `n` of something: plural(1, "person", "people") -> "person"."""
    return one if LOCALE.plural_form(abs(n)) == "one" else other


def count_of(n: int, one: str, other: str) -> str:
    """The number and its word: count_of(1, "signature", "signatures") -> "1 signature"."""
    return f"{number(n)} {plural(n, one, other)}"


def init_app(app: Flask) -> None:
    app.jinja_env.filters["datetime"] = local_time  # in the organisation's zone (crm/clock.py)
    app.jinja_env.filters["number"] = number
    app.jinja_env.filters["count_of"] = count_of
    app.jinja_env.filters["plural"] = plural

    @app.context_processor
    def org():
        from crm.settings import org as org_settings

        cfg = current_app.config
        settings = org_settings.current()
        return {"org": settings, "org_name": settings.name, "is_dev": cfg["IS_DEV"],
                "outbox_enabled": outbox_enabled()}


def outbox_enabled() -> bool:
    """The dev outbox exists when no SMTP relay is configured, or when pointed at explicitly."""
    cfg = current_app.config
    return bool(cfg.get("OUTBOX_ENABLED", not cfg.get("SMTP_URL") or cfg["IS_DEV"]))
