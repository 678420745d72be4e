"""Campaign lifecycle for views, the CLI and jobs: send now, schedule, pause, resume, cancel,
test sends, progress. draft -> scheduled -> sending -> sent, with paused, cancelled and failed.

Every transition is a guarded UPDATE (see campaigns/pipeline.py), audit-logged when staff do it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import func, select

from campaigns import pipeline, queries
from campaigns.compose import SAMPLE_SUPPORTER
from campaigns.pipeline import Renderer, readiness_problem
from campaigns.tokens import test_unsubscribe_url
from campaigns.transport import SMTPTransport
from crm import audit
from crm.clock import to_utc
from crm.extensions import db
from crm.models import Campaign, StaffUser, Supporter
from crm.queues import SEND_TEST, START_CAMPAIGN, queue
from crm.segments import compiler
from crm.segments.rules import validate

MAX_TEST_ADDRESSES = 10


class LifecycleError(ValueError):
    """The transition is not possible now; the message says why, for staff."""


def _require_ready(campaign: Campaign) -> None:
    if campaign.status not in ("draft", "scheduled"):
        raise LifecycleError(f"A {campaign.status} campaign cannot be sent again.")
    problem = readiness_problem(campaign)
    if problem:
        raise LifecycleError(problem)


def estimated_recipients(campaign: Campaign) -> int:
    """How many would receive it if it were sent now (the snapshot's own conditions)."""
    if campaign.segment is None:
        return 0
    condition = compiler.segment_condition(validate(campaign.segment.rules, segment_id=campaign.segment_id))
    return db.session.scalar(select(func.count()).select_from(Supporter).where(
        condition, queries.mailable(), queries.not_paused(datetime.now(UTC)))) or 0


def send_now(campaign: Campaign, actor_id: int | None = None) -> None:
    """Queue the campaign to start at once."""
    schedule(campaign, datetime.now(UTC), actor_id, now=True)


def schedule(campaign: Campaign, when: datetime, actor_id: int | None = None, *, now: bool = False) -> None:
    """Schedule for `when` (aware, or naive in the organisation's zone).

    The schedule lives in the database only: the workers' periodic check (start_due) starts it
    when it falls due, so a Redis that lost its data, or a dead scheduler, loses no schedule.
    Sending now also queues the start at once."""
    _require_ready(campaign)
    when_utc = to_utc(when)
    if not now and when_utc <= datetime.now(UTC) + timedelta(seconds=30):
        raise LifecycleError("Choose a time in the future, or send it now.")
    campaign.status = "scheduled"
    campaign.scheduled_at = when_utc
    campaign.status_reason = ""
    audit.record("campaigns.send" if now else "campaigns.schedule", f"campaign:{campaign.id}", actor_id=actor_id,
                 segment=campaign.segment.name, at=when_utc.isoformat(),
                 estimated_recipients=estimated_recipients(campaign))
    db.session.commit()
    if now:
        queue("mail").enqueue(START_CAMPAIGN, campaign.id, campaign.version, result_ttl=3600)


def start_due() -> int:
    """Start every scheduled campaign whose time has come; returns how many started.

    Run by the workers every second or so (workers/periodic.py); start_campaign is a
    compare-and-set, so two workers doing this at once start each campaign once."""
    due = db.session.scalars(select(Campaign.id).where(
        Campaign.status == "scheduled", Campaign.scheduled_at <= datetime.now(UTC))).all()
    db.session.rollback()
    return sum(1 for campaign_id in due if pipeline.start_campaign(campaign_id))


def unschedule(campaign: Campaign, actor_id: int | None = None) -> None:
    """Back to draft; the queued start job will find nothing to do."""
    if campaign.status != "scheduled":
        raise LifecycleError("Only a scheduled campaign can be unscheduled.")
    campaign.status = "draft"
    campaign.scheduled_at = None
    audit.record("campaigns.unschedule", f"campaign:{campaign.id}", actor_id=actor_id)
    db.session.commit()


def content_changed(campaign: Campaign) -> None:
    """Call after editing content: bump the version, so a start queued for the old one does nothing."""
    if not campaign.is_editable:
        raise LifecycleError("Editing is locked once sending starts.")
    campaign.version += 1
    db.session.commit()


def pause(campaign: Campaign, actor_id: int | None = None) -> None:
    if not pipeline.pause(campaign.id, "Paused by staff."):
        raise LifecycleError("Only a sending campaign can be paused.")
    audit.record("campaigns.pause", f"campaign:{campaign.id}", actor_id=actor_id)
    db.session.commit()


def resume(campaign: Campaign, actor_id: int | None = None) -> None:
    if not pipeline.resume(campaign.id):
        raise LifecycleError("Only a paused campaign can be resumed.")
    audit.record("campaigns.resume", f"campaign:{campaign.id}", actor_id=actor_id)
    db.session.commit()


def cancel(campaign: Campaign, actor_id: int | None = None) -> None:
    if not pipeline.cancel(campaign.id):
        raise LifecycleError("Only a scheduled, sending or paused campaign can be cancelled.")
    audit.record("campaigns.cancel", f"campaign:{campaign.id}", actor_id=actor_id)
    db.session.commit()


# -- test sends ------------------------------------------------------------------------------

def test_addresses(raw: str | list[str]) -> list[str]:
    """Parse and check test recipients: only active staff accounts' addresses (no mailing strangers)."""
    items = raw if isinstance(raw, list) else raw.replace(";", ",").replace("\n", ",").split(",")
    addresses = sorted({a.strip().lower() for a in items if a.strip()})
    if not addresses:
        raise LifecycleError("Give at least one staff address.")
    if len(addresses) > MAX_TEST_ADDRESSES:
        raise LifecycleError(f"Send a test to at most {MAX_TEST_ADDRESSES} addresses at a time.")
    staff = set(db.session.scalars(select(func.lower(StaffUser.email)).where(StaffUser.active.is_(True))))
    strangers = [a for a in addresses if a not in staff]
    if strangers:
        raise LifecycleError("Test sends go to staff accounts only; not staff: " + ", ".join(strangers))
    return addresses


test_addresses.__test__ = False  # not a pytest test


def send_test(campaign: Campaign, raw_addresses: str | list[str], supporter_id: int | None = None,
              actor_id: int | None = None) -> list[str]:
    """Queue a [TEST] copy to staff addresses (not counted, no message rows); returns the addresses."""
    addresses = test_addresses(raw_addresses)
    problem = readiness_problem(campaign) if campaign.sender else "Choose a sender identity."
    if problem and "segment" not in problem.lower():
        raise LifecycleError(problem)
    audit.record("campaigns.test_send", f"campaign:{campaign.id}", actor_id=actor_id, recipients=len(addresses))
    db.session.commit()
    queue("mail").enqueue(SEND_TEST, campaign.id, addresses, supporter_id, result_ttl=600)
    return addresses


send_test.__test__ = False


def deliver_test(campaign_id: int, addresses: list[str], supporter_id: int | None = None) -> list[str]:
    """Render as the chosen supporter (or a sample one) and send to each address now."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise LookupError(f"campaign {campaign_id} does not exist")
    renderer = Renderer.for_campaign(campaign, tracking=False)
    person = dict(SAMPLE_SUPPORTER, custom_fields={})
    if supporter_id is not None:
        people = queries.recipients([supporter_id])
        person = people.get(supporter_id, person)
    ids = []
    with SMTPTransport.for_app(current_app) as transport:
        for address in addresses:
            msgid, raw = renderer.render_message(0, {**person, "email": address}, test=True,
                                                 unsubscribe=test_unsubscribe_url())
            transport.deliver(current_app.config.get("BOUNCE_ADDRESS") or campaign.sender.email, address, raw)
            ids.append(msgid)
    return ids


# -- progress --------------------------------------------------------------------------------

@dataclass
class Progress:
    status: str
    reason: str
    total: int
    sent: int
    failed: int
    unknown: int
    suppressed: int
    queued: int
    in_flight: int
    cancelled: int
    rate_per_minute: int
    eta_seconds: int | None

    @property
    def done(self) -> int:
        return self.total - self.queued - self.in_flight

    def as_json(self) -> dict:
        return {**self.__dict__, "done": self.done}


def progress(campaign: Campaign) -> Progress:
    """Live counts from the message table; rate over the last minute; ETA at that rate."""
    counts = queries.status_counts(campaign.id)
    total = sum(counts.values())
    since = datetime.now(UTC) - timedelta(minutes=1)
    if campaign.status == "sending":
        rate = queries.sent_since(campaign.id, since)
    else:  # finished or stopped: the average over the run, so the page still says how fast it went
        rate = _average_rate(campaign, counts.get("sent", 0))
    remaining = counts.get("queued", 0) + counts.get("held", 0) + counts.get("sending", 0)
    eta = int(remaining / rate * 60) if rate and remaining else (0 if not remaining else None)
    return Progress(
        status=campaign.status, reason=campaign.status_reason, total=total or campaign.total,
        sent=counts.get("sent", 0), failed=counts.get("failed", 0) + counts.get("bounced", 0),
        unknown=counts.get("unknown", 0), suppressed=counts.get("suppressed", 0),
        queued=counts.get("queued", 0) + counts.get("held", 0), in_flight=counts.get("sending", 0),
        cancelled=counts.get("cancelled", 0), rate_per_minute=rate, eta_seconds=eta)


def _average_rate(campaign: Campaign, sent: int) -> int:
    if not (sent and campaign.started_at and campaign.finished_at):
        return 0
    seconds = (campaign.finished_at - campaign.started_at).total_seconds()
    return round(sent * 60 / max(seconds, 1))


# -- recovery --------------------------------------------------------------------------------

def sweep_active() -> int:
    """Sweep every sending or paused campaign (dead batches' rows -> unknown, leftovers requeued,
    finished ones closed); returns how many were swept.

    Run by the workers every SEND_SWEEP_SECONDS (workers/periodic.py), whichever is free: this
    is what recovers a campaign whose worker died, with no scheduler process to depend on."""
    active = db.session.scalars(select(Campaign.id).where(Campaign.status.in_(("sending", "paused")))).all()
    db.session.rollback()
    for campaign_id in active:
        pipeline.sweep(campaign_id)
    return len(active)
