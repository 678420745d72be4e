"""Supporter imports: file sniffing, row rules, bulk upsert, the job, the CLI and the pages."""

from __future__ import annotations

import csv
import io
import random
import string

import pytest
from openpyxl import Workbook

from crm.emails import InvalidEmail, normalise_email
from crm.extensions import db
from crm.imports import service
from crm.imports.engine import run_import
from crm.imports.reader import UnreadableFile, iter_chunks, sniff
from crm.imports.rows import fast_normalise_email, guess_mapping
from crm.models import ConsentEvent, ImportJob, Signature, Supporter, Tag, supporter_tag
from crm.supporters.suppression import suppress
from tests import factories
from tests.test_runtime import run_jobs


def upload(path, filename=None):
    with open(path, "rb") as fh:
        return service.create_import(io.BytesIO(fh.read()), filename or path.name, None)


def write(tmp_path, text, name="people.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def do_import(tmp_path, text, *, name="people.csv", encoding="utf-8", mapping=None, **options):
    job = upload(write(tmp_path, text, name, encoding))
    service.configure(job, {**job.mapping, **(mapping or {})}, **options)
    db.session.commit()
    return run_import(job)


def supporter(email):
    return db.session.scalar(db.select(Supporter).filter_by(email=email))


def rejected_rows(job):
    with open(job.rejected_path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def assert_invariant(job):
    assert job.total_rows == job.created_count + job.updated_count + job.unchanged_count + job.rejected_count


def test_utf8_bom_and_header_guessing(app, tmp_path):
    """A UTF-8 file with a BOM is read cleanly and common headers map to fields."""
    path = write(tmp_path, "\ufeffE-mail,First Name,Surname,ZIP code,Country,Opt-in\n"
                           "zoë@example.org,Zoë,Ünal,N1 1AA,GB,yes\n")
    job = upload(path)
    assert job.mapping == {"E-mail": "email", "First Name": "first_name", "Surname": "last_name",
                           "ZIP code": "postal_code", "Country": "country", "Opt-in": "consent"}
    run_import(job)
    s = supporter("zoë@example.org")
    assert (s.first_name, s.last_name, s.postal_code, s.country) == ("Zoë", "Ünal", "N1 1AA", "GB")


def test_header_guesses_cover_common_spellings():
    """Email/email_address/Firstname/Postcode/Postal Code/Consent/Subscribed headers are guessed."""
    assert guess_mapping(["email_address", "Firstname", "last_name", "Postcode", "Subscribed"]) == {
        "email_address": "email", "Firstname": "first_name", "last_name": "last_name",
        "Postcode": "postal_code", "Subscribed": "consent"}
    assert guess_mapping(["Email Address", "Postal Code", "Consent", "Notes"])["Postal Code"] == "postal_code"
    assert guess_mapping(["Email", "Zip"]) == {"Email": "email", "Zip": "postal_code"}


def test_windows_1252_semicolons_quoted_newline_blank_lines_extra_columns(app, tmp_path):
    """cp1252 accents, ';' delimiter, a quoted newline, blank lines and extra columns all import."""
    text = ('Email;First name;Comment;Extra\r\n\r\n'
            'rene@example.org;René;"Line one\r\nline two";x\r\n\r\n'
            'ines@example.org;Inès;short;y;surplus\r\n')
    job = do_import(tmp_path, text, encoding="cp1252", mapping={"Comment": "comment"},
                    petition_id=factories.make_petition().id)
    assert (job.total_rows, job.created_count, job.rejected_count) == (2, 2, 0)
    assert supporter("rene@example.org").first_name == "René"
    assert supporter("ines@example.org").first_name == "Inès"
    comment = db.session.scalar(db.select(Signature.comment).join(Supporter)
                                .filter(Supporter.email == "rene@example.org"))
    assert comment == "Line one\nline two"


def test_duplicates_invalid_emails_bad_dates_and_the_rejected_file(app, tmp_path):
    """Mixed-case duplicates, invalid/missing emails and bad dates are rejected with reasons; counts add up."""
    text = ("Email,First name,Signed at,Other\n"
            "Ann@Example.org,Ann,2024-03-01,a\n"
            "ann@example.ORG,Annie,2024-03-02,b\n"
            "not-an-email,Bob,,c\n"
            ",Nobody,,d\n"
            "carl@example.org,Carl,31/02/2024,e\n"
            "dee@example.org,Dee,01/03/2024,f\n")
    job = do_import(tmp_path, text)
    assert_invariant(job)
    assert (job.total_rows, job.created_count, job.rejected_count) == (6, 2, 4)
    rows = rejected_rows(job)
    assert [r["Email"] for r in rows] == ["ann@example.ORG", "not-an-email", "", "carl@example.org"]
    assert rows[0]["reason"] == "duplicate within the file"
    assert rows[1]["reason"].startswith("invalid email: ")
    assert rows[2]["reason"] == "missing email"
    assert rows[3]["reason"] == "unparsable date: 31/02/2024"
    assert rows[0]["Other"] == "b"
    assert supporter("ann@example.org").first_name == "Ann"  # the first occurrence wins


def test_fast_email_path_agrees_with_normalise_email():
    """The fast email check gives exactly normalise_email's result (or error) on random input."""
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "._+-@ 'éß\"!"
    samples = ["a@b.test", "x@ab--cd.com", "a@b.c", "a@b.c1", "A.B@EXAMPLE.COM", "a..b@x.com",
               "-@x.com", "a@-x.com", "a@x.co.uk", "a@b.local", "a@xn--80ak6aa92e.com"]
    for _ in range(20000):
        local = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        labels = string.ascii_lowercase + string.digits + "-"
        domain = ".".join("".join(rng.choice(labels) for _ in range(rng.randint(1, 5)))
                          for _ in range(rng.randint(1, 3)))
        samples.append(f"{local}@{domain}" if rng.random() < 0.9 else local)
    for raw in samples:
        try:
            expected = normalise_email(raw)
        except InvalidEmail as exc:
            expected = ("error", str(exc))
        try:
            got = fast_normalise_email(raw)
        except InvalidEmail as exc:
            got = ("error", str(exc))
        assert got == expected, raw


def test_existing_supporters_fill_empty_fields_only_and_are_never_resubscribed(app, tmp_path):
    """Existing values win, empty ones are filled; unsubscribed stays unsubscribed despite opt-in."""
    factories.make_supporter(email="keep@example.org", first_name="Kept", last_name="", postal_code="",
                             subscribed=False)
    left = factories.make_supporter(email="left@example.org", subscribed=True)
    from crm.supporters.consent import record_consent

    record_consent(left, "opt_out", "unsubscribe_link")
    factories.make_supporter(email="same@example.org", first_name="Sam", last_name="Same", subscribed=False)
    db.session.commit()
    text = ("Email,First name,Last name,Postcode,Opt-in\n"
            "keep@example.org,Other,Newlast,N1,\n"
            "left@example.org,,,,yes\n"
            "same@example.org,,,,\n"
            "new@example.org,New,,,no\n")
    job = do_import(tmp_path, text)
    assert (job.created_count, job.updated_count, job.unchanged_count) == (1, 1, 2)
    keep = supporter("keep@example.org")
    assert (keep.first_name, keep.last_name, keep.postal_code) == ("Kept", "Newlast", "N1")
    assert supporter("left@example.org").email_status == "unsubscribed"
    assert supporter("new@example.org").email_status == "never_subscribed"
    events = db.select(db.func.count()).select_from(ConsentEvent).filter_by(source=f"import:{job.id}")
    assert db.session.scalar(events) == 0


def test_suppressed_address_is_rejected_and_not_stored(app, tmp_path):
    """A suppressed address is rejected with reason 'suppressed' and no supporter row is made."""
    suppress("gone@example.org")
    db.session.commit()
    job = do_import(tmp_path, "Email,Opt-in\nGone@Example.org,yes\nstay@example.org,yes\n")
    assert supporter("gone@example.org") is None
    assert [r["reason"] for r in rejected_rows(job)] == ["suppressed"]
    assert_invariant(job)


def test_signatures_consent_events_and_tags(app, tmp_path):
    """Every row signs the petition; only opted-in rows get an opt_in event with import:<id> and the wording."""
    petition = factories.make_petition(consent_wording="You will get updates.")
    text = "Email,Consent,Signed\nin@example.org,Y,2024-05-01\nout@example.org,no,\nx@example.org,x,\n"
    job = do_import(tmp_path, text, mapping={"Signed": "signed_at"}, petition_id=petition.id,
                    petition_wording=True, tags="Imported, volunteers,imported")
    assert db.session.scalar(db.select(db.func.count()).select_from(Signature).filter_by(petition_id=petition.id)) == 3
    events = db.session.execute(db.select(Supporter.email, ConsentEvent.action, ConsentEvent.source,
                                          ConsentEvent.wording).join(Supporter).order_by(Supporter.email)).all()
    assert events == [("in@example.org", "opt_in", f"import:{job.id}", "You will get updates."),
                      ("x@example.org", "opt_in", f"import:{job.id}", "You will get updates.")]
    assert supporter("in@example.org").email_status == "subscribed"
    assert supporter("out@example.org").email_status == "never_subscribed"
    assert sorted(db.session.scalars(db.select(Tag.name))) == ["Imported", "volunteers"]
    assert db.session.scalar(db.select(db.func.count()).select_from(supporter_tag)) == 6
    # Re-running the same import changes nothing and recounts from scratch.
    job = run_import(job)
    assert (job.created_count, job.rejected_count) == (3, 0)
    assert db.session.scalar(db.select(db.func.count()).select_from(ConsentEvent)) == 2


def test_default_wording_names_the_file(app, tmp_path):
    """Without a petition's wording the consent event says it came from the imported file."""
    do_import(tmp_path, "Email,Opt-in\nw@example.org,true\n", name="spring list.csv")
    assert db.session.scalar(db.select(ConsentEvent.wording)) == "Imported with consent from spring_list.csv"


def test_xlsx_upload(app, tmp_path, client_as):
    """An XLSX upload maps, previews and imports, numbers and dates read as typed."""
    wb = Workbook()
    ws = wb.active
    ws.append(["Email Address", "First Name", "Zip", "Date"])
    ws.append(["xl@example.org", "Excel", 12345, None])
    ws.append([None, None, None, None])
    ws.append(["bad", "Bad", 1, None])
    path = tmp_path / "people.xlsx"
    wb.save(path)
    client = client_as("organizer")
    response = client.post("/imports/new", data={"file": (open(path, "rb"), "people.xlsx")},
                           content_type="multipart/form-data")
    assert response.status_code == 302
    job = db.session.scalar(db.select(ImportJob))
    assert job.mapping["Email Address"] == "email" and job.mapping["Date"] == "signed_at"
    page = client.get(f"/imports/{job.id}/map")
    assert b"invalid email" in page.data and b"xl@example.org" in page.data
    run_import(job)
    assert supporter("xl@example.org").postal_code == "12345"
    assert (job.total_rows, job.created_count, job.rejected_count) == (2, 1, 1)


@pytest.mark.parametrize("content,name", [
    (b"\x00\x01\x02garbage\xff\xfe" * 50, "data.csv"), (b"", "empty.csv"), (b"\n\n\n", "blank.csv"),
    (b"1,2,3\n4,5,6\n", "numbers.csv"), (b"PK\x03\x04not really a zip", "broken.xlsx"),
    (b"email\nx@example.org\n", "people.pdf")])
def test_unreadable_files_get_a_clear_error_and_nothing_is_saved(app, client_as, content, name):
    """Binary, empty, headerless, corrupt or wrong-type uploads are refused on the form, leaving nothing."""
    response = client_as("organizer").post("/imports/new", data={"file": (io.BytesIO(content), name)},
                                           content_type="multipart/form-data")
    assert response.status_code == 400 and b'id="file-err"' in response.data
    assert db.session.scalar(db.select(db.func.count()).select_from(ImportJob)) == 0
    folder = service.imports_folder()
    assert list(folder.iterdir()) == []


def test_web_flow_runs_on_a_real_worker(make_app, tmp_path):
    """Upload, map, confirm: a real SimpleWorker imports; the page shows counts; rejected CSV downloads."""
    app = make_app()
    with app.app_context():
        user = factories.make_staff("organizer")
        client = app.test_client()
        client.post("/login", data={"email": user.email, "password": factories.PASSWORD})
        data = b"Mail,Given name,Other\na@example.org,A,1\nbad@,B,2\n"
        response = client.post("/imports/new", data={"file": (io.BytesIO(data), "list.csv")},
                               content_type="multipart/form-data")
        job = db.session.scalar(db.select(ImportJob))
        assert response.headers["Location"].endswith(f"/imports/{job.id}/map")
        response = client.post(f"/imports/{job.id}/map", data={"map-0": "email", "map-1": "first_name",
                               "map-2": "ignore", "petition_id": "", "tags": "", "consent": "column",
                               "action": "confirm"})
        assert response.status_code == 302
        page = client.get(f"/imports/{job.id}")
        assert b'http-equiv="refresh"' in page.data
        run_jobs(app)
        db.session.expire_all()
        job = db.session.get(ImportJob, job.id)
        assert (job.status, job.created_count, job.rejected_count) == ("done", 1, 1)
        page = client.get(f"/imports/{job.id}")
        assert b"2 total = 1 created + 0 updated" in page.data and b'http-equiv="refresh"' not in page.data
        download = client.get(f"/imports/{job.id}/rejected.csv")
        assert download.status_code == 200
        assert download.data.decode().splitlines()[0] == "Mail,Given name,Other,reason"
        download.close()
        assert supporter("a@example.org").first_name == "A"
        assert b"list.csv" in client.get("/imports/").data


def test_mapping_without_email_is_refused(app, client_as, tmp_path):
    """Confirming a mapping with no email column answers 400 with a message and queues nothing."""
    client = client_as("organizer")
    job = upload(write(tmp_path, "Email,Name\na@example.org,A\n"))
    response = client.post(f"/imports/{job.id}/map", data={"map-0": "ignore", "map-1": "first_name",
                           "consent": "column", "action": "confirm"})
    assert response.status_code == 400 and b"Map one column to Email" in response.data
    assert db.session.get(ImportJob, job.id).status == "uploaded"


def test_analyst_cannot_upload_but_can_read_and_download(app, client_as, tmp_path):
    """Analysts get 403 on upload and mapping, but may list, view and export rejected rows."""
    job = do_import(tmp_path, "Email\nbad\n")
    client = client_as("analyst")
    assert client.get("/imports/new").status_code == 403
    assert client.post("/imports/new").status_code == 403
    assert client.post(f"/imports/{job.id}/map").status_code == 403
    assert client.get(f"/imports/{job.id}").status_code == 200
    response = client.get(f"/imports/{job.id}/rejected.csv")
    assert response.status_code == 200
    response.close()


def test_cli_import(app, runner, tmp_path):
    """`crm import supporters` runs the engine with --map, --consent-column, --petition and --tag."""
    petition = factories.make_petition(slug="save-the-park")
    path = write(tmp_path, "Addr,Name,Agreed\ncli@example.org,Cli,yes\ncli2@example.org,Two,no\nnope,X,yes\n")
    result = runner.invoke(args=["import", "supporters", str(path), "--map", "Addr=email", "--map", "Name=first_name",
                                 "--consent-column", "Agreed", "--petition", "save-the-park", "--tag", "cli"])
    assert result.exit_code == 0, result.output
    assert "3 rows: 2 created, 0 updated, 0 unchanged, 1 rejected" in result.output
    assert "Rejected rows: " in result.output
    assert supporter("cli@example.org").email_status == "subscribed"
    assert db.session.scalar(db.select(db.func.count()).select_from(Signature).filter_by(petition_id=petition.id)) == 2
    bad = runner.invoke(args=["import", "supporters", str(path), "--petition", "no-such"])
    assert bad.exit_code != 0 and "No petition" in bad.output


def test_reader_chunks_cover_every_row(tmp_path):
    """Chunked reading returns every row once, header excluded, across chunk boundaries."""
    path = write(tmp_path, "Email\n" + "".join(f"p{i}@example.org\n" for i in range(25)))
    info = sniff(path, "csv")
    chunks = list(iter_chunks(path, info, chunk_rows=10))
    rows = [row for chunk in chunks for row in chunk]
    assert rows == [[f"p{i}@example.org"] for i in range(25)] and len(chunks) == 3
    with pytest.raises(UnreadableFile):
        sniff(write(tmp_path, "", "e.csv"), "csv")
