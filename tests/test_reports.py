"""Report pages and their roll-ups: what an analyst reads, how fresh it is, and that it matches the facts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from crm.extensions import db
from crm.models import CampaignRollup, ConsentEvent, DailyRollup, EngagementEvent, PetitionDayRollup, RollupState
from crm.supporters.consent import record_consent
from reports import rollups, service
from tests import factories

STARTED = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def event(message, kind: str, at: datetime, url: str = "", machine: bool = False) -> EngagementEvent:
    """An engagement event, and the machine flag on its message as the tracking flush sets it."""
    row = EngagementEvent(message_id=message.id, supporter_id=message.supporter_id, campaign_id=message.campaign_id,
                          kind=kind, url=url, created_at=at, is_machine=machine)
    db.session.add(row)
    if machine and kind == "open":
        message.opened_by_machine = True
    elif machine and kind == "click":
        message.clicked_by_machine = True
    return row


def sent_campaign(n: int = 4, **overrides):
    """A sent campaign with `n` messages to subscribed supporters (signers of a petition, in GB)."""
    petition = factories.make_petition(title="Fair asylum")
    campaign = factories.make_campaign(status="sent", started_at=STARTED, finished_at=STARTED + timedelta(minutes=5),
                                       track_opens=True, track_clicks=True, **overrides)
    messages = []
    for i in range(n):
        supporter = factories.make_supporter(country="GB" if i % 2 == 0 else "FR")
        factories.make_signature(petition, supporter)
        messages.append(factories.make_message(campaign, supporter, sent_at=STARTED + timedelta(minutes=1)))
    return campaign, petition, messages


def test_analyst_reads_a_campaign_report_with_charts_and_clicks_per_link(app, client_as):
    """Counts, the 72-hour chart, clicks per link and the breakdowns, from the refreshed roll-ups."""
    campaign, petition, (m1, m2, m3, m4) = sent_campaign()
    event(m1, "open", STARTED + timedelta(hours=1))
    event(m1, "open", STARTED + timedelta(hours=2))
    event(m2, "open", STARTED + timedelta(minutes=90), machine=True)  # an image proxy
    event(m1, "click", STARTED + timedelta(hours=1, minutes=5), url="https://example.org/act?a=1&b=<2>")
    event(m3, "click", STARTED + timedelta(hours=3), url="https://example.org/act?a=1&b=<2>")
    event(m3, "click", STARTED + timedelta(hours=3), url="https://example.org/donate")
    m4.bounced_at, m4.bounce_type = STARTED + timedelta(minutes=2), "hard"
    record_consent(supporter_of(m3), "opt_out", "unsubscribe_link", campaign_id=campaign.id)
    db.session.commit()
    rollups.refresh()

    page = client_as("analyst").get(f"/reports/campaigns/{campaign.id}").text
    assert "Figures as of" in page and "s ago" in page
    figures = dict(re.findall(r'data-figure="(\w+)"><th scope="row">[^<]*</th>\s*<td>([\d,]+)</td>', page))
    assert figures["recipients"] == "4" and figures["sent"] == "4" and figures["bounced_hard"] == "1"
    assert figures["opens_unique_human"] == "1" and figures["opens_unique"] == "2" and figures["opens_total"] == "3"
    assert figures["clicks_unique_human"] == "2" and figures["clicks_total"] == "3" and figures["unsubscribes"] == "1"
    assert page.count("<svg") >= 4 and 'id="chart-hours"' in page and 'id="chart-links"' in page
    links = page[page.index('id="campaign-links"'):]
    # The URL is escaped, never markup; two clicks on it by two messages.
    assert "<code>https://example.org/act?a=1&amp;b=&lt;2&gt;</code></td><td>2</td><td>2</td><td>2</td>" in links
    assert "<code>https://example.org/donate</code></td><td>1</td>" in links
    by_petition = page[page.index('id="by-petition"'):]
    assert "Fair asylum</td><td>4</td>" in by_petition
    by_country = page[page.index('id="by-country"'):]
    assert "United Kingdom" in by_country and "France" in by_country


def supporter_of(message):
    from crm.models import Supporter

    return db.session.get(Supporter, message.supporter_id)


def test_figures_whose_data_is_not_recorded_say_so_instead_of_zero(app, client_as):
    """Opens of a campaign sent with open tracking off read "tracking off"; its clicks, tracked, are counted."""
    campaign, _, _ = sent_campaign(2, name="No tracking")
    campaign.track_opens = False
    db.session.commit()
    rollups.refresh()
    page = client_as("analyst").get(f"/reports/campaigns/{campaign.id}").text
    opens = page[page.index('data-figure="opens_unique_human"'):]
    assert opens.split("</tr>")[0].count("tracking off") == 1
    clicks = page[page.index('data-figure="clicks_unique_human"'):]
    assert "tracking off" not in clicks.split("</tr>")[0] and "<td>0</td>" in clicks.split("</tr>")[0]


def test_pages_say_when_the_figures_were_never_computed(app, client_as):
    """Before the first refresh the pages say so rather than show zeros as facts."""
    campaign, petition, _ = sent_campaign(1)
    client = client_as("analyst")
    assert "have not been computed yet" in client.get("/reports/").text
    page = client.get(f"/reports/campaigns/{campaign.id}").text
    assert 'id="not-computed"' in page and 'data-figure="sent"' not in page
    assert client.get(f"/reports/campaigns/{campaign.id + 1000}").status_code == 404


def test_dashboard_shows_growth_signatures_latest_campaigns_and_sending_now(app, client_as):
    """Subscribed now, net growth by week, signatures by day, the latest campaigns and those sending."""
    sent_campaign(2, name="Finished one")
    leaver = factories.make_supporter()
    record_consent(leaver, "opt_out", "unsubscribe_link")
    factories.make_campaign(name="Going out", status="sending", started_at=datetime.now(UTC))
    db.session.commit()
    rollups.refresh()
    page = client_as("analyst").get("/reports/").text
    subscribed = db.session.scalar(db.select(db.func.count()).select_from(type(leaver))
                                   .where(type(leaver).email_status == "subscribed"))
    assert f'<strong id="subscribed-now">{subscribed}</strong>' in page
    for chart in ("chart-subscribed", "chart-growth", "chart-signatures"):
        assert f'id="{chart}"' in page
    growth = page[page.index('id="chart-growth"'):page.index('id="chart-signatures"')]
    week = (datetime.now(UTC).date() - timedelta(days=datetime.now(UTC).weekday())).isoformat()
    row = growth[growth.index(f'<th scope="row">{week}</th>'):].split("</tr>")[0]
    assert re.findall(r"<td>([\d,]+)</td>", row) == ["3", "1", "0", "0"]  # opt-ins, unsubscribes, bounces, complaints
    latest = page[page.index('id="latest-campaigns"'):]
    assert "Finished one" in latest
    assert "Going out" in page[page.index('id="sending-now"'):]


def test_petition_report_shows_days_new_and_existing_opt_in_rate_and_sources(app, client, client_as):
    """Signatures through the public form record utm parameters and the referring host; the report reads them."""
    petition = factories.make_petition(title="Clean rivers")
    known = factories.make_supporter(email="known@example.org")
    page_url = f"https://crm.example.org/p/{petition.slug}?utm_source=newsletter&utm_medium=email&utm_campaign=dec"
    for n, email in enumerate(("new1@example.org", "new2@example.org", "known@example.org")):
        response = client.post(f"/p/{petition.slug}/sign", data={"email": email, "first_name": f"N{n}"},
                               headers={"Referer": page_url})
        assert response.status_code == 200, response.text
    # The organisation's own copy of the form, on its own site, posting its own utm fields.
    response = client.post(f"/p/{petition.slug}/sign", data={"email": "site@example.org", "first_name": "S",
                                                              "utm_source": "website"},
                           headers={"Referer": "https://www.example.org/act\x00now"})
    assert response.status_code == 200
    factories.make_signature(petition, factories.make_supporter(), source="import:3")
    assert known.id
    rollups.refresh()
    page = client_as("analyst").get(f"/reports/petitions/{petition.id}").text
    totals = page[page.index('id="petition-totals"'):]
    assert "<dt>Signatures</dt><dd>5</dd>" in totals
    assert "<dt>New supporters</dt><dd>3 " in totals  # new1, new2, site; known and the import's were not
    assert 'id="opt-in-rate">100.0% <small class="muted">(4 of 4 form signatures' in page
    sources = page[page.index('id="petition-sources"'):]
    assert "<td>newsletter</td><td>email</td><td>dec</td><td>—</td><td>3</td>" in sources
    assert "<td>website</td><td>—</td><td>—</td><td>www.example.org</td><td>1</td>" in sources
    assert 'id="chart-per-day"' in page


def test_petition_report_lists_what_signers_did_with_later_campaigns(app, client_as):
    """The breakdown by petition, seen from the petition: its signers' sends, opens, unsubscribes."""
    campaign, petition, messages = sent_campaign(3, name="December update")
    event(messages[0], "open", STARTED + timedelta(hours=1))
    db.session.commit()
    rollups.refresh()
    page = client_as("analyst").get(f"/reports/petitions/{petition.id}").text
    later = re.sub(r">\s+<", "><", page[page.index('id="petition-later"'):])
    assert "December update</a></td><td>3</td><td>1 " in later


# -- the refresh against the facts --------------------------------------------------------------------

def counted_directly(campaign_id: int) -> dict[str, int]:
    """The campaign's figures counted from the facts in Python, as a second opinion on the SQL."""
    from crm.models import Message

    messages = db.session.scalars(db.select(Message).where(Message.campaign_id == campaign_id)).all()
    events = db.session.scalars(db.select(EngagementEvent).where(EngagementEvent.campaign_id == campaign_id)).all()
    unsubs = db.session.scalars(db.select(ConsentEvent).where(ConsentEvent.campaign_id == campaign_id,
                                                              ConsentEvent.action == "opt_out")).all()

    def ev(kind, human_only):
        found = [e for e in events if e.kind == kind and (not human_only or not e.is_machine)]
        return len(found), len({e.message_id for e in found})

    figures = {"recipients": len(messages), "sent": sum(m.status == "sent" for m in messages),
               "failed": sum(m.status in ("failed", "bounced") for m in messages),
               "bounced_hard": sum(m.bounce_type == "hard" for m in messages),
               "bounced_soft": sum(m.bounce_type == "soft" for m in messages),
               "complaints": sum(m.complained_at is not None for m in messages),
               "unsubscribes": len({u.supporter_id for u in unsubs})}
    for kind, prefix in (("open", "opens"), ("click", "clicks")):
        figures[f"{prefix}_total"], figures[f"{prefix}_unique"] = ev(kind, False)
        figures[f"{prefix}_total_human"], figures[f"{prefix}_unique_human"] = ev(kind, True)
    return figures


def rolled_up(campaign_id: int) -> dict[str, int]:
    db.session.expire_all()
    row = db.session.get(CampaignRollup, campaign_id)
    return {name: getattr(row, name) for name in counted_directly(campaign_id)}


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

facts = st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["open", "click"]), st.booleans(),
                           st.integers(0, 80 * 60), st.sampled_from(["https://a.example/", "https://b.example/x"])),
                 max_size=25)
statuses = st.lists(st.tuples(st.sampled_from(["sent", "sent", "failed", "unknown"]),
                              st.sampled_from([None, "hard", "soft"]), st.booleans(), st.booleans()),
                    min_size=1, max_size=6)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=facts, later=facts, messages=statuses)
def test_incremental_refresh_matches_the_facts_counted_directly(app, first, later, messages):
    """Whatever the messages and events, two incremental refreshes give what counting the facts gives."""
    from crm.models import Campaign, Message, Supporter

    campaign = factories.make_campaign(status="sent", started_at=STARTED, track_opens=True, track_clicks=True)
    rows = []
    for status, bounce, complained, unsubscribed in messages:
        supporter = factories.make_supporter()
        rows.append(factories.make_message(campaign, supporter, status=status, bounce_type=bounce,
                                           bounced_at=STARTED if bounce else None,
                                           complained_at=STARTED if complained else None))
        if unsubscribed:
            record_consent(supporter, "opt_out", "unsubscribe_link", campaign_id=campaign.id)

    def add(batch):
        for index, kind, machine, minutes, url in batch:
            event(rows[index % len(rows)], kind, STARTED + timedelta(minutes=minutes), url=url, machine=machine)
        db.session.commit()

    try:
        add(first)
        rollups.refresh()
        assert rolled_up(campaign.id) == counted_directly(campaign.id)
        add(later)
        rollups.refresh()  # incremental: only what changed since the first
        assert rolled_up(campaign.id) == counted_directly(campaign.id)
        hours = {h.hour: h for h in db.session.scalars(db.select(rollups.CampaignHourRollup).where(
            rollups.CampaignHourRollup.campaign_id == campaign.id))}
        for *_, minutes, _url in first + later:
            if minutes < 72 * 60:
                assert minutes // 60 in hours
        assert sum(h.opens + h.clicks for h in hours.values()) == sum(
            1 for _, _, _, minutes, _ in first + later if minutes < 72 * 60)
    finally:
        for model in (EngagementEvent, ConsentEvent, Message, rollups.CampaignHourRollup, rollups.CampaignLinkRollup,
                      rollups.CampaignBreakdownRollup, CampaignRollup, DailyRollup, RollupState, Campaign):
            db.session.execute(db.delete(model))
        db.session.execute(db.text("DELETE FROM supporter_tag"))
        db.session.execute(db.delete(Supporter))
        db.session.commit()


def test_daily_growth_counts_changes_of_status_not_repeated_opt_ins(app):
    """A second opt-in by a subscribed supporter is not growth; an unsubscribe, a bounce and a complaint are losses."""
    a, b, c = factories.make_supporter(), factories.make_supporter(), factories.make_supporter()
    record_consent(a, "opt_in", "petition:second")  # already subscribed: no change
    record_consent(b, "opt_out", "unsubscribe_link")
    record_consent(c, "bounce", "bounce:ses")
    record_consent(b, "opt_out", "unsubscribe_link")  # already out: no second loss
    db.session.commit()
    rollups.refresh()
    (row,) = db.session.scalars(db.select(DailyRollup)).all()
    assert (row.gained, row.unsubscribes, row.bounces, row.complaints) == (3, 1, 1, 0)
    d = factories.make_supporter()
    record_consent(d, "complaint", "complaint:ses")
    db.session.commit()
    rollups.refresh()  # incremental: today's row recomputed
    db.session.expire_all()
    (row,) = [r for r in db.session.scalars(db.select(DailyRollup)) if r.gained or r.unsubscribes]
    assert (row.gained, row.unsubscribes, row.bounces, row.complaints) == (4, 1, 1, 1)
    assert db.session.get(RollupState, "reports").subscribed_now == 1


def test_petition_days_follow_an_import_of_old_signatures(app):
    """Signatures dated in the past (an import) are counted on their own day by the next incremental refresh."""
    petition = factories.make_petition()
    factories.make_signature(petition, factories.make_supporter())
    rollups.refresh()
    old = datetime(2025, 3, 1, 12, tzinfo=UTC)
    factories.make_signature(petition, factories.make_supporter(), created_at=old, source="import:9")
    rollups.refresh()
    days = {r.day.isoformat(): r.signatures for r in db.session.scalars(db.select(PetitionDayRollup))}
    assert days["2025-03-01"] == 1 and sum(days.values()) == 2


def test_the_worker_refreshes_the_roll_ups_as_a_periodic_task(app):
    """A real worker's periodic task brings the roll-ups up to date."""
    campaign, _, _ = sent_campaign(2)
    assert db.session.get(CampaignRollup, campaign.id) is None
    factories.drain(app)
    db.session.expire_all()
    assert db.session.get(CampaignRollup, campaign.id).sent == 2
    assert db.session.get(RollupState, "reports").refreshed_at is not None


def test_cli_refresh(app, runner):
    """`crm reports refresh --full` recomputes and says what it did."""
    sent_campaign(1)
    result = runner.invoke(args=["reports", "refresh", "--full"])
    assert result.exit_code == 0 and "Refreshed 1 campaigns" in result.output and "(full)" in result.output


def test_incremental_refresh_recomputes_only_the_campaign_that_changed(app):
    """A new open on one campaign recomputes that campaign alone, however many older facts the others have."""
    quiet, _, quiet_messages = sent_campaign(2)
    busy, _, busy_messages = sent_campaign(2)
    for m in quiet_messages:
        event(m, "open", STARTED + timedelta(hours=1))
        record_consent(supporter_of(m), "opt_out", "unsubscribe_link", campaign_id=quiet.id)
    db.session.commit()
    assert set(rollups.refresh().campaigns) == {quiet.id, busy.id}  # the first refresh is full
    assert rollups.refresh().campaigns == []  # nothing new
    event(busy_messages[0], "click", STARTED + timedelta(hours=2), url="https://example.org/")
    db.session.commit()
    assert rollups.refresh().campaigns == [busy.id]
    assert db.session.get(CampaignRollup, busy.id).clicks_total == 1


def test_a_fact_committed_after_the_refresh_read_past_its_id_is_still_counted(app):
    """An id below the cursor that had no row at the last refresh (a transaction still open) is read by the next."""
    campaign, _, messages = sent_campaign(1)
    late = event(messages[0], "open", STARTED + timedelta(hours=1))
    event(messages[0], "open", STARTED + timedelta(hours=2))
    db.session.commit()
    late_id = late.id
    db.session.delete(late)  # as if its transaction had not committed yet
    db.session.commit()
    rollups.refresh()
    assert db.session.get(CampaignRollup, campaign.id).opens_total == 1
    assert late_id in db.session.get(RollupState, "reports").unseen_ids["engagement"]
    db.session.add(EngagementEvent(id=late_id, message_id=messages[0].id, supporter_id=messages[0].supporter_id,
                                   campaign_id=campaign.id, kind="open", url="", created_at=STARTED))
    db.session.commit()  # ...and now it commits, below the cursor
    assert rollups.refresh().campaigns == [campaign.id]
    db.session.expire_all()
    assert db.session.get(CampaignRollup, campaign.id).opens_total == 2
    assert late_id not in db.session.get(RollupState, "reports").unseen_ids["engagement"]


def test_petitions_table_reads_roll_ups_that_follow_unsubscribes_and_new_consent(app, client_as):
    """Subscribed signers and consent events per source move with the next refresh; the page says how fresh."""
    petition = factories.make_petition(title="Counted")
    signers = [factories.make_supporter() for _ in range(4)]
    for s in signers:
        factories.make_signature(petition, s)
    rollups.refresh()
    figures = {p["id"]: p["figures"] for p in service.petitions_overview()}
    assert (figures[petition.id].signatures, figures[petition.id].subscribed_now) == (4, 4)
    record_consent(signers[0], "opt_out", "unsubscribe_link")
    db.session.commit()
    rollups.refresh()
    figures = {p["id"]: p["figures"] for p in service.petitions_overview()}
    assert figures[petition.id].subscribed_now == 3
    sources = {(a, s): n for a, s, n in service.consent_sources()}
    assert sources[("opt_in", "test")] == 4 and sources[("opt_out", "unsubscribe_link")] == 1
    rollups.refresh()  # nothing new: nothing counted twice
    assert {(a, s): n for a, s, n in service.consent_sources()} == sources
    page = client_as("analyst").get("/reports/petitions").text
    assert "Figures as of" in page and "75%" in page
