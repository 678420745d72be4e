"""Campaign drafts, the template library and sender identities: the rules the views, CLI and demo share.

Saving never stores invalid content: every field is checked first (compose.check_content finds
template problems with their line), and the write itself is a guarded UPDATE, so an edit can
never land on a campaign that started sending a moment ago, or overwrite a colleague's newer save.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from flask import current_app
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from campaigns import compose, lifecycle, queries
from crm import ROOT, audit
from crm.clock import org_zone, to_local, to_utc
from crm.emails import InvalidEmail, mask_email, normalise_email
from crm.extensions import db
from crm.input_guard import positive_int
from crm.models import EDITABLE_STATUSES, Campaign, EmailTemplate, Message, Segment, SenderIdentity, Supporter
from crm.segments.rules import referenced_campaign_ids
from crm.segments.service import quoted, segments_mentioning

DEFAULT_TEMPLATE_NAME = "Periodic update"
DEFAULT_TEMPLATE_PATH = ROOT / "templates" / "email" / "periodic_update.mjml"
BLANK_MJML = """<mjml>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text>Dear {{ supporter.first_name | default("friend") }},</mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
"""
NO_SUBJECT = "(no subject yet)"
MAX_SOURCE = 512 * 1024  # MJML or plain text: a newsletter is a few KB; this stops accidents, not people
CONTENT_FIELDS = ("name", "subject", "preheader", "sender_id", "reply_to", "mjml", "text_body", "segment_id",
                  "track_opens", "track_clicks")
# A sender identity may not be switched off while a campaign still needs it to start or finish.
ACTIVE_STATUSES = ("scheduled", "sending", "paused")


class Invalid(ValueError):
    """Refused save: field name -> messages, for the form."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))


def _add(errors: dict[str, list[str]], field: str, message: str) -> None:
    errors.setdefault(field, []).append(message)


def _optional_email(errors: dict, field: str, raw: str | None) -> str:
    if not (raw or "").strip():
        return ""
    try:
        return normalise_email(raw)
    except InvalidEmail as exc:
        _add(errors, field, str(exc))
        return ""


def _text(data: dict, name: str) -> str:
    value = data.get(name)
    return "" if value is None else str(value)


# -- campaigns ------------------------------------------------------------------------------

def active_senders() -> list[SenderIdentity]:
    return list(db.session.scalars(select(SenderIdentity).where(SenderIdentity.is_active.is_(True))
                                   .order_by(SenderIdentity.name, SenderIdentity.email)))


def segments() -> list[Segment]:
    return list(db.session.scalars(select(Segment).order_by(Segment.name)))


def clean_campaign(data: dict[str, Any], current: Campaign | None = None) -> dict[str, Any]:
    """Check every field; return the values to store or raise Invalid with all the problems at once."""
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    values["name"] = " ".join(_text(data, "name").split())
    if not values["name"]:
        _add(errors, "name", "A name is required (staff see it; supporters do not).")
    elif len(values["name"]) > 200:
        _add(errors, "name", "Keep the name under 200 characters.")
    values["subject"] = _text(data, "subject").strip(" \t")
    values["preheader"] = _text(data, "preheader").strip()
    for field, limit in (("subject", 400), ("preheader", 400), ("mjml", MAX_SOURCE), ("text_body", MAX_SOURCE)):
        text = values.get(field, _text(data, field))
        if len(text) > limit:
            _add(errors, field, f"Too long: at most {limit:,} characters.")
    values["mjml"] = _text(data, "mjml").replace("\r\n", "\n")
    values["text_body"] = _text(data, "text_body").replace("\r\n", "\n")
    if not values["text_body"].strip():
        values["text_body"] = ""
    if not any(field in errors for field in ("subject", "preheader", "mjml", "text_body")):
        for problem in compose.check_content(values["subject"], values["preheader"], values["mjml"],
                                             values["text_body"]):
            _add(errors, problem.field, str(problem))

    sender_id = data.get("sender_id")
    values["sender_id"] = None
    if sender_id not in (None, ""):
        sender = db.session.get(SenderIdentity, positive_int(sender_id) or 0)
        keeps_own = current is not None and sender is not None and current.sender_id == sender.id
        if sender is None or not (sender.is_active or keeps_own):
            _add(errors, "sender_id", "Choose one of the active sender identities.")
        else:
            values["sender_id"] = sender.id
    values["reply_to"] = _optional_email(errors, "reply_to", _text(data, "reply_to"))

    segment_id = data.get("segment_id")
    values["segment_id"] = None
    if segment_id not in (None, ""):
        segment = db.session.get(Segment, positive_int(segment_id) or 0)
        if segment is None:
            _add(errors, "segment_id", "That segment no longer exists.")
        else:
            values["segment_id"] = segment.id
    values["track_opens"] = bool(data.get("track_opens"))
    values["track_clicks"] = bool(data.get("track_clicks"))
    if errors:
        raise Invalid(errors)
    return values


def create_campaign(data: dict[str, Any], actor_id: int | None = None) -> Campaign:
    """Save a new draft (raises Invalid)."""
    values = clean_campaign(data)
    campaign = Campaign(status="draft", created_by_id=actor_id, **values)
    db.session.add(campaign)
    db.session.flush()
    audit.record("campaigns.create", f"campaign:{campaign.id}", actor_id=actor_id)
    db.session.commit()
    return campaign


def update_campaign(campaign: Campaign, data: dict[str, Any], actor_id: int | None = None,
                    expected_version: int | None = None) -> Campaign:
    """Save edits to a draft or scheduled campaign (raises Invalid or LifecycleError).

    The UPDATE re-checks the status (a scheduled campaign may have started since the form was
    shown) and, when given, the version the editor was opened on (a colleague may have saved since).
    """
    if not campaign.is_editable:
        raise lifecycle.LifecycleError("Editing is locked once sending starts.")
    values = clean_campaign(data, campaign)
    changed = {k: v for k, v in values.items() if getattr(campaign, k) != v}
    if not changed:
        return campaign
    guard = [Campaign.id == campaign.id, Campaign.status.in_(EDITABLE_STATUSES)]
    if expected_version is not None:
        guard.append(Campaign.version == expected_version)
    # The version moves in the same statement, so two editors opened on one version cannot both
    # win; content_changed() below bumps it once more and re-arms a scheduled start for it.
    moved = db.session.execute(update(Campaign).where(*guard).values(**changed, version=Campaign.version + 1)
                               .execution_options(synchronize_session=False)).rowcount
    if not moved:
        db.session.rollback()
        db.session.refresh(campaign)
        if not campaign.is_editable:
            raise lifecycle.LifecycleError("Editing is locked once sending starts.")
        raise lifecycle.LifecycleError("Someone else saved this campaign after you opened it. Reload to see "
                                       "their changes, then make yours again.")
    audit.record("campaigns.edit", f"campaign:{campaign.id}", actor_id=actor_id, fields=sorted(changed))
    db.session.commit()
    db.session.refresh(campaign)
    lifecycle.content_changed(campaign)  # bumps the version; re-arms a scheduled start for it
    return campaign


def duplicate_campaign(campaign: Campaign, actor_id: int | None = None) -> Campaign:
    """A new draft with the same content, sender and segment (sent or not)."""
    sender_id = campaign.sender_id if campaign.sender is not None and campaign.sender.is_active else None
    copy = Campaign(name=f"Copy of {campaign.name}"[:200], subject=campaign.subject, preheader=campaign.preheader,
                    sender_id=sender_id, reply_to=campaign.reply_to, mjml=campaign.mjml,
                    text_body=campaign.text_body, segment_id=campaign.segment_id, track_opens=campaign.track_opens,
                    track_clicks=campaign.track_clicks, status="draft", created_by_id=actor_id)
    db.session.add(copy)
    db.session.flush()
    audit.record("campaigns.duplicate", f"campaign:{copy.id}", actor_id=actor_id, source=campaign.id)
    db.session.commit()
    return copy


def delete_draft(campaign: Campaign, actor_id: int | None = None) -> None:
    """Delete a draft; anything that was ever scheduled or sent stays for the record."""
    campaign_id, name = campaign.id, campaign.name
    users = segments_mentioning(referenced_campaign_ids, campaign_id)
    if users:
        raise lifecycle.LifecycleError("Segments refer to this campaign in their engagement conditions: "
                                       + quoted(users) + ". Change them first.")
    gone = db.session.execute(delete(Campaign).where(Campaign.id == campaign_id, Campaign.status == "draft")
                              .execution_options(synchronize_session=False)).rowcount
    if not gone:
        db.session.rollback()
        raise lifecycle.LifecycleError("Only a draft can be deleted; cancel a scheduled campaign first.")
    db.session.expunge(campaign)
    audit.record("campaigns.delete", f"campaign:{campaign_id}", actor_id=actor_id, name=name)
    db.session.commit()


@dataclass
class Row:
    campaign: Campaign
    sent: int | None
    total: int | None
    when: datetime | None
    when_label: str


def list_campaigns(limit: int = 500) -> list[Row]:
    """Newest first, with sent/total: live counts for running campaigns, the final counters otherwise."""
    campaigns = list(db.session.scalars(select(Campaign).options(selectinload(Campaign.segment))
                                        .order_by(Campaign.created_at.desc(), Campaign.id.desc()).limit(limit)))
    running = [c.id for c in campaigns if c.status in ("sending", "paused")]
    live: dict[int, dict[str, int]] = {}
    if running:
        # One GROUP BY over the (campaign_id, status) index for the few campaigns in flight.
        for campaign_id, status, count in db.session.execute(
            select(Message.campaign_id, Message.status, func.count()).where(Message.campaign_id.in_(running))
            .group_by(Message.campaign_id, Message.status)
        ):
            live.setdefault(campaign_id, {})[status] = count
    rows = []
    for c in campaigns:
        sent = total = None
        if c.id in live:
            sent, total = live[c.id].get("sent", 0), sum(live[c.id].values())
        elif c.status in ("sent", "cancelled", "failed") and c.started_at:
            sent, total = c.sent_count, c.total
        when, label = {"scheduled": (c.scheduled_at, "scheduled for"), "sending": (c.started_at, "started"),
                       "paused": (c.started_at, "started"), "sent": (c.finished_at, "sent"),
                       "cancelled": (c.updated_at, "cancelled"), "failed": (c.updated_at, "failed")
                       }.get(c.status, (None, ""))
        rows.append(Row(c, sent, total, when, label))
    return rows


def shown_status(campaign: Campaign, now: datetime | None = None) -> str:
    """The status staff see: "starting" for a campaign due now that no worker has taken yet.

    Send now (or a schedule coming due) leaves it `scheduled` until a worker's start job moves
    it to `sending`; between the two it is neither waiting for a time nor sending.
    """
    if campaign.status == "scheduled" and campaign.started_at is None and campaign.scheduled_at is not None:
        due = campaign.scheduled_at if campaign.scheduled_at.tzinfo else campaign.scheduled_at.replace(tzinfo=UTC)
        if due <= (now or datetime.now(UTC)):
            return "starting"
    return campaign.status


def sample_subject(campaign: Campaign) -> str:
    """The subject as the preview's sample supporter reads it."""
    return compose.sample_subject(campaign, current_app.config)


def preview_content(data: dict[str, Any], supporter_id: int | None = None) -> tuple[compose.Rendered | None,
                                                                                 dict[str, list[str]], str]:
    """Render unsaved editor content as a supporter: (rendered, problems by field, generated text)."""
    draft = SimpleNamespace(name=_text(data, "name"), subject=_text(data, "subject").strip(" \t"),
                            preheader=_text(data, "preheader").strip(),
                            mjml=_text(data, "mjml").replace("\r\n", "\n"),
                            text_body=_text(data, "text_body").replace("\r\n", "\n"))
    if not draft.text_body.strip():
        draft.text_body = ""
    if not draft.subject.strip():
        draft.subject = NO_SUBJECT  # a fresh draft previews before it has a subject; saving insists on one
    return render_preview(draft, supporter_id)


def render_preview(campaign, supporter_id: int | None = None):
    """(rendered, problems by field, the plain text the HTML would generate) for saved or unsaved content."""
    for field in ("subject", "preheader", "mjml", "text_body"):
        if len(getattr(campaign, field)) > MAX_SOURCE:
            return None, {field: [f"Too long: at most {MAX_SOURCE:,} characters."]}, ""
    problems: dict[str, list[str]] = {}
    for problem in compose.check_content(campaign.subject, campaign.preheader, campaign.mjml, campaign.text_body):
        problems.setdefault(problem.field, []).append(str(problem))
    if problems:
        return None, problems, ""
    rendered = compose.preview(campaign, current_app.config, preview_supporter(supporter_id))
    return rendered, {}, compose.html_to_text(compose.compile_mjml(campaign.mjml))


def preview_supporter(supporter_id: int | None) -> dict[str, Any] | None:
    """The template's `supporter` for a real person, or None for the built-in sample."""
    if supporter_id is None:
        return None
    person = queries.recipients([supporter_id]).get(supporter_id)
    if person is None:
        return None
    return compose.supporter_context(
        first_name=person["first_name"] or "", last_name=person["last_name"] or "", email=person["email"] or "",
        postal_code=person["postal_code"] or "", country=person["country"] or "", petitions=person["petitions"],
        custom=person["custom_fields"] or {})


def find_supporters(query: str, limit: int = 10) -> list[dict[str, Any]]:
    """Supporters whose address starts with `query` (addresses are stored lower-case): the preview picker."""
    query = query.strip().lower()
    if len(query) < 2:
        return []
    found = db.session.execute(
        select(Supporter.id, Supporter.email, Supporter.first_name, Supporter.last_name)
        .where(Supporter.email.startswith(query, autoescape=True), Supporter.erased_at.is_(None))
        .order_by(Supporter.email).limit(limit)
    )
    return [{"id": i, "email": e, "name": " ".join(p for p in (f, last) if p)} for i, e, f, last in found]


def problem_messages(campaign: Campaign, statuses: tuple[str, ...], limit: int = 200) -> list[dict[str, Any]]:
    """Failed or unknown messages for staff: masked address, error, when (newest ids first)."""
    rows = db.session.execute(
        select(Message.id, Message.supporter_id, Message.email, Message.status, Message.error, Message.claimed_at)
        .where(Message.campaign_id == campaign.id, Message.status.in_(statuses))
        .order_by(Message.id.desc()).limit(limit)
    )
    return [{"id": r.id, "supporter_id": r.supporter_id, "address": mask_email(r.email or ""), "status": r.status,
             "error": r.error, "at": r.claimed_at} for r in rows]


def parse_local_time(raw: str) -> datetime:
    """A datetime-local value (YYYY-MM-DDTHH:MM) in the organisation's zone; refuses times that do
    not exist there (the hour skipped when clocks go forward)."""
    try:
        local = datetime.fromisoformat((raw or "").strip())
    except ValueError:
        raise lifecycle.LifecycleError("Give a date and time, like 2030-05-01 09:30.") from None
    if local.tzinfo is not None:
        local = local.replace(tzinfo=None)
    back = to_local(to_utc(local)).replace(tzinfo=None)
    if back != local:
        raise lifecycle.LifecycleError(f"{local:%Y-%m-%d %H:%M} does not exist in {org_zone().key} "
                                       "(the clocks go forward then); choose another time.")
    return local


# -- the template library -------------------------------------------------------------------

def default_template_mjml() -> str:
    return Path(DEFAULT_TEMPLATE_PATH).read_text(encoding="utf-8")


def templates() -> list[EmailTemplate]:
    return list(db.session.scalars(select(EmailTemplate).order_by(EmailTemplate.name)))


def ensure_default_template() -> EmailTemplate:
    """Put the default "Periodic update" template in the library once (staff may edit it after)."""
    found = db.session.scalar(select(EmailTemplate).where(EmailTemplate.name == DEFAULT_TEMPLATE_NAME))
    if found is None:
        found = EmailTemplate(name=DEFAULT_TEMPLATE_NAME, mjml=default_template_mjml())
        db.session.add(found)
        db.session.commit()
    return found


def template_problems(mjml_source: str) -> list[str]:
    """What stops the MJML from compiling, with mjml's message, plus unknown variables with their line."""
    if len(mjml_source) > MAX_SOURCE:
        return [f"Too long: at most {MAX_SOURCE:,} characters."]
    problems = compose.check_content("subject", "", mjml_source, "")
    return [str(p) for p in problems if p.field == "mjml"]


def save_template(data: dict[str, Any], template: EmailTemplate | None = None,
                  actor_id: int | None = None) -> EmailTemplate:
    """Create or update a library template (raises Invalid)."""
    errors: dict[str, list[str]] = {}
    name = " ".join(_text(data, "name").split())
    if not name:
        _add(errors, "name", "A name is required.")
    elif len(name) > 200:
        _add(errors, "name", "Keep the name under 200 characters.")
    mjml_source = _text(data, "mjml").replace("\r\n", "\n")
    for message in template_problems(mjml_source):
        _add(errors, "mjml", message)
    if name and db.session.scalar(select(exists().where(
            EmailTemplate.name == name, EmailTemplate.id != (template.id if template else -1)))):
        _add(errors, "name", "A template with this name already exists.")
    if errors:
        raise Invalid(errors)
    if template is None:
        template = EmailTemplate(name=name, mjml=mjml_source, created_by_id=actor_id)
        db.session.add(template)
    else:
        template.name, template.mjml = name, mjml_source
    try:
        db.session.flush()
    except IntegrityError:  # a colleague took the name a moment ago
        db.session.rollback()
        raise Invalid({"name": ["A template with this name already exists."]}) from None
    audit.record("campaigns.template_save", f"email_template:{template.id}", actor_id=actor_id, name=name)
    db.session.commit()
    return template


def delete_template(template: EmailTemplate, actor_id: int | None = None) -> None:
    """Delete from the library; campaigns made from it keep their own copy of the MJML."""
    audit.record("campaigns.template_delete", f"email_template:{template.id}", actor_id=actor_id, name=template.name)
    db.session.delete(template)
    db.session.commit()


# -- sender identities ----------------------------------------------------------------------

def sender_identities() -> list[SenderIdentity]:
    return list(db.session.scalars(select(SenderIdentity).order_by(SenderIdentity.is_active.desc(),
                                                                   SenderIdentity.name, SenderIdentity.email)))


def campaigns_needing(sender: SenderIdentity) -> int:
    """Scheduled, sending or paused campaigns that send as this identity."""
    return db.session.scalar(select(func.count()).select_from(Campaign).where(
        Campaign.sender_id == sender.id, Campaign.status.in_(ACTIVE_STATUSES))) or 0


def sender_problems(data: dict[str, Any], sender: SenderIdentity | None = None) -> dict[str, list[str]]:
    """Every rule the identity's fields break, as save_sender judges them (nothing is written)."""
    return _clean_sender(data, sender)[1]


def _clean_sender(data: dict[str, Any], sender: SenderIdentity | None) -> tuple[dict[str, Any], dict[str, list[str]]]:
    errors: dict[str, list[str]] = {}
    name = " ".join(_text(data, "name").split())
    if not name:
        _add(errors, "name", "A display name is required (supporters see it in their inbox).")
    elif len(name) > 200:
        _add(errors, "name", "Keep the name under 200 characters.")
    address = _optional_email(errors, "email", _text(data, "email"))
    if not address and "email" not in errors:
        _add(errors, "email", "An email address is required.")
    reply_to = _optional_email(errors, "reply_to", _text(data, "reply_to"))
    is_active = bool(data.get("is_active", True))
    if address and db.session.scalar(select(exists().where(
            SenderIdentity.email == address, SenderIdentity.id != (sender.id if sender else -1)))):
        _add(errors, "email", "This address is already a sender identity.")
    if sender is not None and sender.is_active and not is_active and campaigns_needing(sender):
        _add(errors, "is_active", "A scheduled, sending or paused campaign uses this identity; "
                                  "change or cancel it first.")
    return {"name": name, "email": address, "reply_to": reply_to, "is_active": is_active}, errors


def save_sender(data: dict[str, Any], sender: SenderIdentity | None = None,
                actor_id: int | None = None) -> SenderIdentity:
    """Add or edit a From identity (raises Invalid). The address must be one the relay may send as."""
    values, errors = _clean_sender(data, sender)
    if errors:
        raise Invalid(errors)
    name, address, reply_to, is_active = values["name"], values["email"], values["reply_to"], values["is_active"]
    if sender is None:
        sender = SenderIdentity(name=name, email=address, reply_to=reply_to, is_active=is_active)
        db.session.add(sender)
    else:
        sender.name, sender.email, sender.reply_to, sender.is_active = name, address, reply_to, is_active
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise Invalid({"email": ["This address is already a sender identity."]}) from None
    audit.record("settings.sender_save", f"sender_identity:{sender.id}", actor_id=actor_id, email=address,
                 active=is_active)
    db.session.commit()
    return sender


def deactivate_sender(sender: SenderIdentity, actor_id: int | None = None) -> None:
    """Stop offering the identity; refused while a campaign in flight still sends as it."""
    if campaigns_needing(sender):
        raise Invalid({"is_active": ["A scheduled, sending or paused campaign uses this identity; "
                                     "change or cancel it first."]})
    sender.is_active = False
    audit.record("settings.sender_deactivate", f"sender_identity:{sender.id}", actor_id=actor_id,
                 email=sender.email)
    db.session.commit()


def ensure_sender(name: str, address: str) -> SenderIdentity:
    """The identity for `address`, created active if missing (demo data, first run)."""
    address = normalise_email(address)
    found = db.session.scalar(select(SenderIdentity).where(SenderIdentity.email == address))
    if found is None:
        found = SenderIdentity(name=name, email=address, reply_to="", is_active=True)
        db.session.add(found)
        db.session.commit()
    return found
