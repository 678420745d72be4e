"""Engagement exports: typed Parquet that pandas reads, formula-safe CSV, XLSX, permissions, audit, worker jobs."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from openpyxl import load_workbook

from crm.extensions import db
from crm.models import AuditLog, ExportJob, Segment
from crm.supporters.consent import record_consent
from tests import factories
from tests.test_reports import STARTED, event, sent_campaign, supporter_of


def read_csv(response) -> list[dict]:
    assert response.data.startswith("\ufeff".encode())  # Excel reads UTF-8 only with the BOM
    return list(csv.DictReader(io.StringIO(response.data.decode("utf-8-sig"))))


def export(client, **fields):
    data = {"kind": "engagement", "format": "csv", **fields}
    return client.post("/reports/exports", data=data)


def engagement_world():
    campaign, petition, messages = sent_campaign(3, name="Autumn update")
    other = factories.make_petition(slug="second-one")
    factories.make_signature(other, supporter_of(messages[0]))
    event(messages[0], "open", STARTED + timedelta(hours=1))
    event(messages[1], "open", STARTED + timedelta(hours=1), machine=True)
    event(messages[0], "click", STARTED + timedelta(hours=2), url="https://example.org/a")
    messages[0].opened_at = STARTED + timedelta(hours=1)
    messages[0].clicked_at = STARTED + timedelta(hours=2)
    messages[2].bounced_at, messages[2].bounce_type = STARTED + timedelta(minutes=3), "soft"
    record_consent(supporter_of(messages[1]), "opt_out", "unsubscribe_link", campaign_id=campaign.id)
    db.session.commit()
    return campaign, petition, other, messages


def test_analyst_downloads_a_parquet_export_that_pandas_reads_with_types(app, client_as):
    """One row per message; ids int64, times UTC timestamps, flags booleans, petitions lists; audit-logged."""
    campaign, petition, other, messages = engagement_world()
    analyst = client_as("analyst")
    response = export(analyst, format="parquet", campaigns=str(campaign.id))
    assert response.status_code == 200, response.text
    assert response.headers["Content-Disposition"].endswith('.parquet"')
    frame = pd.read_parquet(io.BytesIO(response.data))
    assert len(frame) == 3 and "email" not in frame.columns
    assert str(frame["message_id"].dtype) == "int64" and str(frame["campaign_id"].dtype) == "int64"
    assert str(frame["sent_at"].dtype).startswith("datetime64[us, UTC]")
    assert str(frame["opened_by_person"].dtype) == "bool"
    frame = frame.set_index("message_id")
    first, second, third = (frame.loc[m.id] for m in messages)
    assert first["opened_by_person"] and first["clicked_by_person"] and not first["opened_by_machine"]
    assert second["opened_by_machine"] and not second["opened_by_person"]
    assert first["first_open_at"] == pd.Timestamp(STARTED + timedelta(hours=1))
    assert pd.notna(second["unsubscribed_at"]) and pd.isna(first["unsubscribed_at"])
    assert third["bounce_type"] == "soft" and pd.notna(third["bounced_at"])
    assert sorted(first["petitions"]) == sorted([petition.slug, "second-one"])
    assert first["subject"] == campaign.subject
    entry = db.session.scalars(db.select(AuditLog).where(AuditLog.action == "reports.export_engagement")).one()
    assert entry.staff_user_id == analyst.user.id
    assert entry.details["rows"] == 3 and entry.details["format"] == "parquet"
    assert entry.details["filters"]["campaign_ids"] == [campaign.id] and entry.details["with_email"] is False


def test_email_only_with_the_box_ticked(app, client_as):
    """Addresses are left out unless the exporter asks for them."""
    _, _, _, messages = engagement_world()
    client = client_as("analyst")
    assert "email" not in read_csv(export(client))[0]
    rows = read_csv(export(client, include_email="y"))
    assert {r["email"] for r in rows} == {m.email for m in messages}


def test_csv_cells_cannot_run_a_formula(app, client_as):
    """A subject or tag starting with = + - @ is neutralised with a quote, in CSV and in XLSX."""
    campaign, _, _, messages = engagement_world()
    campaign.subject = '=HYPERLINK("http://evil","x")'
    db.session.commit()
    client = client_as("analyst")
    rows = read_csv(export(client))
    assert {r["subject"] for r in rows} == {"'=HYPERLINK(\"http://evil\",\"x\")"}
    from crm.supporters import service

    service.add_tag(supporter_of(messages[0]), "@admin")
    service.add_tag(supporter_of(messages[0]), "+1")
    db.session.commit()
    summary = read_csv(export(client, kind="summary"))
    tagged = next(r for r in summary if r["tags"])
    assert tagged["tags"] in ("'+1;@admin", "'@admin;+1")  # in no particular order
    sheet = load_workbook(io.BytesIO(export(client, format="xlsx").data)).active
    header = [c.value for c in next(sheet.iter_rows(min_row=1, max_row=1))]
    subjects = {row[header.index("subject")] for row in sheet.iter_rows(min_row=2, values_only=True)}
    assert subjects == {"'=HYPERLINK(\"http://evil\",\"x\")"}


def test_supporter_summary_counts_messages_opens_clicks_and_lists(app, client_as):
    """One row per supporter mailed: messages received, opened, clicked, last engagement, status, petitions."""
    _, petition, _, messages = engagement_world()
    frame = pd.read_parquet(io.BytesIO(export(client_as("analyst"), kind="summary", format="parquet").data))
    frame = frame.set_index("supporter_id")
    first = frame.loc[messages[0].supporter_id]
    assert (first["messages_received"], first["messages_opened"], first["messages_clicked"]) == (1, 1, 1)
    assert (first["opens"], first["clicks"]) == (1, 1)
    assert first["last_engagement_at"] == pd.Timestamp(STARTED + timedelta(hours=2))
    assert frame.loc[messages[1].supporter_id]["email_status"] == "unsubscribed"
    assert petition.slug in list(first["petitions"])


def test_filters_by_date_campaign_and_segment(app, client_as):
    """Date range (UTC, inclusive), campaigns and a segment each narrow the rows."""
    campaign, _, _, messages = engagement_world()
    later = factories.make_campaign(status="sent", started_at=STARTED + timedelta(days=10))
    late = factories.make_message(later, supporter_of(messages[0]), sent_at=STARTED + timedelta(days=10))
    segment = Segment(name="GB", rules={"type": "group", "match": "all", "rules": [
        {"type": "condition", "field": "country", "op": "in", "value": ["GB"]}]})
    db.session.add(segment)
    db.session.commit()
    client = client_as("analyst")

    def ids(**fields):
        return {int(r["message_id"]) for r in read_csv(export(client, **fields))}

    assert ids() == {m.id for m in messages} | {late.id}
    day = (STARTED + timedelta(days=10)).date().isoformat()
    assert ids(since=day) == {late.id} and ids(until=STARTED.date().isoformat()) == {m.id for m in messages}
    assert ids(campaigns=str(campaign.id)) == {m.id for m in messages}
    gb = {m.id for m in messages if supporter_of(m).country == "GB"} | {late.id}
    assert ids(segment=str(segment.id)) == gb
    response = export(client, since=day, until=STARTED.date().isoformat())
    assert response.status_code == 400 and "start date is after the end date" in response.text
    assert export(client, campaigns="999999").status_code == 400


def test_large_exports_are_built_by_a_worker_for_the_requester_only(make_app, client_as):
    """Over the streaming limit: a job with a progress page, built by a real worker, for its requester only."""
    app = make_app(EXPORT_STREAM_MAX_ROWS=2)
    with app.app_context():
        engagement_world()
        from tests.factories import signed_in_client

        requester, other = signed_in_client(app, "analyst"), signed_in_client(app, "analyst")
        response = export(requester, format="parquet")
        assert response.status_code == 302
        job = db.session.scalars(db.select(ExportJob)).one()
        assert response.headers["Location"].endswith(f"/reports/exports/{job.id}")
        page = requester.get(f"/reports/exports/{job.id}").text
        assert 'http-equiv="refresh"' in page and "queued" in page
        factories.drain(app)
        db.session.expire_all()
        job = db.session.get(ExportJob, job.id)
        assert (job.status, job.rows_done, job.rows_total) == ("done", 3, 3)
        assert other.get(f"/reports/exports/{job.id}").status_code == 404
        assert other.get(f"/reports/exports/{job.id}/download").status_code == 404
        download = requester.get(f"/reports/exports/{job.id}/download")
        assert download.status_code == 200
        assert len(pd.read_parquet(io.BytesIO(download.data))) == 3
        download.close()
        actions = db.session.scalars(db.select(AuditLog.action).where(
            AuditLog.action == "reports.export_engagement")).all()
        assert len(actions) == 2  # built, then downloaded
        from reports.exports import expire_old

        assert expire_old(now=datetime.now(UTC) + timedelta(days=8)) == 1
        assert requester.get(f"/reports/exports/{job.id}/download").status_code == 404


def test_cli_export_writes_parquet(app, runner, tmp_path):
    """`crm reports export engagement --campaign N --format parquet -o FILE` writes the rows pandas reads."""
    campaign, _, _, _ = engagement_world()
    out = tmp_path / "out.parquet"
    result = runner.invoke(args=["reports", "export", "engagement", "--since", "2026-01-01", "--campaign",
                                 str(campaign.id), "--format", "parquet", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "Wrote 3 rows" in result.output
    assert len(pd.read_parquet(out)) == 3
    bad = runner.invoke(args=["reports", "export", "engagement", "--since", "yesterday", "-o", str(out)])
    assert bad.exit_code != 0 and "YYYY-MM-DD" in bad.output


def test_export_page_needs_the_export_permission_and_a_token(make_app):
    """Anonymous visitors are sent to sign in; the form carries a CSRF token when CSRF is on."""
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        assert app.test_client().get("/reports/exports").status_code == 302
        client = app.test_client()
        user = factories.make_staff("analyst")
        login = client.get("/login").text
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login).group(1)
        client.post("/login", data={"email": user.email, "password": factories.PASSWORD, "csrf_token": token})
        page = client.get("/reports/exports").text
        assert 'name="csrf_token"' in page
        assert client.post("/reports/exports", data={"kind": "engagement", "format": "csv"}).status_code == 400


def awkward_world():
    """Messages whose values a CSV can get wrong: quotes, newlines, commas, accents, formulas, NULLs, no lists."""
    from crm.supporters import service

    campaign, petition, messages = sent_campaign(4, name="Awkward", subject='=He said "no", then\nleft, ünïcode')
    other = factories.make_campaign(status="sent", started_at=STARTED, subject="NULL")
    lone = factories.make_supporter(first_name="Zoë")  # signed nothing, tagged nothing
    plain = factories.make_message(other, lone, sent_at=None, bounce_type="")
    factories.make_message(other, supporter_of(messages[0]), sent_at=STARTED, status="failed", bounce_type="N/A")
    factories.make_petition(slug="second-one")
    service.add_tag(supporter_of(messages[0]), "-dash, comma")
    service.add_tag(supporter_of(messages[0]), "Café \"quoted\"")
    service.add_tag(supporter_of(messages[1]), "@at\nnewline")
    event(messages[0], "open", STARTED + timedelta(hours=1, microseconds=123456))
    event(messages[0], "click", STARTED + timedelta(hours=2), url="https://example.org/a,b")
    event(messages[1], "open", STARTED + timedelta(hours=3), machine=True)
    messages[0].opened_at = STARTED + timedelta(hours=1, microseconds=123456)
    messages[2].bounced_at, messages[2].bounce_type = STARTED + timedelta(minutes=3), "hard"
    messages[3].complained_at = STARTED + timedelta(days=1)
    record_consent(supporter_of(messages[1]), "opt_out", "unsubscribe_link", campaign_id=campaign.id)
    db.session.commit()
    return [*messages, plain]


@pytest.mark.parametrize("kind", ["engagement", "summary"])
def test_copy_path_gives_the_rows_the_fetched_path_gives(app, kind):
    """On PostgreSQL, COPY's CSV and COPY-parsed Arrow batches match the row-fetching reference, value for value."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("COPY is PostgreSQL's")
    from reports import exports

    awkward_world()
    filters = exports.Filters()

    def csv_rows(use_copy: bool) -> list[dict]:
        data = b"".join(exports.stream_csv(kind, filters, True, use_copy=use_copy))
        assert data.startswith("\ufeff".encode())
        return sorted(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))), key=lambda r: sorted(r.items()))

    def arrow_rows(use_copy: bool) -> list[dict]:
        import pyarrow as pa

        table = pa.Table.from_batches(list(exports.batches(kind, filters, True, use_copy=use_copy)),
                                      schema=exports._arrow_schema(exports.columns(kind, True)))
        rows = table.to_pylist()
        for row in rows:
            for name, value in row.items():
                if isinstance(value, list):
                    row[name] = sorted(value)  # aggregated in no particular order
        return sorted(rows, key=repr)

    copied, fetched = csv_rows(True), csv_rows(False)
    assert len(copied) == (6 if kind == "engagement" else 5)

    def unordered_lists(rows):
        lists = [c.name for c in exports.columns(kind, True) if c.type == "list"]
        return sorted(({k: (";".join(sorted(v.lstrip("'").split(";"))) if k in lists else v) for k, v in r.items()}
                       for r in rows), key=lambda r: sorted(r.items()))

    assert unordered_lists(copied) == unordered_lists(fetched)
    if kind == "engagement":
        assert "'=He said \"no\", then\nleft, ünïcode" in {r["subject"] for r in copied}
    assert arrow_rows(True) == arrow_rows(False)
