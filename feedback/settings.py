"""Admins configure each relay's webhook under Settings → Bounces and complaints.

Secrets (Postmark's password, Mailgun's signing key, the generic secret) are stored encrypted
(crm/stored_secrets.py) and never shown again: the page says whether one is saved, and an empty
field on save keeps it. SendGrid's verification key is public, so it is shown. Each web process
keeps what it read for a couple of seconds, so a webhook request costs no settings query.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, PasswordField, StringField, TextAreaField
from wtforms.validators import NumberRange

from crm import audit
from crm import stored_secrets as secrets
from crm.auth.permissions import requires
from crm.extensions import db
from crm.forms import ActionForm, apply_errors, require_action_form
from crm.models import PROVIDERS, FeedbackEvent, FeedbackProvider, FeedbackRules, utcnow
from feedback.providers import ProviderSettings

bp = Blueprint("feedback_settings", __name__, url_prefix="/settings/feedback")

CACHE_SECONDS = 2.0
LABELS = {"ses": "Amazon SES (through SNS)", "postmark": "Postmark", "sendgrid": "SendGrid",
          "mailgun": "Mailgun", "generic": "Generic JSON (any other relay)"}
_cache: dict[str, tuple[float, ProviderSettings]] = {}
_lock = threading.Lock()


class Invalid(ValueError):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(m for ms in errors.values() for m in ms))
        self.errors = errors


def provider_settings(name: str) -> ProviderSettings:
    """The saved settings for one provider, decrypted; cached per process for CACHE_SECONDS."""
    now = time.monotonic()
    with _lock:
        hit = _cache.get(name)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    row = db.session.get(FeedbackProvider, name)
    if row is None:
        settings = ProviderSettings(name)
    else:
        secret = secrets.decrypt(row.secret)
        settings = ProviderSettings(name, bool(row.enabled), dict(row.options or {}), secret or "")
    with _lock:
        _cache[name] = (now, settings)
    return settings


def forget_cache() -> None:
    with _lock:
        _cache.clear()


def _lines(value: str) -> list[str]:
    return [part.strip() for part in (value or "").replace(",", "\n").splitlines() if part.strip()]


def save_provider(name: str, data: dict, staff_id: int) -> FeedbackProvider:
    """Validate and save one provider's settings; raise Invalid (nothing saved) with field errors."""
    if name not in PROVIDERS:
        raise Invalid({"name": ["unknown provider"]})
    row = db.session.get(FeedbackProvider, name) or FeedbackProvider(name=name, options={}, secret="")
    options = dict(row.options or {})
    errors: dict[str, list[str]] = {}
    enabled = bool(data.get("enabled"))
    new_secret = (data.get("secret") or "").strip()
    if data.get("clear_secret"):
        row.secret = ""
    elif new_secret:
        row.secret = secrets.encrypt(new_secret)
    has_secret = bool(row.secret) and secrets.decrypt(row.secret) not in (None, "")
    if name == "ses":
        arns = _lines(data.get("topic_arns", ""))
        bad = [a for a in arns if not a.startswith("arn:aws")]
        if bad:
            errors["topic_arns"] = [f"not a topic ARN: {bad[0][:80]}"]
        options.update(topic_arns=arns, auto_confirm=bool(data.get("auto_confirm")))
    elif name == "postmark":
        username = (data.get("username") or "").strip()
        nets = _lines(data.get("ip_allowlist", ""))
        for net in nets:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                errors["ip_allowlist"] = [f"not an IP address or network: {net[:60]}"]
                break
        options.update(username=username, ip_allowlist=nets)
        if enabled and (not username or not has_secret):
            errors.setdefault("username", []).append("Postmark needs a username and a password for its URL.")
    elif name == "sendgrid":
        from feedback.providers.sendgrid import load_public_key

        key = (data.get("public_key") or "").strip()
        if key:
            try:
                load_public_key(key)
            except ValueError as exc:
                errors["public_key"] = [str(exc)]
        options.update(public_key=key)
        if enabled and not key:
            errors.setdefault("public_key", []).append("Paste SendGrid's verification key to turn this on.")
    elif name in ("mailgun", "generic"):
        if enabled and not has_secret:
            errors["secret"] = ["Enter the signing key to turn this on." if name == "mailgun"
                                else "Enter the shared secret to turn this on."]
    if errors:
        db.session.rollback()
        raise Invalid(errors)
    row.enabled, row.options, row.updated_by_id, row.updated_at = enabled, options, staff_id, utcnow()
    db.session.add(row)
    audit.record("feedback.settings", f"provider:{name}", actor_id=staff_id, enabled=enabled,
                 secret_changed=bool(new_secret or data.get("clear_secret")))
    db.session.commit()
    forget_cache()
    return row


def rules() -> FeedbackRules:
    return db.session.get(FeedbackRules, 1) or FeedbackRules(id=1, soft_bounce_limit=3, soft_bounce_days=30)


def save_rules(limit: int, days: int, staff_id: int) -> FeedbackRules:
    from feedback.apply import forget_cached_rules

    row = db.session.get(FeedbackRules, 1) or FeedbackRules(id=1)
    row.soft_bounce_limit, row.soft_bounce_days, row.updated_by_id = limit, days, staff_id
    db.session.add(row)
    audit.record("feedback.rules", "feedback_rules", actor_id=staff_id, soft_bounce_limit=limit,
                 soft_bounce_days=days)
    db.session.commit()
    forget_cached_rules()
    return row


# -- the page -----------------------------------------------------------------------------------

class ProviderForm(FlaskForm):
    enabled = BooleanField("Accept this provider's webhooks")
    topic_arns = TextAreaField("Only these SNS topic ARNs (one a line; empty: any topic)")
    auto_confirm = BooleanField("Confirm SNS subscriptions automatically", default=True)
    username = StringField("Username in the webhook URL")
    secret = PasswordField("Secret")
    clear_secret = BooleanField("Forget the saved secret")
    ip_allowlist = TextAreaField("Only from these IP addresses or networks (one a line; empty: any)")
    public_key = TextAreaField("Verification key (base64, from SendGrid's Mail Settings → Event Webhook)")


class RulesForm(FlaskForm):
    soft_bounce_limit = IntegerField("Soft bounces", validators=[NumberRange(1, 100)])
    soft_bounce_days = IntegerField("within days", validators=[NumberRange(1, 365)])


SECRET_LABELS = {"postmark": "Password in the webhook URL", "mailgun": "HTTP webhook signing key",
                 "generic": "Shared secret (HMAC-SHA256)"}


@dataclass
class ProviderView:
    name: str
    label: str
    row: FeedbackProvider | None
    form: ProviderForm
    endpoint: str
    secret_saved: bool
    secret_unreadable: bool
    received: int


def _views(forms: dict[str, ProviderForm] | None = None) -> list[ProviderView]:
    counts = dict(db.session.execute(db.select(FeedbackEvent.provider, db.func.count())
                                     .group_by(FeedbackEvent.provider)).all())
    base = current_app.config["BASE_URL"].rstrip("/")
    out = []
    for name in PROVIDERS:
        row = db.session.get(FeedbackProvider, name)
        form = (forms or {}).get(name)
        if form is None:
            options = dict(row.options or {}) if row else {}
            form = ProviderForm(formdata=None, prefix=name, data={
                "enabled": bool(row and row.enabled), "topic_arns": "\n".join(options.get("topic_arns") or []),
                "auto_confirm": options.get("auto_confirm", True), "username": options.get("username", ""),
                "ip_allowlist": "\n".join(options.get("ip_allowlist") or []),
                "public_key": options.get("public_key", "")})
        form.secret.label.text = SECRET_LABELS.get(name, "Secret")
        decrypted = secrets.decrypt(row.secret) if row else ""
        out.append(ProviderView(name, LABELS[name], row, form, f"{base}/hooks/{name}",
                                bool(decrypted), decrypted is None, counts.get(name, 0)))
    return out


def _mailbox() -> dict:
    from feedback.mailbox import describe_mailbox, last_fetch

    return {"description": describe_mailbox(current_app.config.get("BOUNCE_MAILBOX_URL") or ""),
            "last": last_fetch(), "counts": db.session.scalar(
                db.select(db.func.count()).select_from(FeedbackEvent).where(FeedbackEvent.provider == "mailbox"))}


def _render(forms=None, rules_form=None, status=200):
    current = rules()
    rules_form = rules_form or RulesForm(formdata=None, data={"soft_bounce_limit": current.soft_bounce_limit,
                                                              "soft_bounce_days": current.soft_bounce_days})
    return render_template("feedback/settings.html", providers=_views(forms), rules_form=rules_form,
                           mailbox=_mailbox(), action_form=ActionForm()), status


@bp.route("/", methods=["GET"])
@requires("admin")
def index():
    return _render()


@bp.route("/<name>", methods=["POST"])
@requires("admin")
def save(name: str):
    if name not in PROVIDERS:
        return _render(status=404)
    form = ProviderForm(prefix=name)
    if not form.validate_on_submit():
        return _render({name: form}, status=400)
    try:
        save_provider(name, {field: getattr(form, field).data for field in form.data if field != "csrf_token"},
                      current_user.id)
    except Invalid as exc:
        apply_errors(form, exc.errors)
        return _render({name: form}, status=400)
    flash(f"Saved the {LABELS[name]} settings.", "success")
    return redirect(url_for("feedback_settings.index") + f"#{name}")


@bp.route("/rules", methods=["POST"])
@requires("admin")
def save_rules_view():
    form = RulesForm()
    if not form.validate_on_submit():
        return _render(rules_form=form, status=400)
    save_rules(form.soft_bounce_limit.data, form.soft_bounce_days.data, current_user.id)
    flash("Saved the soft-bounce rule.", "success")
    return redirect(url_for("feedback_settings.index") + "#rules")


@bp.route("/fetch", methods=["POST"])
@requires("admin")
def fetch_now():
    from crm.queues import FETCH_BOUNCES, enqueue

    require_action_form()
    if not current_app.config.get("BOUNCE_MAILBOX_URL"):
        flash("Set BOUNCE_MAILBOX_URL first.", "error")
    else:
        enqueue(FETCH_BOUNCES)
        flash("A worker will read the bounce mailbox within seconds.", "success")
    return redirect(url_for("feedback_settings.index") + "#mailbox")

