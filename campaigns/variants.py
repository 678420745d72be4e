"""A/B tests: 2-4 variants of a campaign's subject, sender name or body, tested on part of the segment.

At snapshot (pipeline.start_campaign calls split_at_snapshot) a chosen share of the queued
messages is picked at random and dealt the variants in turn, so each variant gets an even share;
every other message is `held`. Each message row is unique per campaign and supporter, so a
supporter carries exactly one variant and gets one message. After the wait, the workers'
periodic task (workers/periodic.py: pick_due_winners) compares the variants by unique human
opens or clicks per message sent, with Wilson 95% intervals: a variant wins only when its lower
bound is above every other's upper bound; otherwise the difference is not significant and the
default variant (A, the campaign's own content) goes out. The held messages then take the
winner and are queued. Staff may pick a winner by hand before the scheduler does.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace

from sqlalchemy import case, func, select, update

from crm import audit
from crm.extensions import db
from crm.models import AbTest, Campaign, CampaignVariant, EngagementEvent, Message, utcnow

log = logging.getLogger(__name__)

LABELS = ("A", "B", "C", "D")
Z95 = 1.959964


class VariantProblem(ValueError):
    """The test cannot be set up or decided as asked; the message says why, for staff."""


# -- setting up ---------------------------------------------------------------------------------

def test_for(campaign_id: int) -> AbTest | None:
    return db.session.get(AbTest, campaign_id)


def variants_of(campaign_id: int) -> list[CampaignVariant]:
    return list(db.session.scalars(select(CampaignVariant).where(CampaignVariant.campaign_id == campaign_id)
                                   .order_by(CampaignVariant.position)))


def save_test(campaign: Campaign, *, fraction: float, wait_minutes: int, metric: str, others: list[dict],
              actor_id: int | None = None) -> AbTest:
    """Set (or replace) a draft campaign's test: A is its own content, `others` are B, C, D; commit.

    Each of `others` has subject, from_name and mjml; an empty one keeps the campaign's. A
    variant's content is checked as the campaign editor checks it."""
    from campaigns.compose import check_content

    if not campaign.is_editable:
        raise VariantProblem("Only a draft or scheduled campaign's test can change.")
    if not 0.01 <= fraction <= 1.0:
        raise VariantProblem("The test share must be between 1% and 100% of the segment.")
    if not 0 <= wait_minutes <= 7 * 24 * 60:
        raise VariantProblem("The wait must be between 0 minutes and 7 days.")
    if metric not in ("opens", "clicks"):
        raise VariantProblem("The winner is picked by opens or by clicks.")
    others = [o for o in others if any((o.get(k) or "").strip() for k in ("subject", "from_name", "mjml"))]
    if not 1 <= len(others) <= len(LABELS) - 1:
        raise VariantProblem("A test needs 2 to 4 variants: give at least one variant besides the campaign's own.")
    for label, other in zip(LABELS[1:], others, strict=False):
        subject = (other.get("subject") or "").strip() or campaign.subject
        mjml = (other.get("mjml") or "").strip() or campaign.mjml
        problems = check_content(subject, campaign.preheader or "", mjml, campaign.text_body)
        if problems:
            raise VariantProblem(f"Variant {label}: {problems[0].message}")
    db.session.execute(db.delete(CampaignVariant).where(CampaignVariant.campaign_id == campaign.id))
    test = test_for(campaign.id) or AbTest(campaign_id=campaign.id)
    test.test_fraction, test.wait_minutes, test.metric, test.status = fraction, wait_minutes, metric, "draft"
    db.session.add(test)
    db.session.add(CampaignVariant(campaign_id=campaign.id, position=0, label="A"))
    for position, other in enumerate(others, start=1):
        db.session.add(CampaignVariant(campaign_id=campaign.id, position=position, label=LABELS[position],
                                       subject=(other.get("subject") or "").strip()[:400],
                                       from_name=(other.get("from_name") or "").strip()[:200],
                                       mjml=(other.get("mjml") or "").strip()))
    audit.record("campaigns.ab_test_save", f"campaign:{campaign.id}", actor_id=actor_id, fraction=fraction,
                 wait_minutes=wait_minutes, metric=metric, variants=len(others) + 1)
    db.session.commit()
    return test


def remove_test(campaign: Campaign, actor_id: int | None = None) -> None:
    """Send the campaign without a test again; commit."""
    if not campaign.is_editable:
        raise VariantProblem("Only a draft or scheduled campaign's test can change.")
    db.session.execute(db.delete(AbTest).where(AbTest.campaign_id == campaign.id))
    db.session.execute(db.delete(CampaignVariant).where(CampaignVariant.campaign_id == campaign.id))
    audit.record("campaigns.ab_test_remove", f"campaign:{campaign.id}", actor_id=actor_id)
    db.session.commit()


def as_campaign(campaign: Campaign, variant: CampaignVariant | None):
    """The campaign as one variant renders it: its subject, sender name and body where it has them."""
    if variant is None or variant.position == 0:
        return campaign
    sender = campaign.sender
    return SimpleNamespace(
        id=campaign.id, version=campaign.version, name=campaign.name, subject=variant.subject or campaign.subject,
        preheader=campaign.preheader, mjml=variant.mjml or campaign.mjml, text_body=campaign.text_body,
        reply_to=campaign.reply_to, track_opens=campaign.track_opens, track_clicks=campaign.track_clicks,
        sender=SimpleNamespace(name=variant.from_name or sender.name, email=sender.email, reply_to=sender.reply_to,
                               is_active=sender.is_active))


def contents(campaign: Campaign) -> list[tuple[CampaignVariant, object, tuple[str, ...]]]:
    """Each variant, the campaign as it renders it, and the tracked links numbered before it.

    The variants' links are numbered in one list per campaign version: the campaign's own body's
    first, then each variant's new ones in position order, so a click's index means the same URL
    whichever variant carried it, and the list stored at snapshot (tracked_links) covers them all."""
    from campaigns.compose import compile_campaign

    known = compile_campaign(campaign).links
    found = []
    for variant in variants_of(campaign.id):
        content = as_campaign(campaign, variant)
        found.append((variant, content, known))
        known = compile_campaign(content, known_links=known).links
    return found


def tracked_links(campaign: Campaign) -> tuple[str, ...]:
    """Every tracked link of the campaign version and its variants, by the index their redirects carry."""
    from campaigns.compose import compile_campaign

    found = contents(campaign)
    if not found:
        return compile_campaign(campaign).links
    _, content, known = found[-1]
    return compile_campaign(content, known_links=known).links


# -- at snapshot ----------------------------------------------------------------------------------

def split_at_snapshot(campaign_id: int) -> int:
    """Deal the variants to a random test share of the queued messages and hold the rest; returns the test size.

    Runs in start_campaign's transaction, right after the snapshot. Two statements: every
    queued message is held, then a random `test_fraction` of them (ORDER BY random()) is
    queued again with a variant, dealt in turn by a row number in another random order, so the
    shares differ by one at most. No test, or fewer than two variants: nothing changes."""
    test = test_for(campaign_id)
    variants = variants_of(campaign_id)
    if test is None or len(variants) < 2 or test.status != "draft":
        return 0
    total = db.session.scalar(select(func.count()).select_from(Message).where(
        Message.campaign_id == campaign_id, Message.status == "queued")) or 0
    size = min(total, max(len(variants), round(total * test.test_fraction)))
    db.session.execute(update(Message).where(Message.campaign_id == campaign_id, Message.status == "queued")
                       .values(status="held").execution_options(synchronize_session=False))
    sample = (select(Message.id.label("id")).where(Message.campaign_id == campaign_id, Message.status == "held")
              .order_by(func.random()).limit(size).subquery())
    dealt = select(sample.c.id, func.row_number().over(order_by=func.random()).label("n")).subquery()
    # One UPDATE ... FROM: the random sample is drawn once (a second statement would draw another).
    variant = case(*[((dealt.c.n - 1) % len(variants) == i, v.id) for i, v in enumerate(variants)])
    db.session.execute(update(Message).where(Message.id == dealt.c.id)
                       .values(status="queued", variant_id=variant, ab_test_group=True)
                       .execution_options(synchronize_session=False))
    test.status, test.tested_at = "testing", utcnow()
    log.info("campaign %s: A/B test of %s variants on %s of %s messages", campaign_id, len(variants), size, total)
    return size


# -- deciding -------------------------------------------------------------------------------------

def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); (0, 1) when nothing was sent."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class VariantResult:
    variant: CampaignVariant
    sent: int
    successes: int

    @property
    def rate(self) -> float | None:
        return self.successes / self.sent if self.sent else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.successes, self.sent)


def results(campaign_id: int, metric: str) -> list[VariantResult]:
    """Per variant of the test group: messages sent, and those opened (or clicked) by a person."""
    kind = "open" if metric == "opens" else "click"
    variants = variants_of(campaign_id)
    sent = dict(db.session.execute(
        select(Message.variant_id, func.count()).where(Message.campaign_id == campaign_id, Message.status == "sent",
                                                       Message.ab_test_group.is_(True))
        .group_by(Message.variant_id)).all())
    engaged = dict(db.session.execute(
        select(Message.variant_id, func.count(func.distinct(EngagementEvent.message_id)))
        .join(Message, Message.id == EngagementEvent.message_id)
        .where(EngagementEvent.campaign_id == campaign_id, EngagementEvent.kind == kind,
               EngagementEvent.is_machine.is_(False), Message.ab_test_group.is_(True))
        .group_by(Message.variant_id)).all())
    return [VariantResult(v, int(sent.get(v.id, 0)), int(engaged.get(v.id, 0))) for v in variants]


def verdict(found: list[VariantResult]) -> tuple[CampaignVariant, bool, str]:
    """(winner, significant, why): the best variant if its interval clears every other's, else the default."""
    default = next(r for r in found if r.variant.position == 0)
    best = max(found, key=lambda r: (r.rate or 0.0, -r.variant.position))
    low = best.interval[0]
    if best.sent and all(low > r.interval[1] for r in found if r is not best):
        return best.variant, True, (f"Variant {best.variant.label} won: its 95% interval lies above every "
                                    "other variant's.")
    return default.variant, False, ("The difference is not significant (the 95% intervals overlap), so the "
                                    f"default variant {default.variant.label} goes to the rest.")


def decide(campaign_id: int, winner_id: int | None = None, *, actor_id: int | None = None) -> AbTest:
    """Choose the winner (by the test's metric, or `winner_id` picked by staff), queue the held rest; commit."""
    from campaigns import pipeline

    test = db.session.scalars(select(AbTest).where(AbTest.campaign_id == campaign_id).with_for_update()).first()
    if test is None or test.status != "testing":
        raise VariantProblem("This campaign has no test waiting for a winner.")
    found = results(campaign_id, test.metric)
    if winner_id is not None:
        chosen = next((r.variant for r in found if r.variant.id == winner_id), None)
        if chosen is None:
            raise VariantProblem("That variant is not one of this campaign's.")
        why, by = f"Variant {chosen.label} picked by staff.", f"staff:{actor_id}"
    else:
        chosen, _, why = verdict(found)
        by = "scheduler"
    test.status, test.winner_id, test.decided_at, test.decided_by, test.decision = (
        "decided", chosen.id, utcnow(), by, why)
    rest = db.session.execute(
        update(Message).where(Message.campaign_id == campaign_id, Message.status == "held")
        .values(status="queued", variant_id=chosen.id).execution_options(synchronize_session=False)).rowcount
    audit.record("campaigns.ab_test_decide", f"campaign:{campaign_id}", actor_id=actor_id, winner=chosen.label,
                 decided_by=by, rest=rest)
    db.session.commit()
    log.info("campaign %s: variant %s goes to the other %s (%s)", campaign_id, chosen.label, rest, by)
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is not None and campaign.status == "sending":
        pipeline.enqueue_batches(campaign_id)
    return test


def pick_due_winners() -> int:
    """Decide every test whose wait is over and whose test messages are all settled; returns how many."""
    due = []
    for test in db.session.scalars(select(AbTest).where(AbTest.status == "testing")).all():
        if test.tested_at is None:
            continue
        tested_at = test.tested_at if test.tested_at.tzinfo else test.tested_at.replace(tzinfo=utcnow().tzinfo)
        if tested_at + timedelta(minutes=test.wait_minutes) > utcnow():
            continue
        unsettled = db.session.scalar(select(func.count()).select_from(Message).where(
            Message.campaign_id == test.campaign_id, Message.status.in_(("queued", "sending"))))
        if not unsettled:
            due.append(test.campaign_id)
    db.session.rollback()
    for campaign_id in due:
        try:
            decide(campaign_id)
        except VariantProblem:
            db.session.rollback()  # decided by hand meanwhile
    return len(due)
