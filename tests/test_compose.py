"""Composing and MIME assembly: problems found at save time, escaping, the compulsory footer,
and messages that the `email` package parses back exactly."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns import compose
from campaigns.mime import (
    MessageSkeleton,
    ascii_address,
    clean_header_value,
    encode_address,
    encode_header,
    quoted_printable,
)
from tests.factories import DEFAULT_MJML

CONFIG = {"ORG_NAME": "Refugee Rights <Network> & Co", "ORG_POSTAL_ADDRESS": "1 Test Street, London N1 1AA"}


def campaign(**overrides):
    values = {"subject": "News", "preheader": "", "mjml": DEFAULT_MJML, "text_body": "", "name": "c"}
    return SimpleNamespace(**{**values, **overrides})


def body(text: str) -> str:
    return ("<mjml><mj-body><mj-section><mj-column>\n"
            f"<mj-text>{text}</mj-text>\n</mj-column></mj-section></mj-body></mjml>")


def render(c, **supporter):
    context = compose.sample_context(CONFIG, c)
    context["supporter"] = compose.supporter_context(**supporter)
    context["unsubscribe_url"] = "https://crm.example.org/u/TOKEN"
    return compose.compile_campaign(c).render(context)


def test_problems_name_the_field_and_line():
    """Unknown variables, unknown supporter fields, unknown filters and bad syntax: field + line."""
    problems = compose.check_content("Hi {{ supporter.nickname }}", "", body("ok\n{{ whoever }}"), "")
    found = {(p.field, p.line, p.message.split(";")[0]) for p in problems}
    assert ("subject", 1, "“supporter” has no field “nickname”") in found
    assert ("mjml", 3, "unknown variable “whoever”") in found
    [syntax] = compose.check_content("News", "", body("{% if %}"), "")
    assert (syntax.field, syntax.line) == ("mjml", 2)
    [flt] = compose.check_content("News", "", body("{{ supporter.first_name | shout }}"), "")
    assert "shout" in flt.message and flt.line == 2


def test_invalid_mjml_reports_mjmls_message():
    """MJML that does not parse is refused with mjml's own message."""
    [problem] = compose.check_content("News", "", "<mjml><mj-body><mj-text>x</mj-body>", "")
    assert problem.field == "mjml" and problem.message.startswith("MJML: ")


def test_subject_must_be_one_line_and_present():
    """An empty subject or one with a line break is refused."""
    assert any("required" in p.message for p in compose.check_content("  ", "", DEFAULT_MJML, ""))
    assert any("one line" in p.message for p in compose.check_content("a\r\nBcc: x@y", "", DEFAULT_MJML, ""))


def test_sandbox_refuses_python_internals():
    """Templates cannot reach Python internals: refused at save time, never at send time."""
    problems = compose.check_content("News", "", body("{{ ''.__class__.__mro__ }}"), "")
    assert problems and "fails when rendered" in problems[0].message
    assert compose.check_content("News", "", body("{{ supporter.__class__ }}"), "")


def test_values_are_escaped_in_html_but_not_in_text():
    """Supporter values are HTML-escaped in the HTML part; the text part shows them as typed."""
    rendered = render(campaign(mjml=body("Hello {{ supporter.first_name }}")), first_name="<b>Zoë</b>")
    assert "&lt;b&gt;Zoë&lt;/b&gt;" in rendered.html and "<b>Zoë" not in rendered.html
    assert "<b>Zoë</b>" in rendered.text


def test_default_applies_to_empty_fields():
    """`default("friend")` covers a supporter with no first name."""
    assert "Hello friend" in render(campaign(mjml=body('Hello {{ supporter.first_name | default("friend") }}'))).text


def test_footer_and_preheader_are_always_added():
    """Whatever the template says: org name, postal address and the unsubscribe link, both parts."""
    rendered = render(campaign(mjml=body("Just this."), preheader="Inbox teaser"))
    for part in (rendered.html, rendered.text):
        assert "1 Test Street, London N1 1AA" in part
        assert "https://crm.example.org/u/TOKEN" in part
    assert "Refugee Rights &lt;Network&gt; &amp; Co" in rendered.html
    assert "Inbox teaser" in rendered.html and rendered.html.index("Inbox teaser") < rendered.html.index("Just this")


def test_the_body_shows_subject_and_preheader_as_the_recipient_reads_them():
    """<mj-title>{{ campaign.subject }}</mj-title> and the hidden preheader carry the rendered text,
    escaped, never the template source."""
    mjml = ("<mjml><mj-head><mj-title>{{ campaign.subject }}</mj-title></mj-head><mj-body><mj-section>"
            "<mj-column><mj-text>Hello</mj-text></mj-column></mj-section></mj-body></mjml>")
    c = campaign(subject='{{ supporter.first_name | default("Friend") }}, news', mjml=mjml,
                 preheader="For {{ supporter.first_name }} & co")
    html = render(c, first_name="Zoë <b>").html
    assert "<title>Zoë &lt;b&gt;, news</title>" in html
    assert "For Zoë &lt;b&gt; &amp; co" in html
    assert "{{" not in html and "default(" not in html
    assert "<title>Friend, news</title>" in render(c).html


def test_edited_text_part_is_used_and_personalised():
    """A staff-written plain-text part replaces the generated one and is personalised too."""
    rendered = render(campaign(text_body="Dear {{ supporter.first_name }},\nplain words."), first_name="Ama")
    assert rendered.text.startswith("Dear Ama,\nplain words.")
    assert "Unsubscribe: https://crm.example.org/u/TOKEN" in rendered.text


def test_generated_text_keeps_links():
    """The generated plain-text part keeps link targets, readable without HTML."""
    mjml = body('Read <a href="https://example.org/report">the report</a>.')
    assert "[the report](https://example.org/report)" in render(campaign(mjml=mjml)).text


def _build(**overrides):
    skeleton = MessageSkeleton(from_name=overrides.pop("from_name", "Réseau — 難民"),
                               from_address="news@news.example.org", reply_to="replies@example.org",
                               list_name="Org updates", campaign_id=7,
                               unsubscribe_mailto="unsubscribe@news.example.org")
    values = {"to_address": "zoe@example.net", "to_name": "Zoë Łukasiewicz", "subject": "Über alles — 更新",
              "text": "Hi Zoë,\n= sign and a very long line " + "x" * 200 + "\n",
              "html": "<p>Hi Zoë</p>\n" + "<p>" + "y" * 300 + "</p>\n", "message_id": skeleton.message_id(5),
              "unsubscribe_url": "https://crm.example.org/u/abc.def", "message_ref": "7.5",
              "date": datetime(2026, 11, 28, 12, 0, tzinfo=UTC)}
    values.update(overrides)
    return skeleton, values, skeleton.build(**values)


def test_skeleton_message_parses_back_exactly():
    """The email package reads every header and both parts back as they were meant."""
    skeleton, values, raw = _build()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines if not line.startswith(b"List-Unsubscribe:")) <= 78
    assert max(len(line) for line in lines) <= 998
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert not msg.defects
    assert msg["From"].addresses[0].display_name == "Réseau — 難民"
    assert msg["To"].addresses[0].display_name == "Zoë Łukasiewicz"
    assert msg["Subject"] == "Über alles — 更新"
    assert msg["Reply-To"] == "replies@example.org"
    assert msg["Message-ID"] == values["message_id"] and msg["Message-ID"].endswith("@news.example.org>")
    assert msg["List-Unsubscribe"] == ("<https://crm.example.org/u/abc.def>, "
                                       "<mailto:unsubscribe@news.example.org?subject=unsubscribe-abc.def>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Id"] == "Org updates <campaigns.news.example.org>"
    assert msg["X-Message-Ref"] == "7.5"
    assert msg["Date"].datetime == values["date"]
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == values["text"]
    assert msg.get_body(("html",)).get_content().replace("\r\n", "\n") == values["html"]


@pytest.mark.parametrize("evil", ["Eve\r\nBcc: victim@example.com", "Eve\nX-Injected: 1", "Eve\rX: 1", "E\x00ve"])
def test_no_header_injection_from_data(evil):
    """CR, LF and other control characters in names or subjects never start a new header."""
    _, _, raw = _build(to_name=evil, subject=evil, from_name=evil)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Bcc"] is None and msg["X-Injected"] is None and msg["X"] is None
    assert not msg.defects
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(line[:1] in b" \t" or b":" in line for line in head.split(b"\r\n"))


def test_addresses_with_specials_are_refused():
    """An address carrying angle brackets, commas or spaces is refused rather than mangled."""
    with pytest.raises(ValueError):
        _build(to_address="a@example.org>, <b@example.org")


def test_header_helpers():
    """Control characters collapse to spaces; long ASCII subjects fold under 78 characters."""
    assert clean_header_value("a\r\n\tb\x00c") == "a b c"
    folded = encode_header("Subject", "word " * 40)
    assert all(len(line) <= 78 for line in folded.split(b"\r\n"))
    assert email.message_from_bytes(folded + b"\r\n", policy=email.policy.default)["Subject"] == ("word " * 40).strip()


# Text a template can produce: markup, accents, other scripts, "=", dots, tabs, spaces and every
# kind of line end, in pieces of any length (a name, a link, a page of fixed text).
_PIECE = st.text(alphabet=st.sampled_from(list("ab =.\t\r\n<>\"éü€難")), max_size=160)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECE, min_size=1, max_size=8))
def test_quoted_printable_of_pieces_decodes_to_the_whole(pieces):
    """Encoded piece by piece (cached or not), the body decodes to the whole text with CRLF line
    ends, and keeps RFC 2045's rules: lines of at most 76, no whitespace before a line end."""
    cache: dict[str, bytes] = {}
    encoded = quoted_printable(pieces, cache)
    assert quoted_printable(pieces, cache) == encoded == quoted_printable(pieces)
    whole = "".join(pieces).replace("\r\n", "\n").replace("\r", "\n")
    assert encoded.decode("ascii").replace("\r\n", "\n").count("\r") == 0
    decoded = email.message_from_bytes(
        b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n' + encoded,
        policy=email.policy.default).get_content()
    assert decoded.replace("\r\n", "\n") == whole
    for line in encoded.split(b"\r\n"):
        assert len(line) <= 76
        assert not line.endswith((b" ", b"\t"))


def test_ascii_forms_of_international_addresses():
    """IDN domains become ASCII (IDNA); a non-ASCII mailbox stays UTF-8 (it needs SMTPUTF8)."""
    assert ascii_address("renate@bücher.de") == "renate@xn--bcher-kva.de"
    assert ascii_address("josé@example.net") == "josé@example.net"
    assert encode_address("Zoë", "renate@bücher.de") == "=?utf-8?q?Zo=C3=AB?= <renate@xn--bcher-kva.de>"
    assert encode_address("A, B", "josé@example.net") == '"A, B" <josé@example.net>'
