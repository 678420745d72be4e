"""What each report page shows, read from the roll-ups (reports/rollups.py) and a few small tables.

Every function here reads rows keyed by one campaign, one petition or a span of days: none
counts messages, events or signatures, so a page costs the same at a million supporters as at
a hundred. The one live figure is the progress of campaigns sending now (a grouped count over
ix_message_campaign_status_id per sending campaign, as the campaign page does).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from flask import current_app
from sqlalchemy import func, select

from crm.extensions import db
from crm.models import (
    Campaign,
    CampaignBreakdownRollup,
    CampaignHourRollup,
    CampaignLinkRollup,
    CampaignRollup,
    ConsentSourceRollup,
    DailyRollup,
    Petition,
    PetitionDayRollup,
    PetitionRollup,
    PetitionSourceRollup,
    utcnow,
)
from crm.petitions.service import NO_SIGNATURES, ConsentFigures
from reports import charts, rollups
from reports.charts import Series

WEEKS = 52
SIGNATURE_DAYS = 90
COMPARE_WITH = 10
LATEST = 5


# -- freshness and data sources ------------------------------------------------------------------

@dataclass(frozen=True)
class Freshness:
    refreshed_at: datetime | None
    age_seconds: int | None
    interval_seconds: int

    @property
    def never(self) -> bool:
        return self.refreshed_at is None


def freshness() -> Freshness:
    """When the roll-ups were last refreshed and how long ago."""
    state = rollups.state()
    interval = int(float(current_app.config.get("REPORTS_REFRESH_SECONDS", 60)))
    if state is None or state.refreshed_at is None:
        return Freshness(None, None, interval)
    at = state.refreshed_at if state.refreshed_at.tzinfo else state.refreshed_at.replace(tzinfo=UTC)
    return Freshness(at, max(0, int((utcnow() - at).total_seconds())), interval)


def engagement_note(campaign: Campaign, kind: str) -> str | None:
    """Why a campaign's opens (or clicks) cannot be shown as a number, or None when they can."""
    on = campaign.track_opens if kind == "open" else campaign.track_clicks
    return None if on else "tracking off"


def rate(count: int, base: int) -> float | None:
    return count / base if base else None


# -- dashboard ----------------------------------------------------------------------------------

def _week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def growth_by_week(today: date | None = None) -> dict:
    """Week by week over the last year: gains, losses by cause, and the subscribed count at each week's end."""
    state = rollups.state()
    today = today or utcnow().date()
    first = _week_start(today) - timedelta(weeks=WEEKS - 1)
    weeks = [first + timedelta(weeks=i) for i in range(WEEKS)]
    sums = {w: {"gained": 0, "unsubscribes": 0, "bounces": 0, "complaints": 0} for w in weeks}
    for row in db.session.scalars(select(DailyRollup).where(DailyRollup.day >= first)):
        bucket = sums.get(_week_start(row.day))
        if bucket is not None:
            for name in bucket:
                bucket[name] += getattr(row, name)
    # The subscribed count at the end of week w: today's, less the net growth of every later week.
    subscribed = state.subscribed_now if state else 0
    at_end: dict[date, int] = {}
    for w in reversed(weeks):
        at_end[w] = subscribed
        s = sums[w]
        subscribed -= s["gained"] - s["unsubscribes"] - s["bounces"] - s["complaints"]
    labels = [w.isoformat() for w in weeks]
    return {
        "subscribed_now": state.subscribed_now if state else 0,
        "subscribed_chart": charts.plot("Subscribed supporters at the end of each week", "line", labels,
                                        [Series("Subscribed", [at_end[w] for w in weeks], "s1")]),
        "growth_chart": charts.plot("Net growth per week", "stacked", labels, [
            Series("Opt-ins", [sums[w]["gained"] for w in weeks], "gain"),
            Series("Unsubscribes", [sums[w]["unsubscribes"] for w in weeks], "unsub", negative=True),
            Series("Bounces", [sums[w]["bounces"] for w in weeks], "bounce", negative=True),
            Series("Complaints", [sums[w]["complaints"] for w in weeks], "complaint", negative=True)]),
    }


def signatures_by_day(today: date | None = None, days: int = SIGNATURE_DAYS) -> charts.Chart:
    """Signatures per day across every petition over the last `days` days."""
    today = today or utcnow().date()
    first = today - timedelta(days=days - 1)
    counts = dict(db.session.execute(
        select(PetitionDayRollup.day, func.sum(PetitionDayRollup.signatures))
        .where(PetitionDayRollup.day >= first).group_by(PetitionDayRollup.day)).all())
    span = [first + timedelta(days=i) for i in range(days)]
    return charts.plot(f"Signatures per day, last {days} days", "bars", [d.isoformat() for d in span],
                       [Series("Signatures", [int(counts.get(d, 0)) for d in span], "s1")])


@dataclass
class CampaignFigures:
    campaign: Campaign
    rollup: CampaignRollup | None

    def _n(self, name: str) -> int:
        return getattr(self.rollup, name) if self.rollup else 0

    @property
    def sent(self) -> int:
        return self._n("sent")

    def rate(self, name: str) -> float | None:
        return rate(self._n(name), self.sent)

    def note(self, kind: str) -> str | None:
        return engagement_note(self.campaign, kind)


def latest_campaigns(limit: int = LATEST, before: Campaign | None = None) -> list[CampaignFigures]:
    """The newest started campaigns (before `before`, if given) with their roll-ups, newest first."""
    query = (select(Campaign, CampaignRollup).outerjoin(CampaignRollup, CampaignRollup.campaign_id == Campaign.id)
             .where(Campaign.started_at.is_not(None)))
    if before is not None and before.started_at is not None:
        query = query.where(Campaign.started_at <= before.started_at, Campaign.id != before.id)
    rows = db.session.execute(query.order_by(Campaign.started_at.desc(), Campaign.id.desc()).limit(limit)).all()
    return [CampaignFigures(c, r) for c, r in rows]


def sending_now() -> list[tuple[Campaign, object]]:
    """Campaigns sending or paused now, with their live progress."""
    from campaigns import lifecycle

    active = db.session.scalars(select(Campaign).where(Campaign.status.in_(("sending", "paused")))
                                .order_by(Campaign.started_at)).all()
    return [(c, lifecycle.progress(c)) for c in active]


def dashboard() -> dict:
    """Everything the reports dashboard shows."""
    return {"growth": growth_by_week(), "signatures": signatures_by_day(), "latest": latest_campaigns(),
            "sending": sending_now(), "fresh": freshness()}


# -- campaign report ----------------------------------------------------------------------------

FIGURES = (
    # (label, roll-up column, rate base: "recipients" or "sent", engagement kind or None)
    ("Recipients", "recipients", None, None),
    ("Sent", "sent", "recipients", None),
    ("Failed", "failed", "recipients", None),
    ("Unknown (worker lost mid-send)", "unknown", "recipients", None),
    ("Skipped (consent changed)", "suppressed", "recipients", None),
    ("Hard bounces", "bounced_hard", "sent", None),
    ("Soft bounces", "bounced_soft", "sent", None),
    ("Spam complaints", "complaints", "sent", None),
    ("Unsubscribes", "unsubscribes", "sent", None),
    ("Unique opens (people)", "opens_unique_human", "sent", "open"),
    ("Unique opens (all, with machines)", "opens_unique", "sent", "open"),
    ("Total opens (people)", "opens_total_human", "sent", "open"),
    ("Total opens (all)", "opens_total", "sent", "open"),
    ("Unique clicks (people)", "clicks_unique_human", "sent", "click"),
    ("Unique clicks (all, with scanners)", "clicks_unique", "sent", "click"),
    ("Total clicks (people)", "clicks_total_human", "sent", "click"),
    ("Total clicks (all)", "clicks_total", "sent", "click"),
)


def campaign_figures(campaign: Campaign, rollup: CampaignRollup | None) -> list[dict]:
    """The campaign's counts, each with its rate, or the reason it cannot be shown."""
    out = []
    for label, column, base, kind in FIGURES:
        note = engagement_note(campaign, kind) if kind else None
        count = getattr(rollup, column) if rollup else 0
        base_n = getattr(rollup, base) if (rollup and base) else 0
        out.append({"label": label, "column": column, "count": count, "note": note,
                    "rate": rate(count, base_n) if base else None, "base": base})
    return out


def _hours_chart(campaign_id: int) -> charts.Chart:
    rows = {r.hour: r for r in db.session.scalars(
        select(CampaignHourRollup).where(CampaignHourRollup.campaign_id == campaign_id))}
    hours = list(range(rollups.FIRST_HOURS))

    def col(name):
        return [getattr(rows[h], name) if h in rows else 0 for h in hours]

    chart = charts.plot("Opens and clicks per hour over the first 72 hours", "line", [f"{h}h" for h in hours], [
        Series("Opens", col("opens"), "s1"), Series("Opens (people)", col("opens_human"), "s2"),
        Series("Clicks", col("clicks"), "s3"), Series("Clicks (people)", col("clicks_human"), "s4")])
    chart.skip_zero_rows = True
    return chart


def _breakdown(campaign_id: int, dimension: str) -> list[dict]:
    rows = db.session.scalars(select(CampaignBreakdownRollup).where(
        CampaignBreakdownRollup.campaign_id == campaign_id, CampaignBreakdownRollup.dimension == dimension)
        .order_by(CampaignBreakdownRollup.recipients.desc(), CampaignBreakdownRollup.key)).all()
    names: dict[str, str] = {}
    if dimension == "petition":
        ids = [int(r.key) for r in rows if r.key.isdigit()]
        names = {str(i): t for i, t in db.session.execute(
            select(Petition.id, Petition.title).where(Petition.id.in_(ids))).all()} if ids else {}
    else:
        from crm.countries import country_name

        names = {r.key: (country_name(r.key) if r.key else "Not given") for r in rows}
    return [{"key": r.key, "label": names.get(r.key, r.key), "sent": r.recipients, "opened": r.opened,
             "clicked": r.clicked, "unsubscribed": r.unsubscribed, "open_rate": rate(r.opened, r.recipients),
             "click_rate": rate(r.clicked, r.recipients)} for r in rows]


def campaign_report(campaign: Campaign) -> dict:
    """Everything the campaign report shows."""
    rollup = db.session.get(CampaignRollup, campaign.id)
    links = db.session.scalars(select(CampaignLinkRollup).where(CampaignLinkRollup.campaign_id == campaign.id)
                               .order_by(CampaignLinkRollup.clicks.desc(), CampaignLinkRollup.url)).all()
    by_petition, by_country = _breakdown(campaign.id, "petition"), _breakdown(campaign.id, "country")
    compared = [CampaignFigures(campaign, rollup)] + latest_campaigns(COMPARE_WITH, before=campaign)
    compared.reverse()  # oldest on the left
    compare_chart = charts.plot(
        "Unique open, click and unsubscribe rates (people), this campaign and the ones before it", "bars",
        [f.campaign.name for f in compared],
        [Series("Open rate %", [round((f.rate("opens_unique_human") or 0) * 100, 2) for f in compared], "s1"),
         Series("Click rate %", [round((f.rate("clicks_unique_human") or 0) * 100, 2) for f in compared], "s3"),
         Series("Unsubscribe rate %", [round((f.rate("unsubscribes") or 0) * 100, 2) for f in compared], "unsub")])
    return {
        "campaign": campaign, "rollup": rollup, "figures": campaign_figures(campaign, rollup),
        "open_note": engagement_note(campaign, "open"), "click_note": engagement_note(campaign, "click"),
        "hours": _hours_chart(campaign.id), "links": links,
        "links_chart": charts.hbars("Clicks per link", [lk.url for lk in links], [lk.clicks for lk in links],
                                    "Clicks"),
        "by_petition": by_petition, "by_country": by_country,
        "country_chart": charts.hbars("Sent by country", [r["label"] for r in by_country[:20]],
                                      [r["sent"] for r in by_country[:20]], "Sent"),
        "compared": compared, "compare_chart": compare_chart, "fresh": freshness(), "ab": ab_report(campaign),
    }


def ab_report(campaign: Campaign) -> dict | None:
    """The campaign's A/B test: each variant's rate with its Wilson 95% interval, and the verdict.

    Counted live over the test group (the messages carrying a variant, by the campaign's slice
    of ix_message_campaign_status_id, and their events): a test group is a share of one
    campaign, and the figures matter most while the test runs."""
    from campaigns import variants

    test = variants.test_for(campaign.id)
    if test is None:
        return None
    found = variants.results(campaign.id, test.metric)
    winner, significant, why = variants.verdict(found) if len(found) >= 2 else (None, False, "")
    return {"test": test, "results": found, "leader": winner, "significant": significant, "why": why,
            "note": engagement_note(campaign, "open" if test.metric == "opens" else "click")}


# -- petition report ----------------------------------------------------------------------------

def petition_report(petition: Petition) -> dict:
    """Everything the petition report shows."""
    days = db.session.scalars(select(PetitionDayRollup).where(PetitionDayRollup.petition_id == petition.id)
                              .order_by(PetitionDayRollup.day)).all()
    totals = {name: sum(getattr(d, name) for d in days)
              for name in ("signatures", "new_supporters", "form_signatures", "opted_in")}
    totals["existing"] = totals["signatures"] - totals["new_supporters"]
    shown = days[-SIGNATURE_DAYS:]
    if shown:
        first, last = shown[0].day, shown[-1].day
        span = [first + timedelta(days=i) for i in range((last - first).days + 1)][-SIGNATURE_DAYS:]
    else:
        span = []
    by_day = {d.day: d for d in shown}
    labels = [d.isoformat() for d in span]
    per_day = charts.plot("Signatures per day", "stacked", labels, [
        Series("New supporters", [by_day[d].new_supporters if d in by_day else 0 for d in span], "gain"),
        Series("Existing supporters", [(by_day[d].signatures - by_day[d].new_supporters) if d in by_day else 0
                                       for d in span], "s3")])
    sources = db.session.scalars(select(PetitionSourceRollup).where(PetitionSourceRollup.petition_id == petition.id)
                                 .order_by(PetitionSourceRollup.signatures.desc())).all()
    later = db.session.execute(
        select(Campaign, CampaignBreakdownRollup)
        .join(CampaignBreakdownRollup, CampaignBreakdownRollup.campaign_id == Campaign.id)
        .where(CampaignBreakdownRollup.dimension == "petition", CampaignBreakdownRollup.key == str(petition.id))
        .order_by(Campaign.started_at.desc()).limit(20)).all()
    later_rows = [{"campaign": c, "sent": b.recipients, "opened": b.opened, "clicked": b.clicked,
                   "unsubscribed": b.unsubscribed, "open_note": engagement_note(c, "open"),
                   "click_note": engagement_note(c, "click")} for c, b in later]
    def label(s) -> str:
        parts = [p for p in (s.utm_source, s.utm_medium, s.utm_campaign) if p]
        return " / ".join(parts) or (s.referrer_host and f"from {s.referrer_host}") or "direct or unknown"

    return {
        "petition": petition, "totals": totals, "opt_in_rate": rate(totals["opted_in"], totals["form_signatures"]),
        "per_day": per_day, "days": shown, "sources": sources,
        "sources_chart": charts.hbars("Signatures by source", [label(s) for s in sources[:20]],
                                      [s.signatures for s in sources[:20]], "Signatures"),
        "later": later_rows, "fresh": freshness(),
    }


def petitions_overview() -> list[dict]:
    """Per petition: signatures, the opt-in rate at signing, and the share of signers subscribed now.

    From the roll-ups: one grouped pass over petition_day_rollup (a row per petition and day)
    and the subscribed-signer count per petition. Counted live over 2,000,000 signatures the
    page took 1.9 s."""
    days = {r.petition_id: r for r in db.session.execute(
        select(PetitionDayRollup.petition_id, func.sum(PetitionDayRollup.signatures).label("signatures"),
               func.sum(PetitionDayRollup.form_signatures).label("form"),
               func.sum(PetitionDayRollup.opted_in).label("opted_in"))
        .group_by(PetitionDayRollup.petition_id)).all()}
    subscribed = dict(db.session.execute(select(PetitionRollup.petition_id, PetitionRollup.subscribed_signers)).all())
    rows = db.session.execute(select(Petition.id, Petition.title, Petition.status, Petition.goal)
                              .order_by(Petition.id)).all()
    out = []
    for r in rows:
        d = days.get(r.id)
        figures = (ConsentFigures(int(d.signatures or 0), int(subscribed.get(r.id, 0)), int(d.form or 0),
                                  int(d.opted_in or 0)) if d else NO_SIGNATURES)
        out.append({"id": r.id, "title": r.title, "status": r.status, "goal": r.goal, "figures": figures})
    return out


def consent_sources() -> list[tuple[str, str, int]]:
    """Consent events by action and source: how people joined and left (from the roll-up)."""
    return [(r.action, r.source, r.events) for r in db.session.scalars(
        select(ConsentSourceRollup).order_by(ConsentSourceRollup.events.desc(), ConsentSourceRollup.action,
                                             ConsentSourceRollup.source).limit(50))]
