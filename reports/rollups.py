"""The roll-ups the report pages read, and their refresh from the facts.

Report pages never count the big tables (message, engagement_event, consent_event, signature)
while someone waits: a worker's periodic task (workers/periodic.py, every
REPORTS_REFRESH_SECONDS) recomputes the rows whose facts moved, and every page says how old
they are. A refresh is incremental: it remembers the newest fact ids it saw (rollup_state) and
recomputes only

- campaigns that are sending or paused, finished since the last refresh, or have an
  engagement event, a feedback event or a consent event (an unsubscribe) newer than that;
- the UTC days holding a newer consent event, plus today and yesterday;
- the (petition, day) pairs holding a newer signature, and those petitions' sources;
- the subscribed-signer count of petitions with a newer signature or whose signers have a
  newer consent event; and it adds the newer consent events to the counts per source.

Each recomputed row is rebuilt whole from the facts (delete, then INSERT ... SELECT or one
grouped SELECT), so a refresh is idempotent and any row can be thrown away; the one count
kept by adding (consent events per source, append-only facts) is rebuilt by a full refresh.

"Newer" is exact, not a window re-read: a transaction can take an id below the newest and
commit after the refresh read past it, so each refresh also remembers the ids within
CURSOR_OVERLAP below each cursor that had no row yet (`unseen_ids`, usually none or a few
rolled-back ones), and the next reads those and the ids above the cursor. (Re-reading the
last 1,000 ids instead made every refresh recompute 99 of 100 campaigns at the bench's scale:
its newest consent events were unsubscribes spread over every campaign.)

Figures that depend on data this installation does not record say so instead of showing a
zero: see `sources()`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Integer, and_, case, cast, delete, distinct, exists, func, literal, or_, select, text
from sqlalchemy.orm import aliased

from crm.database import is_postgres
from crm.extensions import db
from crm.models import (
    STATUS_AFTER,
    Campaign,
    CampaignBreakdownRollup,
    CampaignHourRollup,
    CampaignLinkRollup,
    CampaignRollup,
    ConsentEvent,
    ConsentSourceRollup,
    DailyRollup,
    EngagementEvent,
    FeedbackEvent,
    Message,
    Petition,
    PetitionDayRollup,
    PetitionRollup,
    PetitionSourceRollup,
    RollupState,
    Signature,
    Supporter,
    utcnow,
)
from crm.petitions.service import agreed_when_signing, signed_on_form

log = logging.getLogger(__name__)

STATE = "reports"
CURSOR_OVERLAP = 1000
FIRST_HOURS = 72
LINKS_KEPT = 100
SOURCES_KEPT = 100
FAILED = ("failed", "bounced")
SUBSCRIBED_ACTIONS = tuple(a for a, status in STATUS_AFTER.items() if status == "subscribed")
LOSS_COLUMNS = {"opt_out": "unsubscribes", "bounce": "bounces", "complaint": "complaints"}


@dataclass
class Refreshed:
    """What one refresh recomputed."""

    campaigns: list[int] = field(default_factory=list)
    days: list[date] = field(default_factory=list)
    petition_days: int = 0
    full: bool = False
    duration_ms: int = 0


# -- dialect helpers ---------------------------------------------------------------------------

def day_of(column):
    """The UTC calendar day of a timestamp column, as SQL."""
    if is_postgres():
        return cast(func.timezone("UTC", column), db.Date)
    return func.date(column)


def _as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _hours_after(column, start: datetime):
    """Whole hours from `start` to a timestamp column, as SQL (floor; both are UTC)."""
    if is_postgres():
        return cast(func.floor(func.extract("epoch", column - literal(start)) / 3600), Integer)
    seconds = cast(func.round((func.julianday(column) - func.julianday(literal(start))) * 86400), Integer)
    return seconds / 3600  # integer division: both sides are integers in SQLite


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# -- state ---------------------------------------------------------------------------------------

def state() -> RollupState | None:
    """The refresh bookkeeping row, or None before the first refresh."""
    return db.session.get(RollupState, STATE)


def _max_id(column) -> int:
    return db.session.scalar(select(func.coalesce(func.max(column), 0))) or 0


FACTS = {"signature": Signature.id, "consent": ConsentEvent.id, "engagement": EngagementEvent.id,
         "feedback": FeedbackEvent.id}


def _unseen(column, mark: int) -> list[int]:
    """The ids within CURSOR_OVERLAP at or below `mark` with no row now (a primary-key range read)."""
    low = max(0, mark - CURSOR_OVERLAP)
    present = set(db.session.scalars(select(column).where(column > low, column <= mark)).all())
    return [i for i in range(low + 1, mark + 1) if i not in present]


@dataclass
class _Since:
    """What the last refresh saw of one fact table: its cursor and the ids below it it could not see."""

    cursor: int
    unseen: list[int]

    def new(self, column):
        """SQL test: a row the last refresh had not seen."""
        return or_(column > self.cursor, column.in_(self.unseen)) if self.unseen else column > self.cursor


def refresh(full: bool = False) -> Refreshed:
    """Bring the roll-ups up to date with the facts (everything when `full` or never refreshed); commit."""
    started = time.monotonic()
    query = select(RollupState).where(RollupState.name == STATE)
    if is_postgres():
        query = query.with_for_update()  # two refreshes at once would delete each other's rows
        # The breakdowns' per-message EXISTS probes make the planner's estimates large enough
        # to JIT-compile each statement: 1.5 s of compiling for a 0.3 s query (EXPLAIN ANALYZE,
        # one campaign of 50,000 messages), three times per campaign.
        db.session.execute(text("SET LOCAL jit = off"))
    current = db.session.scalars(query).first()
    if current is None:
        current = RollupState(name=STATE)
        db.session.add(current)
        full = True
    full = full or current.refreshed_at is None
    now = utcnow()
    # The marks and the ids missing below them first, then the reads of what is newer: a row
    # that commits in between is read now and never counted as unseen, one that commits after
    # is unseen and read next time.
    marks = {name: _max_id(column) for name, column in FACTS.items()}
    unseen = {name: _unseen(column, marks[name]) for name, column in FACTS.items()}
    before = current.unseen_ids or {}
    since = {name: _Since(getattr(current, f"{name}_cursor") or 0, list(before.get(name) or []))
             for name in FACTS}
    done = Refreshed(full=full)

    done.campaigns = _campaigns_to_refresh(current, full, since)
    for campaign_id in done.campaigns:
        refresh_campaign(campaign_id, now)

    done.days = _refresh_days(since["consent"], full, now)
    done.petition_days = _refresh_petitions(since["signature"], full)
    _refresh_petition_signers(since, full)
    _refresh_consent_sources(since["consent"], full)

    current.subscribed_now = db.session.scalar(
        select(func.count()).select_from(Supporter)
        .where(Supporter.email_status == "subscribed", Supporter.erased_at.is_(None))) or 0
    current.signature_cursor, current.consent_cursor = marks["signature"], marks["consent"]
    current.engagement_cursor, current.feedback_cursor = marks["engagement"], marks["feedback"]
    current.unseen_ids = unseen
    current.refreshed_at = now
    done.duration_ms = int((time.monotonic() - started) * 1000)
    current.last_duration_ms = done.duration_ms
    db.session.commit()
    log.info("report roll-ups refreshed: %d campaigns, %d days, %d petition days in %d ms%s",
             len(done.campaigns), len(done.days), done.petition_days, done.duration_ms, " (full)" if full else "")
    return done


def _campaigns_to_refresh(current: RollupState, full: bool, since: dict[str, _Since]) -> list[int]:
    started = select(Campaign.id).where(Campaign.started_at.is_not(None))
    if full:
        return sorted(db.session.scalars(started).all())
    ids = set(db.session.scalars(started.where(or_(
        Campaign.status.in_(("sending", "paused")),
        Campaign.finished_at >= current.refreshed_at - timedelta(minutes=5)))).all())
    # Each of these reads a primary-key range (and a few single ids): the facts newer than the cursor.
    ids.update(db.session.scalars(select(EngagementEvent.campaign_id).distinct()
                                  .where(since["engagement"].new(EngagementEvent.id))).all())
    ids.update(c for c in db.session.scalars(select(FeedbackEvent.campaign_id).distinct()
                                             .where(since["feedback"].new(FeedbackEvent.id))).all() if c)
    ids.update(c for c in db.session.scalars(select(ConsentEvent.campaign_id).distinct()
                                             .where(since["consent"].new(ConsentEvent.id),
                                                    ConsentEvent.campaign_id.is_not(None))).all() if c)
    known = set(db.session.scalars(select(Campaign.id).where(Campaign.id.in_(ids),
                                                             Campaign.started_at.is_not(None))).all()) if ids else set()
    return sorted(known)


# -- one campaign ------------------------------------------------------------------------------

def _human():
    return EngagementEvent.is_machine.is_(False)


def refresh_campaign(campaign_id: int, now: datetime | None = None) -> CampaignRollup:
    """Recompute every roll-up row of one campaign from its messages and events (no commit)."""
    now = now or utcnow()
    campaign = db.session.get(Campaign, campaign_id)
    # One pass over the campaign's messages (ix_message_campaign_status_id, then the heap for
    # the feedback columns): about 20 ms for 50,000 messages on PostgreSQL.
    m = db.session.execute(
        select(func.count(),
               func.coalesce(func.sum(case((Message.status == "sent", 1), else_=0)), 0),
               func.coalesce(func.sum(case((Message.status.in_(FAILED), 1), else_=0)), 0),
               func.coalesce(func.sum(case((Message.status == "unknown", 1), else_=0)), 0),
               func.coalesce(func.sum(case((Message.status == "suppressed", 1), else_=0)), 0),
               func.coalesce(func.sum(case((Message.bounce_type == "hard", 1), else_=0)), 0),
               func.coalesce(func.sum(case((Message.bounce_type == "soft", 1), else_=0)), 0),
               func.count(Message.complained_at))
        .where(Message.campaign_id == campaign_id)).one()
    unsubscribes = db.session.scalar(
        select(func.count(distinct(ConsentEvent.supporter_id)))
        .where(ConsentEvent.campaign_id == campaign_id, ConsentEvent.action == "opt_out")) or 0
    values = {"recipients": m[0], "sent": m[1], "failed": m[2], "unknown": m[3], "suppressed": m[4],
              "bounced_hard": m[5], "bounced_soft": m[6], "complaints": m[7], "unsubscribes": unsubscribes}
    # Opens and clicks: ix_engagement_event_campaign_kind, one grouped pass over the campaign's
    # events; "unique" counts messages, so a person opening five times counts once.
    human_message = case((_human(), EngagementEvent.message_id), else_=None)
    for kind, total, unique, total_human, unique_human in db.session.execute(
            select(EngagementEvent.kind, func.count(), func.count(distinct(EngagementEvent.message_id)),
                   func.coalesce(func.sum(case((_human(), 1), else_=0)), 0), func.count(distinct(human_message)))
            .where(EngagementEvent.campaign_id == campaign_id, EngagementEvent.kind.in_(("open", "click")))
            .group_by(EngagementEvent.kind)).all():
        prefix = "opens" if kind == "open" else "clicks"
        values.update({f"{prefix}_total": total, f"{prefix}_unique": unique,
                       f"{prefix}_total_human": total_human, f"{prefix}_unique_human": unique_human})
    rollup = db.session.get(CampaignRollup, campaign_id)
    if rollup is None:
        rollup = CampaignRollup(campaign_id=campaign_id)
        db.session.add(rollup)
    for name in ("opens_total", "opens_unique", "opens_total_human", "opens_unique_human", "clicks_total",
                 "clicks_unique", "clicks_total_human", "clicks_unique_human"):
        setattr(rollup, name, 0)
    for name, value in values.items():
        setattr(rollup, name, int(value or 0))
    rollup.refreshed_at = now

    _refresh_hours(campaign, now)
    _refresh_links(campaign_id)
    _refresh_breakdowns(campaign_id)
    db.session.flush()
    return rollup


def _refresh_hours(campaign: Campaign | None, now: datetime) -> None:
    if campaign is None:
        return
    db.session.execute(delete(CampaignHourRollup).where(CampaignHourRollup.campaign_id == campaign.id))
    if campaign.started_at is None:
        return
    start = campaign.started_at
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    hour = _hours_after(EngagementEvent.created_at, start).label("hour")
    rows = db.session.execute(
        select(hour, EngagementEvent.kind, func.count(), func.coalesce(func.sum(case((_human(), 1), else_=0)), 0))
        .where(EngagementEvent.campaign_id == campaign.id, EngagementEvent.kind.in_(("open", "click")),
               EngagementEvent.created_at >= start, EngagementEvent.created_at < start + timedelta(hours=FIRST_HOURS))
        .group_by(hour, EngagementEvent.kind)).all()
    hours: dict[int, dict[str, int]] = {}
    for h, kind, total, human in rows:
        if h is None or not 0 <= int(h) < FIRST_HOURS:
            continue
        row = hours.setdefault(int(h), {"opens": 0, "opens_human": 0, "clicks": 0, "clicks_human": 0})
        prefix = "opens" if kind == "open" else "clicks"
        row[prefix] += int(total)
        row[f"{prefix}_human"] += int(human)
    db.session.add_all(CampaignHourRollup(campaign_id=campaign.id, hour=h, **row) for h, row in hours.items())


def _refresh_links(campaign_id: int) -> None:
    db.session.execute(delete(CampaignLinkRollup).where(CampaignLinkRollup.campaign_id == campaign_id))
    clicks = func.count().label("clicks")
    rows = db.session.execute(
        select(EngagementEvent.url, clicks, func.coalesce(func.sum(case((_human(), 1), else_=0)), 0),
               func.count(distinct(EngagementEvent.message_id)))
        .where(EngagementEvent.campaign_id == campaign_id, EngagementEvent.kind == "click")
        .group_by(EngagementEvent.url).order_by(clicks.desc(), EngagementEvent.url).limit(LINKS_KEPT)).all()
    db.session.add_all(CampaignLinkRollup(campaign_id=campaign_id, url=url or "", clicks=total, clicks_human=human,
                                          unique_clicks=unique) for url, total, human, unique in rows)


def _refresh_breakdowns(campaign_id: int) -> None:
    """Sent messages by petition signed and by country, with who opened, clicked, unsubscribed."""
    db.session.execute(delete(CampaignBreakdownRollup).where(CampaignBreakdownRollup.campaign_id == campaign_id))

    def did(kind: str):
        return exists().where(EngagementEvent.message_id == Message.id, EngagementEvent.kind == kind, _human())

    unsubscribed = exists().where(ConsentEvent.campaign_id == campaign_id, ConsentEvent.action == "opt_out",
                                  ConsentEvent.supporter_id == Message.supporter_id)
    # The per-message flags are EXISTS probes on ix_engagement_event_message_kind and the
    # partial consent index: PostgreSQL runs them as hashed subplans over the campaign's sent
    # messages rather than joining the events, so each message counts once however often it
    # was opened.
    flags = (select(Message.id.label("message_id"), Message.supporter_id.label("supporter_id"),
                    case((did("open"), 1), else_=0).label("opened"),
                    case((did("click"), 1), else_=0).label("clicked"),
                    case((unsubscribed, 1), else_=0).label("unsubscribed"))
             .where(Message.campaign_id == campaign_id, Message.status == "sent").subquery())
    sums = (func.count(), func.coalesce(func.sum(flags.c.opened), 0), func.coalesce(func.sum(flags.c.clicked), 0),
            func.coalesce(func.sum(flags.c.unsubscribed), 0))
    by_petition = db.session.execute(
        select(Signature.petition_id, *sums).select_from(flags)
        .join(Signature, Signature.supporter_id == flags.c.supporter_id)
        .group_by(Signature.petition_id)).all()
    by_country = db.session.execute(
        select(Supporter.country, *sums).select_from(flags)
        .join(Supporter, Supporter.id == flags.c.supporter_id)
        .group_by(Supporter.country)).all()
    for dimension, rows in (("petition", by_petition), ("country", by_country)):
        db.session.add_all(CampaignBreakdownRollup(
            campaign_id=campaign_id, dimension=dimension, key=str(key or ""), recipients=n, opened=o, clicked=c,
            unsubscribed=u) for key, n, o, c, u in rows)


# -- days: list growth ------------------------------------------------------------------------

def _refresh_days(since: _Since, full: bool, now: datetime) -> list[date]:
    today = now.date()
    if full:
        db.session.execute(delete(DailyRollup))
        lo, hi = None, None
        days = None
    else:
        touched = {_as_date(d) for d in db.session.scalars(
            select(day_of(ConsentEvent.created_at)).distinct().where(since.new(ConsentEvent.id)))
            if d is not None}
        days = sorted(touched | {today, today - timedelta(days=1)})
        db.session.execute(delete(DailyRollup).where(DailyRollup.day.in_(days)))
        lo, hi = days[0], days[-1]
    previous = aliased(ConsentEvent)
    # What the supporter's status was before each event: the action of their previous event
    # (ix_consent_event_supporter_id, newest first, one row). An opt-in by someone already
    # subscribed (a second petition's wording) changes nothing and is not growth.
    prev_action = (select(previous.action).where(previous.supporter_id == ConsentEvent.supporter_id,
                                                 previous.id < ConsentEvent.id)
                   .order_by(previous.id.desc()).limit(1).scalar_subquery())
    day = day_of(ConsentEvent.created_at).label("day")
    query = select(day, ConsentEvent.action, prev_action.label("prev"), func.count()).group_by(
        day, ConsentEvent.action, prev_action)
    if lo is not None:
        # ix_consent_event_created_at: the span of touched days only.
        query = query.where(ConsentEvent.created_at >= _day_start(lo),
                            ConsentEvent.created_at < _day_start(hi + timedelta(days=1)))
    rows: dict[date, DailyRollup] = {}
    for raw_day, action, prev, count in db.session.execute(query).all():
        d = _as_date(raw_day)
        if days is not None and d not in days:
            continue
        row = rows.setdefault(d, DailyRollup(day=d, gained=0, unsubscribes=0, bounces=0, complaints=0))
        was_subscribed = prev in SUBSCRIBED_ACTIONS
        if action in SUBSCRIBED_ACTIONS and not was_subscribed:
            row.gained += count
        elif action in LOSS_COLUMNS and was_subscribed:
            setattr(row, LOSS_COLUMNS[action], getattr(row, LOSS_COLUMNS[action]) + count)
    if days is not None:
        for d in days:
            rows.setdefault(d, DailyRollup(day=d, gained=0, unsubscribes=0, bounces=0, complaints=0))
    db.session.add_all(rows.values())
    return sorted(rows)


# -- petitions ---------------------------------------------------------------------------------

def _refresh_petitions(since: _Since, full: bool) -> int:
    sig_day = day_of(Signature.created_at).label("day")
    if full:
        db.session.execute(delete(PetitionDayRollup))
        pairs = None
        petitions = set(db.session.scalars(select(Petition.id)).all())
    else:
        pairs = {(p, _as_date(d)) for p, d in db.session.execute(
            select(Signature.petition_id, sig_day).where(since.new(Signature.id))
            .group_by(Signature.petition_id, sig_day)).all()}
        petitions = {p for p, _ in pairs}
    count = 0
    for petition_id in sorted(petitions):
        days = None if pairs is None else sorted(d for p, d in pairs if p == petition_id)
        count += _refresh_petition_days(petition_id, days)
        _refresh_sources(petition_id)
    return count


def _refresh_petition_days(petition_id: int, days: list[date] | None) -> int:
    sig_day = day_of(Signature.created_at).label("day")
    query = (select(sig_day, func.count(),
                    func.coalesce(func.sum(case((Supporter.source == literal("petition:") + Petition.slug, 1),
                                                else_=0)), 0),
                    func.coalesce(func.sum(case((signed_on_form(), 1), else_=0)), 0),
                    func.coalesce(func.sum(case((and_(signed_on_form(), agreed_when_signing()), 1), else_=0)), 0))
             .select_from(Signature).join(Petition, Petition.id == Signature.petition_id)
             .outerjoin(Supporter, Supporter.id == Signature.supporter_id)
             .where(Signature.petition_id == petition_id).group_by(sig_day))
    stale = delete(PetitionDayRollup).where(PetitionDayRollup.petition_id == petition_id)
    if days is not None:
        stale = stale.where(PetitionDayRollup.day.in_(days))
        # ix_signature_petition_created: the span of touched days of this petition.
        query = query.where(Signature.created_at >= _day_start(days[0]),
                            Signature.created_at < _day_start(days[-1] + timedelta(days=1)))
    db.session.execute(stale)
    wanted = None if days is None else set(days)
    rows = [PetitionDayRollup(petition_id=petition_id, day=_as_date(d), signatures=n, new_supporters=new,
                              form_signatures=form, opted_in=agreed)
            for d, n, new, form, agreed in db.session.execute(query).all()
            if wanted is None or _as_date(d) in wanted]
    db.session.add_all(rows)
    return len(rows)


def _refresh_sources(petition_id: int) -> None:
    db.session.execute(delete(PetitionSourceRollup).where(PetitionSourceRollup.petition_id == petition_id))
    n = func.count().label("n")
    rows = db.session.execute(
        select(Signature.utm_source, Signature.utm_medium, Signature.utm_campaign, Signature.referrer_host, n)
        .where(Signature.petition_id == petition_id)
        .group_by(Signature.utm_source, Signature.utm_medium, Signature.utm_campaign, Signature.referrer_host)
        .order_by(n.desc()).limit(SOURCES_KEPT)).all()
    db.session.add_all(PetitionSourceRollup(petition_id=petition_id, utm_source=s or "", utm_medium=m or "",
                                            utm_campaign=c or "", referrer_host=r or "", signatures=k)
                       for s, m, c, r, k in rows)


def _refresh_petition_signers(since: dict[str, _Since], full: bool) -> None:
    """Recount the subscribed signers of petitions with a new signature, or a signer whose status may have moved."""
    if full:
        db.session.execute(delete(PetitionRollup))
        petitions = set(db.session.scalars(select(Petition.id)).all())
    else:
        petitions = set(db.session.scalars(select(Signature.petition_id).distinct()
                                            .where(since["signature"].new(Signature.id))).all())
        # A supporter's status changes only with a consent event (crm/supporters/consent.py).
        moved = select(ConsentEvent.supporter_id).where(since["consent"].new(ConsentEvent.id))
        petitions.update(db.session.scalars(select(Signature.petition_id).distinct()
                                            .where(Signature.supporter_id.in_(moved))).all())
        if not petitions:
            return
        db.session.execute(delete(PetitionRollup).where(PetitionRollup.petition_id.in_(petitions)))
    # ix_signature_petition_created gives each petition's signers; the supporter by primary key.
    counts = dict(db.session.execute(
        select(Signature.petition_id, func.count()).join(Supporter, Supporter.id == Signature.supporter_id)
        .where(Signature.petition_id.in_(petitions), Supporter.email_status == "subscribed")
        .group_by(Signature.petition_id)).all()) if petitions else {}
    db.session.add_all(PetitionRollup(petition_id=p, subscribed_signers=int(counts.get(p, 0))) for p in petitions)


def _refresh_consent_sources(since: _Since, full: bool) -> None:
    """Add the new consent events to the counts per action and source (all of them, when full)."""
    n = func.count()
    query = select(ConsentEvent.action, ConsentEvent.source, n).group_by(ConsentEvent.action, ConsentEvent.source)
    if full:
        db.session.execute(delete(ConsentSourceRollup))
    else:
        query = query.where(since.new(ConsentEvent.id))
    counts: dict[tuple[str, str], int] = {}
    for action, source, count in db.session.execute(query).all():
        key = (action, source or "")
        counts[key] = counts.get(key, 0) + int(count)
    for (action, source), count in counts.items():
        row = None if full else db.session.get(ConsentSourceRollup, (action, source))
        if row is None:
            db.session.add(ConsentSourceRollup(action=action, source=source, events=count))
        else:
            row.events += count
