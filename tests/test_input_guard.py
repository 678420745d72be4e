"""Input refused in one place for every route: control characters, files where text is expected, deep JSON."""

import io
import json

import pytest

from crm.extensions import db
from crm.input_guard import has_control_characters, strip_control_characters
from crm.models import ConsentEvent, Signature, Supporter
from tests import factories

SIGNER = {"email": "ada@example.net", "first_name": "Ada", "last_name": "Lovelace", "postal_code": "N1 1AA",
          "comment": "Yes"}


def count(model) -> int:
    return db.session.scalar(db.select(db.func.count()).select_from(model))


@pytest.mark.parametrize("character", ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\x9f"])
def test_control_characters_are_those_refused(character):
    """Category Cc is refused (C0, DEL, C1), except tab, line feed and carriage return."""
    assert has_control_characters(f"a{character}b") and strip_control_characters(f"a{character}b") == "ab"


@pytest.mark.parametrize("text", ["plain", "two\nlines\r\nand\ttabs", "Zoë Ñandú 李 😀", "\u200b\ufeff", "\ufffd"])
def test_ordinary_text_is_accepted(text):
    """Whitespace people type, any script, emoji, invisible format characters and U+FFFD pass."""
    assert not has_control_characters(text)


@pytest.mark.parametrize("field", ["first_name", "last_name", "postal_code", "comment", "email"])
def test_nul_in_a_sign_field_is_a_400_naming_it(app, client, field):
    """`first_name=Nu%00ll` (or any field) is refused by name before the database sees it; nothing is kept."""
    petition = factories.make_petition()
    response = client.post(f"/p/{petition.slug}/sign", data={**SIGNER, field: "Nu\x00ll"})
    assert response.status_code == 400
    assert f"The field “{field}” contains a control character" in response.text
    assert count(Signature) == count(Supporter) == count(ConsentEvent) == 0


def test_tabs_and_line_breaks_are_kept(app, client):
    """A comment over several lines signs, its line breaks intact."""
    petition = factories.make_petition()
    response = client.post(f"/p/{petition.slug}/sign", data={**SIGNER, "comment": "First\r\nSecond\tthird"})
    assert response.status_code == 200
    assert db.session.scalar(db.select(Signature.comment)) == "First\r\nSecond\tthird"


@pytest.mark.parametrize("url", ["/p/%00", "/p/a%1Bb/embed", "/u/%00", "/static/%00", "/outbox/%00"])
def test_control_character_in_the_address_is_a_400(app, client_as, url):
    """A NUL or escape in a URL's free-text part is refused, never looked up."""
    response = client_as("admin").get(url)
    assert response.status_code == 400 and "The address contains a control character" in response.text


@pytest.mark.parametrize("query", ["q=%00", "sort=%00", "a%00=1", "q=ok&q=%07"])
def test_control_character_in_a_query_argument_is_a_400(app, client_as, query):
    """Query arguments (names and values, every repeat) follow the same rule."""
    response = client_as("analyst").get(f"/supporters/?{query}")
    assert response.status_code == 400 and "contains a control character" in response.text


def test_file_where_text_is_expected_is_a_400_on_every_form(app, client, client_as):
    """A file part named like a text field is refused, naming the field: sign, sign-in and a staff form."""
    petition = factories.make_petition()
    supporter = factories.make_supporter()
    organizer = client_as("organizer")
    cases = [(client, f"/p/{petition.slug}/sign", "email"), (client, f"/p/{petition.slug}/embed/sign", "first_name"),
             (client, "/login", "email"), (organizer, f"/supporters/{supporter.id}/edit", "email")]
    for who, url, field in cases:
        data = {**SIGNER, "password": "x", field: (io.BytesIO(b"not text"), "file.txt")}
        response = who.post(url, data=data, content_type="multipart/form-data")
        assert response.status_code == 400, url
        assert f"The field “{field}” expects text, not a file" in response.text, url
    assert count(Signature) == 0


def test_the_upload_form_still_takes_its_file(app, client_as, tmp_path):
    """The one view that declares a file field receives it; any other file part there is still refused."""
    organizer = client_as("organizer")
    csv = b"Email,First name\nada@example.net,Ada\n"
    response = organizer.post("/imports/new", data={"file": (io.BytesIO(csv), "people.csv")},
                              content_type="multipart/form-data")
    assert response.status_code == 302 and "/map" in response.headers["Location"]
    response = organizer.post("/imports/new", data={"file": (io.BytesIO(csv), "people.csv"),
                                                    "other": (io.BytesIO(csv), "more.csv")},
                              content_type="multipart/form-data")
    assert response.status_code == 400 and "The field “other” expects text" in response.text


def test_nul_in_json_is_a_400_in_json(app, client_as):
    """The segment builder's JSON: a NUL in any string (a key or a value, however deep) is refused, in JSON."""
    analyst = client_as("analyst")
    rules = {"op": "all", "rules": [{"field": "postal_code", "op": "starts_with", "values": ["N1\x00"]}]}
    response = analyst.post("/segments/preview", json={"rules": rules})
    assert response.status_code == 400
    assert response.json["error"] == ("The JSON value at “rules.rules[0].values[0]” contains a control character "
                                      "(such as NUL), which is not accepted.")
    response = analyst.post("/segments/preview", json={"rules": {"op\x00": "all"}})
    assert response.status_code == 400 and "rules.op\\x00" in response.json["error"]


def test_json_nested_too_deeply_is_a_400(app, client_as):
    """A body deeper than the JSON parser can take is a 400, not the parser's RecursionError."""
    body = "[" * 100_000 + "]" * 100_000
    response = client_as("analyst").post("/segments/preview", data=body, content_type="application/json")
    assert response.status_code == 400 and response.json["error"] == "The JSON body is nested too deeply."


def test_user_agent_control_characters_are_dropped(app, client):
    """The User-Agent stored as consent proof is cleaned, not refused: the signature counts."""
    petition = factories.make_petition()
    response = client.post(f"/p/{petition.slug}/sign", data=SIGNER, headers={"User-Agent": "Bot\x01/1.0\x7f"})
    assert response.status_code == 200
    assert db.session.scalar(db.select(ConsentEvent.user_agent)) == "Bot/1.0"


def test_invalid_utf8_is_text_not_an_error(app, client):
    """Bytes that are not UTF-8 reach the form as text (U+FFFD or the escape as typed), so it validates as usual."""
    petition = factories.make_petition()
    body = b"email=ada%40example.net&first_name=Ren%E9&comment=" + json.dumps("x").encode()
    response = client.post(f"/p/{petition.slug}/sign", data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    response = client.post(f"/p/{petition.slug}/sign", data=b"email=\xff\xfe&first_name=\xc3",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400  # the body did not decode: an empty form, whose fields are required


@pytest.mark.parametrize("disposition", ['form-data', 'form-data; name="a\r', 'form-data; name="\x00"'])
def test_multipart_parts_with_odd_names_are_no_error(app, client, disposition):
    """A part with no name, a broken one or a NUL in it is answered, not a 500 (Werkzeug may name it None)."""
    petition = factories.make_petition()
    body = f"--b\r\nContent-Disposition: {disposition}\r\n\r\nvalue\r\n--b--\r\n".encode()
    response = client.post(f"/p/{petition.slug}/sign", data=body, content_type="multipart/form-data; boundary=b")
    assert response.status_code == 400 and count(Signature) == 0
