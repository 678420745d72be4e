"""Supporter imports: file sniffing, row rules, bulk upsert, the job, the CLI and the pages."""

from __future__ import annotations

import contextlib
import csv
import io
import random
import string
import threading
import time

import pytest
from openpyxl import Workbook

from crm.emails import InvalidEmail, normalise_email, validated_email
from crm.exports import safe_text
from crm.extensions import db
from crm.imports import engine, reader, service
from crm.imports.engine import run_import
from crm.imports.reader import Chunk, UnreadableFile, iter_chunks, sniff
from crm.imports.rows import (
    MAX_LENGTHS,
    OPTED_IN,
    STAGED_FIELDS,
    RowChecker,
    fast_normalise_email,
    guess_mapping,
    parse_country,
    parse_date,
)
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


@contextlib.contextmanager
def webhook_receiver(make_app, event_type: str):
    """An app whose outbound webhooks send `event_type` to a real local receiver; yields (app, receiver)
    inside the app's context."""
    from outbound import service as outbound
    from tests.test_outbound import Receiver

    app = make_app(WEBHOOK_RETRY_SECONDS="0")
    receiver = Receiver([204])
    try:
        with app.app_context():
            outbound.save_settings(True, None)
            outbound.create_endpoint({"url": receiver.url, "events": [event_type]}, None)
            yield app, receiver
    finally:
        receiver.close()


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


def test_control_characters_in_cells_are_removed(app, tmp_path):
    """NUL (past the sniffed sample, where it is not taken for a binary file), escapes and C1 characters
    in cells and headers are dropped as the file is read, on both databases; tabs and line breaks stay."""
    filler = "".join(f"filler{i}@example.org,Filler,ok\n" for i in range(3000))  # more than SAMPLE_BYTES
    text = ("Email,First name,Comm\x01ent\n" + filler
            + 'nul@example.org,Ada\x00\x00,"tab\there\x1b[0m\nnext\x85line"\n')
    job = do_import(tmp_path, text, mapping={"Comment": "comment"}, petition_id=factories.make_petition().id)
    assert (job.rejected_count, job.created_count) == (0, 3001)
    assert supporter("nul@example.org").first_name == "Ada"
    comment = db.session.scalar(db.select(Signature.comment).join(Supporter)
                                .filter(Supporter.email == "nul@example.org"))
    assert comment == "tab\there[0m\nnextline"


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


def test_fast_email_paths_agree_with_email_validator():
    """Both fast paths (an address, a column) give exactly email-validator's result (or error) on random input."""
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
    def outcome(normalise, raw):
        try:
            return normalise(raw)
        except InvalidEmail as exc:
            return ("error", str(exc))

    for raw in samples:
        expected = outcome(validated_email, raw.strip()) if raw.strip() else ("error", "An email address is required.")
        assert outcome(normalise_email, raw) == expected, raw
        assert outcome(fast_normalise_email, raw) == expected, raw


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


def test_consent_event_says_the_file_asserted_it(app, tmp_path):
    """Without a petition's wording the event quotes no wording: its reason names the file, column and value."""
    do_import(tmp_path, "Email,Opt-in\nw@example.org,True\n", name="spring list.csv")
    event = db.session.scalar(db.select(ConsentEvent))
    assert (event.action, event.wording, event.wording_version, event.wording_id) == ("opt_in", "", None, None)
    assert event.reason == ("Consent asserted by the imported file “spring_list.csv”, column “Opt-in”, value “True”; "
                            "not given on a form of this system.")


def test_import_never_reads_as_a_ticked_box_for_someone_who_declined_it(app, client, client_as, tmp_path):
    """Signed a checkbox petition without consent, then imported with consent 'yes' and the petition's wording:
    the opt_in says the file asserted it and labels the wording as the organisation's claim, unlinked to our form."""
    petition = factories.make_petition(consent_mode="checkbox", consent_wording="Tick to get our updates.")
    response = client.post(f"/p/{petition.slug}/sign", data={"email": "decliner@example.org", "first_name": "Dee"})
    assert response.status_code == 200
    assert supporter("decliner@example.org").email_status == "never_subscribed"
    assert db.session.scalar(db.select(db.func.count()).select_from(ConsentEvent)) == 0

    job = do_import(tmp_path, "Email,Consent\ndecliner@example.org,yes\n", name="partner.csv",
                    petition_id=petition.id, petition_wording=True)
    event = db.session.scalar(db.select(ConsentEvent))
    assert (event.action, event.source) == ("opt_in", f"import:{job.id}")
    assert event.wording == "Tick to get our updates."
    assert (event.wording_version, event.wording_id, event.ip, event.user_agent) == (None, None, None, None)
    assert event.reason.startswith("Consent asserted by the imported file “partner.csv”, column “Consent”, "
                                   "value “yes”; not given on a form of this system.")
    assert "what the organisation says the person was shown" in event.reason
    assert f"petition “{petition.title}” (version 1); this system did not show it to them." in event.reason

    page = client_as("analyst").get(f"/supporters/{supporter('decliner@example.org').id}").text
    timeline = page[page.index("Consent timeline"):page.index("Messages</h2>")]
    assert "The organisation says this wording was shown (not by this system)" in timeline
    assert "Evidence: Consent asserted by the imported file" in timeline
    assert "Wording version" not in timeline


@pytest.mark.parametrize(("value", "subscribed"), [
    ("oui", True), ("Ja", True), ("si", True), ("Sí", True), ("sim", True), ("tak", True), ("ναι", True),
    ("non", False), ("Nein", False), ("nee", False), ("não", False), ("", False), ("0", False),
])
def test_consent_words_of_common_languages(app, tmp_path, value, subscribed):
    """Yes and no in the languages our users work in are read as such, and neither is reported."""
    job = do_import(tmp_path, f"Email,Consent\nw@example.org,{value}\n")
    assert supporter("w@example.org").email_status == ("subscribed" if subscribed else "never_subscribed")
    assert (job.consent_unrecognised_count, job.consent_unrecognised_values) == (0, {})


def test_unrecognised_consent_values_are_kept_without_consent_and_reported(app, tmp_path, client_as):
    """'2' or 'maybe' is neither yes nor no: the row is imported, consent is not recorded, preview and counts say so."""
    text = "Email,Consent\na@example.org,2\nb@example.org,maybe\nc@example.org,2\nd@example.org,yes\n"
    job = upload(write(tmp_path, text))
    client = client_as("organizer")
    page = client.get(f"/imports/{job.id}/map").text
    assert page.count("consent not recorded: “2” is not a yes or a no") == 2
    assert "consent not recorded: “maybe” is not a yes or a no" in page
    assert "Consent asserted by the imported file" in page  # what will be recorded, said before importing
    service.configure(job, job.mapping)
    db.session.commit()
    job = run_import(job)
    assert_invariant(job)
    assert (job.created_count, job.rejected_count, job.consent_unrecognised_count) == (4, 0, 3)
    assert job.consent_unrecognised_values == {"2": 2, "maybe": 1}
    assert [supporter(f"{x}@example.org").email_status for x in "abcd"] == ["never_subscribed"] * 3 + ["subscribed"]
    assert db.session.scalar(db.select(db.func.count()).select_from(ConsentEvent)) == 1
    stored = db.session.execute(db.select(ImportJob.consent_unrecognised_count, ImportJob.consent_unrecognised_values)
                                .filter_by(id=job.id)).one()
    assert tuple(stored) == (3, {"2": 2, "maybe": 1})
    page = client.get(f"/imports/{job.id}").text
    assert "3 rows kept without recording consent" in page and "“2” (2 rows), “maybe” (1 row)" in page


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
    path = write(tmp_path, "Addr,Name,Agreed\ncli@example.org,Cli,yes\ncli2@example.org,Two,perhaps\nnope,X,yes\n")
    result = runner.invoke(args=["import", "supporters", str(path), "--map", "Addr=email", "--map", "Name=first_name",
                                 "--consent-column", "Agreed", "--petition", "save-the-park", "--tag", "cli"])
    assert result.exit_code == 0, result.output
    assert "3 rows: 2 created, 0 updated, 0 unchanged, 1 rejected" in result.output
    assert "Rejected rows: " in result.output
    assert "1 row kept without recording consent (neither yes nor no): 'perhaps' (1)" in result.output
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


# --- The column-at-a-time checker, chunked and parallel writing -----------------------------

def _reference_check(index, seen, row):
    """The row-by-row rules the column checker must reproduce exactly (as first written)."""
    raw_email = row[index["email"]]
    if not raw_email.strip():
        return "missing email"
    try:
        email = normalise_email(raw_email)
    except InvalidEmail as exc:
        return f"invalid email: {exc}"
    if email in seen:
        return "duplicate within the file"
    staged = {"email": email, "first_name": "", "last_name": "", "postal_code": "", "comment": "",
              "country": "", "consent": False, "signed_at": None}
    for name in ("first_name", "last_name", "postal_code", "comment"):
        i = index.get(name)
        if i is not None:
            value = row[i].strip()
            if name == "comment" and "\r" in value:
                value = value.replace("\r\n", "\n").replace("\r", "\n")
            limit = MAX_LENGTHS.get(name)
            if limit and len(value) > limit:
                return f"{name.replace('_', ' ')} longer than {limit} characters"
            staged[name] = value
    i = index.get("country")
    if i is not None and row[i].strip():
        try:
            staged["country"] = parse_country(row[i])
        except ValueError as exc:
            return str(exc)
    i = index.get("signed_at")
    if i is not None and row[i].strip():
        try:
            staged["signed_at"] = parse_date(row[i])
        except ValueError:
            return f"unparsable date: {row[i].strip()}"
    staged["consent_value"] = ""
    i = index.get("consent")
    if i is not None:
        key = " ".join(row[i].split()).casefold().strip(".!")
        staged["consent"] = key in OPTED_IN
        staged["consent_value"] = row[i].strip()[:40]
    seen.add(email)
    return staged


def _random_rows(rng, count):
    """Rows that hit every rule: repeats in other cases, bad and blank cells, overlong names."""
    emails = []
    rows = []
    for n in range(count):
        roll = rng.random()
        if roll < 0.15 and emails:
            email = rng.choice(emails)
            email = rng.choice([email.upper(), f"  {email} ", email])
        elif roll < 0.25:
            email = rng.choice(["", "  ", "no-at-sign", f"x{n}@", f"a..b{n}@example.org", f"zoë{n}@example.org",
                                f"p{n}@ex--ample.org", f"q{n}@test.local", f"\"quoted{n}\"@example.org"])
        else:
            local = rng.choice(["ann", "Bob", "c.d", "e_f+g"])
            email = f"{local}{n}@{rng.choice(['example.org', 'EXAMPLE.net', 'a.b.co'])}"
            emails.append(email)
        first = rng.choice(["Ann", " Bob ", "", "x" * 101, "Zoë"])
        last = rng.choice(["Smith", "", "y" * 100, "y" * 101])
        postal = rng.choice(["N1 1AA", "", "z" * 21, " E2 "])
        country = rng.choice(["GB", "gb", "United Kingdom", "", "  ", "Atlantis", "DE "])
        consent = rng.choice(["yes", "No", "", " Y ", "x", "subscribed", "0", "oui", "2", "Nein"])
        comment = rng.choice(["", "hello", "two\r\nlines", "tab\there", "back\\slash", " padded "])
        signed = rng.choice(["", "2024-05-01", "01/02/2024", "31/02/2024", "2024-05-01T10:00:00Z", "soon"])
        rows.append([email, first, last, postal, country, consent, comment, signed, "other"])
    return rows


HEADER = ["Email", "First", "Last", "Postcode", "Country", "Consent", "Comment", "Signed", "Other"]
MAPPING = {"Email": "email", "First": "first_name", "Last": "last_name", "Postcode": "postal_code",
           "Country": "country", "Consent": "consent", "Comment": "comment", "Signed": "signed_at",
           "Other": "ignore"}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_column_checker_matches_the_row_by_row_rules(seed):
    """Judging whole columns gives each row exactly the row-by-row verdict, across chunk boundaries."""
    rng = random.Random(seed)
    rows = _random_rows(rng, 600)
    checker = RowChecker(HEADER, MAPPING)
    index = dict(checker.index)
    seen: set[str] = set()
    expected = [_reference_check(index, seen, row) for row in rows]
    got = []
    start = 0
    while start < len(rows):  # uneven chunks, some read row by row (as XLSX and the preview are)
        size = rng.randint(1, 80)
        part = rows[start:start + size]
        chunk = Chunk.from_rows(part, len(HEADER)) if rng.random() < 0.5 else \
            Chunk([list(c) for c in zip(*part, strict=True)], len(part))
        judged = checker.judge(chunk)
        verdicts: dict[int, object] = {}
        for k, p in enumerate(judged.accepted.positions):
            verdicts[p] = {name: judged.accepted.columns[name][k] for name in STAGED_FIELDS}
        reasons = iter(judged.rejected)
        for p in range(len(part)):
            if p not in verdicts:
                row, reason = next(reasons)
                assert row == part[p]
                verdicts[p] = reason
        got.extend(verdicts[p] for p in range(len(part)))
        start += size
    assert got == expected
    assert any(isinstance(v, str) for v in expected) and any(isinstance(v, dict) for v in expected)


def _expected_outcome(rows, sizes, suppressed):
    """Accepted rows and the rejected (row, reason) lines in the order the file should list them.

    Suppressed rows are listed after the other rejections of their chunk (chunk sizes `sizes`).
    """
    checker_index = RowChecker(HEADER, MAPPING).index
    seen: set[str] = set()
    accepted, rejected = [], []
    start = 0
    for size in sizes:
        late = []
        part, start = rows[start:start + size], start + size
        for row in part:
            verdict = _reference_check(checker_index, seen, row)
            if isinstance(verdict, str):
                rejected.append((row, verdict))
            elif verdict["email"] in suppressed:
                late.append((row, "suppressed"))
            else:
                accepted.append(verdict)
        rejected.extend(late)
    return accepted, rejected


def _write_rows(tmp_path, rows, name="many.csv"):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    writer.writerows(rows)
    return write(tmp_path, out.getvalue(), name)


def test_many_chunks_written_concurrently_match_the_rules(app, tmp_path, monkeypatch):
    """An import of many small chunks (two written at once on PostgreSQL) gives every row its verdict."""
    monkeypatch.setattr(reader, "CHUNK_ROWS", 13)
    rng = random.Random(5)
    rows = _random_rows(rng, 400)
    petition = factories.make_petition(consent_wording="Updates, please.")
    path = _write_rows(tmp_path, rows)
    sizes = [chunk.size for chunk in reader.iter_column_chunks(path, sniff(path, "csv"), 13)]
    assert len(sizes) > 20 and sum(sizes) == 400
    # Addresses the file holds: one unsubscribed supporter (never resubscribed), one never
    # subscribed (opts in now), one suppressed (rejected, never stored).
    gone, quiet, hidden = [staged["email"] for staged in _expected_outcome(rows, sizes, set())[0][5:8]]
    left = factories.make_supporter(email=gone, subscribed=True, first_name="", last_name="")
    from crm.supporters.consent import record_consent

    record_consent(left, "opt_out", "unsubscribe_link")
    factories.make_supporter(email=quiet, subscribed=False, first_name="Quiet")
    suppress(hidden)
    db.session.commit()
    for row in rows:  # make sure both existing supporters opt in somewhere in the file
        if row[0].strip().lower() in (gone, quiet):
            row[5] = "yes"
    accepted, rejected = _expected_outcome(rows, sizes, {hidden})

    job = upload(_write_rows(tmp_path, rows))
    service.configure(job, MAPPING, petition_id=petition.id, petition_wording=True, tags="many")
    db.session.commit()
    job = run_import(job)

    assert_invariant(job)
    assert (job.total_rows, job.processed_rows) == (400, 400)
    assert job.rejected_count == len(rejected)
    assert job.created_count == len(accepted) - 2 and job.created_count + job.updated_count + job.unchanged_count \
        == len(accepted)
    assert [[r[h] for h in HEADER] for r in rejected_rows(job)] == [[safe_text(c) for c in row] for row, _ in rejected]
    assert [r["reason"] for r in rejected_rows(job)] == [reason for _, reason in rejected]
    # What the writers stored in the job row is what the job reports.
    stored = db.session.execute(db.select(ImportJob.created_count, ImportJob.updated_count, ImportJob.unchanged_count,
                                          ImportJob.rejected_count, ImportJob.processed_rows, ImportJob.total_rows)
                                .filter_by(id=job.id)).one()
    assert tuple(stored) == (job.created_count, job.updated_count, job.unchanged_count, job.rejected_count, 400, 400)
    for staged in accepted:
        s = supporter(staged["email"])
        if staged["email"] not in (gone, quiet):
            assert (s.first_name, s.last_name, s.postal_code, s.country) == \
                (staged["first_name"], staged["last_name"], staged["postal_code"], staged["country"])
            assert s.email_status == ("subscribed" if staged["consent"] else "never_subscribed")
    assert supporter(gone).email_status == "unsubscribed"
    assert supporter(quiet).email_status == "subscribed" and supporter(quiet).first_name == "Quiet"
    assert supporter(hidden) is None
    count = db.select(db.func.count())
    assert db.session.scalar(count.select_from(Signature).filter_by(petition_id=petition.id)) == len(accepted)
    assert db.session.scalar(count.select_from(supporter_tag)) == len(accepted)
    opted_in = sum(1 for s in accepted if s["consent"] and s["email"] != gone)
    assert db.session.scalar(count.select_from(ConsentEvent).filter_by(source=f"import:{job.id}")) == opted_in
    assert not any(t.name.startswith(("import-writer", "import-reader")) for t in threading.enumerate())


def test_a_failed_chunk_fails_the_import_and_a_rerun_completes_it(app, tmp_path, monkeypatch):
    """A chunk that fails marks the job failed with nothing left running; re-running it counts the file afresh."""
    monkeypatch.setattr(reader, "CHUNK_ROWS", 10)
    rows = [[f"p{i}@example.org", "P", "", "", "", "yes" if i % 2 else "", "", "", ""] for i in range(95)]
    path = _write_rows(tmp_path, rows)
    petition = factories.make_petition()
    calls = iter(range(1000))
    real_apply = engine.apply_chunk

    def flaky_apply(conn, accepted, plan, payload=None):
        if next(calls) == 3:
            raise RuntimeError("disk full")
        return real_apply(conn, accepted, plan, payload)

    monkeypatch.setattr(engine, "apply_chunk", flaky_apply)
    job = upload(path)
    service.configure(job, MAPPING, petition_id=petition.id, petition_wording=True)
    db.session.commit()
    with pytest.raises(RuntimeError, match="disk full"):
        run_import(job)
    job = db.session.get(ImportJob, job.id)
    assert (job.status, job.error) == ("failed", "disk full")
    assert not any(t.name.startswith(("import-writer", "import-reader")) for t in threading.enumerate())
    monkeypatch.setattr(engine, "apply_chunk", real_apply)
    job = run_import(job)
    assert (job.status, job.created_count, job.updated_count, job.unchanged_count, job.rejected_count) == \
        ("done", 95, 0, 0, 0)
    count = db.select(db.func.count())
    assert db.session.scalar(count.select_from(Supporter)) == 95
    assert db.session.scalar(count.select_from(Signature)) == 95
    assert db.session.scalar(count.select_from(ConsentEvent)) == 47


def test_address_created_by_another_session_mid_import_is_updated_not_duplicated(app, tmp_path):
    """If someone signs up with an address while the import inserts it, the import falls back to updating them."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("row locks between sessions: PostgreSQL only")
    import psycopg

    path = write(tmp_path, "Email,First name,Postcode,Opt-in\n"
                           "race@example.org,Race,N1,yes\nsolo@example.org,Solo,,no\n")
    job = upload(path)
    db.session.commit()
    url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    other = psycopg.connect(url)
    other.execute("INSERT INTO supporter (email, first_name, last_name, postal_code, country, email_status, source, "
                  "custom_fields, notes, created_at, updated_at) VALUES ('race@example.org', '', '', '', '', "
                  "'never_subscribed', 'petition:x', '{}', '', now(), now())")
    result: dict = {}

    def import_in_background():
        with app.app_context():
            try:
                result["job"] = run_import(db.session.get(ImportJob, job.id))
                result["counts"] = (result["job"].created_count, result["job"].updated_count)
            except Exception as exc:  # reported by the assertion below
                result["error"] = exc

    thread = threading.Thread(target=import_in_background)
    thread.start()
    try:
        with psycopg.connect(url, autocommit=True) as monitor:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until the import's INSERT waits on the other session's row
                waiting = monitor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                          "AND wait_event_type = 'Lock'").fetchone()[0]
                if waiting:
                    break
                time.sleep(0.05)
        assert waiting, "the import never waited on the concurrent insert"
        other.commit()
    finally:
        other.close()
        thread.join(60)
    assert "error" not in result, result.get("error")
    assert result["counts"] == (1, 1)
    db.session.expire_all()
    race = supporter("race@example.org")
    assert (race.first_name, race.postal_code, race.email_status, race.source) == ("Race", "N1", "subscribed",
                                                                                  "petition:x")
    assert db.session.scalar(db.select(db.func.count()).select_from(Supporter)) == 2


def test_row_count_of_unquoted_files_matches_csv_reader(tmp_path):
    """The byte-level count of a file without quotes equals csv.reader's, whatever the line ends and blocks."""
    rng = random.Random(11)
    path = tmp_path / "count.csv"
    for _ in range(500):
        text = "".join(rng.choice(["a", "b,c", " ", "", "xyz"]) + rng.choice(["\n", "\r\n", "\r", "\n\n", "\r\r\n", ""])
                       for _ in range(rng.randint(0, 20)))
        path.write_bytes(text.encode())
        with open(path, encoding="utf-8", newline="") as fh:
            expected = sum(1 for row in csv.reader(fh) if row)
        for block_size in (1, 2, 3, 7, 1 << 20):
            assert reader._count_lines_without_quotes(path, block_size) == expected, (text, block_size)
    path.write_bytes(b'Email,Note\na@example.org,"two\nlines"\n')
    assert reader._count_lines_without_quotes(path) is None
    assert reader.count_rows(path, sniff(path, "csv")) == 1


def test_opted_in_rows_are_announced_to_webhooks_once(make_app, tmp_path):
    """Each supporter an import subscribes gets one supporter.subscribed delivery (new or never_subscribed
    before); declined rows, unsubscribed supporters and a re-run announce nothing."""
    import json

    from crm.models import OutboundEvent, WebhookDelivery

    with webhook_receiver(make_app, "supporter.subscribed") as (app, receiver):
        known = factories.make_supporter(email="known@example.org", subscribed=False,
                                         email_status="never_subscribed")
        factories.make_supporter(email="left@example.org", subscribed=False, email_status="unsubscribed")
        text = ("Email,Consent\nnew@example.org,yes\nknown@example.org,yes\nleft@example.org,yes\n"
                "declined@example.org,no\n")
        job = do_import(tmp_path, text)
        assert db.session.scalar(db.select(db.func.count()).select_from(OutboundEvent)) == 2
        factories.drain(app)
        bodies = [json.loads(body) for _, body in receiver.requests]
        subscribed = {supporter("new@example.org").id, known.id}
        assert sorted(b["data"]["supporter_id"] for b in bodies) == sorted(subscribed)
        assert {(b["type"], b["data"]["source"]) for b in bodies} == {("supporter.subscribed", f"import:{job.id}")}
        run_import(job)
        factories.drain(app)
        assert len(receiver.requests) == 2
        assert db.session.scalar(db.select(db.func.count()).select_from(WebhookDelivery)) == 2


def test_signatures_an_import_adds_are_announced_to_webhooks_once(make_app, tmp_path):
    """Rows imported as signatures of a petition each get one signature.created delivery, as the public
    form's signatures do; a supporter who had signed already, and a re-run, announce nothing."""
    import json

    from crm.models import OutboundEvent, Signature

    with webhook_receiver(make_app, "signature.created") as (app, receiver):
        petition = factories.make_petition(slug="clean-rivers")
        signed = factories.make_supporter(email="signed@example.org")
        factories.make_signature(petition, signed)
        text = "Email,Consent\nnew@example.org,yes\nsigned@example.org,yes\nother@example.org,no\n"
        job = do_import(tmp_path, text, petition_id=petition.id)
        assert db.session.scalar(db.select(db.func.count()).select_from(OutboundEvent)) == 2
        factories.drain(app)
        bodies = [json.loads(body) for _, body in receiver.requests]
        assert {b["type"] for b in bodies} == {"signature.created"}
        new_ids = {supporter("new@example.org").id, supporter("other@example.org").id}
        assert sorted(b["data"]["supporter_id"] for b in bodies) == sorted(new_ids)
        signatures = {s.supporter_id: s.id for s in db.session.scalars(
            db.select(Signature).where(Signature.petition_id == petition.id))}
        for body in bodies:
            assert body["data"] == {"petition_id": petition.id, "petition_slug": "clean-rivers",
                                    "signature_id": signatures[body["data"]["supporter_id"]],
                                    "supporter_id": body["data"]["supporter_id"]}
        run_import(job)
        factories.drain(app)
        assert len(receiver.requests) == 2
