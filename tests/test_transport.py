"""The SMTP transport against real servers: STARTTLS with login, how refusals are classified,
PIPELINING and plain sessions, the split start/finish, dot-stuffing and SMTPUTF8."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from campaigns.transport import Declined, PermanentFailure, SMTPTransport, TemporaryFailure, UncertainDelivery
from crm.config import parse_smtp_url
from crm.outbox.server import free_port
from tests.conftest import DROP_CONNECTION, RecordingHandler

MESSAGE = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def tls_files(tmp_path):
    """A self-signed certificate for 127.0.0.1, made with the openssl command-line tool."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_server(tls_files, monkeypatch):
    """A real SMTP server that insists on STARTTLS and then a login (user/secret)."""
    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    # The client verifies certificates as in production; trust this one through OpenSSL's own setting.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"user" and auth_data.password == b"s3cret/pass"
        return AuthResult(success=ok)

    handler = RecordingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=context,
                            require_starttls=True, auth_required=True, auth_require_tls=True,
                            authenticator=authenticate)
    controller.start()
    yield controller
    controller.stop()


def test_starttls_and_login_from_smtp_url(tls_server):
    """SMTP_URL with credentials and tls=starttls: encrypted, authenticated, delivered."""
    url = f"smtp://user:s3cret%2Fpass@127.0.0.1:{tls_server.port}?tls=starttls"
    with SMTPTransport(parse_smtp_url(url)) as transport:
        transport.deliver("a@example.org", "b@example.net", MESSAGE)
    [envelope] = tls_server.handler.envelopes
    assert envelope.rcpt_tos == ["b@example.net"]


def test_wrong_password_is_a_relay_problem_not_a_recipient_failure(tls_server):
    """Bad credentials fail the session (no code), so no recipient is marked failed for it."""
    url = f"smtp://user:wrong@127.0.0.1:{tls_server.port}?tls=starttls"
    with SMTPTransport(parse_smtp_url(url), timeout=2) as transport, pytest.raises(TemporaryFailure) as failure:
        transport.deliver("a@example.org", "b@example.net", MESSAGE)
    assert failure.value.code is None
    assert tls_server.handler.envelopes == []


def test_refusals_are_classified(smtp_server):
    """5.1.1 is a permanent user-unknown; 5.7.1 permanent but not user-unknown; 4xx temporary."""
    smtp_server.handler.replies = {"gone@example.net": ["550 5.1.1 User unknown"],
                                   "policy@example.net": ["550 5.7.1 Message rejected as spam"],
                                   "later@example.net": ["451 4.7.1 Greylisted"]}
    with SMTPTransport(parse_smtp_url(smtp_server.url)) as transport:
        with pytest.raises(PermanentFailure) as gone:
            transport.deliver("a@example.org", "gone@example.net", MESSAGE)
        with pytest.raises(PermanentFailure) as policy:
            transport.deliver("a@example.org", "policy@example.net", MESSAGE)
        with pytest.raises(TemporaryFailure) as later:
            transport.deliver("a@example.org", "later@example.net", MESSAGE)
        transport.deliver("a@example.org", "fine@example.net", MESSAGE)  # the connection is still good
    assert gone.value.user_unknown and not policy.value.user_unknown
    assert later.value.code == 451
    assert smtp_server.handler.recipients() == ["fine@example.net"]


def test_no_server_is_a_temporary_failure_without_a_code():
    """Nothing listening: a temporary failure with no SMTP code (the pipeline pauses on it)."""
    transport = SMTPTransport(parse_smtp_url(f"smtp://127.0.0.1:{free_port()}"), timeout=2)
    with pytest.raises(TemporaryFailure) as failure:
        transport.deliver("a@example.org", "b@example.net", MESSAGE)
    assert failure.value.code is None


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "plain"])
def test_both_session_kinds_deliver_content_intact(smtp_server, pipelining):
    """With or without PIPELINING: each message once, lines starting with "." arrive unchanged."""
    smtp_server.handler.pipelining = pipelining
    dotted = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend"
    with SMTPTransport(parse_smtp_url(smtp_server.url)) as transport:
        transport.deliver("a@example.org", "one@example.net", MESSAGE)
        transport.deliver("a@example.org", "two@example.net", dotted)
        transport.deliver("a@example.org", "three@example.net", MESSAGE)
        assert transport.connect().has_extn("pipelining") == pipelining
    one, two, three = smtp_server.handler.envelopes
    assert [e.rcpt_tos for e in (one, two, three)] == [["one@example.net"], ["two@example.net"], ["three@example.net"]]
    assert one.original_content == MESSAGE
    assert two.original_content == dotted + b"\r\n"


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "plain"])
def test_refused_recipient_leaves_the_session_usable(smtp_server, pipelining):
    """A 5xx to RCPT in a pipelined group (DATA then fails too) is that recipient's verdict only."""
    smtp_server.handler.pipelining = pipelining
    smtp_server.handler.replies = {"gone@example.net": ["550 5.1.1 User unknown"]}
    with SMTPTransport(parse_smtp_url(smtp_server.url)) as transport:
        with pytest.raises(PermanentFailure) as gone:
            transport.deliver("a@example.org", "gone@example.net", MESSAGE)
        transport.deliver("a@example.org", "fine@example.net", MESSAGE)
    assert gone.value.user_unknown
    assert smtp_server.handler.recipients() == ["fine@example.net"]


def test_start_returns_before_the_relay_answers(smtp_server):
    """start() hands the content over and returns; the verdict is read by finish(). The server
    holds its reply until the test releases it, which it can only do once start() returned."""
    gate = threading.Event()
    smtp_server.handler.on_message = lambda count, envelope: gate.wait(10) or pytest.fail("start() waited")
    with SMTPTransport(parse_smtp_url(smtp_server.url)) as transport:
        transport.start("a@example.org", "b@example.net", MESSAGE)
        gate.set()
        transport.finish()
    assert smtp_server.handler.errors == []
    assert smtp_server.handler.recipients() == ["b@example.net"]


def test_refusal_of_the_content_comes_from_finish(smtp_server):
    """A 5xx after the data is that message's failure; a 4xx is temporary; the session goes on."""
    answers = iter(["554 5.6.0 Content rejected", "451 4.3.0 Try later", "250 OK"])
    smtp_server.handler.on_message = lambda count, envelope: next(answers)
    with SMTPTransport(parse_smtp_url(smtp_server.url)) as transport:
        transport.start("a@example.org", "b@example.net", MESSAGE)
        with pytest.raises(PermanentFailure) as refused:
            transport.finish()
        transport.start("a@example.org", "c@example.net", MESSAGE)
        with pytest.raises(TemporaryFailure) as later:
            transport.finish()
        transport.deliver("a@example.org", "d@example.net", MESSAGE)
    assert (refused.value.code, later.value.code) == (554, 451)


def test_connection_lost_after_the_content_is_uncertain(smtp_server):
    """The relay hangs up once the content is out: maybe delivered, so UncertainDelivery, and
    the next message goes out on a fresh connection."""
    answers = iter([DROP_CONNECTION, "250 OK"])
    smtp_server.handler.on_message = lambda count, envelope: next(answers)
    with SMTPTransport(parse_smtp_url(smtp_server.url)) as transport:
        transport.start("a@example.org", "b@example.net", MESSAGE)
        with pytest.raises(UncertainDelivery):
            transport.finish()
        transport.deliver("a@example.org", "c@example.net", MESSAGE)
    assert smtp_server.handler.recipients() == ["b@example.net", "c@example.net"]


def test_utf8_mailbox_goes_out_with_smtputf8(smtp_server):
    """A non-ASCII local part is sent with the SMTPUTF8 parameter when the relay offers it."""
    with SMTPTransport(parse_smtp_url(smtp_server.url)) as transport:
        transport.deliver("a@example.org", "josé@example.net", MESSAGE)
    [envelope] = smtp_server.handler.envelopes
    assert envelope.rcpt_tos == ["josé@example.net"]
    assert "SMTPUTF8" in envelope.mail_options


@pytest.mark.smtp(smtputf8=False)
def test_utf8_mailbox_is_refused_for_good_without_smtputf8(smtp_server):
    """Without SMTPUTF8 such an address cannot be delivered: a permanent failure, not a relay problem."""
    with SMTPTransport(parse_smtp_url(smtp_server.url)) as transport:
        with pytest.raises(PermanentFailure) as failure:
            transport.deliver("a@example.org", "josé@example.net", MESSAGE)
        transport.deliver("a@example.org", "jose@example.net", MESSAGE)
    assert "SMTPUTF8" in str(failure.value) and not failure.value.user_unknown
    assert smtp_server.handler.recipients() == ["jose@example.net"]


def test_addresses_that_would_break_the_command_are_refused(smtp_server):
    with SMTPTransport(parse_smtp_url(smtp_server.url)) as transport:
        for bad in ("b@example.net>\r\nRCPT TO:<evil@example.net", "b c@example.net", "no-at-sign"):
            with pytest.raises(PermanentFailure):
                transport.deliver("a@example.org", bad, MESSAGE)
    assert smtp_server.handler.envelopes == []


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "plain"])
def test_announced_envelope_rides_behind_the_message_in_flight(smtp_server, pipelining):
    """announce() writes the next envelope before the verdict on the one in flight is read; a
    refusal of that one (which ends its transaction by itself) leaves the next intact."""
    smtp_server.handler.pipelining = pipelining
    answers = iter(["554 5.6.0 Content rejected", "250 OK", "250 OK"])
    smtp_server.handler.on_message = lambda count, envelope: next(answers)
    second = b"Subject: second\r\n\r\nRSET would show here if the session were reset mid-DATA\r\n"
    with SMTPTransport(parse_smtp_url(smtp_server.url)) as transport:
        transport.start("a@example.org", "one@example.net", MESSAGE)
        transport.announce("a@example.org", "two@example.net")
        with pytest.raises(PermanentFailure):
            transport.finish()
        transport.start("a@example.org", "two@example.net", second)
        transport.announce("a@example.org", "three@example.net")
        transport.finish()
        transport.start("a@example.org", "three@example.net", MESSAGE)
        transport.finish()
    one, two, three = smtp_server.handler.envelopes
    assert [e.rcpt_tos for e in (one, two, three)] == [["one@example.net"], ["two@example.net"], ["three@example.net"]]
    assert two.original_content == second
    assert three.original_content == MESSAGE


def test_withdrawn_envelope_is_never_delivered(smtp_server):
    """An announced message that will not be sent after all: the connection is closed in DATA,
    so the relay keeps nothing of it; the next message goes out on a fresh connection."""
    with SMTPTransport(parse_smtp_url(smtp_server.url)) as transport:
        transport.start("a@example.org", "one@example.net", MESSAGE)
        transport.announce("a@example.org", "withdrawn@example.net")
        transport.finish()
        transport.withdraw()
        transport.deliver("a@example.org", "three@example.net", MESSAGE)
    assert smtp_server.handler.recipients() == ["one@example.net", "three@example.net"]


@pytest.mark.parametrize("pipelining", [True, False])
def test_declined_content_is_never_delivered(smtp_server, pipelining):
    """The caller says no once the envelope is accepted (its supporter withdrew meanwhile): the
    connection closes inside DATA, nothing is delivered, and the next message goes out fresh."""
    smtp_server.handler.pipelining = pipelining
    asked = []
    with SMTPTransport(parse_smtp_url(smtp_server.url)) as transport:
        transport.start("a@example.org", "one@example.net", MESSAGE)
        transport.announce("a@example.org", "declined@example.net")
        transport.finish()
        with pytest.raises(Declined):
            transport.start("a@example.org", "declined@example.net", MESSAGE, proceed=lambda: asked.append(1))
        transport.deliver("a@example.org", "three@example.net", MESSAGE, proceed=lambda: True)
    assert asked == [1]
    assert smtp_server.handler.recipients() == ["one@example.net", "three@example.net"]


def test_lost_connection_loses_the_announced_envelope_not_the_message(smtp_server):
    """The relay hangs up after the content in flight: that one is uncertain, the announced one
    was never given content, so start() sends it on a fresh connection."""
    answers = iter([DROP_CONNECTION, "250 OK"])
    smtp_server.handler.on_message = lambda count, envelope: next(answers)
    with SMTPTransport(parse_smtp_url(smtp_server.url)) as transport:
        transport.start("a@example.org", "one@example.net", MESSAGE)
        transport.announce("a@example.org", "two@example.net")
        with pytest.raises(UncertainDelivery):
            transport.finish()
        transport.start("a@example.org", "two@example.net", MESSAGE)
        transport.finish()
    assert smtp_server.handler.recipients() == ["one@example.net", "two@example.net"]
