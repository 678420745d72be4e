"""Streaming CSV/XLSX exports of the filtered supporter list, formula-injection safe, audit-logged."""

from __future__ import annotations

import csv
import io

from openpyxl import load_workbook

from crm import exports
from crm.extensions import db
from crm.models import AuditLog, Segment
from crm.supporters import service
from tests import factories


def read_csv(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(response.data.decode("utf-8-sig"))))


def test_csv_export_streams_exactly_the_filtered_rows(app, client_as):
    """CSV rows equal the filtered list, with tags joined by semicolons, as an attachment."""
    petition = factories.make_petition()
    signers = [factories.make_supporter(country="GB") for _ in range(3)]
    for s in signers:
        factories.make_signature(petition, s)
    factories.make_supporter(country="GB")  # did not sign
    service.add_tag(signers[0], "volunteer")
    service.add_tag(signers[0], "donor")
    response = client_as("analyst").get(f"/supporters/export?petition={petition.id}&format=csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="supporters-2') and disposition.endswith('.csv"')
    rows = read_csv(response)
    assert [int(r["id"]) for r in rows] == [s.id for s in signers]
    assert list(rows[0]) == service.EXPORT_HEADER
    assert rows[0]["tags"] == "donor;volunteer" and rows[1]["tags"] == ""
    assert rows[0]["email"] == signers[0].email and rows[0]["email_status"] == "subscribed"


def test_export_escapes_formula_injection(app, client_as):
    """Cells starting with = + - @ tab or CR get a leading quote in CSV and XLSX."""
    factories.make_supporter(first_name="=HYPERLINK(\"http://evil\")", last_name="+1-2",
                             postal_code="@SUM(A1)", country="", subscribed=False)
    client = client_as("analyst")
    row = read_csv(client.get("/supporters/export?format=csv"))[0]
    assert row["first_name"] == "'=HYPERLINK(\"http://evil\")"
    assert row["last_name"] == "'+1-2" and row["postal_code"] == "'@SUM(A1)"
    sheet = load_workbook(io.BytesIO(client.get("/supporters/export?format=xlsx").data)).active
    values = [c.value for c in next(sheet.iter_rows(min_row=2, max_row=2))]
    assert "'=HYPERLINK(\"http://evil\")" in values and "'+1-2" in values


def test_safe_text_rules():
    """Only the dangerous leading characters are escaped."""
    assert [exports.safe_text(v) for v in ("=1", "-x", "\tA", "\rA", "plain", "a=b")] == [
        "'=1", "'-x", "'\tA", "'\rA", "plain", "a=b"]


def test_xlsx_export_opens_with_the_rows(app, client_as):
    """The XLSX download is a real workbook with a header and one row per supporter."""
    people = [factories.make_supporter(country="DE") for _ in range(4)]
    factories.make_supporter(country="FR")
    response = client_as("organizer").get("/supporters/export?format=xlsx&country=DE")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].endswith('.xlsx"')
    sheet = load_workbook(io.BytesIO(response.data)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert list(rows[0]) == service.EXPORT_HEADER
    assert [r[0] for r in rows[1:]] == [p.id for p in people]
    assert rows[1][1] == people[0].email and rows[1][7] is not None


def test_export_is_audit_logged_with_filter_and_count(app, client_as):
    """Every export writes who, the filter, the format and the row count."""
    for _ in range(3):
        factories.make_supporter(country="NL")
    factories.make_supporter(country="BE")
    client = client_as("analyst")
    client.get("/supporters/export?format=csv&country=NL&q=").get_data()
    entry = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "supporters.export"))
    assert entry.staff_user_id == client.user.id
    assert entry.details == {"filter": {"country": "NL"}, "format": "csv", "rows": 3}


def test_analyst_may_export_and_bad_format_is_400(app, client_as):
    """Analysts hold export; an unknown format is a 400, not a 500."""
    client = client_as("analyst")
    assert client.get("/supporters/export").status_code == 200
    assert client.get("/supporters/export?format=pdf").status_code == 400


def test_export_streams_in_batches(app, client_as, monkeypatch):
    """Rows arrive across several fetch batches with tags intact (no row lost at batch edges)."""
    monkeypatch.setattr(service, "EXPORT_BATCH", 3)
    people = [factories.make_supporter(subscribed=False) for _ in range(10)]
    service.add_tag(people[3], "edge")
    service.add_tag(people[9], "edge")
    rows = read_csv(client_as("analyst").get("/supporters/export"))
    assert [int(r["id"]) for r in rows] == [p.id for p in people]
    assert [r["tags"] for r in rows].count("edge") == 2


def test_cli_export_writes_the_file(app, runner, tmp_path):
    """`crm supporters export FILE --status S` writes the filtered rows."""
    keep = factories.make_supporter()
    factories.make_supporter(subscribed=False)
    target = tmp_path / "out.csv"
    result = runner.invoke(args=["supporters", "export", str(target), "--status", "subscribed"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(target.read_text("utf-8-sig"))))
    assert [int(r["id"]) for r in rows] == [keep.id]
    assert "1 supporter" in result.output


def test_cli_export_xlsx_from_extension(app, runner, tmp_path):
    """An .xlsx target gets a workbook, and the CLI export is audit-logged too."""
    person = factories.make_supporter()
    target = tmp_path / "out.xlsx"
    result = runner.invoke(args=["supporters", "export", str(target)])
    assert result.exit_code == 0, result.output
    rows = list(load_workbook(target).active.iter_rows(values_only=True))
    assert [r[0] for r in rows[1:]] == [person.id]
    entry = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "supporters.export"))
    assert entry.details["format"] == "xlsx" and entry.details["rows"] == 1


def test_export_honours_the_segment_filter(app, client_as):
    """?segment=<id> exports exactly the segment's members (with other filters ANDed), audit-logged."""
    keep = [factories.make_supporter(country="GB", postal_code="SW1A 1AA") for _ in range(2)]
    factories.make_supporter(country="GB", postal_code="E1 6AN")
    factories.make_supporter(country="FR", postal_code="SW1A 2BB")
    rules = {"type": "group", "match": "all", "rules": [
        {"type": "condition", "field": "country", "op": "in", "value": ["GB"]},
        {"type": "condition", "field": "postal_code", "op": "starts_with", "value": ["SW1"]}]}
    segment = Segment(name="Westminster", rules=rules)
    db.session.add(segment)
    db.session.commit()
    client = client_as("analyst")
    rows = read_csv(client.get(f"/supporters/export?format=csv&segment={segment.id}"))
    assert [int(r["id"]) for r in rows] == [s.id for s in keep]
    sheet = load_workbook(io.BytesIO(client.get(f"/supporters/export?format=xlsx&segment={segment.id}"
                                                f"&q={keep[1].email}").data)).active
    assert [r[0] for r in sheet.iter_rows(min_row=2, values_only=True)] == [keep[1].id]
    entry = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "supporters.export")
                              .order_by(AuditLog.id))
    assert entry.details == {"filter": {"segment": str(segment.id)}, "format": "csv", "rows": 2}


def test_cli_export_with_segment(app, runner, tmp_path):
    """`crm supporters export FILE --segment ID` writes the members; a missing segment is an error."""
    member = factories.make_supporter(country="IE")
    factories.make_supporter(country="GB")
    segment = Segment(name="Irish", rules={"type": "group", "match": "all", "rules": [
        {"type": "condition", "field": "country", "op": "in", "value": ["IE"]}]})
    db.session.add(segment)
    db.session.commit()
    target = tmp_path / "irish.csv"
    result = runner.invoke(args=["supporters", "export", str(target), "--segment", str(segment.id)])
    assert result.exit_code == 0, result.output
    assert [int(r["id"]) for r in csv.DictReader(io.StringIO(target.read_text("utf-8-sig")))] == [member.id]
    missing = runner.invoke(args=["supporters", "export", str(tmp_path / "x.csv"), "--segment", "999999"])
    assert missing.exit_code != 0 and "no longer exists" in missing.output
