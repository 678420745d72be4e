"""The SMTP transport against real servers: STARTTLS with login, and how refusals are classified."""

from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from campaigns.transport import PermanentFailure, SMTPTransport, TemporaryFailure
from crm.config import parse_smtp_url
from crm.outbox.server import free_port
from tests.conftest import RecordingHandler

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
