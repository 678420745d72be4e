"""The organisation's name, postal address, default sender and country: one function to read them.

current() is what every page, message and check uses: the row admins edit under Settings
(org_settings), field by field over the environment's defaults (ORG_NAME, ORG_POSTAL_ADDRESS,
MAIL_FROM, ORG_COUNTRY), so the environment is the first run's configuration and Settings
takes over once an admin saves. Read through a separate connection (never the request's
session, whose transaction the public pages keep short) and kept per process for
CACHE_SECONDS: every staff and public page shows the name, and this spares them a query each.
A save in this process shows at once; other processes (workers, other web processes) follow
within CACHE_SECONDS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

from flask import current_app
from sqlalchemy import select

from crm import audit
from crm.countries import country_name, is_country_code
from crm.emails import InvalidEmail, normalise_email
from crm.extensions import db
from crm.models import OrgSettings

CACHE_SECONDS = 2.0
# What `crm dev` puts in ORG_POSTAL_ADDRESS when none is set: campaigns can be tried on a
# laptop, and every staff page says the address is a placeholder until an admin replaces it.
DEMO_POSTAL_ADDRESS = "1 Example Street, London N1 9GU (demo address: replace it under Settings)"
ENV_DEFAULTS = {"name": "ORG_NAME", "postal_address": "ORG_POSTAL_ADDRESS", "mail_from": "MAIL_FROM",
                "country": "ORG_COUNTRY"}
LIMITS = {"name": 200, "postal_address": 500, "mail_from": 320}


@dataclass(frozen=True)
class Org:
    """The effective settings (each from the Settings row, else from the environment)."""

    name: str
    postal_address: str
    mail_from: str
    country: str

    @property
    def has_placeholder_address(self) -> bool:
        return self.postal_address.strip() == DEMO_POSTAL_ADDRESS

    @property
    def country_name(self) -> str:
        return country_name(self.country) if self.country else ""

    def as_context(self) -> dict[str, str]:
        """What email templates see as `org`."""
        return {"name": self.name, "postal_address": self.postal_address}


class SettingsInvalid(ValueError):
    """Refused save: field name -> messages, every problem at once."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))


def defaults(config=None) -> Org:
    """The values the environment gives (what Settings falls back to)."""
    config = config if config is not None else current_app.config
    return Org(**{name: str(config.get(variable) or "").strip() for name, variable in ENV_DEFAULTS.items()})


def _stored() -> dict:
    """The Settings row's columns ({} when no admin has saved yet)."""
    table = OrgSettings.__table__
    with db.engine.connect() as conn:
        row = conn.execute(select(table.c.name, table.c.postal_address, table.c.mail_from, table.c.country)).first()
    return dict(row._mapping) if row is not None else {}


def current() -> Org:
    """The organisation's settings in effect now (cached per process for CACHE_SECONDS)."""
    app = current_app._get_current_object()
    cached = app.extensions.get("org_settings")
    now = time.monotonic()
    if cached is not None and cached[0] > now:
        return cached[1]
    base, row = defaults(app.config), _stored()
    org = Org(**{f.name: _pick(row.get(f.name), getattr(base, f.name)) for f in fields(Org)})
    app.extensions["org_settings"] = (now + CACHE_SECONDS, org)
    return org


def sending_problem() -> str:
    """Why no campaign can be sent because of the organisation's settings, in words for staff, or ''."""
    if not current().postal_address.strip():
        return ("The organisation's postal address is not set: every message must carry it "
                "(CAN-SPAM and similar laws).")
    return ""


def _pick(stored: str | None, default: str) -> str:
    return default if stored is None else stored


def forget() -> None:
    """Drop this process's copy (after a save)."""
    current_app.extensions.pop("org_settings", None)


def clean(data: dict) -> dict[str, str]:
    """Check every field; return the values to store, or raise SettingsInvalid with all the problems."""
    errors: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    name = " ".join(str(data.get("name") or "").split())
    if not name:
        errors.setdefault("name", []).append("The organisation's name is required: every message and page shows it.")
    values["name"] = name
    address = "\n".join(line.strip() for line in str(data.get("postal_address") or "").strip().splitlines()
                        if line.strip())
    if not address:
        errors.setdefault("postal_address", []).append(
            "A postal address is required: the law (CAN-SPAM and others) asks for one in every message.")
    elif address == DEMO_POSTAL_ADDRESS:
        errors.setdefault("postal_address", []).append("Replace the demo address with the organisation's own.")
    values["postal_address"] = address
    mail_from = str(data.get("mail_from") or "").strip()
    try:
        values["mail_from"] = normalise_email(mail_from) if mail_from else ""
    except InvalidEmail as exc:
        errors.setdefault("mail_from", []).append(str(exc))
        values["mail_from"] = mail_from
    if not mail_from:
        errors.setdefault("mail_from", []).append("A default sender address is required.")
    for field_name, limit in LIMITS.items():
        if len(values[field_name]) > limit and field_name not in errors:
            errors.setdefault(field_name, []).append(f"At most {limit:,} characters.")
    country = str(data.get("country") or "").strip().upper()
    if country and not is_country_code(country):
        errors.setdefault("country", []).append("Choose a country from the list.")
    values["country"] = country
    if errors:
        raise SettingsInvalid(errors)
    return values


def problems(data: dict) -> dict[str, list[str]]:
    """Every problem clean() finds, by field ({} when none)."""
    try:
        clean(data)
    except SettingsInvalid as exc:
        return exc.errors
    return {}


def save(data: dict, actor_id: int | None = None) -> Org:
    """Store the organisation's settings (raises SettingsInvalid); audit-logged, effective at once here.

    The default sender becomes an active sender identity (named after the organisation) if it
    is not one yet, so the campaign editor offers it.
    """
    from campaigns.service import ensure_sender

    values = clean(data)
    before = current()
    row = db.session.get(OrgSettings, 1)
    if row is None:
        row = OrgSettings(id=1)
        db.session.add(row)
    for key, value in values.items():
        setattr(row, key, value)
    row.updated_by_id = actor_id
    changed = sorted(k for k, v in values.items() if getattr(before, k) != v)
    audit.record("settings.org_save", "org_settings", actor_id=actor_id, fields=changed,
                 changes={k: [getattr(before, k), values[k]] for k in changed})
    db.session.commit()
    forget()
    ensure_sender(values["name"], values["mail_from"])
    return current()
